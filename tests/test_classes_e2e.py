"""A folder with a class table of its own (classes.json) runs a whole experiment:
4 classes in the head, metrics and records named by the table, costs from
instances derived per thing class, Cityscapes weights as init (trunk only)."""

import json
import os

import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest
import skimage.measure

from segal_jax.config import ExperimentConfig
from segal_jax.data import classes
from segal_jax.errors import UserError
from segal_jax import experiment
from segal_jax import models
from segal_jax.state import checkpoint
from segal_jax.state import run_state
from tests.test_folder_scoring import he_variables

H, W = 32, 64
TABLE = {'ignore': 0, 'classes': [
    {'name': 'soil', 'color': [120, 80, 40], 'thing': False, 'value': 10},
    {'name': 'leaf', 'color': [0, 160, 0], 'thing': False, 'value': 20},
    {'name': 'rust', 'color': [200, 90, 0], 'thing': True, 'value': 30},
    {'name': 'mildew', 'color': [230, 230, 230], 'thing': True, 'value': 40}]}
VALUES = np.array([10, 20, 30, 40])


def _scene(rng):
  """(image, label PNG values, class indices with 255 = ignore) of one field photo."""
  index = np.zeros((H, W), np.uint8)
  index[:, rng.integers(16, 48):] = 1  # leaf on the right
  for cls in (2, 2, 3):  # spots: rust twice, mildew once
    r, c = rng.integers(0, H - 6), rng.integers(0, W - 6)
    index[r:r + rng.integers(3, 7), c:c + rng.integers(3, 7)] = cls
  index[:2, :2] = 255  # unlabeled corner
  colours = np.array([c['color'] for c in TABLE['classes']] + [[0, 0, 0]], np.float64)
  image = colours[np.where(index == 255, 4, index)] + rng.normal(0, 20, (H, W, 3))
  values = np.where(index == 255, 0, VALUES[np.minimum(index, 3)]).astype(np.uint8)
  return np.clip(image, 0, 255).astype(np.uint8), values, index


def _write_folder(root):
  truth = {}
  for split, n, seed in (('train', 12, 0), ('val', 4, 1)):
    rng = np.random.default_rng(seed)
    for k in range(n):
      image, values, index = _scene(rng)
      for sub, array in (('images', image), ('labels', values)):
        os.makedirs(os.path.join(root, sub, split), exist_ok=True)
        PIL.Image.fromarray(array).save(os.path.join(root, sub, split, f'{k:02d}.png'))
      truth[f'{split}/{k:02d}'] = (image, index)
  with open(os.path.join(root, 'classes.json'), 'w') as f:
    json.dump(TABLE, f)
  return truth


def _instances(index):
  """What the instances rule pays for, by hand: each stuff class present and
  each 8-connected region of a thing class."""
  stuff = sum(bool((index == c).any()) for c in (0, 1))
  return stuff + sum(skimage.measure.label(index == c, connectivity=2).max() for c in (2, 3))


@pytest.mark.slow
def test_own_classes_run_end_to_end(tmp_path):
  # About a minute on 2 CPU cores (compiling dominates).
  root = str(tmp_path / 'field')
  truth = _write_folder(root)
  cityscapes_model = models.DRNSeg(num_classes=19, width_multiplier=0.125)
  init = str(tmp_path / 'cityscapes_init')
  checkpoint.save_model(init, he_variables(cityscapes_model),
                        checkpoint.meta_for(cityscapes_model, mean=(0.5,) * 3, std=(0.2,) * 3))
  config = ExperimentConfig(
      dataset='image_folder:' + root, dataset_config='', width_multiplier=0.125,
      init_checkpoint=init, train_epochs=1, train_min_steps=2, train_batch_size=4,
      train_crop=(32, 64), eval_batch_size=4, al_strategies=('random',), al_initial=4,
      al_budget=3, al_cycles=2, al_cost_rule='instances', progress=False,
      data_dir=str(tmp_path / 'tfds'))
  workdir = str(tmp_path / 'work')
  logs = []
  records = experiment.run(config, workdir, log=logs.append)

  fresh = [line for line in logs if 'starting a fresh classifier' in line]
  assert len(fresh) == 1 and '4 classes (soil, leaf, rust, mildew)' in fresh[0], logs
  run_dir = experiment.run_dir(workdir, 'random', 0)
  train_ids = sorted(k for k in truth if k.startswith('train/'))
  state = run_state.load_run_state(run_dir, config.fingerprint())
  assert [r['labeled_images'] for r in records] == [4, 7]
  assert records[-1]['cost_instances'] == sum(
      _instances(truth[train_ids[i]][1]) for i in state.pool['full'])

  # The last cycle's model: 4 classes, the table in its meta; its validation IoU
  # per named class recomputed here with NumPy.
  model, variables, meta = checkpoint.load_model(os.path.join(run_dir, 'models', 'cycle_01'))
  table = classes.from_json(TABLE)
  assert model.num_classes == 4 and classes.from_json(meta['classes']) == table
  with pytest.raises(UserError, match='predicts 4 classes .* but the data has 19'):
    checkpoint.load_model(os.path.join(run_dir, 'models', 'cycle_01'),
                          classes=classes.CITYSCAPES)
  val = [truth[k] for k in sorted(truth) if k.startswith('val/')]
  x = np.stack([im for im, _ in val]) / 255.0
  x = (x - np.array(meta['mean'])) / np.array(meta['std'])
  pred = np.asarray(model.apply(variables, jnp.asarray(x, jnp.float32), train=False)[0]).argmax(-1)
  gt = np.stack([index for _, index in val])
  valid = gt != 255
  want = {}
  for c, name in enumerate(table.names):
    tp = np.sum((pred == c) & (gt == c) & valid)
    union = np.sum(((pred == c) | (gt == c)) & valid)
    want[name] = tp / union if union else None
  got = records[-1]['per_class']
  assert list(got) == ['soil', 'leaf', 'rust', 'mildew'] and len(records[-1]['per_class_iou']) == 4
  for name, v in want.items():
    assert (got[name] is None) == (v is None) and (v is None or got[name] == pytest.approx(v))
  with open(os.path.join(workdir, 'results.md')) as f:
    text = f.read()
  assert '| class | random |' in text and '| mildew | ' in text
  assert os.path.exists(os.path.join(workdir, 'per_class_iou.png'))
