"""Tests of scoring a folder of images (`segal_jax.inference.folder_scoring`, `launch.score`)."""

import csv
import functools
import json
import logging
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
import skimage.draw

from segal_jax.errors import UserError
from segal_jax.inference import folder_scoring
from segal_jax import models
from segal_jax.scoring import superpixels
from segal_jax.scoring import uncertainty
from segal_jax.state import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 64, 128
PASSES, SEGMENTS, BUDGET = 3, 12, 9
MEAN, STD = (0.3, 0.35, 0.3), (0.2, 0.2, 0.21)
GOOD = ['a.png', 'b.png', 'c.jpg', 'd.png', 'e.jpeg', 'odd.png']  # odd.png: 40x100.
BAD = ['broken.jpg', 'truncated.png']


def he_variables(model, seed=0):
  """He-normal kernels, zero biases, unit BatchNorm: the initialisers' effect
  without running them (eager `init` of a DRN is slow on CPU)."""
  shapes = jax.eval_shape(lambda: model.init({'params': jax.random.key(0)},
                                             jnp.zeros((1, 16, 16, 3)), train=False))
  rng = np.random.default_rng(seed)

  def leaf(path, s):
    name = path[-1].key
    if name == 'kernel':
      return (rng.normal(size=s.shape) * np.sqrt(2.0 / np.prod(s.shape[:-1]))).astype(np.float32)
    if name in ('scale', 'var'):
      return np.ones(s.shape, np.float32)
    return np.zeros(s.shape, np.float32)

  return {k: jax.tree_util.tree_map_with_path(leaf, shapes[k]) for k in ('params', 'batch_stats')}


def _scene(rng, height, width):
  """A few coloured rectangles on a gradient, with noise: varied uncertainty."""
  y, x = np.mgrid[:height, :width]
  image = np.stack([x / width, y / height, 0.5 + 0 * x], -1) * rng.uniform(0.3, 1.0, 3) * 255
  for _ in range(rng.integers(2, 7)):
    y0, x0 = rng.integers(0, height - 8), rng.integers(0, width - 8)
    image[y0:y0 + rng.integers(6, 30), x0:x0 + rng.integers(6, 50)] = rng.uniform(0, 255, 3)
  image += rng.normal(0, rng.uniform(2, 30), image.shape)
  return np.clip(image, 0, 255).astype(np.uint8)


def _write_folder(folder):
  os.makedirs(folder)
  rng = np.random.default_rng(7)
  for name in GOOD:
    size = (40, 100) if name == 'odd.png' else (H, W)
    Image.fromarray(_scene(rng, *size)).save(os.path.join(folder, name), quality=95)
  with open(os.path.join(folder, 'broken.jpg'), 'wb') as f:
    f.write(b'this is not a JPEG')
  buffer = Image.fromarray(_scene(rng, H, W))
  buffer.save(os.path.join(folder, 'full.png'))
  with open(os.path.join(folder, 'full.png'), 'rb') as f:
    data = f.read()
  os.remove(os.path.join(folder, 'full.png'))
  with open(os.path.join(folder, 'truncated.png'), 'wb') as f:
    f.write(data[:len(data) // 2])
  with open(os.path.join(folder, 'notes.txt'), 'w') as f:
    f.write('not an image; ignored')


def _network_input(path):
  """The image as the network sees it: RGB, bilinearly resized to H x W."""
  im = Image.open(path).convert('RGB')
  if im.size != (W, H):
    im = im.resize((W, H), Image.BILINEAR)
  return np.asarray(im)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp('score')
  model = models.DRNSeg(arch='drn_d_22', num_classes=5, width_multiplier=0.25,
                        dropout_placement='head', dropout_rate=0.5)
  ckpt = os.path.join(root, 'model')
  checkpoint.save_model(ckpt, he_variables(model),
                        checkpoint.meta_for(model, mean=MEAN, std=STD, image_size=[H, W]))
  folder = os.path.join(root, 'images')
  _write_folder(folder)
  model, variables, meta = checkpoint.load_model(ckpt)

  # The reference: the library's own scoring functions called directly, all
  # images in one batch.
  images = np.stack([_network_input(os.path.join(folder, n)) for n in GOOD])
  x = (images / 255.0 - np.array(MEAN)) / np.array(STD)
  ids = np.array([folder_scoring.image_id(n) for n in GOOD], np.int32)
  forward = jax.jit(functools.partial(uncertainty.mc_forward, model.apply, passes=PASSES,
                                      measures=('mc_variance', 'entropy')))
  maps = forward(variables, jnp.asarray(x, jnp.float32), jax.random.key(0), image_ids=ids)
  ref = {m: np.asarray(uncertainty.image_scores(v)) for m, v in maps.items()}
  return dict(model=model, variables=variables, meta=meta, ckpt=ckpt, folder=folder,
              images=images, maps=np.asarray(maps['mc_variance']), ref=ref, root=root)


def _config(**kw):
  base = dict(strategy='mc_variance', size=(H, W), mc_passes=PASSES, batch_size=4,
              n_segments=SEGMENTS, progress=False, workers=2)
  return folder_scoring.ScoreConfig(**{**base, **kw})


def _read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope='module')
def superpixel_run(setup, tmp_path_factory):
  out = str(tmp_path_factory.mktemp('sp_out'))
  handler = _Collect()
  logging.getLogger().addHandler(handler)
  try:
    result = folder_scoring.score_folder(setup['model'], setup['variables'], setup['meta'],
                                  setup['folder'], out,
                                  _config(unit='superpixel', budget=BUDGET), log=lambda s: None)
  finally:
    logging.getLogger().removeHandler(handler)
  return result, out, handler.messages


class _Collect(logging.Handler):

  def __init__(self):
    super().__init__(logging.WARNING)
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())


