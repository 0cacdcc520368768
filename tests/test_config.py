"""Configuration validation (`config.validate` and the checks `experiment.validate`
adds): each bad value is one clear UserError."""

import dataclasses

import pytest

from segal_jax import config as config_lib
from segal_jax.errors import UserError
from segal_jax import experiment

BASE = config_lib.ExperimentConfig()


@pytest.mark.parametrize('change, pattern', [
    ({'dropout_placement': 'tail'}, 'dropout_placement'),
    ({'arch': 'drn_x_99'}, 'arch'),
    ({'al_strategies': ('random', 'nope')}, 'unknown strategy'),
    ({'al_strategies': ()}, 'al_strategies'),
    ({'al_seeds': ()}, 'al_seeds'),
    ({'mc_passes': 0}, 'mc_passes'),
    ({'train_batch_size': 0}, 'train_batch_size'),
    ({'al_budget': -1}, 'al_budget'),
    ({'train_lr': 0.0}, 'train_lr'),
    ({'dropout_rate': 1.0}, 'dropout_rate'),
    ({'output_stride': 16}, 'output_stride=16 is not supported; use 8'),
    ({'train_crop': (4, 8)}, 'train_crop'),
    ({'dropout_placement': 'none'}, 'needs MC dropout'),
    ({'al_unit': 'pixel'}, 'al_unit'),
    ({'stop_holdout': 1.0}, 'stop_holdout'),
    ({'stop_patience': 0}, 'stop_patience'),
    ({'stop_min_delta': -0.1}, 'stop_min_delta'),
    ({'al_protocol': 'lasso'}, 'unknown annotator'),
    ({'al_protocol': 'points'}, 'labels superpixels'),
    ({'al_rank': 'cheapest'}, 'al_rank'),
    ({'noise_flip': 1.5}, 'noise_flip'),
    ({'noise_erode': -1}, 'noise_erode'),
    ({'train_sampling': 'pixels'}, 'train_sampling'),
])
def test_invalid_values(change, pattern):
  with pytest.raises(UserError, match=pattern):
    experiment.validate(dataclasses.replace(BASE, **change))


def test_budget_larger_than_pool():
  with pytest.raises(UserError, match='100 images of the pool'):
    experiment.validate(BASE, pool_size=100)
  experiment.validate(BASE, pool_size=150 + 9 * 150)


def test_none_dropout_allowed_for_random():
  experiment.validate(dataclasses.replace(BASE, dropout_placement='none',
                                          al_strategies=('random',)))


def test_fingerprint_ignores_strategies_and_outputs():
  a = dataclasses.replace(BASE, al_strategies=('random',), progress=False)
  assert a.fingerprint() == BASE.fingerprint()
  assert dataclasses.replace(BASE, train_lr=0.02).fingerprint() != BASE.fingerprint()


def test_fingerprint_of_runs_before_the_protocol_flags_is_kept():
  # The protocol, ordering and noise flags enter the fingerprint only when set.
  fields = config_lib.ExperimentConfig().defining_dict()
  assert not {'al_protocol', 'al_rank', 'noise_flip', 'noise_erode'} & set(fields)
  for change in ({'al_protocol': 'image_polygons'}, {'al_rank': 'score_per_click'},
                 {'noise_flip': 0.1}, {'noise_erode': 1}):
    assert dataclasses.replace(BASE, **change).fingerprint() != BASE.fingerprint()


