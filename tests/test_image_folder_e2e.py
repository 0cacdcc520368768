"""The driver runs a whole experiment on a user's image folder (`image_folder:PATH`)."""

import csv
import json
import os

import jax
import numpy as np
import PIL.Image
import pytest

from segal_jax.config import ExperimentConfig
from segal_jax.data import _scenes
from segal_jax import experiment
from segal_jax.state import run_state

H, W = 64, 128
N_TRAIN, N_VAL = 24, 8


def _write_folder(root):
  """images/, labels/ (train ids), instances/ (16-bit ids), split by sub-folder.

  Returns:
    {split: {image id: (label [H, W] uint8, instance [H, W] int32)}}.
  """
  truth = {}
  for split, n, seed in (('train', N_TRAIN, 0), ('val', N_VAL, 1)):
    truth[split] = {}
    rng = np.random.default_rng(seed)
    for k in range(n):
      image, label, instance = _scenes.render_scene(rng, H, W)
      assert instance.max() < 2 ** 16
      name = f'street_{k:02d}'
      for sub, array in (('images', image), ('labels', label),
                         ('instances', instance.astype(np.uint16))):
        os.makedirs(os.path.join(root, sub, split), exist_ok=True)
        PIL.Image.fromarray(array).save(os.path.join(root, sub, split, name + '.png'))
      truth[split][f'{split}/{name}'] = (label, instance.astype(np.int32))
  return truth


def _instances_to_annotate(label, instance):
  """Distinct instances on labeled pixels: what an annotator draws for one image."""
  return len(np.unique(instance[(instance > 0) & (label != 255)]))


@pytest.mark.slow
def test_experiment_runs_end_to_end_on_an_image_folder(tmp_path):
  # About 1-2 min on 2 CPU cores (compiling dominates).
  root = str(tmp_path / 'my_data')
  truth = _write_folder(root)
  config = ExperimentConfig(
      dataset='image_folder:' + root, dataset_config='', width_multiplier=0.25,
      train_epochs=1, train_min_steps=2, train_batch_size=4, train_crop=(32, 64),
      eval_batch_size=8, al_initial=6, al_budget=4, al_cycles=2, mc_passes=2,
      # Cost in labeled instances, the rule `_instances_to_annotate` computes
      # (the study's rule, void included, is checked in tests/test_oracle.py
      # and on the fake Cityscapes zips).
      al_cost_rule='instances',
      progress=False, data_dir=str(tmp_path / 'tfds'))
  workdir = str(tmp_path / 'work')
  logs = []
  records = experiment.run(config, workdir, log=logs.append)

  assert any(f'{N_TRAIN} train, {N_VAL} val images of {H}x{W}' in line for line in logs)
  train_ids = sorted(truth['train'])  # the split is in image-id order
  cost = {i: _instances_to_annotate(*truth['train'][name]) for i, name in enumerate(train_ids)}
  assert {r['strategy'] for r in records} == set(config.al_strategies)
  for strategy in config.al_strategies:
    run_dir = experiment.run_dir(workdir, strategy, 0)
    with open(os.path.join(run_dir, 'metrics.jsonl')) as f:
      saved = [json.loads(line) for line in f]
    assert saved == [r for r in records if r['strategy'] == strategy]
    assert [r['cycle'] for r in saved] == [0, 1]
    assert [r['labeled_images'] for r in saved] == [6, 10]
    for r in saved:
      assert 0.0 <= r['miou'] <= 1.0 and 0.0 <= r['pixel_acc'] <= 1.0
      assert len(r['per_class_iou']) == 19
      assert r['train_steps'] >= 2

    # The selection CSV names 4 training images (the SuperAnnotate format)...
    with open(os.path.join(run_dir, 'selection_cycle01.csv')) as f:
      rows = list(csv.reader(f))
    assert rows[0] == ['name', 'entropy_value']
    chosen = [name for name, _ in rows[1:]]
    assert len(chosen) == 4 == len(set(chosen)) and set(chosen) <= set(train_ids)
    scores = [float(s) for _, s in rows[1:]]
    assert scores == sorted(scores, reverse=True)
    # ... which are exactly the images added to the labeled set for cycle 1.
    labeled = run_state.load_run_state(run_dir, config.fingerprint()).pool['full']
    assert len(labeled) == 10 and {train_ids[i] for i in labeled} >= set(chosen)
    initial = [i for i in labeled if train_ids[i] not in chosen]
    assert saved[0]['cost_instances'] == sum(cost[i] for i in initial)
    assert saved[1]['cost_instances'] == sum(cost[i] for i in labeled)

  with open(os.path.join(workdir, 'environment.json')) as f:
    env = json.load(f)
  assert env['packages']['jax'] == jax.__version__ and env['devices'] == jax.device_count()
  for name in ('config.json', 'environment.json', 'results.md', 'miou_vs_images.png',
               'miou_vs_cost.png'):
    assert os.path.exists(os.path.join(workdir, name)), name
