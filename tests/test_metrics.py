"""Tests for segal_jax.training.metrics against hand-computed and NumPy references."""

import itertools

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segal_jax.training import metrics


def _np_confusion(pred, label, c):
  conf = np.zeros((c, c), np.int64)
  for g, p in zip(np.ravel(label), np.ravel(pred)):
    if g != 255:
      conf[g, p] += 1
  return conf


def test_hand_computed_case():
  label = np.array([[0, 0, 1], [1, 2, 255]], np.uint8)
  pred = np.array([[0, 1, 1], [1, 0, 2]], np.int32)
  conf = np.asarray(metrics.confusion_matrix(pred, label, 3))
  # Rows are ground truth, columns predictions; the 255 pixel is not counted.
  np.testing.assert_array_equal(conf, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])
  assert conf.dtype == np.int32
  miou, per_class = metrics.iou_from_confusion(conf)
  # IoU0 = 1 / (2 + 2 - 1), IoU1 = 2 / (2 + 3 - 2), IoU2 = 0 / (1 + 0 - 0).
  np.testing.assert_allclose(per_class, [1 / 3, 2 / 3, 0.0])
  assert miou == pytest.approx(1 / 3)
  assert metrics.pixel_accuracy(conf) == pytest.approx(3 / 5)


def test_absent_class_is_nan_and_excluded():
  conf = np.array([[3, 1, 0, 0],
                   [0, 4, 0, 0],
                   [0, 0, 0, 0],
                   [0, 0, 0, 0]])
  miou, per_class = metrics.iou_from_confusion(conf)
  assert np.isnan(per_class[2]) and np.isnan(per_class[3])
  np.testing.assert_allclose(per_class[:2], [3 / 4, 4 / 5])
  assert miou == pytest.approx((3 / 4 + 4 / 5) / 2)


def test_class_predicted_but_absent_from_ground_truth_counts_as_zero():
  conf = np.array([[2, 2], [0, 0]])  # class 1 never in GT but predicted twice
  miou, per_class = metrics.iou_from_confusion(conf)
  np.testing.assert_allclose(per_class, [0.5, 0.0])
  assert miou == pytest.approx(0.25)


def test_empty_confusion_gives_nan_without_warning():
  conf = np.zeros((3, 3), np.int64)
  with np.errstate(all='raise'):
    miou, per_class = metrics.iou_from_confusion(conf)
  assert np.isnan(miou) and np.isnan(per_class).all()
  assert np.isnan(metrics.pixel_accuracy(conf))


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_confusion_matches_numpy_under_jit(c, seed):
  rng = np.random.default_rng(seed)
  label = rng.integers(0, c, size=(2, 5, 7)).astype(np.uint8)
  label[rng.random(label.shape) < 0.3] = 255
  pred = rng.integers(0, c, size=(2, 5, 7)).astype(np.int32)
  conf = jax.jit(metrics.confusion_matrix, static_argnums=2)(pred, label, c)
  np.testing.assert_array_equal(conf, _np_confusion(pred, label, c))


def test_ranking_accuracy_counts_pairs_like_brute_force():
  predicted = np.array([0.1, 0.4, 0.3, 0.9, 0.3])
  true = np.array([1.0, 2.0, 3.0, 4.0, 3.0])
  right = total = 0
  for i, j in itertools.combinations(range(5), 2):
    if true[i] == true[j]:
      continue
    total += 1
    right += np.sign(predicted[i] - predicted[j]) == np.sign(true[i] - true[j])
  # By hand: 10 pairs less the true tie (2, 4); (1, 2) and (1, 4) are swapped.
  assert (total, right) == (9, 7)
  assert metrics.ranking_accuracy(predicted, true) == pytest.approx(7 / 9)
  assert metrics.ranking_accuracy(true, true) == 1.0
  assert metrics.ranking_accuracy(-true, true) == 0.0
  assert np.isnan(metrics.ranking_accuracy(np.zeros(3), np.ones(3)))
