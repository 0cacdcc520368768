"""The convolution with a tap-by-tap kernel gradient against plain `lax` convolutions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segal_jax.models import _blocks


def _lax_conv(x, k, strides, padding, dilation):
  return jax.lax.conv_general_dilated(x, k, strides, padding, rhs_dilation=dilation,
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


@pytest.mark.parametrize('shape,kernel,stride,dilation,pad', [
    ((2, 9, 11, 5), 3, 1, 1, 1),
    ((2, 9, 11, 5), 3, 2, 1, 1),    # strided, odd sizes
    ((1, 12, 10, 4), 3, 1, 4, 4),   # dilated wider than half the map
    ((3, 8, 8, 6), 1, 2, 1, 0),     # 1x1 strided shortcut
    ((1, 13, 7, 3), 7, 1, 1, 3),    # the 7x7 stem
    ((2, 10, 12, 4), 3, 1, 2, 0),   # unpadded
])
def test_value_and_gradients_equal_lax(shape, kernel, stride, dilation, pad):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
  k = jnp.asarray(rng.standard_normal((kernel, kernel, shape[-1], 7)), jnp.float32)
  args = ((stride, stride), ((pad, pad), (pad, pad)), (dilation, dilation))
  y_ref = _lax_conv(x, k, *args)
  w = jnp.asarray(rng.standard_normal(y_ref.shape), jnp.float32)

  def loss(conv_fn):
    return lambda x_, k_: jnp.sum(w * conv_fn(x_, k_, *args))

  fast = lambda x_, k_, *a: _blocks.conv_tap_kernel_grad(x_, k_, *a)
  np.testing.assert_allclose(fast(x, k, *args), y_ref, rtol=1e-6, atol=1e-6)
  ref = jax.grad(loss(_lax_conv), argnums=(0, 1))(x, k)
  got = jax.jit(jax.grad(loss(fast), argnums=(0, 1)))(x, k)
  for g, r in zip(got, ref):
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(r))))


def test_kernel_gradient_matches_numpy_sum():
  # dK[i, j, c, o] = sum_{b,h,w} x_pad[b, h + d*i, w + d*j, c] g[b, h, w, o], by loops.
  rng = np.random.default_rng(1)
  x = rng.standard_normal((1, 5, 6, 2)).astype(np.float32)
  g = rng.standard_normal((1, 5, 6, 3)).astype(np.float32)
  k = jnp.zeros((3, 3, 2, 3), jnp.float32)
  d = 2
  args = ((1, 1), ((d, d), (d, d)), (d, d))
  _, vjp = jax.vjp(lambda k_: _blocks.conv_tap_kernel_grad(jnp.asarray(x), k_, *args), k)
  (dk,) = vjp(jnp.asarray(g))
  xp = np.pad(x, ((0, 0), (d, d), (d, d), (0, 0)))
  want = np.zeros((3, 3, 2, 3), np.float64)
  for i in range(3):
    for j in range(3):
      for h in range(5):
        for w_ in range(6):
          want[i, j] += np.outer(xp[0, h + d * i, w_ + d * j], g[0, h, w_])
  np.testing.assert_allclose(dk, want, rtol=1e-5, atol=1e-5)


def test_drn_gradients_unchanged(monkeypatch):
  """Whole-network parameter gradients with and without the tap-by-tap path."""
  from segal_jax import models  # pylint: disable=import-outside-toplevel
  model = models.DRNSeg(arch='drn_d_22', num_classes=3, width_multiplier=0.125)
  x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 32, 48, 3)), jnp.float32)
  variables = model.init(jax.random.key(0), x, train=False)

  def grads():
    def loss(params):
      (out, _), _ = model.apply({**variables, 'params': params}, x, train=True,
                           rngs={'dropout': jax.random.key(1)}, mutable=['batch_stats'])
      return jnp.mean(out ** 2)
    return jax.grad(loss)(variables['params'])

  monkeypatch.setattr(_blocks, 'TAP_GRAD_MIN_FEATURES', 10**9)
  plain = grads()
  monkeypatch.setattr(_blocks, 'TAP_GRAD_MIN_FEATURES', 1)
  taps = grads()
  for a, b in zip(jax.tree.leaves(taps), jax.tree.leaves(plain)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(b))) + 1e-8)


def test_upsampling_equals_matrix_products():
  """The shifted-copies upsampler against `_upsample_matrix` products in NumPy."""
  x = np.random.default_rng(3).standard_normal((2, 3, 5, 4)).astype(np.float64)
  u_h, u_w = _blocks._upsample_matrix(3), _blocks._upsample_matrix(5)  # pylint: disable=protected-access
  want = np.einsum('oh,bhwc,pw->bopc', u_h, x, u_w)
  got = _blocks.upsample_bilinear_x8(jnp.asarray(x, jnp.float32))
  assert got.shape == (2, 24, 40, 4)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
