"""Superpixels against instances: hand-made maps, counted by hand."""

import numpy as np
import pytest

from segal_jax.reporting import geometry


def _scene():
  """4 x 6: road (7, stuff) below, a car (26001) and void (0) above, two superpixels
  (left / right halves)."""
  instance = np.array([[0, 0, 26001, 26001, 11, 11],
                       [0, 0, 26001, 26001, 11, 11],
                       [7, 7, 7, 7, 7, 7],
                       [7, 7, 7, 7, 7, 7]], np.int32)
  segments = np.array([[0, 0, 0, 1, 1, 1]] * 4, np.int32)
  return instance, segments


def test_instance_areas_leave_out_void_and_split_things_from_stuff():
  instance, _ = _scene()
  ids, areas = geometry.instance_areas(instance)
  assert ids.tolist() == [7, 11, 26001] and areas.tolist() == [12, 4, 4]
  assert geometry.is_thing(ids).tolist() == [False, False, True]


def test_touched_per_segment_counts_each_instance_once_per_superpixel():
  instance, segments = _scene()
  things, stuff = geometry.touched_per_segment(instance, None, segments)
  # Left: car and road; right: car, building (11) and road.
  assert things.tolist() == [1, 1] and stuff.tolist() == [1, 2]


def test_compactness_is_high_for_a_disc_and_low_for_a_line():
  yy, xx = np.mgrid[:41, :41]
  disc = ((yy - 20) ** 2 + (xx - 20) ** 2 <= 15 ** 2).astype(np.int32)  # 0 outside, 1 inside
  areas, compact = geometry.segment_shapes(disc)
  assert areas.tolist() == [int((disc == 0).sum()), int(disc.sum())]
  assert compact[1] > 0.85
  line = np.zeros((3, 40), np.int32)
  line[1] = 1
  _, compact = geometry.segment_shapes(line)
  # scikit-image's perimeter runs through the border pixels' centres, so a
  # one-pixel line scores 4 pi 40 / 38^2 = 0.35 rather than its outline's 0.08.
  assert compact[1] == pytest.approx(4 * np.pi * 40 / 38 ** 2, rel=0.05)


def test_summarize_pools_images_and_shares():
  instance, segments = _scene()
  label = np.where(instance == 0, 255, 0).astype(np.uint8)
  one = geometry.image_geometry(label, instance, segments)
  assert one['counts'].tolist() == [1, 2, 2]
  out = geometry.summarize([one, one], image_pixels=24)
  assert out['images'] == 2
  assert out['instances_per_image']['mean'] == 3
  assert out['superpixels_per_image']['p50'] == 2
  assert out['thing_areas']['mean'] == 4 and out['thing_areas_share']['mean'] == pytest.approx(4 / 24)
  assert out['segment_areas']['mean'] == 12
  assert out['instances_per_superpixel']['mean'] == pytest.approx(2.5)  # (2 + 3) / 2
  assert out['superpixels_touching_a_thing'] == 1.0
