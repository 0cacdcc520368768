"""Building blocks of the DRN family: conv stages, residual blocks, the upsampler.

All modules take NHWC inputs, keep parameters in float32 and compute in `dtype`.
Padding is explicit (`dilation` on each side of a 3x3 conv) so every spatial size
matches the published PyTorch networks exactly, odd sizes included.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# He normal over fan-out (k * k * out_channels), as the published DRN initialises
# every convolution, the segmentation classifier included.
conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')

BN_MOMENTUM = 0.9  # PyTorch momentum 0.1 in Flax's convention.
BN_EPSILON = 1e-5


# Input widths from which the kernel gradient is computed tap by tap (see
# `conv_tap_kernel_grad`); below it XLA's own gradient convolution is as fast.
TAP_GRAD_MIN_FEATURES = 128


def conv(features: int, kernel: int, *, stride: int = 1, dilation: int = 1,
         padding: int | None = None, use_bias: bool = False, dtype: Any = jnp.float32,
         name: str | None = None) -> nn.Conv:
  """A 2-D convolution with PyTorch's explicit symmetric padding."""
  if padding is None:
    padding = dilation * (kernel - 1) // 2
  return nn.Conv(
      features, (kernel, kernel), strides=(stride, stride),
      padding=((padding, padding), (padding, padding)),
      kernel_dilation=(dilation, dilation), use_bias=use_bias, dtype=dtype,
      param_dtype=jnp.float32, kernel_init=conv_init,
      bias_init=nn.initializers.zeros, name=name,
      conv_general_dilated=_conv_general_dilated)


def _conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                          rhs_dilation=None, dimension_numbers=None,
                          feature_group_count=1, precision=None):
  """`lax.conv_general_dilated` as `nn.Conv` calls it, the kernel gradient tap by tap.

  Wide inputs (>= `TAP_GRAD_MIN_FEATURES` channels) of plain NHWC/HWIO
  convolutions go through `conv_tap_kernel_grad`; anything else is the lax op.
  """
  plain = (feature_group_count == 1 and (lhs_dilation is None or set(lhs_dilation) == {1})
           and lhs.ndim == 4 and lhs.shape[-1] >= TAP_GRAD_MIN_FEATURES
           and tuple(dimension_numbers) == tuple(_NHWC_HWIO))
  if not plain:
    return jax.lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, precision=precision)
  return conv_tap_kernel_grad(lhs, rhs, tuple(window_strides),
                              tuple(tuple(p) for p in padding),
                              tuple(rhs_dilation or (1, 1)), precision)


_NHWC_HWIO = jax.lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1),
                                            ('NHWC', 'HWIO', 'NHWC'))


