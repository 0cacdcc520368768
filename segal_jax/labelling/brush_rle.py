"""Label Studio's brush masks: its run-length format, to and from arrays.

Label Studio stores a brush mask as the RGBA picture of the mask, flattened
row by row ([H * W * 4] bytes), packed by a bit-level run-length code (the
format of the `@thi.ng/rle-pack` package its web page uses; it is not COCO's
RLE). Bits are read most significant first:

  32 bits      n, the number of bytes that follow unpacked (H * W * 4)
  5 bits       word size - 1 (8 bits a value here)
  4 x 4 bits   the four run-length widths - 1, in bits (here 3, 4, 8 and 16)
  then chunks until n values are out:
    1 bit      1: one value repeated; 0: a run of distinct values
    2 bits     which of the four widths the length uses
    width bits length - 1
    then one value (repeated) or `length` values, each word size bits

The mask is the alpha channel: a pixel belongs to the mask when its alpha is
at least 128 (the web page draws strokes with soft edges). Masks written here
are 255 inside and 0 outside in all four channels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from segal_jax import errors

_WIDTHS = (3, 4, 8, 16)
_WORD = 8
_FIX = 'check that the annotation comes from Label Studio and has format "rle"'


def encode(mask: np.ndarray) -> list[int]:
  """mask: [H, W] bool -> the bytes of Label Studio's RLE (a list of ints).

  Each run of equal bytes becomes one repeat chunk; longer runs than the
  widest length field (2 ** 16) are split.
  """
  mask = np.asarray(mask, bool)
  flat = np.repeat(np.where(mask, 255, 0).astype(np.uint8).reshape(-1), 4)
  fields: list[tuple[int, int]] = [(flat.size, 32), (_WORD - 1, 5)]
  fields += [(w - 1, 4) for w in _WIDTHS]
  if flat.size:
    starts = np.flatnonzero(np.concatenate([[True], flat[1:] != flat[:-1]]))
    lengths = np.diff(np.append(starts, flat.size))
    for start, length in zip(starts.tolist(), lengths.tolist()):
      while length:
        run = min(length, 1 << _WIDTHS[-1])
        k = next(i for i, w in enumerate(_WIDTHS) if run - 1 < 1 << w)
        fields += [(1, 1), (k, 2), (run - 1, _WIDTHS[k]), (int(flat[start]), _WORD)]
        length -= run
  return _pack(fields)


def _pack(fields: Sequence[tuple[int, int]]) -> list[int]:
  """(value, width) fields -> bytes, most significant bit first, zero-padded."""
  values = np.array([v for v, _ in fields], np.uint64)
  widths = np.array([w for _, w in fields], np.int64)
  # Bit j of field i (from the left) is (value >> (width - 1 - j)) & 1.
  field = np.repeat(np.arange(len(fields)), widths)
  offset = np.arange(field.size) - np.repeat(np.cumsum(widths) - widths, widths)
  shift = (widths[field] - 1 - offset).astype(np.uint64)
  bits = ((values[field] >> shift) & np.uint64(1)).astype(np.uint8)
  return np.packbits(bits).tolist()


class _Bits:
  """Reads unsigned fields from a bit string, most significant bit first."""

  def __init__(self, data: bytes):
    self.bits = np.unpackbits(np.frombuffer(data, np.uint8)).astype(np.int64)
    self.pos = 0

  def read(self, width: int) -> int:
    end = self.pos + width
    if end > self.bits.size:
      raise errors.UserError('a brush mask\'s RLE ends early', _FIX)
    value = 0
    for bit in self.bits[self.pos:end].tolist():
      value = (value << 1) | bit
    self.pos = end
    return value

  def read_many(self, count: int, width: int) -> np.ndarray:
    end = self.pos + count * width
    if end > self.bits.size:
      raise errors.UserError('a brush mask\'s RLE ends early', _FIX)
    chunk = self.bits[self.pos:end].reshape(count, width)
    self.pos = end
    return chunk @ (1 << np.arange(width - 1, -1, -1))


def decode_bytes(rle: Sequence[int]) -> np.ndarray:
  """The RLE's unpacked bytes: [n] uint8 (n from its header)."""
  try:
    data = bytes(rle)
  except (TypeError, ValueError) as e:
    raise errors.UserError('a brush mask\'s RLE is not a list of bytes', _FIX) from e
  bits = _Bits(data)
  n = bits.read(32)
  word = bits.read(5) + 1
  widths = [bits.read(4) + 1 for _ in range(4)]
  if word > 8:
    raise errors.UserError(f'a brush mask\'s RLE has {word}-bit values, not bytes', _FIX)
  out = np.zeros(n, np.uint8)
  i = 0
  while i < n:
    repeat = bits.read(1)
    length = bits.read(widths[bits.read(2)]) + 1
    if i + length > n:
      raise errors.UserError('a brush mask\'s RLE holds more values than its header says', _FIX)
    if repeat:
      out[i:i + length] = bits.read(word)
    else:
      out[i:i + length] = bits.read_many(length, word)
    i += length
  return out


def decode(rle: Sequence[int], height: int, width: int) -> np.ndarray:
  """Label Studio's RLE of an image of `height` x `width` -> [H, W] bool mask.

  Raises:
    UserError: when the RLE is malformed or its size is not the image's.
  """
  flat = decode_bytes(rle)
  if flat.size != height * width * 4:
    raise errors.UserError(
        f'a brush mask holds {flat.size} bytes, not the {height * width * 4} of a '
        f'{width}x{height} RGBA image', 'check the annotation\'s original_width and original_height')
  return flat.reshape(height, width, 4)[..., 3] >= 128