def test_ranking_follows_the_library_scores(setup, superpixel_run):
  result, out, _ = superpixel_run
  ref = setup['ref']['mc_variance']
  expected = [GOOD[i] for i in np.argsort(-ref, kind='stable')]
  assert result['ranking'] == expected
  rows = _read_csv(os.path.join(out, 'ranking.csv'))
  assert list(rows[0]) == ['name', 'entropy_value']
  assert [r['name'] for r in rows] == expected
  np.testing.assert_allclose([float(r['entropy_value']) for r in rows], np.sort(ref)[::-1],
                             rtol=1e-4)
  # scores.csv: every measure of every readable image, at its own size.
  scores = {r['name']: r for r in _read_csv(os.path.join(out, 'scores.csv'))}
  assert sorted(scores) == sorted(GOOD)
  assert set(uncertainty.MEASURES) <= set(scores['a.png'])
  assert (scores['odd.png']['height'], scores['odd.png']['width']) == ('40', '100')
  for i, name in enumerate(GOOD):
    assert float(scores[name]['entropy']) == pytest.approx(setup['ref']['entropy'][i], rel=1e-4)
    assert float(scores[name]['mc_variance']) == pytest.approx(ref[i], rel=1e-4)
  # A map per readable image: the image beside its heat map.
  maps = sorted(os.listdir(os.path.join(out, 'maps')))
  assert maps == sorted(os.path.splitext(n)[0] + '.png' for n in GOOD)
  heat = np.asarray(Image.open(os.path.join(out, 'maps', 'a.png')))
  assert heat.shape[0] == H and heat.shape[1] > 2 * W
  np.testing.assert_array_equal(heat[:, :W], setup['images'][0])


def test_image_budget_limits_the_ranking(setup, tmp_path):
  result = folder_scoring.score_folder(setup['model'], setup['variables'], setup['meta'],
                                setup['folder'], str(tmp_path),
                                _config(budget=2, write_maps=False),
                                log=lambda s: None)
  ref = setup['ref']['mc_variance']
  assert result['ranking'] == [GOOD[i] for i in np.argsort(-ref)[:2]]
  assert len(_read_csv(os.path.join(tmp_path, 'ranking.csv'))) == 2
  assert not os.path.exists(os.path.join(tmp_path, 'maps'))


def test_unreadable_files_are_named_and_skipped(superpixel_run):
  result, out, warnings = superpixel_run
  assert sorted(n for n, _ in result['unreadable']) == sorted(BAD)
  assert result['scored'] == len(GOOD)
  text = '\n'.join(warnings)
  assert all(name in text for name in BAD)
  assert 'notes.txt' not in text


def _reference_choice(setup):
  """Top BUDGET (image, superpixel) pairs by mean mc_variance, by NumPy."""
  candidates = []
  for i, image in enumerate(setup['images']):
    seg = superpixels.watershed(image, n_segments=SEGMENTS)
    sums = np.bincount(seg.ravel(), weights=setup['maps'][i].ravel().astype(np.float64))
    means = sums / np.bincount(seg.ravel())
    candidates += [(-m, i, s) for s, m in enumerate(means)]
  return [(GOOD[i], s) for _, i, s in sorted(candidates)[:BUDGET]]


def _rasterise(polygons, shape):
  mask = np.zeros(shape, bool)
  for p in polygons:
    xy = np.asarray(p).reshape(-1, 2)
    rr, cc = skimage.draw.polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, shape)  # COCO -> centres.
    mask[rr, cc] ^= True
  return mask


def test_superpixels_chosen_over_the_folder(setup, superpixel_run):
  result, out, _ = superpixel_run
  assert result['chosen'] == _reference_choice(setup)
  rows = _read_csv(os.path.join(out, 'superpixels.csv'))
  assert [(r['name'], int(r['superpixel'])) for r in rows] == result['chosen']
  scores = [float(r['score']) for r in rows]
  assert scores == sorted(scores, reverse=True)


