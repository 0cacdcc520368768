"""The run plan (--dry_run): per-cycle counts by hand, and the command on fake Cityscapes."""

import dataclasses
import os
import re
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

from segal_jax import config as config_lib
from segal_jax.errors import UserError
from segal_jax import plan
from tests import test_cli_errors
from tests.data import test_cityscapes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY = config_lib.ExperimentConfig(dataset='cityscapes', dataset_config='full',
                                    al_strategies=('mc_variance',))


def test_superpixels_score_the_whole_pool_every_cycle():
  config = dataclasses.replace(STUDY, al_unit='superpixel', al_budget=4755)
  cycles = plan.cycles(config, 'mc_variance', 2975)
  assert len(cycles) == 10
  # By hand: 150 images at batch 8 = 18 steps an epoch; from cycle 1 on, as
  # many as every image of the pool (371 steps an epoch).
  assert [(c.labeled_images, c.train_steps) for c in cycles[:2]] == [(150, 4500),
                                                                     (2975, 92750)]
  for c in cycles[:-1]:
    assert (c.scored_images, c.scored_units, c.passes, c.buy) == (2825, 282500, 10, 4755)
  assert (cycles[-1].scored_images, cycles[-1].buy) == (0, 0)
  subset = plan.cycles(dataclasses.replace(config, sp_candidate_factor=3), 'mc_variance', 2975)
  assert subset[0].scored_images == 3 * 48  # ceil(4755 / 100) images needed


def test_image_units_score_three_times_the_budget():
  cycles = plan.cycles(STUDY, 'mc_variance', 2975)
  assert [c.labeled_images for c in cycles] == list(range(150, 1501, 150))
  assert [c.train_steps for c in cycles[:2]] == [250 * 18, 250 * 37]
  assert all((c.scored_images, c.passes, c.buy) == (450, 10, 150) for c in cycles[:-1])
  assert plan.cycles(STUDY, 'softmax_entropy', 2975)[0].passes == 1
  assert plan.cycles(STUDY, 'random', 2975)[0].scored_images == 0
  full = plan.cycles(STUDY, 'full', 2975)
  assert [(c.labeled_images, c.train_steps) for c in full] == [(2975, 250 * 371)]


def test_cost_budgets_plan_al_budget_units_a_cycle():
  # 6,000 clicks buy about 25 images: the plan trains on 50, 75, 100.
  config = dataclasses.replace(STUDY, al_initial=50, al_budget=25, al_budget_cost=6000,
                               al_cycles=3, train_epochs=50)
  cycles = plan.cycles(config, 'mc_variance', 1000)
  # By hand at batch 8, whole batches: 6, 9 and 12 steps an epoch.
  assert [(c.labeled_images, c.train_steps) for c in cycles] == [(50, 300), (75, 450),
                                                                 (100, 600)]
  assert [c.buy for c in cycles] == [6000, 6000, 0]


@pytest.fixture(scope='module')
def fake_tree(tmp_path_factory):
  """A directory to run in: configs/, a Cityscapes zip pair of 160 training
  images (the configs label 150 first) and, apart, an ImageNet-shaped trunk."""
  root = tmp_path_factory.mktemp('dry')
  os.symlink(os.path.join(ROOT, 'configs'), root / 'configs')
  layout = [('train', 'aachen', 160), ('val', 'frankfurt', 1), ('test', 'berlin', 1)]
  test_cityscapes.make_zips(str(root / 'tfds' / 'downloads' / 'manual'), layout=layout)
  return root


def _dry_run(cwd, *extra):
  env = {**os.environ, 'PYTHONPATH': ROOT}
  return subprocess.run(
      [sys.executable, '-m', 'launch.run',
       '--flagfile=configs/cityscapes/superpixel_mc_variance.flags', '--dry_run',
       f'--data_dir={cwd}/tfds', *extra], cwd=cwd, env=env, capture_output=True, text=True,
      timeout=900, check=False)


@pytest.mark.slow
def test_dry_run_without_the_checkpoint_is_one_line(fake_tree):
  result = _dry_run(fake_tree)
  assert result.returncode == 1, result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: ')
  assert 'launch.convert --source=drn_d_22-4bd2f8ea.pth' in lines[0]
  assert 'checkpoints/drn_d_22_imagenet' in lines[0] and 'dl.yf.io' in lines[0]
  assert not os.path.exists(fake_tree / 'tfds' / 'cityscapes')  # nothing built


