"""Region protocols and polygon clicks on hand-drawn scenes: labels, clicks,
label error, and the partial-label loss against NumPy."""

import types

import dataclasses
import hypothesis
from hypothesis import strategies as st
import jax
import numpy as np
import pytest

from segal_jax.annotation import annotators
from segal_jax.annotation import noise as noise_lib
from segal_jax.annotation import oracle
from segal_jax.annotation import regions as protocols
from segal_jax.errors import UserError
from segal_jax.state import pool as pool_lib
from segal_jax.training import losses

V = 255
# Four 3x3 superpixels (quadrants). Hand-read: superpixel 0 holds class 0 x6 and
# class 1 x3; 1 class 2 x8 and a void pixel; 2 class 3 x9; 3 class 4 x8 and one
# class-0 pixel at its centre (4, 4).
TRUTH = np.array([
    [0, 0, 0, 2, 2, 2],
    [0, 0, 1, 2, 2, 2],
    [0, 1, 1, 2, 2, V],
    [3, 3, 3, 4, 4, 4],
    [3, 3, 3, 4, 0, 4],
    [3, 3, 3, 4, 4, 4],
], np.uint8)
SEGMENTS = np.repeat(np.repeat(np.array([[0, 1], [2, 3]]), 3, 0), 3, 1)


def _split():
  label = np.stack([TRUTH] * 2)
  instance = np.where(label == V, 0, label.astype(np.int32) + 1)
  return types.SimpleNamespace(labels=label, instances=instance, num_classes=5)


def _annotator(name, **kw):
  return dataclasses.replace(annotators.get(name), **kw).bind(
      seed=0, segments=np.stack([SEGMENTS] * 2))


def _annotate(name, sps, **kw):
  ann, split, pool = _annotator(name, **kw), _split(), pool_lib.PoolLabels(full=[1])
  cost = ann.annotate_superpixels(pool, split, np.stack([SEGMENTS] * 2), {0: sps})
  return ann, split, pool, cost


def test_click_pixels_are_the_superpixel_centres():
  np.testing.assert_array_equal(protocols.click_pixels(SEGMENTS),
                                [1 * 6 + 1, 1 * 6 + 4, 4 * 6 + 1, 4 * 6 + 4])


def test_dominant_label_majority_clicks_and_error():
  ann, split, pool, cost = _annotate('dominant_label', [0, 3])
  assert cost == 2 and ann.cost(pool, np.zeros(2, np.int64)) == 2
  want = np.full((6, 6), V, np.uint8)
  want[:3, :3], want[3:, 3:] = 0, 4
  np.testing.assert_array_equal(ann.labels(pool, split, np.array([0]))[0], want)
  # Wrong: superpixel 0's three class-1 pixels and superpixel 3's class-0 one, of 18.
  assert annotators.label_error(ann, pool, split, [0]) == pytest.approx(4 / 18)
  addable = ann.addable_superpixels(pool, split, np.stack([SEGMENTS] * 2), 0, 4)
  assert addable.tolist() == [False, True, True, False]
  # Instances under labeled pixels: those of classes 0, 1 and 4.
  assert ann.labeled_counts(pool, split, [0]) == (18, 3)


def test_multi_class_masks_and_clicks():
  ann, split, pool, cost = _annotate('multi_class', [0, 1, 3])
  assert cost == 2 + 1 + 2  # classes {0, 1}, {2}, {0, 4}
  mask = ann.labels(pool, split, np.array([0]))[0]
  assert mask.shape == (6, 6, 5)
  allowed = {(r, c): set(np.flatnonzero(mask[r, c])) for r in range(6) for c in range(6)}
  assert allowed[0, 0] == allowed[2, 2] == {0, 1}
  assert allowed[2, 5] == {2}  # the void pixel gets the region's answer too
  assert allowed[4, 4] == allowed[5, 3] == {0, 4}
  assert allowed[4, 0] == set()  # superpixel 2 was not chosen
  assert annotators.label_error(ann, pool, split, [0]) == 0
  # A whole image is its one-hot ground truth, void allowing nothing.
  full = ann.labels(pool, split, np.array([1]))[0]
  np.testing.assert_array_equal(full.argmax(-1)[full.any(-1)], TRUTH[TRUTH != V])
  assert not full[2, 5].any()


def test_partial_label_loss_against_numpy():
  ann, split, pool, _ = _annotate('multi_class', [0, 1, 3])
  mask = ann.labels(pool, split, np.array([0]))
  logits = np.asarray(jax.random.normal(jax.random.key(0), (1, 6, 6, 5)), np.float64)
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  labeled = mask.any(-1)
  want = -np.log((p * mask).sum(-1)[labeled]).mean()
  got = losses.masked_cross_entropy(logits.astype(np.float32), mask)
  assert float(got) == pytest.approx(want, rel=1e-5)


