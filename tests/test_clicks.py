"""The click-cost model against hand-counted polygons and hand-read predictions."""

import numpy as np

from segal_jax.annotation import clicks


def _square():
  m = np.zeros((30, 30), bool)
  m[5:15, 5:15] = True
  return m


def _l_shape():
  m = np.zeros((30, 30), bool)
  m[5:25, 5:10] = True  # the upright
  m[20:25, 5:20] = True  # the foot
  return m


def _triangle():
  m = np.zeros((40, 40), bool)
  for r in range(30):
    m[5 + r, 5:6 + r] = True  # a right triangle with a staircase hypotenuse
  return m


def test_hand_counted_vertices():
  assert clicks.polygon_clicks(_square()) == 4
  assert clicks.polygon_clicks(_l_shape()) == 6
  # The one-pixel staircase is within the tolerance of a straight edge.
  assert clicks.polygon_clicks(_triangle()) == 3


def test_components_and_holes_are_outlines_of_their_own():
  two = _square() | np.roll(_square(), 12, axis=1)  # two separate squares
  assert clicks.polygon_clicks(two) == 8
  ring = _square()
  ring[8:12, 8:12] = False  # a square hole: outer 4 + inner 4
  assert clicks.polygon_clicks(ring) == 8


def test_slivers_cost_the_minimum_polygon():
  assert clicks.polygon_clicks(np.ones((1, 1), bool)) == clicks.MIN_VERTICES == 3
  assert clicks.polygon_clicks(np.ones((1, 6), bool)) == 3
  # A region touching the image edge is closed by the edge.
  assert clicks.polygon_clicks(np.ones((10, 10), bool)) == 4


def test_region_clicks_of_an_id_map():
  ids = np.zeros((30, 30), np.int64)
  ids[_square()] = 26001
  ids[np.roll(_l_shape(), 5, axis=1) & ~_square()] = 7
  ids[0, 0] = 0
  got = clicks.region_clicks(ids)
  assert set(got) == {7, 26001} and got[26001] == 4
  assert clicks.region_clicks(np.zeros((4, 4), np.int64)) == {}


def test_expected_clicks_from_a_prediction():
  # Prediction: class 0 left half, class 2 right half of a 30x30 image; a square of
  # class 1 in the left half. Superpixels: left (0) and right (1) halves.
  pred = np.zeros((30, 30), np.uint8)
  pred[:, 15:] = 2
  pred[5:15, 5:12] = 1
  segments = np.zeros((30, 30), np.int64)
  segments[:, 15:] = 1
  np.testing.assert_array_equal(clicks.expected_class_clicks(pred, segments, 3), [2, 1, 0])
  # Regions: class 0 (an outer rectangle 4 + the square's hole 4), the square (4),
  # class 2 (4). The left superpixel touches class 0 and the square, the right one class 2.
  np.testing.assert_array_equal(clicks.expected_overlap_clicks(pred, segments, 2), [12, 4])
  assert clicks.expected_image_clicks(pred) == 16
