"""The annotator interface: the registry and the simulated instance-overlap annotator,
against hand-made pools and brute-force NumPy references."""

import types

import numpy as np
import pytest

from segal_jax.annotation import annotators
from segal_jax.errors import UserError
from segal_jax.state import pool as pool_lib


def _split():
  """Two 4x4 images: stuff class 0 (instance id 7) and two cars (26000, 26001)."""
  label = np.zeros((2, 4, 4), np.uint8)
  instance = np.full((2, 4, 4), 7, np.int32)
  label[:, :2, :2], instance[:, :2, :2] = 13, 26000
  label[:, 2:, 2:], instance[:, 2:, 2:] = 13, 26001
  label[1, 3, 0], instance[1, 3, 0] = 255, 0  # a void pixel
  return types.SimpleNamespace(labels=label, instances=instance)


def test_registry():
  assert isinstance(annotators.get(), annotators.InstanceOverlap)
  assert annotators.get('instance_overlap') is annotators.ANNOTATORS['instance_overlap']
  with pytest.raises(UserError, match='unknown annotator'):
    annotators.get('people')


def test_instance_overlap_costs_labels_and_superpixels():
  ann, split = annotators.get(rule='instances'), _split()
  np.testing.assert_array_equal(ann.image_costs(split), [3, 3])  # road + two cars
  # The study's rule also pays for image 1's void id 0.
  np.testing.assert_array_equal(annotators.get().image_costs(split), [3, 4])
  pool = pool_lib.PoolLabels()
  ann.annotate_images(pool, split, [1])
  segments = np.zeros((2, 4, 4), np.int32)
  segments[:, :, 2:] = 1  # superpixel 1: the right half
  # Superpixel 1 touches road and the right car; superpixel 0 road and the left car.
  table = ann.superpixel_ids(split, segments, 0)
  assert {k: v.tolist() for k, v in table.items()} == {0: [7, 26000], 1: [7, 26001]}
  assert ann.annotate_superpixels(pool, split, segments, {0: [1]}) == 2
  assert pool.chosen == {0: [1]} and pool.annotated == {0: [7, 26001]}
  assert pool.paid == {0: [7, 26001]}
  assert ann.cost(pool, ann.image_costs(split)) == 3 + 2
  # Superpixel 1 can add no label any more; superpixel 0 still holds the left car.
  assert ann.addable_superpixels(pool, split, segments, 0, 3).tolist() == [True, False, False]
  got = ann.labels(pool, split, np.array([0, 1]))
  # Image 1 is labeled whole; image 0 carries road and the right car, 255 elsewhere.
  want0 = np.where(split.instances[0] == 26000, 255, split.labels[0])
  np.testing.assert_array_equal(got[0], want0)
  np.testing.assert_array_equal(got[1], split.labels[1])


def test_whole_touched_buys_the_images_of_ranked_superpixels_whole():
  from segal_jax.annotation import oracle  # pylint: disable=g-import-not-at-top
  ann, split = annotators.get('whole_touched', rule='instances'), _split()
  assert isinstance(ann, annotators.WholeTouched) and ann.cost_rule == 'instances'
  segments = np.zeros((2, 4, 4), np.int32)
  segments[:, :, 2:] = 1
  # Every superpixel pays for its whole image: road and both cars.
  table = ann.superpixel_ids(split, segments, 0)
  assert {k: v.tolist() for k, v in table.items()} == {0: [7, 26000, 26001],
                                                      1: [7, 26000, 26001]}
  # Ranked: image 0's superpixel 1, image 0's superpixel 0, image 1's superpixel 0.
  # A budget of 4 takes image 0 (3), its second superpixel free, then image 1 (3) no longer fits.
  units = [(0, table[1]), (0, table[0]), (1, ann.superpixel_ids(split, segments, 1)[0])]
  taken, costs = oracle.fill_budget(units, 4)
  assert taken == [0, 1] and costs == [3, 0]
  pool = pool_lib.PoolLabels()
  assert ann.annotate_superpixels(pool, split, segments, {0: [1, 0]}) == 3
  assert pool.full == [0] and pool.chosen == {0: [0, 1]} and pool.annotated == {}
  assert ann.cost(pool, ann.image_costs(split)) == 3
  np.testing.assert_array_equal(ann.labels(pool, split, np.array([0]))[0], split.labels[0])
  assert ann.labeled_counts(pool, split, [0]) == (16, 3)
  # Superpixels only: it labels images through their superpixels.
  config = types.SimpleNamespace(al_protocol='whole_touched', al_unit='image')
  with pytest.raises(UserError, match='labels superpixels'):
    annotators.check_config(config)


def test_unknown_cost_rule():
  with pytest.raises(UserError, match='cost rule'):
    annotators.get(rule='pixels')


