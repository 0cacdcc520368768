"""scripts/stride_ceiling.py against hand-made labels."""

import importlib.util
import os

import numpy as np
import pytest

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     'scripts', 'stride_ceiling.py')
_SPEC = importlib.util.spec_from_file_location('stride_ceiling', _PATH)
stride_ceiling = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(stride_ceiling)


def _labels(width: int) -> np.ndarray:
  """Two 16x16 labels: ground (0), a 4x4 block of class 1 on a 4-pixel cell
  (rows 4-7, columns 8-11) and a vertical line of class 2, `width` px wide at
  column 1."""
  labels = np.zeros((2, 16, 16), np.int32)
  labels[:, 4:8, 8:12] = 1
  labels[:, :, 1:1 + width] = 2
  return labels


def test_stride_one_draws_every_label():
  miou, per_class = stride_ceiling.ceiling(_labels(1), 3, 1, 255)
  assert miou == 1.0 and np.all(per_class == 1.0)


def test_a_cell_aligned_block_loses_its_corners_and_a_thin_line_is_lost():
  # At stride 4 the block fills its cell (mix 1). Bilinear upsampling weighs a
  # pixel 1.5 px from its cell's centre 1 - 1.5/4 = 0.625 per axis: an edge
  # pixel keeps 0.625 of the block, a corner pixel 0.625^2 = 0.39 < 1/2 and
  # goes to the ground; no pixel outside reaches 1/2. IoU 12/16. The 1-px line
  # is a quarter of its cells (ground 3/4) and never wins: IoU 0.
  _, per_class = stride_ceiling.ceiling(_labels(1), 3, 4, 255)
  assert per_class[1] == 0.75
  assert per_class[2] == 0.0
  # A 3-px line (columns 1-3) is 3/4 of its cells: the upsampled map gives it
  # columns 0-2 (column 3 leans 0.375 to the next, pure-ground cell and goes to
  # the ground), so 2 of 4 columns in the union are right: IoU 1/2.
  _, per_class = stride_ceiling.ceiling(_labels(3), 3, 4, 255)
  assert per_class[2] == 0.5


def test_balance_lets_a_rare_class_win_its_cells():
  # Weighted by 1/sqrt(share) the line (share 1/16) gets 4x its mix: 0.25 * 4
  # against the ground's 0.75 / sqrt(0.875), so it takes its cells.
  _, plain = stride_ceiling.ceiling(_labels(1), 3, 4, 255)
  _, balanced = stride_ceiling.ceiling(_labels(1), 3, 4, 255, balance=True)
  assert plain[2] == 0.0 and balanced[2] > 0.0


def test_a_stride_that_does_not_divide_the_image_is_refused():
  with pytest.raises(SystemExit, match='do not divide into cells of 3'):
    stride_ceiling.ceiling(_labels(1), 3, 3, 255)


def test_recommend_takes_the_largest_stride_that_keeps_half_of_every_class():
  per_class = {8: np.array([0.99, 0.0, 0.9]), 4: np.array([0.99, 0.4, 0.95]),
               2: np.array([1.0, 0.6, 0.99])}
  assert stride_ceiling.recommend(per_class) == 2
  per_class[4][1] = 0.5
  assert stride_ceiling.recommend(per_class) == 4
  # An absent class (NaN) does not count; no stride that fits gives None.
  assert stride_ceiling.recommend({8: np.array([0.9, np.nan])}) == 8
  assert stride_ceiling.recommend({2: np.array([0.9, 0.1])}) is None