def test_pre_annotations_match_the_chosen_superpixels(setup, superpixel_run):
  result, out, _ = superpixel_run
  with open(os.path.join(out, 'annotations.json')) as f:
    coco = json.load(f)
  assert coco['categories'] == [{'id': 1, 'name': 'unlabelled', 'supercategory': 'superpixel'}]
  images = {im['id']: im for im in coco['images']}
  assert sorted(im['file_name'] for im in images.values()) == sorted(GOOD)
  assert len(coco['annotations']) == len(result['chosen']) == BUDGET
  chosen_by_image = {}
  for name, s in result['chosen']:
    chosen_by_image.setdefault(name, set()).add(s)
  assert sorted(os.listdir(os.path.join(out, 'masks'))) == sorted(
      os.path.splitext(n)[0] + '.png' for n in chosen_by_image)
  for ann in coco['annotations']:
    image = images[ann['image_id']]
    name, s = image['file_name'], ann['superpixel']
    assert ann['category_id'] == 1 and s in chosen_by_image[name]
    id_mask = np.asarray(Image.open(os.path.join(out, 'masks', os.path.splitext(name)[0] + '.png')))
    assert id_mask.shape == (image['height'], image['width'])
    region = id_mask == s + 1
    if name != 'odd.png':  # At the network size: exactly the watershed superpixel.
      seg = superpixels.watershed(setup['images'][GOOD.index(name)], n_segments=SEGMENTS)
      np.testing.assert_array_equal(region, seg == s)
      assert set(np.unique(id_mask)) == {0} | {c + 1 for c in chosen_by_image[name]}
    drawn = _rasterise(ann['segmentation'], region.shape)
    iou = np.sum(drawn & region) / np.sum(drawn | region)
    assert iou > 0.95, (name, s, iou)
    assert ann['area'] == int(region.sum())


def test_bad_configurations_are_user_errors(setup, tmp_path):
  run = lambda **kw: folder_scoring.score_folder(setup['model'], setup['variables'], setup['meta'],
                                          setup['folder'], str(tmp_path), _config(**kw))
  with pytest.raises(UserError, match='unknown strategy'):
    run(strategy='loss_prediction')
  with pytest.raises(UserError, match='budget'):
    run(unit='superpixel', budget=0)
  with pytest.raises(UserError, match='multiples of 8'):
    run(size=(60, 128))
  no_dropout = setup['model'].clone(dropout_placement='none')
  with pytest.raises(UserError, match='needs MC dropout'):
    folder_scoring.score_folder(no_dropout, setup['variables'], setup['meta'], setup['folder'],
                         str(tmp_path), _config())
  with pytest.raises(UserError, match='no folder'):
    folder_scoring.list_images(os.path.join(tmp_path, 'missing'))
  assert folder_scoring.measure_of('mc_entropy') == 'mc_mean_entropy'
  assert folder_scoring.measure_of('softmax_entropy') == 'entropy'


def test_output_stems_keep_names_apart():
  assert folder_scoring.output_stems(['a.jpg', 'a.png', 'b.jpeg']) == {
      'a.jpg': 'a.jpg', 'a.png': 'a.png', 'b.jpeg': 'b'}


def _cli(*args):
  return subprocess.run([sys.executable, '-m', 'launch.score', *args], capture_output=True,
                        text=True, check=False, cwd=ROOT)


def test_cli_empty_folder_is_one_line_and_exit_1(tmp_path):
  os.makedirs(os.path.join(tmp_path, 'empty'))
  result = _cli(f'--checkpoint={tmp_path}/none', f'--images={tmp_path}/empty',
                f'--out={tmp_path}/out')
  assert result.returncode == 1
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and 'holds no .jpg' in lines[0] and 'empty' in lines[0]


def test_cli_nothing_readable_exits_non_zero(setup, tmp_path):
  folder = os.path.join(tmp_path, 'bad')
  os.makedirs(folder)
  for name in ('x.jpg', 'y.png'):
    with open(os.path.join(folder, name), 'wb') as f:
      f.write(b'garbage')
  result = _cli(f'--checkpoint={setup["ckpt"]}', f'--images={folder}', f'--out={tmp_path}/out',
                '--noprogress')
  assert result.returncode == 1
  assert 'none of the 2 image files' in result.stderr and 'x.jpg' in result.stderr


@pytest.mark.slow
def test_cli_scores_a_converted_checkpoint(setup, tmp_path):
  # launch.convert's layout: variables plus a partial meta (no dropout, no
  # normalisation); dropout and the network size come from flags.
  ckpt = os.path.join(tmp_path, 'converted')
  checkpoint.save_model(ckpt, jax.tree.map(np.asarray, setup['variables']),
                        {'arch': 'drn_d_22', 'num_classes': 5, 'width_multiplier': 0.25})
  out = os.path.join(tmp_path, 'out')
  result = _cli(f'--checkpoint={ckpt}', f'--images={setup["folder"]}', f'--out={out}',
                f'--resize={H}x{W}', '--dropout_placement=head', '--mc_passes=2',
                '--unit=superpixel', '--budget=5', f'--n_segments={SEGMENTS}', '--noprogress')
  assert result.returncode == 0, result.stderr
  assert 'broken.jpg' in result.stderr and 'truncated.png' in result.stderr
  ranking = _read_csv(os.path.join(out, 'ranking.csv'))
  assert sorted(r['name'] for r in ranking) == sorted(GOOD)
  with open(os.path.join(out, 'annotations.json')) as f:
    assert len(json.load(f)['annotations']) == 5
