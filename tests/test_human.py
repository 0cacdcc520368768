"""People in the loop: the test plays the annotator of an image folder for three rounds.

A folder with six classes of its own, 8 labeled and 40 unlabeled images; the
hidden store holds every label. Each round the run stops with a request, the
test returns the requested labels (PNGs, then a COCO export, then PNGs) and
reruns the same call. Every bad return is answered in one line and nothing is
taken in from it or lost.
"""

import csv
import dataclasses
import glob
import json
import os
import shutil
from xml.etree import ElementTree

import numpy as np
from PIL import Image
from pycocotools import coco as coco_lib
from pycocotools import mask as mask_utils
import pytest

from segal_jax.config import ExperimentConfig
from segal_jax.errors import UserError
from segal_jax import experiment
from segal_jax.labelling import requests as label_requests
from segal_jax.labelling import session as human
from segal_jax.state import run_state

H, W = 32, 64
N_LABELED, N_UNLABELED, BUDGET = 8, 40, 4
NAMES = ('soil', 'leaf', 'stem', 'rust', 'mildew', 'sky')
VALUES = (3, 7, 11, 50, 90, 200)
COLORS = ((120, 80, 40), (20, 160, 20), (90, 200, 90), (200, 90, 0), (230, 230, 230),
          (60, 120, 230))


