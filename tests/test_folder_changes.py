"""People's folder changes between runs: images added, removed, renamed, labels edited.

Each scenario starts from the same first run (8 labeled and 16 unlabeled
images, waiting for 4 images of cycle 1), restored at the same path for each
test, changes the folder as a team would and reruns. After each, the run state
read back maps exactly to the label files on disk: every image with a label
file (and an image) is labeled in the pool or held out to validate, and no
other.
"""

import getpass
import json
import os
import shutil

import numpy as np
from PIL import Image
import pytest

from segal_jax.data import image_folder
from segal_jax.errors import UserError
from segal_jax import experiment
from segal_jax.labelling import requests as label_requests
from segal_jax.labelling import session as human
from segal_jax.state import pool as pool_lib
from segal_jax.state import run_state
from tests.test_human import COLORS, H, VALUES, W, _config, _pending, _read, _run

N_LABELED, N_UNLABELED, BUDGET = 8, 16, 4


def add_image(root, hidden, name, seed, labeled=False):
  """A new image of the folder, its true label in `hidden` (and in labels/ if `labeled`)."""
  rng = np.random.default_rng(seed)
  classes = rng.integers(0, len(VALUES), (H // 8, W // 8)).repeat(8, 0).repeat(8, 1)
  image = np.asarray(COLORS)[classes] + rng.integers(-20, 20, (H, W, 3))
  path = os.path.join(root, 'images', name + '.png')
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)
  Image.fromarray(np.asarray(VALUES, np.uint8)[classes]).save(
      os.path.join(hidden, name + '.png'))
  if labeled:
    shutil.copy(os.path.join(hidden, name + '.png'), os.path.join(root, 'labels'))


def write_folder(root, hidden, n_labeled=N_LABELED, n_unlabeled=N_UNLABELED):
  os.makedirs(os.path.join(root, 'labels'))
  os.makedirs(hidden)
  with open(os.path.join(root, 'classes.json'), 'w') as f:
    json.dump({'ignore': 255, 'classes': [
        {'name': n, 'color': list(c), 'thing': n in ('rust', 'mildew'), 'value': v}
        for n, c, v in zip(('soil', 'leaf', 'stem', 'rust', 'mildew', 'sky'), COLORS, VALUES)]},
              f)
  for k in range(n_labeled + n_unlabeled):
    add_image(root, hidden, f'plant_{k:02d}', k, labeled=k < n_labeled)


def answer(request, hidden, names=None):
  """Saves the true labels of the requested images (or `names`) as PNGs in labels/."""
  for item in request['items']:
    if names is None or item['name'] in names:
      shutil.copy(os.path.join(hidden, item['name'] + '.png'), item['label'])


def held_out(run_dir):
  with open(os.path.join(run_dir, human.VALIDATION_FILE)) as f:
    return json.load(f)['images']


def labeled(pool):
  """The images of a saved pool with any label."""
  return set(pool['full']) | set(pool['annotated']) | set(pool['chosen'])


def assert_state_matches_labels(config, run_dir, root):
  """The run state, read back, labels exactly the images with label files."""
  state = run_state.load_run_state(run_dir, config.fingerprint())
  images = {os.path.splitext(f)[0] for f in os.listdir(os.path.join(root, 'images'))}
  files = {os.path.splitext(f)[0] for f in os.listdir(os.path.join(root, 'labels'))
           if f.endswith('.png')} & images
  asked = {i['name'] for i in state.pending['items']} if state.pending else set()
  held = set(held_out(run_dir))
  assert labeled(state.pool) | held == files - asked
  assert not labeled(state.pool) & held
  assert set(state.images) == images - held
  return state


@pytest.fixture(scope='module')
def pristine(tmp_path_factory):
  """A first run waiting for cycle 1, kept aside: (config, its files)."""
  base = tmp_path_factory.mktemp('folder_changes')
  live, keep = base / 'live', base / 'pristine'
  live.mkdir()
  write_folder(str(live / 'plants'), str(live / 'hidden'))
  config = _config(live, al_budget=BUDGET, al_cycles=3, al_candidate_factor=0)
  (kind, message), _ = _run(config, str(live / 'work'))
  assert kind == 'waiting', message
  shutil.copytree(live, keep)
  return config, live, keep


@pytest.fixture
def folder(pristine):
  """(config, workdir, run_dir, image folder, hidden labels), as the first run left them."""
  config, live, keep = pristine
  shutil.rmtree(live)
  shutil.copytree(keep, live)
  workdir = str(live / 'work')
  return (config, workdir, experiment.run_dir(workdir, 'mc_variance', 0), str(live / 'plants'),
          str(live / 'hidden'))


@pytest.mark.slow
def test_images_added_before_and_after_existing_names_join_the_pool(folder):
  config, workdir, run_dir, root, hidden = folder
  request = _pending(run_dir, config)
  for k, name in enumerate(('aa_first', 'plant_05b', 'zz_last')):
    add_image(root, hidden, name, 100 + k)
  answer(request, hidden)
  (kind, message), logs = _run(config, workdir)
  assert kind == 'waiting', message
  assert sum(l.startswith('folder: 3 new image(s) joined the unlabeled pool') for l in logs) == 1
  state = assert_state_matches_labels(config, run_dir, root)
  for item in state.pending['items']:  # the next request asks for unlabeled images only
    assert not os.path.exists(item['label'])
  assert state.records[-1]['labeled_images'] == N_LABELED - 2 + BUDGET
  assert state.records[0]['new_labeled_pixels'] == BUDGET * H * W
  assert state.records[0]['new_cost'] == BUDGET


@pytest.mark.slow
def test_an_image_removed_leaves_the_pool_and_the_request(folder):
  config, workdir, run_dir, root, hidden = folder
  request = _pending(run_dir, config)
  held = held_out(run_dir)
  first = sorted(n for n in labeled(run_state.load_run_state(run_dir, config.fingerprint()).pool)
                 if n not in held)[0]
  gone = [first, request['items'][0]['name']]
  for name in gone:  # the image goes, its label (if any) stays
    os.remove(os.path.join(root, 'images', name + '.png'))
  answer(request, hidden, names={i['name'] for i in request['items'][1:]})
  (kind, message), logs = _run(config, workdir)
  assert kind == 'waiting', message
  assert sum('2 image(s) left the folder and the pool' in l and '1 of them labeled' in l
             for l in logs) == 1
  assert [l for l in logs if l.startswith('withdrawn: ')] == [
      f'withdrawn: {gone[1]} left the folder, so it is no longer requested']
  state = assert_state_matches_labels(config, run_dir, root)
  assert state.labelling[0]['withdrawn'] == [gone[1]]
  assert len(state.labelling[0]['items']) == BUDGET - 1
  assert state.records[-1]['labeled_images'] == N_LABELED - 2 - 1 + BUDGET - 1


@pytest.mark.slow
def test_a_renamed_image_is_removed_plus_new_and_the_refusal_says_so(folder):
  config, workdir, run_dir, root, hidden = folder
  request = _pending(run_dir, config)
  old = request['items'][0]['name']
  os.rename(os.path.join(root, 'images', old + '.png'),
            os.path.join(root, 'images', 'renamed.png'))
  shutil.copy(os.path.join(hidden, old + '.png'), os.path.join(root, 'labels', 'renamed.png'))
  answer(request, hidden, names={i['name'] for i in request['items'][1:]})
  (kind, message), logs = _run(config, workdir)
  assert kind == 'error' and 'nothing was taken in' in message
  problems = [l for l in logs if l.startswith('problem: ')]
  assert len(problems) == 1
  assert ('labels/renamed.png' in problems[0] and f'{old} left the folder' in problems[0]
          and 'a renamed image counts as a removed image plus a new one' in problems[0])
  # Renamed back, with its label: it answers the request again.
  os.rename(os.path.join(root, 'images', 'renamed.png'),
            os.path.join(root, 'images', old + '.png'))
  os.rename(os.path.join(root, 'labels', 'renamed.png'), os.path.join(root, 'labels', old + '.png'))
  (kind, message), logs = _run(config, workdir)
  assert kind == 'waiting', message
  state = assert_state_matches_labels(config, run_dir, root)
  assert [i['name'] for i in state.labelling[0]['items']] == [i['name'] for i in request['items']]


def _edit(path):
  label = _read(path).copy()
  label[:8] = VALUES[0] if label[0, 0] != VALUES[0] else VALUES[1]
  Image.fromarray(label).save(path)


@pytest.mark.slow
def test_a_label_edited_after_intake_is_a_recorded_correction(folder):
  config, workdir, run_dir, root, hidden = folder
  request = _pending(run_dir, config)
  start = sorted(labeled(run_state.load_run_state(run_dir, config.fingerprint()).pool))[0]
  _edit(os.path.join(root, 'labels', start + '.png'))  # labeled before the run started
  answer(request, hidden)
  (kind, message), logs = _run(config, workdir)
  assert kind == 'waiting', message
  name = request['items'][1]['name']
  _edit(request['items'][1]['label'])  # taken in at cycle 1
  (kind, message), more = _run(config, workdir)
  assert kind == 'waiting', message
  answer(_pending(run_dir, config), hidden)
  (kind, message), last = _run(config, workdir)  # cycle 2 taken in, the last cycle trained
  assert kind == 'done', message
  for lines, edited in ((logs, start), (more, name), (last, name)):
    assert [l.split(' was edited')[0] for l in lines if l.startswith('correction:')] == [
        f'correction: labels/{edited}.png']
  state = assert_state_matches_labels(config, run_dir, root)
  assert [(c['name'], c['who'], c['file']) for c in state.corrections] == [
      (n, getpass.getuser(), os.path.join(root, 'labels', n + '.png')) for n in (start, name)]
  (kind, message), logs = _run(config, workdir)  # recorded once
  assert kind == 'done' and not any(l.startswith('correction:') for l in logs)


@pytest.mark.slow
def test_rewriting_a_request_keeps_what_people_returned(folder):
  config, workdir, run_dir, root, hidden = folder
  answer(_pending(run_dir, config), hidden)
  saves = []
  real_save = run_state.save_run_state

  def interrupt_second(*args):  # taken in, then stopped before cycle 2's request is saved
    saves.append(args)
    if len(saves) == 2:
      raise KeyboardInterrupt
    real_save(*args)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(run_state, 'save_run_state', interrupt_second)
    with pytest.raises(KeyboardInterrupt):
      experiment.run(config, workdir, log=lambda _: None)
  returned = os.path.join(label_requests.request_dir(run_dir, 2), 'returned', 'export.json')
  with open(returned, 'w') as f:
    f.write('{"images": []}')
  (kind, message), _ = _run(config, workdir)  # cycle 1 again, and its request written again
  assert kind == 'waiting', message
  with open(returned) as f:
    assert f.read() == '{"images": []}'
  assert_state_matches_labels(config, run_dir, root)


def _legacy_state(config, run_dir, root):
  """A run state of the earlier layout: the pool by position in the listing."""
  held = ['plant_01', 'plant_06']
  os.makedirs(run_dir)
  with open(os.path.join(run_dir, human.VALIDATION_FILE), 'w') as f:
    json.dump({'images': held}, f)
  splits = image_folder.find_splits(root, allow_unlabeled=True)
  order = [p.image_id for p in splits['train'] + splits['validation'] if p.image_id not in held]
  labeled = [f'plant_{k:02d}' for k in range(N_LABELED) if f'plant_{k:02d}' not in held]
  pool = {'full': sorted(order.index(n) for n in labeled), 'annotated': {}, 'chosen': {},
          'paid': {}}
  run_state.save_run_state(run_dir, run_state.RunState(config.fingerprint(), pool, [{'cycle': 0}]))
  return labeled


def test_a_run_state_by_position_is_migrated_once(tmp_path):
  root, hidden = str(tmp_path / 'plants'), str(tmp_path / 'hidden')
  write_folder(root, hidden)
  config = _config(tmp_path)
  run_dir = str(tmp_path / 'run')
  labeled = _legacy_state(config, run_dir, root)
  logs = []
  human.take_in(config, run_dir, logs.append)
  assert logs == [f'migrated the run state in {run_dir} from positions in the folder listing '
                  'to image names (once)']
  state = run_state.load_run_state(run_dir, config.fingerprint())
  assert state.pool['full'] == labeled
  logs.clear()
  human.take_in(config, run_dir, logs.append)
  assert logs == []


def test_a_run_state_by_position_of_a_changed_folder_is_refused(tmp_path):
  root, hidden = str(tmp_path / 'plants'), str(tmp_path / 'hidden')
  write_folder(root, hidden)
  config = _config(tmp_path)
  run_dir = str(tmp_path / 'run')
  _legacy_state(config, run_dir, root)
  add_image(root, hidden, 'aa_new', 99)
  with pytest.raises(UserError, match='keeps images by their position in the folder listing, '
                     r'and the folder changed since it was saved \(.+\), so its labels cannot'):
    human.take_in(config, run_dir, lambda _: None)


def test_partial_files_of_a_killed_writer_are_removed(tmp_path):
  root, hidden = str(tmp_path / 'plants'), str(tmp_path / 'hidden')
  write_folder(root, hidden, n_labeled=2, n_unlabeled=2)
  config = _config(tmp_path)
  run_dir = str(tmp_path / 'run')
  splits = image_folder.find_splits(root, allow_unlabeled=True)
  order = [p.image_id for p in splits['train'] + splits['validation']]
  run_state.save_run_state(run_dir, run_state.RunState(config.fingerprint(), {
      'full': sorted(order.index(n) for n in ('plant_00', 'plant_01')), 'annotated': {},
      'chosen': {}, 'paid': {}}, [{'cycle': 0}]))
  dead = __import__('subprocess').Popen(['true'])
  dead.wait()
  stale = os.path.join(root, 'labels', f'.plant_03.png.{dead.pid}.0123abcd.part')
  with open(stale, 'wb') as f:
    f.write(b'half a png')
  logs = []
  human.take_in(config, run_dir, logs.append)
  assert not os.path.exists(stale)
  assert f'removed {stale}, a partial file left by a stopped run' in logs
  assert sorted(os.listdir(os.path.join(root, 'labels'))) == ['plant_00.png', 'plant_01.png']


def test_follow_names_added_and_removed_images():
  from segal_jax.labelling import folder_changes  # pylint: disable=g-import-not-at-top
  state = run_state.RunState('f', pool_lib.PoolLabels(full=[0], chosen={1: [3]}).to_json(
      ['b', 'c']), [], images=['b', 'c', 'd'])
  logs = []
  assert folder_changes.follow(state, ['a', 'c', 'd', 'e'], logs.append)
  assert logs == ['folder: 2 new image(s) joined the unlabeled pool (a, e)',
                  'folder: 1 image(s) left the folder and the pool (b), 1 of them labeled; '
                  'their labelling records stay']
  assert state.pool == {'by': 'name', 'full': [], 'annotated': {}, 'chosen': {'c': [3]},
                        'paid': {}}
  assert not folder_changes.follow(state, ['a', 'c', 'd', 'e'], logs.append)


@pytest.mark.slow
def test_five_rounds_on_a_folder_that_grows_and_loses_an_image(tmp_path):
  # About 3 min on 2 CPU cores: six short cycles.
  root, hidden = str(tmp_path / 'plants'), str(tmp_path / 'hidden')
  write_folder(root, hidden, n_labeled=6, n_unlabeled=14)
  config = _config(tmp_path, al_budget=2, al_cycles=6, al_candidate_factor=0)
  workdir = str(tmp_path / 'work')
  run_dir = experiment.run_dir(workdir, 'mc_variance', 0)
  (kind, message), _ = _run(config, workdir)
  assert kind == 'waiting', message
  removed = None
  for round_ in range(5):
    n = len(os.listdir(os.path.join(root, 'images')))
    for k in range(-(-n // 10)):  # 10% more, names before, among and after the others
      add_image(root, hidden, ('a', 'plant_07x', 'zz')[k % 3] + f'_{round_}_{k}',
                1000 + 10 * round_ + k)
    request = _pending(run_dir, config)
    if round_ == 2:  # a labeled image leaves the folder, its label stays
      removed = sorted(labeled(run_state.load_run_state(run_dir, config.fingerprint()).pool))[0]
      os.remove(os.path.join(root, 'images', removed + '.png'))
    answer(request, hidden)
    (kind, message), logs = _run(config, workdir)
    assert kind == ('done' if round_ == 4 else 'waiting'), message
    assert sum('new image(s) joined the unlabeled pool' in l for l in logs) == 1
    assert sum('left the folder and the pool' in l for l in logs) == (round_ == 2)
  images = {f[:-4] for f in os.listdir(os.path.join(root, 'images'))}
  files = {f[:-4] for f in os.listdir(os.path.join(root, 'labels'))}
  for name in files:  # every label equals the store
    np.testing.assert_array_equal(_read(os.path.join(root, 'labels', name + '.png')),
                                  _read(os.path.join(hidden, name + '.png')))
  state = assert_state_matches_labels(config, run_dir, root)
  taken = [i['name'] for r in state.labelling for i in r['items']]
  assert len(taken) == len(set(taken)) == 5 * 2 and set(taken) <= files
  metrics = [json.loads(line) for line in open(os.path.join(run_dir, 'metrics.jsonl'))]
  held = set(held_out(run_dir))
  assert metrics[-1]['labeled_images'] == len((files & images) - held)
  assert metrics[-1]['cost_instances'] == len((files & images) - held)
  assert [m['new_cost'] for m in metrics] == [2] * 5 + [0]
  assert removed in files and removed not in images
