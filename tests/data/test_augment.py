"""Tests for segal_jax.data.augment: geometry against NumPy/library references."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segal_jax.data import augment

H, W = 8, 12


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  image = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
  # Unique label per pixel (< 255) so the source position of every output pixel
  # can be read back from the label.
  label = np.arange(H * W, dtype=np.uint8).reshape(H, W)
  return image, label


def _assert_pixels(out_image, image):
  # Exact pixel values (XLA may divide by 255 as a multiply, so compare in uint8 units).
  np.testing.assert_array_equal(np.round(out_image * 255.0), image)
  np.testing.assert_allclose(out_image, image / np.float32(255), rtol=1e-6)


_jit_augment = jax.jit(augment.augment, static_argnames=('crop', 'scale_range', 'flip'))


def _aug(key, image, label, **kw):
  out_image, out_label = _jit_augment(key, image, label, **kw)
  return np.asarray(out_image), np.asarray(out_label)


def test_identity_at_scale_one_without_flip():
  image, label = _inputs()
  for seed in range(4):
    out_image, out_label = _aug(jax.random.key(seed), image, label, crop=(H, W),
                                scale_range=(1.0, 1.0), flip=False)
    assert out_image.dtype == np.float32 and out_label.dtype == np.uint8
    _assert_pixels(out_image, image)
    np.testing.assert_array_equal(out_label, label)


def test_flip_equals_np_flip_and_happens_about_half_the_time():
  image, label = _inputs()
  flipped = 0
  for seed in range(16):
    out_image, out_label = _aug(jax.random.key(seed), image, label, crop=(H, W),
                                scale_range=(1.0, 1.0), flip=True)
    if np.array_equal(out_label, label):
      _assert_pixels(out_image, image)
    else:
      np.testing.assert_array_equal(out_label, np.flip(label, axis=1))
      _assert_pixels(out_image, np.flip(image, axis=1))
      flipped += 1
  assert 2 <= flipped <= 14


def test_deterministic_given_key_and_vmappable():
  image, label = _inputs()
  images = np.stack([image, image[::-1]])
  labels = np.stack([label, label[::-1]])
  keys = jax.random.split(jax.random.key(3), 2)
  aug = functools.partial(augment.augment, crop=(6, 10), scale_range=(0.5, 2.0))
  batch_image, batch_label = jax.jit(jax.vmap(aug))(keys, images, labels)
  for i in range(2):
    one_image, one_label = _aug(keys[i], images[i], labels[i], crop=(6, 10),
                                scale_range=(0.5, 2.0))
    np.testing.assert_array_equal(batch_image[i], one_image)
    np.testing.assert_array_equal(batch_label[i], one_label)
  again = jax.jit(jax.vmap(aug))(keys, images, labels)
  np.testing.assert_array_equal(again[0], batch_image)


def test_scale_two_matches_integer_upsampling_and_library_bilinear():
  image, label = _inputs(1)
  up_label = np.repeat(np.repeat(label, 2, axis=0), 2, axis=1)
  # Half-pixel bilinear upsampling; with edge clamping this equals jax.image.resize.
  up_image = np.asarray(jax.image.resize(image.astype(np.float32), (2 * H, 2 * W, 3),
                                         'bilinear')) / 255.0
  for seed in range(6):
    out_image, out_label = _aug(jax.random.key(seed), image, label, crop=(H, W),
                                scale_range=(2.0, 2.0), flip=False)
    # The first output pixel is one of the 2x2 copies of its source pixel.
    candidates = [(oy, ox) for oy, ox in np.argwhere(up_label == out_label[0, 0])
                  if np.array_equal(out_label, up_label[oy:oy + H, ox:ox + W])]
    assert len(candidates) == 1
    oy, ox = candidates[0]
    np.testing.assert_allclose(out_image, up_image[oy:oy + H, ox:ox + W], atol=1e-6)


def test_padding_when_scaled_down():
  image, label = _inputs()
  fill = np.array([0.25, 0.5, 0.75], np.float32)
  out_image, out_label = _aug(jax.random.key(0), image, label, crop=(H, W),
                              scale_range=(0.5, 0.5), flip=False, fill=fill)
  pad = out_label == 255
  # The scaled image is H/2 x W/2, so exactly 3/4 of the crop is padding.
  assert pad.sum() == H * W - (H // 2) * (W // 2)
  np.testing.assert_array_equal(out_image[pad], np.broadcast_to(fill, (pad.sum(), 3)))
  inside = np.argwhere(~pad)
  assert (inside.max(0) - inside.min(0) + 1).tolist() == [H // 2, W // 2]


@pytest.mark.parametrize('scale_range', [(0.5, 2.0), (1.3, 1.7), (0.4, 0.9)])
def test_nearest_never_invents_labels(scale_range):
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
  label = np.where((np.arange(H)[:, None] + np.arange(W)[None]) % 2 == 0, 3, 7)
  label = label.astype(np.uint8)
  label[0, 0] = 255
  fn = jax.jit(jax.vmap(functools.partial(augment.augment, crop=(10, 9),
                                          scale_range=scale_range)))
  keys = jax.random.split(jax.random.key(1), 32)
  out_image, out_label = fn(keys, np.stack([image] * 32), np.stack([label] * 32))
  assert set(np.unique(out_label)) <= {3, 7, 255}
  assert out_image.shape == (32, 10, 9, 3) and out_label.shape == (32, 10, 9)
  assert float(out_image.min()) >= 0.0 and float(out_image.max()) <= 1.0


def test_normalize():
  x = jnp.full((2, 2, 3), 0.5)
  out = augment.normalize(x, (0.25, 0.5, 0.75), (0.5, 0.25, 0.125))
  np.testing.assert_allclose(out[0, 0], [0.5, 0.0, -2.0])
