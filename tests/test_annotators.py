"""The annotator interface: the registry and the simulated instance-overlap annotator,
against hand-made pools and brute-force NumPy references."""

import types

import numpy as np
import pytest

from segal_jax import annotators
from segal_jax import pool as pool_lib
from segal_jax.errors import UserError


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
  ann, split = annotators.get(), _split()
  np.testing.assert_array_equal(ann.image_costs(split), [3, 3])  # road + two cars
  pool = pool_lib.PoolLabels()
  ann.annotate_images(pool, split, [1])
  segments = np.zeros((2, 4, 4), np.int32)
  segments[:, :, 2:] = 1  # superpixel 1: the right half
  # Ranked (image 0, superpixel 1) then (image 0, superpixel 0): the first touches
  # road and one car; the second road (seen) and the other car.
  costs = ann.superpixel_costs(pool, split, segments, np.array([0, 0]), np.array([1, 0]))
  np.testing.assert_array_equal(costs, [2, 1])
  ann.annotate_superpixels(pool, split, segments, {0: [1]})
  assert pool.chosen == {0: [1]} and pool.annotated == {0: [7, 26001]}
  assert ann.cost(pool, ann.image_costs(split)) == 3 + 2
  got = ann.labels(pool, split, np.array([0, 1]))
  # Image 1 is labeled whole; image 0 carries road and the right car, 255 elsewhere.
  want0 = np.where(split.instances[0] == 26000, 255, split.labels[0])
  np.testing.assert_array_equal(got[0], want0)
  np.testing.assert_array_equal(got[1], split.labels[1])
