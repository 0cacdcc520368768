"""Per-cycle figures: shapes and the pixels that mark chosen superpixels."""

import numpy as np
from PIL import Image

from segal_jax import figures


def test_selection_figure_layout(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (3, 8, 12, 3), dtype=np.uint8)
  maps = rng.random((3, 8, 12)).astype(np.float32)
  gt = rng.integers(0, 19, (3, 8, 12), dtype=np.uint8)
  path = tmp_path / 'f.png'
  figures.selection_figure(str(path), images, maps, gt)
  out = np.asarray(Image.open(path))
  # Rows of [image | 4 | map | 4 | ground truth], 4-pixel gaps between rows.
  assert out.shape == (3 * 8 + 2 * 4, 3 * 12 + 2 * 4, 3)
  np.testing.assert_array_equal(out[:8, :12], images[0])
  np.testing.assert_array_equal(out[12:20, :12], images[1])


def test_superpixel_figure_marks_only_chosen(tmp_path):
  image = np.full((1, 10, 10, 3), 100, np.uint8)
  seg = np.zeros((1, 10, 10), np.int32)
  seg[0, :, 5:] = 1
  path = tmp_path / 's.png'
  figures.superpixel_figure(str(path), image, seg, [[1]])
  out = np.asarray(Image.open(path)).astype(int)
  # Unchosen half is darkened grey, chosen half tinted towards yellow.
  assert (out[0, 1, 0] == out[0, 1, 2]).all() and out[0, 1, 0] < 100
  assert out[5, 8, 0] > out[5, 8, 2]