def test_first_cycle_fingerprint_ignores_only_what_is_bought_after_it():
  # Flagfiles differing in unit, protocol, budget or ordering share a first cycle ...
  for change in ({'al_unit': 'superpixel'}, {'al_protocol': 'dominant_label'},
                 {'al_budget_cost': 6000, 'al_cost_rule': 'clicks'}, {'al_cycles': 3},
                 {'al_rank': 'score_per_click'}, {'al_diversity': 'kcenter'},
                 {'al_class_balance': True}, {'mc_passes': 20}, {'sp_segments': 50},
                 {'al_shared_dir': '/elsewhere'}, {'al_strategies': ('bald',)}):
    other = dataclasses.replace(BASE, **change)
    assert other.first_cycle_fingerprint() == BASE.first_cycle_fingerprint(), change
  # ... but not those that change the initial set, its labels or the training.
  for change in ({'al_initial': 50}, {'noise_flip': 0.1}, {'noise_erode': 1},
                 {'train_lr': 0.02}, {'train_min_steps': 800}, {'dataset_config': 'bench'}):
    other = dataclasses.replace(BASE, **change)
    assert other.first_cycle_fingerprint() != BASE.first_cycle_fingerprint(), change
  assert BASE.first_cycle_fingerprint('masks') != BASE.first_cycle_fingerprint('classes')


def test_missing_init_checkpoint_names_the_two_commands(tmp_path):
  path = str(tmp_path / 'checkpoints' / 'drn_d_22_imagenet')
  with pytest.raises(UserError) as e:
    experiment.validate(dataclasses.replace(BASE, init_checkpoint=path))
  message = str(e.value)
  assert '\n' not in message and path in message
  assert 'http://dl.yf.io/drn/drn_d_22-4bd2f8ea.pth' in message
  assert (f'python -m launch.convert --source=drn_d_22-4bd2f8ea.pth --arch=drn_d_22 '
          f'--out={path}') in message


def test_cityscapes_configs_start_from_the_imagenet_trunk():
  import os  # pylint: disable=g-import-not-at-top
  root = os.path.join(os.path.dirname(__file__), '..', 'configs', 'cityscapes')
  with open(os.path.join(root, 'base.flags')) as f:
    assert '--init_checkpoint=checkpoints/drn_d_22_imagenet' in f.read().splitlines()


def test_cost_rule_choices_are_the_oracles():
  from segal_jax.annotation import oracle  # pylint: disable=g-import-not-at-top
  assert config_lib._CHOICES['al_cost_rule'] == oracle.COST_RULES  # pylint: disable=protected-access
  with pytest.raises(UserError, match='al_cost_rule'):
    config_lib.validate(dataclasses.replace(BASE, al_cost_rule='pixels'))


def test_annotator_choices_and_fingerprint():
  from segal_jax.annotation import annotators  # pylint: disable=g-import-not-at-top
  assert annotators.HUMAN in config_lib._CHOICES['al_annotator']  # pylint: disable=protected-access
  assert annotators.HUMAN in annotators.ANNOTATORS
  with pytest.raises(UserError, match='al_annotator'):
    config_lib.validate(dataclasses.replace(BASE, al_annotator='crowd'))
  # The default leaves the fingerprint of runs made before the field as it was.
  assert 'al_annotator' not in BASE.defining_dict()
  human = dataclasses.replace(BASE, al_annotator='human')
  assert human.fingerprint() != BASE.fingerprint()
  assert isinstance(annotators.from_config(human), annotators.People)
  assert isinstance(annotators.from_config(BASE), annotators.InstanceOverlap)


def test_negative_sp_candidate_factor():
  with pytest.raises(UserError, match='sp_candidate_factor'):
    config_lib.validate(dataclasses.replace(BASE, sp_candidate_factor=-1))


def test_label_cycles_stop_purchases_after_that_many_cycles():
  from segal_jax import loop
  every = config_lib.ExperimentConfig(al_cycles=5)
  control = dataclasses.replace(every, al_label_cycles=3)
  assert [loop.buys(every, c) for c in range(4)] == [True] * 4
  # Bought after cycles 0, 1 and 2; cycle 4 trains on cycle 3's labels.
  assert [loop.buys(control, c) for c in range(4)] == [True, True, True, False]
  # The control shares the first cycle of the run it controls, but not its fingerprint.
  assert control.first_cycle_fingerprint() == every.first_cycle_fingerprint()
  assert control.fingerprint() != every.fingerprint()
  with pytest.raises(UserError, match='al_label_cycles'):
    config_lib.validate(dataclasses.replace(every, al_label_cycles=-1))
