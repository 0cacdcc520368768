"""Label Studio's brush RLE against bit strings written out by hand from the
format's description, and masks drawn by hand."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from segal_jax import errors
from segal_jax.labelling import brush_rle

# 5 bits word size - 1 (7), then the four widths - 1 (3, 4, 8, 16 bits).
_HEADER_TAIL = '00111' + '0010' + '0011' + '0111' + '1111'


def _bytes(bits: str) -> list[int]:
  bits += '0' * (-len(bits) % 8)
  return [int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)]


def _n(n: int) -> str:
  return format(n, '032b')


def test_encode_one_pixel_off_one_on_is_two_repeat_chunks():
  # [0, 0, 0, 0, 255, 255, 255, 255]: a repeat of 0 four times, then of 255.
  bits = (_n(8) + _HEADER_TAIL
          + '1' + '00' + '011' + '00000000'
          + '1' + '00' + '011' + '11111111')
  assert brush_rle.encode(np.array([[False, True]])) == _bytes(bits)


def test_decode_reads_runs_of_distinct_values_and_every_width():
  # 2 x 3 image: pixel values (alpha) 0, 200, 100 then 255, 255, 0.
  rgba = np.array([[0, 200, 100], [255, 255, 0]], np.uint8)
  flat = np.repeat(rgba.reshape(-1), 4)
  bits = _n(flat.size) + _HEADER_TAIL
  # pixel 0: 4 zeros as a repeat with the 4-bit width
  bits += '1' + '01' + '0011' + '00000000'
  # pixel 1: four distinct-run values with the 8-bit width
  bits += '0' + '10' + '00000011' + format(200, '08b') * 4
  # pixel 2: a repeat with the 16-bit width
  bits += '1' + '11' + format(3, '016b') + format(100, '08b')
  # pixels 3-4: eight 255s with the 3-bit width; pixel 5: four zeros
  bits += '1' + '00' + '111' + '11111111'
  bits += '1' + '00' + '011' + '00000000'
  assert np.array_equal(brush_rle.decode_bytes(_bytes(bits)), flat)
  # alpha >= 128 is inside
  assert np.array_equal(brush_rle.decode(_bytes(bits), 2, 3),
                        [[False, True, False], [True, True, False]])


def test_runs_longer_than_the_widest_length_are_split():
  mask = np.zeros((300, 300), bool)
  mask[100:, :] = True  # 4 * 30000 zero bytes, then 4 * 60000 255s
  assert np.array_equal(brush_rle.decode(brush_rle.encode(mask), 300, 300), mask)
  # 120000 zeros need 2 chunks of at most 65536 values, 240000 255s need 4.
  assert len(brush_rle.encode(mask)) == (32 + 21 + 6 * (1 + 2 + 16 + 8) + 7) // 8


def test_hand_drawn_mask_round_trip():
  mask = np.array([[0, 0, 1, 1, 0],
                   [0, 1, 1, 1, 0],
                   [1, 1, 0, 0, 0],
                   [0, 0, 0, 0, 1]], bool)
  assert np.array_equal(brush_rle.decode(brush_rle.encode(mask), 4, 5), mask)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(bool, st.tuples(st.integers(1, 12), st.integers(1, 12))))
def test_round_trip(mask):
  assert np.array_equal(brush_rle.decode(brush_rle.encode(mask), *mask.shape), mask)


def test_truncated_and_wrong_size_are_refused_in_one_line():
  rle = brush_rle.encode(np.ones((4, 4), bool))
  with pytest.raises(errors.UserError, match='ends early'):
    brush_rle.decode(rle[:-2], 4, 4)
  with pytest.raises(errors.UserError, match='not the 80 of a 5x4 RGBA image'):
    brush_rle.decode(rle, 4, 5)
  with pytest.raises(errors.UserError, match='not a list of bytes'):
    brush_rle.decode([300, 1], 4, 4)
