"""Dilated Residual Networks (Yu, Koltun, Funkhouser, CVPR 2017) in Flax Linen.

One definition for the whole family, parameterised by an entry of `ARCHS`:

  stage  0      1      2      3      4      5      6      7      8
  C      7x7    basic  basic  block  block  block  block  basic* basic*
  D      7x7    conv   conv   block  block  block  block  conv   conv
  stride 1      1      2      2      2      1      1      1      1
  dilate 1      1      1      1      1      2      4      2      1

(`basic*`: BasicBlocks without the residual, which removes gridding artefacts in
DRN-C; `conv`: conv-BN-ReLU stages of DRN-D; `block`: BasicBlock or Bottleneck.)
The output stride is 8. `DRN` is the ImageNet classifier (global pool + 1x1 conv);
`DRNSeg` is the segmentation network: 1x1 classifier at 1/8 resolution and a fixed
bilinear x8 transposed convolution, with configurable dropout for MC sampling.

`DRNSeg(output_stride=4)` removes one more stride the way DRN removed two from
ResNet: stage 4 keeps 1/4 resolution (stride 1; its first conv dilation 1, the
rest 2) and every later dilation doubles (stages 5-8: 4, 8, 4, 2), so each
convolution covers the same image area as at stride 8 and the variables are
the same. Its 1/4-resolution features at even positions are the stride-8
network's, and the odd positions are filled in; stages 4-8 cost about 4x.
`output_stride=2` does the same once more from stage 3 (stride 1; its first
conv dilation 1, the rest 2; stages 4-8: 4, 8, 16, 8, 4), for strokes a few
pixels wide that a 1/4-resolution map cannot draw; stages 3-8 cost about 4x
stride 4's.

Both keep the stages in `layer_0` ... `layer_8` so trunk weights move between
them (and from PyTorch, see `convert.py`) by name.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from segal_jax.errors import UserError
from segal_jax.models import _blocks

CHANNELS = (16, 32, 64, 128, 256, 512, 512, 512)
OUTPUT_STRIDES = (8, 4, 2)  # 8: the published network; 4 and 2: for thin and small objects.


@dataclasses.dataclass(frozen=True)
class ArchSpec:
  """kind: 'C' or 'D'; block: 'basic' or 'bottleneck' (stages 3-6); layers: per stage 1-8."""
  kind: str
  block: str
  layers: tuple[int, int, int, int, int, int, int, int]


ARCHS: dict[str, ArchSpec] = {
    'drn_c_26': ArchSpec('C', 'basic', (1, 1, 2, 2, 2, 2, 1, 1)),
    'drn_c_42': ArchSpec('C', 'basic', (1, 1, 3, 4, 6, 3, 1, 1)),
    'drn_c_58': ArchSpec('C', 'bottleneck', (1, 1, 3, 4, 6, 3, 1, 1)),
    'drn_d_22': ArchSpec('D', 'basic', (1, 1, 2, 2, 2, 2, 1, 1)),
    'drn_d_38': ArchSpec('D', 'basic', (1, 1, 3, 4, 6, 3, 1, 1)),
    'drn_d_54': ArchSpec('D', 'bottleneck', (1, 1, 3, 4, 6, 3, 1, 1)),
    'drn_d_105': ArchSpec('D', 'bottleneck', (1, 1, 3, 4, 23, 3, 1, 1)),
}

# After which stages dropout acts, and the last stage of the deterministic trunk.
DROPOUT_AFTER = {'stages': (3, 4, 5, 6), 'head': (8,), 'none': ()}
TRUNK_END = {'stages': 3, 'head': 8, 'none': 8}

# The ten levels of `DRNSeg`'s `extras['features']`, in order.
FEATURE_KEYS = tuple(f'stage_{i}' for i in range(1, 9)) + ('logits', 'log_probs')


def get_arch(arch: str) -> ArchSpec:
  if arch not in ARCHS:
    raise UserError(f'unknown DRN architecture {arch!r}',
                    f'choose one of {", ".join(sorted(ARCHS))}')
  return ARCHS[arch]


def widths(width_multiplier: float) -> tuple[int, ...]:
  """Stage widths scaled by `width_multiplier` (at least 1 channel)."""
  if width_multiplier <= 0:
    raise UserError(f'width_multiplier must be positive, got {width_multiplier}',
                    'use e.g. 1.0 (published widths) or 0.25 (CPU-sized)')
  return tuple(max(1, int(round(c * width_multiplier))) for c in CHANNELS)


def check_output_stride(output_stride: int) -> None:
  if output_stride not in OUTPUT_STRIDES:
    raise UserError(f'output stride {output_stride} is not supported',
                    'use 8 (the published DRN), or 4 or 2 (for thin or small objects)')


def make_stages(arch: str, width_multiplier: float, dtype: Any,
                output_stride: int = 8) -> list[nn.Module]:
  """The nine stages of `arch` as unbound modules; each is called as `m(x, train=...)`.

  `output_stride` 4 drops stage 4's stride and doubles every dilation from it on,
  2 drops stage 3's too (see the module docstring); 8 builds the published network.
  """
  spec = get_arch(arch)
  check_output_stride(output_stride)
  k = 8 // output_stride  # The dilation factor of stages 4-8.
  k3 = max(1, k // 2)  # and of stage 3.
  ch = widths(width_multiplier)
  n = spec.layers
  block = spec.block
  stages: list[nn.Module] = [_blocks.ConvStage(ch[0], 1, kernel=7, dtype=dtype)]
  if spec.kind == 'D':
    stages += [_blocks.ConvStage(ch[0], n[0], dtype=dtype),
               _blocks.ConvStage(ch[1], n[1], stride=2, dtype=dtype)]
  else:
    stages += [_blocks.BlockStage('basic', ch[0], n[0], dtype=dtype),
               _blocks.BlockStage('basic', ch[1], n[1], stride=2, dtype=dtype)]
  stages += [
      # A stage whose stride is dropped is a new level: first conv at half its dilation.
      _blocks.BlockStage(block, ch[2], n[2], stride=2 // k3, dilation=k3, dtype=dtype),
      _blocks.BlockStage(block, ch[3], n[3], stride=1 if k > 1 else 2, dilation=k, dtype=dtype),
      _blocks.BlockStage(block, ch[4], n[4], dilation=2 * k, new_level=False, dtype=dtype),
      _blocks.BlockStage(block, ch[5], n[5], dilation=4 * k, new_level=False, dtype=dtype),
  ]
  if spec.kind == 'D':
    stages += [_blocks.ConvStage(ch[6], n[6], dilation=2 * k, dtype=dtype),
               _blocks.ConvStage(ch[7], n[7], dilation=k, dtype=dtype)]
  else:
    stages += [
        _blocks.BlockStage('basic', ch[6], n[6], dilation=2 * k, new_level=False,
                           residual=False, dtype=dtype),
        _blocks.BlockStage('basic', ch[7], n[7], dilation=k, new_level=False,
                           residual=False, dtype=dtype),
    ]
  return stages


class DRN(nn.Module):
  """DRN image classifier: stages -> global average pool -> 1x1 conv `fc`."""
  arch: str = 'drn_d_22'
  num_classes: int = 1000
  width_multiplier: float = 1.0
  dtype: Any = jnp.float32

  def setup(self):
    self.layer = make_stages(self.arch, self.width_multiplier, self.dtype)
    self.fc = _blocks.conv(self.num_classes, 1, use_bias=True, dtype=self.dtype)

  def __call__(self, x: jax.Array, *, train: bool, mc: bool = False
               ) -> tuple[jax.Array, dict[str, Any]]:
    """x: [B, H, W, 3] float32 -> (logits [B, num_classes] float32, {}).

    `mc` is accepted for the common signature; the classifier has no dropout.
    """
    del mc
    h = x.astype(self.dtype)
    for stage in self.layer:
      h = stage(h, train=train)
    h = jnp.mean(h.astype(jnp.float32), axis=(1, 2), keepdims=True)
    return self.fc(h.astype(self.dtype)).astype(jnp.float32)[:, 0, 0, :], {}


class DRNSeg(nn.Module):
  """DRN segmentation network with a fixed bilinear upsampler (x`output_stride`).

  Attributes:
    arch: a key of `ARCHS`.
    num_classes: classifier outputs.
    width_multiplier: scales all stage widths (0.25 for CPU-sized runs).
    dropout_placement: 'stages' (after stages 3-6, the reference), 'head' (only
      before the classifier) or 'none'.
    dropout_rate: drop probability.
    output_stride: 8 (the published network), 4 (stage 4 without its
      stride, later dilations doubled; the same variables) or 2 (stage 3 too).
    dtype: compute dtype of activations; parameters stay float32 and logits are
      returned in float32.
  """
  arch: str = 'drn_d_22'
  num_classes: int = 19
  width_multiplier: float = 1.0
  dropout_placement: str = 'stages'
  dropout_rate: float = 0.5
  output_stride: int = 8
  dtype: Any = jnp.float32

  def setup(self):
    if self.dropout_placement not in DROPOUT_AFTER:
      raise UserError(f'unknown dropout placement {self.dropout_placement!r}',
                      f'choose one of {", ".join(DROPOUT_AFTER)}')
    self.layer = make_stages(self.arch, self.width_multiplier, self.dtype,
                             self.output_stride)
    self.seg = _blocks.conv(self.num_classes, 1, use_bias=True, dtype=self.dtype)
    self.drop = [nn.Dropout(self.dropout_rate, rng_collection='dropout')
                 for _ in DROPOUT_AFTER[self.dropout_placement]]

  def _dropout(self, stage: int, h: jax.Array, train: bool, mc: bool) -> jax.Array:
    after = DROPOUT_AFTER[self.dropout_placement]
    if stage not in after:
      return h
    return self.drop[after.index(stage)](h, deterministic=not (train or mc))

  def trunk(self, x: jax.Array, *, train: bool,
            features: dict[str, jax.Array] | None = None) -> jax.Array:
    """The deterministic part, up to the first dropout.

    Args:
      x: [B, H, W, 3] float32 normalised images.
      train: BatchNorm uses batch statistics (and updates `batch_stats`).
      features: if given, stage outputs are stored in it as 'stage_i'.

    Returns:
      h: [B, H/s, W/s, C] in `dtype` (s = `output_stride`, or min(4, s) after
        stage 3 for 'stages').
    """
    h = x.astype(self.dtype)
    for i in range(TRUNK_END[self.dropout_placement] + 1):
      h = self.layer[i](h, train=train)
      if features is not None and i > 0:
        features[f'stage_{i}'] = h
    return h

  def tail(self, h: jax.Array, *, train: bool, mc: bool, upsample: bool = True,
           features: dict[str, jax.Array] | None = None) -> jax.Array:
    """The stochastic rest: `trunk`'s output -> logits.

    Dropout (rng stream 'dropout') is active iff `train or mc`.

    Returns:
      logits: [B, H, W, num_classes] float32, or [B, H/s, W/s, num_classes]
        (s = `output_stride`) if not `upsample`.
    """
    end = TRUNK_END[self.dropout_placement]
    h = self._dropout(end, h, train, mc)
    for i in range(end + 1, 9):
      h = self.layer[i](h, train=train)
      if features is not None:
        features[f'stage_{i}'] = h
      h = self._dropout(i, h, train, mc)
    logits = self.seg(h).astype(jnp.float32)
    if features is not None:
      features['logits'] = logits
    if not upsample:
      return logits
    return _blocks.upsample_bilinear(logits, self.output_stride)

  def __call__(self, x: jax.Array, *, train: bool, mc: bool = False
               ) -> tuple[jax.Array, dict[str, Any]]:
    """x: [B, H, W, 3] float32 -> (logits [B, H, W, num_classes] float32, extras).

    BatchNorm uses batch statistics iff `train`; dropout is active iff `train or
    mc`. `extras['features']` is a dict over `FEATURE_KEYS`: the outputs of
    stages 1-8 (before dropout, in `dtype`), the 1/`output_stride` logits and the
    upsampled log-probabilities (float32); under `jit` what is not used is not
    computed. Every network of `models` returns this pair.
    """
    features = {}
    h = self.trunk(x, train=train, features=features)
    logits = self.tail(h, train=train, mc=mc, features=features)
    features['log_probs'] = jax.nn.log_softmax(logits, axis=-1)
    return logits, {'features': {k: features[k] for k in FEATURE_KEYS}}