@pytest.mark.slow
def test_dry_run_prints_the_plan_of_the_cityscapes_config(fake_tree):
  # The path the config names, relative to where the command runs.
  test_cli_errors._model_checkpoint(  # pylint: disable=protected-access
      str(fake_tree / 'checkpoints' / 'drn_d_22_imagenet'), width=1.0)
  result = _dry_run(fake_tree)
  assert result.returncode == 0, result.stderr
  out = result.stdout
  assert 'pool of 160 images' in out and 'init: checkpoints/drn_d_22_imagenet' in out
  cycles = re.findall(r'cycle (\d+): train on (?:at most )?(\d+) images.*', out)
  assert [int(c) for c, _ in cycles] == list(range(10))
  # Every cycle but the last scores every open image (160 - 150) and all its superpixels.
  scored = re.findall(r'score up to (\d+) units in up to (\d+) images x 10 passes; '
                      r'buy 4755 superpixels', out)
  assert scored == [('1000', '10')] * 9
  steps, per_step, total = re.search(
      r'(\d+) training steps x ([\d.e+]+) FLOPs a step = ([\d.e+]+) FLOPs', out).groups()
  assert float(per_step) > 1e12  # DRN-D-22 on 8 crops of 896 x 896: trillions
  assert float(total) == pytest.approx(int(steps) * float(per_step), rel=1e-2)
  assert not os.path.exists(fake_tree / 'tfds' / 'cityscapes')  # nothing built


def test_check_data_builds_nothing(tmp_path):
  from segal_jax.data import cityscapes  # pylint: disable=g-import-not-at-top
  config = dataclasses.replace(STUDY, data_dir=str(tmp_path))
  with pytest.raises(UserError) as e:  # no zips: the data set's own message
    plan.check_data(config)
  assert cityscapes.IMAGES_ZIP in str(e.value)
  test_cityscapes.make_zips(str(tmp_path / 'downloads' / 'manual'))
  where, pool = plan.check_data(config)
  assert pool == 2 and 'source zips' in where
  assert sorted(os.listdir(tmp_path)) == ['downloads']
  synthetic = config_lib.ExperimentConfig(dataset='synthetic_city', dataset_config='tiny')
  assert plan.check_data(synthetic)[1] == 64
  folder = tmp_path / 'mine'
  for sub in ('images', 'labels'):
    (folder / sub).mkdir(parents=True)
  for k in range(5):
    for sub in ('images', 'labels'):
      PIL.Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / sub / f'{k}.png')
  mine = dataclasses.replace(synthetic, dataset=f'image_folder:{folder}',
                             dataset_config='val_fraction=0.2')
  assert plan.check_data(mine)[1] == 4  # 5 images, one for validation
  assert not os.path.exists(tmp_path / 'image_folder')


def test_label_cycles_plan_no_purchase_after_them():
  config = dataclasses.replace(STUDY, al_cycles=5, al_label_cycles=3, al_initial=10,
                               al_budget=10)
  cycles = plan.cycles(config, 'random', 100)
  assert [c.labeled_images for c in cycles] == [10, 20, 30, 40, 40]
  assert [c.buy for c in cycles] == [10, 10, 10, 0, 0]


def test_duration_by_hand():
  assert [plan.duration(s) for s in (40, 600, 4 * 3600 + 1800)] == ['40 s', '10 min', '4.5 h']


def test_first_cycle_note_warns_of_hours_on_a_cpu(tmp_path, monkeypatch):
  folder = tmp_path / 'photos'
  test_cli_errors._image_folder(str(folder))  # 4 labeled images
  config = config_lib.ExperimentConfig(dataset=f'image_folder:{folder}', dataset_config='',
                                       al_initial=2, al_budget=1, train_epochs=250)
  monkeypatch.setattr(plan, 'step_cost', lambda *a, **k: (1e9, 20.0))
  note = plan.first_cycle_note(config)
  # 2 initial images at batch 8: 1 step an epoch, 250 steps x 20 s = 83 min.
  assert note.startswith('random cycle 0: 250 training steps, about 83 min on this machine')
  assert 'configs/folder_cpu.flags' in note
  monkeypatch.setattr(plan, 'step_cost', lambda *a, **k: (1e9, 0.5))
  assert 'folder_cpu' not in plan.first_cycle_note(config)


def test_people_plan_scores_the_unlabeled_images_of_the_folder(tmp_path):
  # 30 images, 6 labeled, one of them held out to validate: the first cycle
  # trains on 5 and scores the 24 unlabeled, whatever --al_initial says (the
  # README's round once planned to score none).
  folder = tmp_path / 'crops'
  for sub in ('images', 'labels'):
    (folder / sub).mkdir(parents=True)
  for k in range(30):
    PIL.Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / 'images' / f'{k:02d}.png')
    if k < 6:
      PIL.Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / 'labels' / f'{k:02d}.png')
  config = config_lib.ExperimentConfig(dataset=f'image_folder:{folder}', dataset_config='',
                                       al_annotator='human', al_strategies=('mc_variance',),
                                       al_initial=150, al_budget=4, al_cycles=2, mc_passes=5,
                                       al_candidate_factor=0)
  text = plan.describe(config, flops=False, timed=False)
  assert 'pool of 29 images' in text and 'cycle 0: train on 5 images' in text
  assert 'score 24 units in 24 images x 5 passes; buy 4 images' in text
  assert 'at random' not in text
