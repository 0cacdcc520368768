"""On-device training augmentation: random scale, crop and horizontal flip.

All three are one inverse mapping: for every output pixel we compute where it comes
from in the source image and gather there (bilinear for the image, nearest for the
label). Nothing is resized, padded or flipped as a separate pass, the functions are
pure, jittable and `jax.vmap`-able over a batch of keys/images, and the result is a
deterministic function of the key.

Geometry (per image, source size H x W, crop h x w, scale s):
  * the image is conceptually resized to Hs x Ws = round(H s) x round(W s), with
    half-pixel centres (source y = (y_scaled + 0.5) H / Hs - 0.5, as in
    `jax.image.resize`, no antialiasing when shrinking);
  * an integer crop offset is drawn uniformly so that the crop stays inside the
    scaled image when it is larger than the crop, and the scaled image lies inside
    the crop when it is smaller;
  * the crop is mirrored left-right with probability 1/2.
Output pixels that fall outside the scaled image are padding: label 255 (ignored
by the loss) and image `fill` (default 0; the training step passes the data set
mean so that padding normalises to 0, like the network's own zero padding).
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from segal_jax.data import labels as labels_lib


def _offset(key: jax.Array, scaled: jax.Array, crop: int) -> jax.Array:
  """Integer offset of the crop in the scaled image, uniform over valid placements.

  Args:
    key: PRNG key.
    scaled: [] int32, scaled image length along this axis.
    crop: crop length along this axis.

  Returns:
    [] int32 in [min(0, scaled - crop), max(0, scaled - crop)].
  """
  lo = jnp.minimum(0, scaled - crop)
  hi = jnp.maximum(0, scaled - crop)
  return jax.random.randint(key, (), lo, hi + 1, dtype=jnp.int32)


def _axis_map(scaled_pos: jax.Array, source: int, scaled: jax.Array):
  """Source sampling positions for positions along one axis of the scaled image.

  Args:
    scaled_pos: [n] int32 positions in the scaled image (may be out of range).
    source: source length along this axis.
    scaled: [] int32 scaled length.

  Returns:
    (lo, hi, weight, nearest, valid): [n] arrays; bilinear taps lo/hi with weight
    of hi, the nearest source index, and whether the position is inside.
  """
  ratio = source / scaled.astype(jnp.float32)
  centre = (scaled_pos.astype(jnp.float32) + 0.5) * ratio
  src = jnp.clip(centre - 0.5, 0.0, source - 1.0)
  lo = jnp.floor(src).astype(jnp.int32)
  hi = jnp.minimum(lo + 1, source - 1)
  weight = src - lo.astype(jnp.float32)
  nearest = jnp.clip(jnp.floor(centre).astype(jnp.int32), 0, source - 1)
  valid = (scaled_pos >= 0) & (scaled_pos < scaled)
  return lo, hi, weight, nearest, valid


def augment(key: jax.Array, image: jax.Array, label: jax.Array, *,
            crop: Sequence[int], scale_range: Sequence[float] = (0.5, 2.0),
            flip: bool = True, fill=0.0) -> tuple[jax.Array, jax.Array]:
  """Random scale, crop and horizontal flip of one image and its label.

  Args:
    key: PRNG key; the output is a deterministic function of it.
    image: [H, W, 3] uint8.
    label: [H, W] uint8 train ids, 255 = ignore; or a [H, W, C] bool
      partial-label mask (allowed classes), whose padding allows no class.
    crop: (h, w) output size (static).
    scale_range: (low, high); the scale is uniform in [low, high].
    flip: whether to mirror left-right with probability 1/2.
    fill: image value of padding pixels, in [0, 1]; scalar or [3].

  Returns:
    (image [h, w, 3] float32 in [0, 1], label [h, w] uint8 with 255 padding,
    or [h, w, C] bool with all-False padding).
  """
  h, w = crop
  height, width = image.shape[0], image.shape[1]
  k_scale, k_y, k_x, k_flip = jax.random.split(key, 4)
  scale = jax.random.uniform(k_scale, (), jnp.float32, scale_range[0], scale_range[1])
  scaled_h = jnp.maximum(1, jnp.round(height * scale).astype(jnp.int32))
  scaled_w = jnp.maximum(1, jnp.round(width * scale).astype(jnp.int32))
  off_y = _offset(k_y, scaled_h, h)
  off_x = _offset(k_x, scaled_w, w)
  cols = jnp.arange(w, dtype=jnp.int32)
  if flip:
    cols = jnp.where(jax.random.bernoulli(k_flip), w - 1 - cols, cols)
  y0, y1, wy, yn, vy = _axis_map(jnp.arange(h, dtype=jnp.int32) + off_y, height, scaled_h)
  x0, x1, wx, xn, vx = _axis_map(cols + off_x, width, scaled_w)

  img = image.astype(jnp.float32)
  y0, y1, wy = y0[:, None], y1[:, None], wy[:, None, None]
  x0, x1, wx = x0[None, :], x1[None, :], wx[None, :, None]
  top = img[y0, x0] * (1.0 - wx) + img[y0, x1] * wx
  bottom = img[y1, x0] * (1.0 - wx) + img[y1, x1] * wx
  out = (top * (1.0 - wy) + bottom * wy) / 255.0
  valid = vy[:, None] & vx[None, :]
  fill = jnp.broadcast_to(jnp.asarray(fill, jnp.float32), (3,))
  out_image = jnp.where(valid[..., None], out, fill)
  picked = label[yn[:, None], xn[None, :]]
  if label.ndim == 3:  # partial-label mask
    return out_image, jnp.where(valid[..., None], picked, False)
  out_label = jnp.where(valid, picked, labels_lib.IGNORE).astype(jnp.uint8)
  return out_image, out_label


def to_float(image: jax.Array) -> jax.Array:
  """uint8 [..., 3] -> float32 in [0, 1] (the evaluation path: no geometry)."""
  return image.astype(jnp.float32) / 255.0


def normalize(image: jax.Array, mean, std) -> jax.Array:
  """Per-channel standardisation.

  Args:
    image: [..., 3] float in [0, 1].
    mean: [3] channel means in [0, 1] units.
    std: [3] channel standard deviations in [0, 1] units.

  Returns:
    [..., 3] float32, (image - mean) / std.
  """
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return (image.astype(jnp.float32) - mean) / std