def _write_folder(root, hidden):
  """classes.json, images/, labels/ for the first N_LABELED; every label in `hidden`."""
  table = {'ignore': 255, 'classes': [
      {'name': n, 'color': list(c), 'thing': n in ('rust', 'mildew'), 'value': v}
      for n, c, v in zip(NAMES, COLORS, VALUES)]}
  os.makedirs(os.path.join(root, 'images'))
  os.makedirs(os.path.join(root, 'labels'))
  os.makedirs(hidden)
  with open(os.path.join(root, 'classes.json'), 'w') as f:
    json.dump(table, f)
  rng = np.random.default_rng(0)
  for k in range(N_LABELED + N_UNLABELED):
    classes = rng.integers(0, len(NAMES), (H // 8, W // 8)).repeat(8, 0).repeat(8, 1)
    image = np.asarray(COLORS)[classes] + rng.integers(-20, 20, (H, W, 3))
    name = f'plant_{k:02d}'
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
        os.path.join(root, 'images', name + '.png'))
    label = np.asarray(VALUES, np.uint8)[classes]
    Image.fromarray(label).save(os.path.join(hidden, name + '.png'))
    if k < N_LABELED:
      shutil.copy(os.path.join(hidden, name + '.png'), os.path.join(root, 'labels'))


def _png(path, array):
  Image.fromarray(np.asarray(array, np.uint8)).save(path)


def _read(path):
  return np.asarray(Image.open(path))


def _run(config, workdir):
  """(outcome, log lines): 'done' (records), 'waiting' (message) or 'error' (message)."""
  logs = []
  try:
    return ('done', experiment.run(config, workdir, log=logs.append)), logs
  except label_requests.AwaitingLabels as e:
    return ('waiting', str(e)), logs
  except UserError as e:
    return ('error', str(e)), logs


def _pending(run_dir, config):
  return run_state.load_run_state(run_dir, config.fingerprint()).pending


def _coco_export(path, request, hidden, *, category_names=NAMES):
  """What a tool exports: RLE per class, file names with an upload prefix."""
  images, anns = [], []
  for k, item in enumerate(request['items']):
    images.append({'id': k + 1, 'file_name': f'upload/5d2a-{os.path.basename(item["copy"])}',
                   'height': H, 'width': W})
    label = _read(os.path.join(hidden, item['name'] + '.png'))
    for c, value in enumerate(VALUES):
      if np.any(label == value):
        rle = mask_utils.encode(np.asfortranarray((label == value).astype(np.uint8)))
        rle['counts'] = rle['counts'].decode()
        anns.append({'id': len(anns) + 1, 'image_id': k + 1, 'category_id': c, 'iscrowd': 1,
                     'segmentation': rle, 'area': int(mask_utils.area(rle)),
                     'bbox': [0, 0, W, H]})
  with open(path, 'w') as f:
    json.dump({'info': {'contributor': 'ana'}, 'images': images, 'annotations': anns,
               'categories': [{'id': c, 'name': n} for c, n in enumerate(category_names)]}, f)


def _config(tmp_path, **changes):
  """A tiny network trained a few steps, people labelling tmp_path/plants."""
  return ExperimentConfig(
      dataset='image_folder:' + str(tmp_path / 'plants'), dataset_config='',
      al_annotator='human', al_strategies=('mc_variance',), width_multiplier=0.125,
      train_epochs=1, train_min_steps=2, train_batch_size=4, train_crop=(32, 64),
      eval_batch_size=8, mc_passes=2, out_figures=0, progress=False, ckpt_every_epochs=0,
      data_dir=str(tmp_path / 'tfds'), **changes)


def _problems(logs):
  return [line for line in logs if line.startswith('problem: ')]


@pytest.mark.slow
def test_three_rounds_with_people(tmp_path):
  # About 1-2 min on 2 CPU cores (compiling dominates).
  root, hidden = str(tmp_path / 'plants'), str(tmp_path / 'hidden')
  _write_folder(root, hidden)
  config = _config(tmp_path, al_budget=BUDGET, al_cycles=4, al_candidate_factor=0)
  workdir = str(tmp_path / 'work')
  run_dir = experiment.run_dir(workdir, 'mc_variance', 0)
  labels = os.path.join(root, 'labels')
  initial = {n: _read(os.path.join(labels, n)) for n in os.listdir(labels)}

  (kind, message), logs = _run(config, workdir)
  assert kind == 'waiting', message
  held = json.load(open(os.path.join(run_dir, human.VALIDATION_FILE)))['images']
  assert len(held) == 2 and any(line.startswith('validation: 2 of the images') for line in logs)
  request = _pending(run_dir, config)
  out = label_requests.request_dir(run_dir, 1)
  requested = [item['name'] for item in request['items']]
  assert len(requested) == BUDGET and not set(requested) & {n[:-4] for n in initial}
  for item in request['items']:
    assert item['label'] in message
  assert 'rerun the same command' in message and os.path.join(out, 'returned') in message
  with open(os.path.join(out, 'to_label.csv')) as f:
    rows = list(csv.reader(f))
  assert rows[0] == ['name', 'entropy_value'] and [r[0] for r in rows[1:]] == requested
  suggestions = coco_lib.COCO(os.path.join(out, 'coco.json'))
  assert [c['name'] for c in suggestions.loadCats(suggestions.getCatIds())] == list(NAMES)
  for image in suggestions.loadImgs(suggestions.getImgIds()):  # each pixel suggested once
    masks = [suggestions.annToMask(a) for a in suggestions.loadAnns(
        suggestions.getAnnIds(imgIds=image['id']))]
    assert np.array_equal(np.sum(masks, 0), np.ones((H, W)))
  assert len(json.load(open(os.path.join(out, 'label_studio.json')))) == BUDGET
  assert len(ElementTree.parse(os.path.join(out, 'cvat.xml')).findall('image')) == BUDGET
  assert len(os.listdir(os.path.join(out, 'maps'))) == BUDGET
  assert len(os.listdir(os.path.join(out, 'images'))) == BUDGET

  # Nothing returned yet: one line per request, still waiting.
  (kind, message), logs = _run(config, workdir)
  assert kind == 'waiting' and len([l for l in logs if l.startswith('waiting: ')]) == BUDGET

  # Round 1, PNGs, first with every kind of bad file.
  bad = {requested[0]: np.zeros((H, W + 2)), requested[1]: np.full((H, W), 4)}
  for name in requested:
    shutil.copy(os.path.join(hidden, name + '.png'), labels)
  for name, array in bad.items():
    _png(os.path.join(labels, name + '.png'), array)
  with open(os.path.join(labels, requested[2] + '.png'), 'wb') as f:
    f.write(b'not a png')
  stray = sorted(set(os.listdir(hidden)) - set(os.listdir(labels)))[0]
  shutil.copy(os.path.join(hidden, stray), labels)
  (kind, message), logs = _run(config, workdir)
  assert kind == 'error' and 'nothing was taken in' in message
  problems = _problems(logs)
  assert len(problems) == 4
  for name, words in ((requested[0], f'is {H}x{W + 2}'), (requested[1], 'values [4]'),
                      (requested[2], 'cannot be read'), (stray[:-4], 'was not requested')):
    assert sum(f'labels/{name}.png' in p and words in p for p in problems) == 1, (name, problems)
  assert _pending(run_dir, config) == request
  for name in requested[:3]:
    shutil.copy(os.path.join(hidden, name + '.png'), labels)
  os.remove(os.path.join(labels, stray))
  (kind, message), logs = _run(config, workdir)
  assert kind == 'waiting', message
  assert any(line.startswith('took in the labels of cycle 1: 4 image(s)') for line in logs)

  # Round 2, a COCO export: first with a category classes.json does not know.
  request = _pending(run_dir, config)
  out = label_requests.request_dir(run_dir, 2)
  export = os.path.join(out, 'returned', 'project-1-at-2026.json')
  _coco_export(export, request, hidden, category_names=NAMES[:-1] + ('cloud',))
  (kind, message), logs = _run(config, workdir)
  assert kind == 'error' and len(_problems(logs)) == 1 and 'category "cloud"' in logs[0]
  assert not any(os.path.exists(item['label']) for item in request['items'])
  _coco_export(export, request, hidden)
  # Interrupted after the labels were written into labels/, before the state was saved.
  with pytest.MonkeyPatch.context() as patch:
    def interrupt(*args):
      raise KeyboardInterrupt
    patch.setattr(run_state, 'save_run_state', interrupt)
    with pytest.raises(KeyboardInterrupt):
      experiment.run(config, workdir, log=lambda _: None)
  assert all(os.path.exists(item['label']) for item in request['items'])
  assert _pending(run_dir, config) == request
  (kind, message), logs = _run(config, workdir)
  assert kind == 'waiting', message

  # Round 3, PNGs, while a label of the start went missing.
  request = _pending(run_dir, config)
  for item in request['items']:
    shutil.copy(os.path.join(hidden, item['name'] + '.png'), labels)
  first = sorted(initial)[0]
  os.rename(os.path.join(labels, first), str(tmp_path / first))
  (kind, message), logs = _run(config, workdir)
  assert kind == 'error' and len(_problems(logs)) == 1
  assert f'labels/{first[:-4]}.png, labeled before cycle 3, is gone' in _problems(logs)[0]
  os.rename(str(tmp_path / first), os.path.join(labels, first))
  (kind, records), logs = _run(config, workdir)
  assert kind == 'done', records

  # 8 + 3 x budget labeled images, each what the hidden store holds; nothing lost.
  assert len(os.listdir(labels)) == N_LABELED + 3 * BUDGET
  for name in os.listdir(labels):
    np.testing.assert_array_equal(_read(os.path.join(labels, name)),
                                  _read(os.path.join(hidden, name)))
  for name, label in initial.items():
    np.testing.assert_array_equal(_read(os.path.join(labels, name)), label)
  assert [r['labeled_images'] for r in records] == [N_LABELED - 2 + k * BUDGET for k in range(4)]
  for r in records:
    assert list(r['per_class']) == list(NAMES) and 0.0 <= r['miou'] <= 1.0
  assert [r.get('labelled_units') for r in records] == [None, BUDGET, BUDGET, BUDGET]
  assert all(r['seconds_per_unit'] >= 0 for r in records[1:])
  state = run_state.load_run_state(run_dir, config.fingerprint())
  assert state.pending is None
  assert [[i['kind'] for i in r['items']] for r in state.labelling] == [
      ['png'] * BUDGET, ['coco'] * BUDGET, ['png'] * BUDGET]
  assert {i['who'] for i in state.labelling[1]['items']} == {'ana'}
  assert all(i['file'] == export for i in state.labelling[1]['items'])
  assert len(glob.glob(os.path.join(run_dir, 'requests', 'cycle_*'))) == 3
  with open(os.path.join(workdir, 'results.md')) as f:
    assert '## Labelling time' in f.read()


def _superpixel_request(tmp_path, cycles):
  """A superpixel run of a new plants folder, stopped at its first request:
  (folder, hidden labels, config, workdir, run directory, the run's message)."""
  root, hidden = str(tmp_path / 'plants'), str(tmp_path / 'hidden')
  _write_folder(root, hidden)
  config = _config(tmp_path, al_unit='superpixel', sp_segments=8, al_budget=6, al_cycles=cycles)
  workdir = str(tmp_path / 'work')
  run_dir = experiment.run_dir(workdir, 'mc_variance', 0)
  (kind, message), _ = _run(config, workdir)
  assert kind == 'waiting', message
  return root, hidden, config, workdir, run_dir, message


@pytest.mark.slow
def test_superpixel_requests_take_partial_labels(tmp_path):
  # About 1 min on 2 CPU cores.
  root, hidden, config, workdir, run_dir, message = _superpixel_request(tmp_path, cycles=3)
  request, out = _pending(run_dir, config), label_requests.request_dir(run_dir, 1)
  assert sum(len(item['superpixels']) for item in request['items']) == 6
  assert 'regions' in message
  regions = {}
  for k, item in enumerate(request['items']):
    mask = _read(os.path.join(out, item['mask']))
    assert set(np.unique(mask[mask > 0]) - 1) == set(item['superpixels'])
    region = mask > 0
    if k == 0:  # part of the region only
      region &= np.cumsum(region.ravel()).reshape(region.shape) <= 5
    regions[item['name']] = region
    truth = _read(os.path.join(hidden, item['name'] + '.png'))
    _png(item['label'], np.where(region, truth, 255))
  (kind, message), logs = _run(config, workdir)
  assert kind == 'waiting', message
  state = run_state.load_run_state(run_dir, config.fingerprint())
  assert state.labelling[0]['summary']['labelled_units'] == 6
  assert [i['labeled_pixels'] for i in state.labelling[0]['items']] == [
      int(r.sum()) for r in regions.values()]
  assert state.records[1]['superpixels'] == 6
  for item in request['items']:  # kept as returned: the regions, 255 elsewhere
    truth = _read(os.path.join(hidden, item['name'] + '.png'))
    np.testing.assert_array_equal(_read(item['label']),
                                  np.where(regions[item['name']], truth, 255))
  again = {item['name']: set(item['superpixels']) for item in state.pending['items']}
  for item in request['items']:
    assert not again.get(item['name'], set()) & set(item['superpixels'])


@pytest.mark.parametrize('changes, words', [
    (dict(dataset='synthetic_city'), 'needs an image folder'),
    (dict(al_strategies=('random', 'mc_variance')), 'one strategy with one seed'),
    (dict(al_seeds=(0, 1)), 'one strategy with one seed'),
    (dict(al_strategies=('full',)), 'nothing is requested'),
    (dict(al_protocol='points', al_unit='superpixel'), 'simulate an annotator'),
    (dict(noise_flip=0.1), 'simulate an annotator')])
def test_people_label_one_run_of_one_folder(changes, words):
  config = ExperimentConfig(dataset='image_folder:/data/plants', al_annotator='human',
                            al_strategies=('mc_variance',))
  human.check_config(config)
  with pytest.raises(UserError, match=words):
    human.check_config(dataclasses.replace(config, **changes))


@pytest.mark.slow
def test_whole_image_answers_to_region_requests_are_cut_to_the_regions(tmp_path):
  # About 1 min on 2 CPU cores.
  root, hidden, config, workdir, run_dir, _ = _superpixel_request(tmp_path, cycles=2)
  request, out = _pending(run_dir, config), label_requests.request_dir(run_dir, 1)
  regions = {item['name']: _read(os.path.join(out, item['mask'])) > 0
             for item in request['items']}
  for item in request['items']:  # the whole image labeled, not only the regions
    shutil.copy(os.path.join(hidden, item['name'] + '.png'), item['label'])
  (kind, records), logs = _run(config, workdir)
  assert kind == 'done', records
  notes = [line for line in logs if line.startswith('note: ')]
  assert len(notes) == len(request['items'])
  for item in request['items']:
    truth, region = _read(os.path.join(hidden, item['name'] + '.png')), regions[item['name']]
    np.testing.assert_array_equal(_read(item['label']), np.where(region, truth, 255))
    np.testing.assert_array_equal(  # kept as it came back
        _read(os.path.join(out, 'returned', 'as_returned', item['name'] + '.png')), truth)
  metrics = [json.loads(line) for line in open(os.path.join(run_dir, 'metrics.jsonl'))]
  assert metrics[0]['new_labeled_pixels'] == sum(int(r.sum()) for r in regions.values())
  assert metrics[0]['new_cost'] == 6 and metrics[1]['cost_instances'] == 6 + N_LABELED - 2
  state = run_state.load_run_state(run_dir, config.fingerprint())
  held = json.load(open(os.path.join(run_dir, human.VALIDATION_FILE)))['images']
  assert (set(state.pool['full']) | set(state.pool['chosen']) | set(held)
          == {f[:-4] for f in os.listdir(os.path.join(root, 'labels'))})
  assert [i['cut_pixels'] for i in state.labelling[0]['items']] == [
      H * W - int(regions[i['name']].sum()) for i in state.labelling[0]['items']]
