"""What a purchase buys: hand-made pools counted by hand, and the replay of a real run."""

import dataclasses
import json
import types

import numpy as np
import pytest

from segal_jax.annotation import annotators
from segal_jax import config as config_lib
from segal_jax.data import classes
from segal_jax.errors import UserError
from segal_jax import experiment
from segal_jax import purchases
from segal_jax.state import pool as pool_lib

ROAD, BUILDING, CAR = 0, 2, 13  # Cityscapes train ids


def _split():
  """Two 4 x 6 images: road (7) below, a car (26001), a building (11) and void above."""
  instance = np.array([[0, 0, 26001, 26001, 11, 11],
                       [0, 0, 26001, 26001, 11, 11],
                       [7, 7, 7, 7, 7, 7],
                       [7, 7, 7, 7, 7, 7]], np.int32)
  label = np.select([instance == 7, instance == 11, instance == 26001], [ROAD, BUILDING, CAR],
                    255).astype(np.uint8)
  return types.SimpleNamespace(labels=np.stack([label, label]),
                               instances=np.stack([instance, instance]),
                               num_classes=19, classes=classes.CITYSCAPES)


def test_class_pixels_counts_labeled_pixels_only():
  labels = np.array([[0, 0, 255], [2, 13, 255]], np.uint8)
  assert purchases.class_pixels(labels, 19).tolist() == [2, 0, 1] + [0] * 10 + [1] + [0] * 5


def test_a_superpixel_purchase_and_a_whole_image():
  split, annotator = _split(), annotators.get(rule='instances')
  segments = np.array([[[0, 0, 0, 1, 1, 1]] * 4] * 2, np.int32)
  before = pool_lib.PoolLabels()
  after = purchases.copy_pool(before)
  # The left half's superpixel touches the car and the road: both drawn whole.
  annotator.annotate_superpixels(after, split, segments, {0: [0]})
  row = purchases.purchase(annotator, before, after, split, split.classes.thing_ids)
  assert (row['units_bought'], row['new_instances'], row['thing_instances'],
          row['stuff_instances']) == (1, 2, 1, 1)
  assert row['new_labeled_pixels'] == 16 and row['px_road'] == 12 and row['px_car'] == 4
  assert row['thing_pixel_share'] == pytest.approx(4 / 16)
  assert row['pixels_per_thing'] == 4 and row['pixels_per_stuff'] == 12
  assert (row['images_touched'], row['images_new']) == (1, 1)
  # Then both images whole: image 0 adds its building (4 px), image 1 all 20 labeled px.
  later = purchases.copy_pool(after)
  annotator.annotate_images(later, split, [0, 1])
  row = purchases.purchase(annotator, after, later, split, split.classes.thing_ids)
  assert row['units_bought'] == 2 and row['images_touched'] == 2 and row['images_new'] == 1
  assert row['new_instances'] == 1 + 3 and row['thing_instances'] == 1
  assert row['new_labeled_pixels'] == 4 + 20 and row['px_building'] == 8
  assert before.to_json() == pool_lib.PoolLabels().to_json()  # copies, not the same pool


def test_curves_add_each_cycles_purchase_to_the_initial_pixels():
  records = [{'unit': 'superpixel', 'strategy': 'random', 'seed': 3, 'cycle': c,
              'cost_instances': 10 * (c + 1), 'labeled_images': 5, 'miou': 0.1 * c,
              'new_labeled_pixels': 100 * (c + 1)} for c in (1, 0, 2)]
  rows = purchases.curves(records, {3: 1000})
  assert [r['labeled_pixels'] for r in rows] == [1000, 1100, 1300]
  assert [r['cycle'] for r in rows] == [0, 1, 2]


def test_bad_records_directory_is_one_clear_error(tmp_path):
  with pytest.raises(UserError, match='config.json'):
    purchases.load_config(str(tmp_path))
  (tmp_path / 'config.json').write_text(json.dumps({'no_such_flag': 1}))
  with pytest.raises(UserError, match='no_such_flag'):
    purchases.load_config(str(tmp_path))

  with pytest.raises(UserError, match='different data'):
    purchases.analyze([(config_lib.ExperimentConfig(dataset_config='bench'), None),
                       (config_lib.ExperimentConfig(dataset_config='dense'), None)],
                      str(tmp_path / 'out'))
  with pytest.raises(UserError, match='nothing to analyse'):
    purchases.analyze([], str(tmp_path / 'out'))


@pytest.mark.slow
@pytest.mark.parametrize('unit', ['image', 'superpixel'])
def test_replay_matches_a_real_runs_records(tmp_path, unit):
  from tests import test_loop  # pylint: disable=g-import-not-at-top
  config = dataclasses.replace(test_loop.TINY, data_dir=str(tmp_path / 'tfds'), al_unit=unit,
                               al_strategies=('random',), al_initial=4, al_budget_cost=20,
                               al_cycles=3, sp_segments=20, sp_workers=1,
                               al_cost_rule='instances')
  workdir = str(tmp_path / 'run')
  records = experiment.run(config, workdir, log=lambda *_: None)
  assert purchases.load_config(workdir) == config
  out = purchases.analyze([(purchases.load_config(workdir), workdir)], str(tmp_path / 'out'),
                          with_geometry=True, log=lambda *_: None)
  assert out['replay_matches_records'], out['mismatches']
  bought = [r['new_instances'] for r in records if r['cycle'] < 2]
  assert bought == [p['new_instances'] for p in out['purchases']] and min(bought) > 0
  assert (tmp_path / 'out' / 'purchases.png').exists()
  assert (tmp_path / 'out' / 'geometry.json').exists()
  # Without records: the same purchases, nothing to check.
  again = purchases.analyze([(config, None)], str(tmp_path / 'again'), log=lambda *_: None)
  assert again['purchases'] == [{k: v for k, v in p.items() if not k.startswith('record_')}
                                for p in out['purchases']]
  assert again['curves'] == [] and again['replay_matches_records']
