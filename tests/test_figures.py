"""Per-cycle figures: shapes and the pixels that mark chosen superpixels."""

import numpy as np
from PIL import Image

from segal_jax.data import classes
from segal_jax.reporting import figures


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
  # Ground truth in the Cityscapes palette by default: road (0) is (128, 64, 128).
  gt_panel = out[:8, 32:]
  np.testing.assert_array_equal(gt_panel[gt[0] == 0], [[128, 64, 128]] * (gt[0] == 0).sum())


def test_selection_figure_paints_the_class_table(tmp_path):
  table = classes.from_json({'classes': [
      {'name': 'a', 'color': [1, 2, 3], 'thing': False, 'value': 0},
      {'name': 'b', 'color': [200, 100, 50], 'thing': True, 'value': 1}]})
  gt = np.array([[[0, 1, 255, 1]]], np.uint8).repeat(2, 1)  # [1, 2, 4]
  path = tmp_path / 'f.png'
  figures.selection_figure(str(path), np.zeros((1, 2, 4, 3), np.uint8),
                           np.zeros((1, 2, 4), np.float32), gt, table)
  panel = np.asarray(Image.open(path))[:, -4:]
  want = np.array([[1, 2, 3], [200, 100, 50], [0, 0, 0], [200, 100, 50]], np.uint8)
  np.testing.assert_array_equal(panel, np.stack([want, want]))


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