def _plain_conv(x, k, strides, padding, dilation, precision):
  return jax.lax.conv_general_dilated(x, k, strides, padding, rhs_dilation=dilation,
                                      dimension_numbers=_NHWC_HWIO, precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def conv_tap_kernel_grad(x: jax.Array, k: jax.Array, strides: tuple[int, int],
                         padding: tuple[tuple[int, int], tuple[int, int]],
                         dilation: tuple[int, int], precision=None) -> jax.Array:
  """NHWC x HWIO convolution whose kernel gradient is one matrix product per tap.

  The value and the input gradient are XLA's. The kernel gradient
  dK[i, j] = sum over (b, h, w) of x_pad[b, s*h + d*i, s*w + d*j, :]^T g[b, h, w, :]
  is written as kh * kw dot products of [B*H'*W', C_in]^T [B*H'*W', C_out]: the
  same sums as XLA's gradient convolution, which on CPU runs the wide layers
  of DRN (256-512 channels, 16x32 maps) at about 40% of the matrix-product
  rate (see docs/benchmarks.md).

  Args:
    x: [B, H, W, C_in]; k: [kh, kw, C_in, C_out].
    strides, padding, dilation: as `lax.conv_general_dilated` (window strides,
      explicit (low, high) padding per spatial axis, kernel dilation).

  Returns:
    [B, H', W', C_out].
  """
  return _plain_conv(x, k, strides, padding, dilation, precision)


def _conv_fwd(x, k, strides, padding, dilation, precision):
  return _plain_conv(x, k, strides, padding, dilation, precision), (x, k)


def _conv_bwd(strides, padding, dilation, precision, res, g):
  x, k = res
  _, input_vjp = jax.vjp(lambda x_: _plain_conv(x_, k, strides, padding, dilation,
                                                 precision), x)
  (dx,) = input_vjp(g)
  kh, kw = k.shape[:2]
  batch, out_h, out_w, _ = g.shape
  x_pad = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  g_flat = g.reshape(-1, g.shape[-1])
  taps = []
  for i in range(kh):
    for j in range(kw):
      start = (0, i * dilation[0], j * dilation[1], 0)
      limit = (batch, start[1] + (out_h - 1) * strides[0] + 1,
               start[2] + (out_w - 1) * strides[1] + 1, x.shape[-1])
      window = jax.lax.slice(x_pad, start, limit, (1, *strides, 1))
      taps.append(jnp.matmul(window.reshape(-1, x.shape[-1]).T, g_flat,
                             precision=precision))
  dk = jnp.stack(taps).reshape(k.shape).astype(k.dtype)
  return dx.astype(x.dtype), dk


conv_tap_kernel_grad.defvjp(_conv_fwd, _conv_bwd)


def batch_norm(train: bool, dtype: Any, name: str | None = None) -> nn.BatchNorm:
  return nn.BatchNorm(
      use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
      dtype=dtype, param_dtype=jnp.float32, name=name)


class ConvStage(nn.Module):
  """`convs` x (conv -> BN -> ReLU), no residual; DRN-D's stages 0-2 and 7-8.

  Submodules `conv_{i}` / `bn_{i}`.
  """
  features: int
  convs: int
  kernel: int = 3
  stride: int = 1
  dilation: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    for i in range(self.convs):
      x = conv(self.features, self.kernel, stride=self.stride if i == 0 else 1,
               dilation=self.dilation, dtype=self.dtype, name=f'conv_{i}')(x)
      x = batch_norm(train, self.dtype, name=f'bn_{i}')(x)
      x = nn.relu(x)
    return x


class _Block(nn.Module):
  """The fields of a residual block: `planes` (output width `planes * expansion`),
  the first conv's `stride`, the two dilations, whether the shortcut is added."""
  planes: int
  stride: int = 1
  dilation: tuple[int, int] = (1, 1)
  residual: bool = True
  dtype: Any = jnp.float32

  expansion = 1


class BasicBlock(_Block):
  """Two 3x3 convs (dilations `dilation[0]`, `dilation[1]`), optional residual."""

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    d0, d1 = self.dilation
    out = conv(self.planes, 3, stride=self.stride, dilation=d0, dtype=self.dtype,
               name='conv1')(x)
    out = nn.relu(batch_norm(train, self.dtype, 'bn1')(out))
    out = conv(self.planes, 3, dilation=d1, dtype=self.dtype, name='conv2')(out)
    out = batch_norm(train, self.dtype, 'bn2')(out)
    if self.residual:
      out = out + _shortcut(self, x, train)
    elif self.is_initializing():
      # The published networks own an (unused) shortcut in residual-free blocks
      # that change width (DRN-C-58's stage 7); create it so checkpoints and
      # parameter counts match, but never run it.
      _shortcut(self, x, train)
    return nn.relu(out)


class Bottleneck(_Block):
  """1x1 reduce -> 3x3 (stride, dilation `dilation[1]`) -> 1x1 expand (x4), residual."""

  expansion = 4

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    out = conv(self.planes, 1, dtype=self.dtype, name='conv1')(x)
    out = nn.relu(batch_norm(train, self.dtype, 'bn1')(out))
    out = conv(self.planes, 3, stride=self.stride, dilation=self.dilation[1],
               dtype=self.dtype, name='conv2')(out)
    out = nn.relu(batch_norm(train, self.dtype, 'bn2')(out))
    out = conv(self.planes * 4, 1, dtype=self.dtype, name='conv3')(out)
    out = batch_norm(train, self.dtype, 'bn3')(out)
    if self.residual:
      out = out + _shortcut(self, x, train)
    return nn.relu(out)


def _shortcut(block: nn.Module, x: jax.Array, train: bool) -> jax.Array:
  """Identity, or 1x1 conv + BN where the stride or the width changes."""
  out_features = block.planes * block.expansion
  if block.stride == 1 and x.shape[-1] == out_features:
    return x
  x = conv(out_features, 1, stride=block.stride, dtype=block.dtype,
           name='downsample_conv')(x)
  return batch_norm(train, block.dtype, 'downsample_bn')(x)


BLOCKS = {'basic': BasicBlock, 'bottleneck': Bottleneck}


class BlockStage(nn.Module):
  """`blocks` residual blocks; the first carries the stride (and the shortcut).

  Submodules `block_{i}`. `dilation` is the stage's dilation; with `new_level`
  the first block's first conv uses half of it (the published schedule).
  """
  block: str
  planes: int
  blocks: int
  stride: int = 1
  dilation: int = 1
  new_level: bool = True
  residual: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    block_cls = BLOCKS[self.block]
    d = self.dilation
    first = (1, 1) if d == 1 else ((d // 2 if self.new_level else d), d)
    for i in range(self.blocks):
      x = block_cls(
          self.planes, stride=self.stride if i == 0 else 1,
          dilation=first if i == 0 else (d, d), residual=self.residual,
          dtype=self.dtype, name=f'block_{i}')(x, train=train)
    return x


def _tent(size: int) -> np.ndarray:
  """[size] float32, the 1-D factor of the bilinear kernel."""
  f = int(np.ceil(size / 2))
  centre = (2 * f - 1 - f % 2) / (2.0 * f)
  return (1.0 - np.abs(np.arange(size) / f - centre)).astype(np.float32)


def bilinear_kernel(size: int) -> np.ndarray:
  """[size, size] float32 bilinear interpolation kernel (separable tent)."""
  return np.outer(_tent(size), _tent(size))


def _upsample_matrix(n: int, stride: int = 8, size: int = 16, padding: int = 4) -> np.ndarray:
  """[stride * n, n] float32: one axis of the transposed conv as a matrix.

  out[o] = sum_i x[i] * tent[o + padding - stride * i], tent the 1-D factor of
  `bilinear_kernel(size)` (the 2-D kernel is its outer product).
  """
  tent = _tent(size)
  k = np.arange(stride * n)[:, None] + padding - stride * np.arange(n)[None, :]
  inside = (k >= 0) & (k < size)
  return np.where(inside, tent[np.clip(k, 0, size - 1)], 0.0).astype(np.float32)


def _upsample_axis(x: jax.Array, axis: int, stride: int) -> jax.Array:
  """One axis of the x`stride` transposed conv, as three shifted copies of the input.

  The kernel is `_tent(2 * stride)` and the padding `stride // 2` (h = stride // 2
  below). With o = stride * q + s, output o receives x[q - 1] * tent[s + h + stride]
  (s < h), x[q] * tent[s + h] and x[q + 1] * tent[s + h - stride] (s >= h), x zero
  outside: the two non-zero entries of row o of `_upsample_matrix`. Elementwise,
  so XLA fuses it into the ops that consume the logits.
  """
  size, half = 2 * stride, stride // 2
  tent = _tent(size)
  s = np.arange(stride)
  lo = np.where(s < half, tent[(s + half + stride) % size], 0.0).astype(np.float32)
  hi = np.where(s >= half, tent[(s + half - stride) % size], 0.0).astype(np.float32)
  mid = tent[s + half]
  n = x.shape[axis]
  pad = [(0, 0)] * x.ndim
  pad[axis] = (1, 1)
  xp = jnp.pad(x, pad)
  taps = [jax.lax.slice_in_dim(xp, k, k + n, axis=axis) for k in range(3)]
  shape = [1] * (x.ndim + 1)
  shape[axis + 1] = stride
  out = sum(jnp.expand_dims(t, axis + 1) * jnp.asarray(w.reshape(shape), x.dtype)
            for t, w in zip(taps, (lo, mid, hi)))
  # [..., n, stride, ...] -> [..., stride * n, ...]
  return out.reshape(*x.shape[:axis], stride * n, *x.shape[axis + 1:])


def upsample_bilinear(x: jax.Array, stride: int) -> jax.Array:
  """Fixed x`stride` depthwise bilinear transposed conv (kernel 2 * stride,
  padding stride / 2; `stride` even), DRN's upsampler at its output stride.

  The bilinear kernel is separable and each output pixel takes two input
  pixels per axis, so the transposed conv is computed axis by axis as a
  weighted sum of shifted copies of the input (`_upsample_axis`): it equals
  the depthwise `conv_transpose` (and the two matrix products of
  `_upsample_matrix`) but avoids both the zero-dilated input and the
  matrix products' zeros, and fuses with the ops that follow.

  Args:
    x: [B, h, w, C].
    stride: the upsampling factor (8: the published DRN's kernel 16, padding 4).

  Returns:
    [B, stride * h, stride * w, C] in x's dtype. The kernel is a constant, not
    a parameter.
  """
  return _upsample_axis(_upsample_axis(x, 1, stride), 2, stride)


def upsample_bilinear_x8(x: jax.Array) -> jax.Array:
  """`upsample_bilinear` at DRN's published stride 8: [B, h, w, C] -> [B, 8h, 8w, C]."""
  return upsample_bilinear(x, 8)