def test_points_label_the_clicked_pixel():
  ann, split, pool, cost = _annotate('points', [0, 1, 3])
  assert cost == 3
  want = np.full((6, 6), V, np.uint8)
  want[1, 1], want[1, 4], want[4, 4] = 0, 2, 0
  np.testing.assert_array_equal(ann.labels(pool, split, np.array([0]))[0], want)
  assert annotators.label_error(ann, pool, split, [0]) == 0
  assert ann.labeled_counts(pool, split, [0]) == (3, 2)


def test_whole_images_cost_their_polygon_clicks():
  ann, split, pool, _ = _annotate('dominant_label', [0])
  per_image = sum(oracle.id_clicks(split.instances[0], split.labels[0]).values())
  np.testing.assert_array_equal(ann.image_costs(split), [per_image] * 2)
  assert ann.clicks(pool, split) == per_image + 1


def _polygon_scene():
  """A 30x30 background (id 7) holding a 10x10 square (26001) and an L (26002)."""
  instance = np.full((30, 30), 7, np.int32)
  instance[2:12, 2:12] = 26001
  instance[14:28, 14:18] = 26002
  instance[24:28, 14:28] = 26002
  label = np.where(instance == 7, 0, 13).astype(np.uint8)
  return types.SimpleNamespace(labels=label[None], instances=instance[None], num_classes=19)


def test_image_polygons_hand_counted():
  split = _polygon_scene()
  # Square 4 + L 6 + background (outer edge 4, square hole 4, L hole 6).
  np.testing.assert_array_equal(annotators.get('image_polygons').image_costs(split), [24])
  ann = annotators.get(rule='clicks')
  segments = np.zeros((1, 30, 30), np.int32)
  segments[0, 20:, 20:] = 1  # touches the L and the background
  pool = pool_lib.PoolLabels()
  assert ann.annotate_superpixels(pool, split, segments, {0: [1]}) == 6 + 14
  assert ann.cost(pool, np.zeros(1), split) == 20 and ann.clicks(pool, split) == 20
  # The study's count of the same annotation: two instances.
  assert annotators.get(rule='instances').annotate_superpixels(
      pool_lib.PoolLabels(), split, segments, {0: [1]}) == 2


def test_noise_is_applied_and_reproducible():
  ann, split, pool, _ = _annotate('dominant_label', [0, 1, 2, 3],
                                  noise=noise_lib.Noise(flip=1.0))
  got = ann.labels(pool, split, np.array([0]))[0]
  clean = _annotator('dominant_label').labels(pool, split, np.array([0]))[0]
  assert (got != clean).all()  # every superpixel's class flipped
  np.testing.assert_array_equal(got, ann.labels(pool, split, np.array([0]))[0])
  assert annotators.label_error(ann, pool, split, [0]) > 0.5


def test_protocol_and_unit_must_fit():
  config = types.SimpleNamespace(al_protocol='dominant_label', al_unit='image')
  with pytest.raises(UserError, match='labels superpixels'):
    annotators.check_config(config)
  config = types.SimpleNamespace(al_protocol='image_polygons', al_unit='superpixel')
  with pytest.raises(UserError, match='labels whole images'):
    annotators.check_config(config)
  with pytest.raises(UserError, match='unknown annotator'):
    annotators.check_config(types.SimpleNamespace(al_protocol='lasso', al_unit='image'))


@hypothesis.settings(max_examples=80, deadline=None)
@hypothesis.given(st.lists(st.tuples(st.integers(0, 2), st.lists(st.integers(0, 9), max_size=4)),
                           max_size=12),
                  st.integers(1, 40), st.lists(st.integers(0, 9), min_size=10, max_size=10))
def test_click_budget_is_never_exceeded(units, budget, price_list):
  prices = dict(enumerate(price_list))
  price = lambda group, ids: sum(prices[int(i)] for i in ids)
  taken, costs = oracle.fill_budget(units, budget, price=price)
  assert sum(costs) <= budget
  # What was paid equals the price of each group's ids taken, each paid once.
  groups = {}
  for k in taken:
    groups.setdefault(units[k][0], set()).update(units[k][1])
  assert sum(costs) == sum(price(g, ids) for g, ids in groups.items())
  # Greedy: every unit skipped did not fit in what was left when it came.
  spent, own = 0, {}
  for k, (group, ids) in enumerate(units):
    new = set(ids) - own.get(group, set())
    fits = spent + price(group, new) <= budget
    assert (k in taken) == fits or spent >= budget
    if k in taken:
      own.setdefault(group, set()).update(new)
      spent += price(group, new)


def test_budget_walk_stops_below_the_floor():
  # Units of 3 clicks at least: with 2 left nothing can fit, so the walk stops
  # before the free-looking unit at the end (which a floor of 1 would take).
  units = [(0, [1]), (0, [2]), (1, [])]
  price = lambda group, ids: 4 * len(ids)
  assert oracle.fill_budget(iter(units), 6, price=price, floor=3) == ([0], [4])
  assert oracle.fill_budget(iter(units), 6, price=price) == ([0, 2], [4, 0])