# --- cost rules on the oracle's hand map: same labels, different ids paid ---

def _hand():
  from tests import test_oracle as hand  # pylint: disable=g-import-not-at-top
  split = types.SimpleNamespace(labels=np.stack([hand.LABEL] * 2),
                                instances=np.stack([hand.INSTANCE] * 2))
  return split, np.stack([hand.SEGMENTS] * 2)


def test_cost_rules_pay_different_ids_for_the_same_labels():
  split, segments = _hand()
  study_ann, instances_ann = annotators.get(rule='study'), annotators.get(rule='instances')
  study, instances = pool_lib.PoolLabels(full=[0]), pool_lib.PoolLabels(full=[0])
  # Superpixels 4 and 5 touch ids {0, 26002} and {1, 7} (hand-read): the study
  # pays for all four, the instance rule for car 2 and road only.
  assert study_ann.annotate_superpixels(study, split, segments, {1: [4, 5]}) == 4
  assert instances_ann.annotate_superpixels(instances, split, segments, {1: [4, 5]}) == 2
  assert study.annotated == instances.annotated == {1: [7, 26002]}
  np.testing.assert_array_equal(study_ann.labels(study, split, np.array([1])),
                                instances_ann.labels(instances, split, np.array([1])))
  whole = np.array([6, 6])  # cost of a whole image, the study's rule
  assert study_ann.cost(study, whole) == 6 + 4
  # Touching an id again costs nothing; superpixel 3 (road) adds nothing new.
  assert study_ann.annotate_superpixels(study, split, segments, {1: [3]}) == 0
  restored = pool_lib.PoolLabels.from_json(study.to_json())
  assert restored == study


def test_labeled_counts():
  split, segments = _hand()
  ann = annotators.get()
  pool = pool_lib.PoolLabels(full=[0])
  ann.annotate_superpixels(pool, split, segments, {1: [4]})
  # Image 0: every non-void pixel (21) and its 4 instances; image 1: car 2 (2 pixels).
  assert ann.labeled_counts(pool, split, [0]) == (21, 4)
  assert ann.labeled_counts(pool, split, [1]) == (2, 1)
  assert ann.labeled_counts(pool, split, []) == (0, 0)


def test_people_under_the_protocol_interface():
  """People charge one per unit, count no clicks, add no noise and are chosen
  only by --al_annotator=human, never as a protocol."""
  people, split = annotators.get(annotators.HUMAN), _split()
  pool = pool_lib.PoolLabels(full=[0])
  assert people.annotate_superpixels(pool, split, np.zeros((2, 4, 4), np.int32),
                                     {1: [0, 3]}) == 2
  costs = np.ones(2, np.int64)  # people.image_costs of a two-image split
  assert people.cost(pool, costs, split) == people.cost(pool, costs) == 1 + 2
  assert people.clicks(pool, split, {}) == 0
  assert people.prices(split, 1) is None and people.min_price == 1
  assert people.expected_clicks(np.zeros((4, 4), np.uint8), None) == 1.0
  np.testing.assert_array_equal(
      people.expected_clicks(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.int32), 3),
      [1.0, 1.0, 1.0])
  bound = people.bind(seed=3, segments=None)
  assert isinstance(bound, annotators.People) and not bound.noise.active
  with pytest.raises(UserError, match='al_annotator=human'):
    annotators.check_config(types.SimpleNamespace(al_protocol='human', al_unit='image'))


@pytest.mark.slow
def test_whole_touched_run_labels_only_whole_images_within_the_budget(tmp_path):
  import dataclasses  # pylint: disable=g-import-not-at-top
  from segal_jax import experiment  # pylint: disable=g-import-not-at-top
  from tests import test_loop  # pylint: disable=g-import-not-at-top
  config = dataclasses.replace(test_loop.TINY, data_dir=str(tmp_path / 'tfds'),
                               al_unit='superpixel', al_protocol='whole_touched',
                               al_cost_rule='instances', al_strategies=('random',),
                               al_initial=4, al_budget_cost=40, al_cycles=3, sp_segments=20,
                               sp_workers=1)
  records = experiment.run(config, str(tmp_path / 'run'), log=lambda *_: None)
  _, _, costs = experiment.load_data(config)
  assert [r['unit'] for r in records] == ['superpixel/whole_touched'] * 3
  for r in records[:2]:
    assert 0 < r['new_cost'] <= 40 and r['new_instances'] == r['new_cost']
  for before, after in zip(records, records[1:]):
    assert after['full_images'] > before['full_images']
    assert after['labeled_images'] == after['full_images']  # nothing partly labeled
    assert after['cost_instances'] - before['cost_instances'] == before['new_cost']
