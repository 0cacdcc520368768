"""Tests for segal_jax.selection.diversity: k-center greedy against NumPy, the per-image cap."""

import hypothesis
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import strategies as st

from benchmarks import _reference as reference
from segal_jax.selection import diversity


@pytest.mark.parametrize('seed,n,dim,k', [(0, 200, 8, 20), (1, 1000, 32, 50), (2, 37, 3, 37)])
def test_kcenter_matches_numpy_reference(seed, n, dim, k):
  points = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
  got = diversity.kcenter_greedy(points, k, chunk=64)
  np.testing.assert_array_equal(got, reference.kcenter_greedy(points, k))


def test_kcenter_streaming_gives_the_same_picks_as_one_block():
  # The distances to given centres are what is streamed, chunk by chunk.
  rng = np.random.default_rng(3)
  points = rng.normal(size=(513, 16)).astype(np.float32)
  centers = rng.normal(size=(9, 16)).astype(np.float32)
  whole = diversity.kcenter_greedy(points, 40, centers=centers, chunk=513)
  for chunk in (1, 7, 64, 512):
    np.testing.assert_array_equal(
        diversity.kcenter_greedy(points, 40, centers=centers, chunk=chunk), whole)
  # Against NumPy: the farthest point from the centres and picks, pick by pick.
  x = points.astype(np.float64)
  dist = ((x[:, None] - centers[None].astype(np.float64)) ** 2).sum(-1).min(1)
  for p in whole:
    assert p == np.argmax(dist)
    dist = np.minimum(dist, ((x - x[p]) ** 2).sum(-1))
    dist[p] = -np.inf


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(points=hnp.arrays(np.float32, st.tuples(st.integers(2, 40), st.integers(1, 4)),
                                    elements=st.integers(-20, 20).map(float)),
                  k=st.integers(1, 40), chunk=st.integers(1, 16))
def test_kcenter_each_pick_is_farthest_from_the_picks_before(points, k, chunk):
  picks = diversity.kcenter_greedy(points, k, chunk=chunk)
  k = min(k, len(points))
  assert len(picks) == k and len(set(picks.tolist())) == k
  assert picks[0] == 0  # no centres: the first point seeds the batch
  x = points.astype(np.float64)
  for i in range(1, k):
    d = ((x[:, None, :] - x[picks[:i]][None]) ** 2).sum(-1).min(1)  # to the picks before
    rest = np.setdiff1d(np.arange(len(x)), picks[:i])
    assert d[picks[i]] == d[rest].max()


def test_kcenter_hand_case_with_centers_and_invalid_points():
  # On a line: 0, 1, 5, 10, 11. Centre at 0: farthest is 11 (valid), then 5.
  points = np.array([[0.], [1.], [5.], [10.], [11.]], np.float32)
  got = diversity.kcenter_greedy(points, 2, centers=np.array([[0.]]))
  np.testing.assert_array_equal(got, [4, 2])
  # 11 invalid: 10 first (100 from 0), then 5 (25 from both picks; 1 is 1 from 0).
  got = diversity.kcenter_greedy(points, 2, centers=np.array([[0.]]),
                                 valid=np.array([1, 1, 1, 1, 0], bool))
  np.testing.assert_array_equal(got, [3, 2])
  # More picks asked than valid points: only the valid ones.
  assert len(diversity.kcenter_greedy(points, 9, valid=np.array([1, 0, 1, 0, 0], bool))) == 2


def test_per_image_cap_hand_case():
  images = np.array([3, 3, 1, 3, 1, 1, 2, 3])
  np.testing.assert_array_equal(diversity.per_image_cap(images, 2),
                                [1, 1, 1, 0, 1, 0, 1, 0])
  assert diversity.per_image_cap(images, 0).all()


@hypothesis.settings(max_examples=50, deadline=None)
@hypothesis.given(images=st.lists(st.integers(0, 6), max_size=60), cap=st.integers(1, 5))
def test_per_image_cap_keeps_the_first_cap_of_each_image(images, cap):
  images = np.array(images, np.int64)
  keep = diversity.per_image_cap(images, cap)
  seen: dict[int, int] = {}
  for i, img in enumerate(images.tolist()):
    assert keep[i] == (seen.get(img, 0) < cap)
    seen[img] = seen.get(img, 0) + 1
  for img in set(images.tolist()):
    assert keep[images == img].sum() == min(cap, (images == img).sum())
