"""Tests for the DRN family and DRNSeg."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segal_jax.errors import UserError
from segal_jax import models
from segal_jax.models import _blocks
from segal_jax.models import drn

# Published parameter counts with the 1000-class classifier (convolutions, the
# classifier bias, BatchNorm scale and bias).
IMAGENET_PARAMS = {
    'drn_d_22': 16_393_752,
    'drn_d_38': 26_501_912,
    'drn_d_54': 35_809_176,
    'drn_d_105': 54_801_304,
    'drn_c_26': 21_126_584,
    'drn_c_42': 31_234_744,
    'drn_c_58': 41_591_608,
}


def _shapes(module, shape):
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  return jax.eval_shape(
      lambda x: module.init({'params': jax.random.key(0)}, x, train=False), x)


def _count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _numpy_variables(module, shape, seed=0):
  """Variables for `module` filled by NumPy (He-like kernels, unit BatchNorm).

  Running XLA's random initialisers costs seconds per network on a small CPU;
  the tests that need real initialisation check it on single layers.
  """
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == 'kernel':
      std = math.sqrt(2.0 / (leaf.shape[0] * leaf.shape[1] * leaf.shape[-1]))
      return jnp.asarray(rng.normal(0, std, leaf.shape), jnp.float32)
    if name in ('scale', 'var'):
      return jnp.ones(leaf.shape, jnp.float32)
    return jnp.zeros(leaf.shape, jnp.float32)

  return jax.tree_util.tree_map_with_path(fill, _shapes(module, shape))


@functools.lru_cache(maxsize=None)
def _small_variables():
  """Variables of a 4-class, quarter-width DRN-D-22 (placement does not change them)."""
  return _numpy_variables(models.DRNSeg(num_classes=4, width_multiplier=0.25),
                          (1, 32, 32, 3))


def _init(model, shape=(2, 32, 64, 3), seed=0):
  """Shared variables (dropout placement does not change them) and an input."""
  assert model.num_classes == 4 and model.width_multiplier == 0.25
  x = jax.random.normal(jax.random.key(seed), shape, jnp.float32)
  return _small_variables(), x


def _randomise_stats(variables, seed=3):
  """Non-trivial BatchNorm statistics so eval-mode tests exercise them."""
  leaves, treedef = jax.tree.flatten(variables['batch_stats'])
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  leaves = [0.1 * jax.random.normal(k, l.shape) if i % 2 == 0 else
            jax.random.uniform(k, l.shape, minval=0.5, maxval=1.5)
            for i, (k, l) in enumerate(zip(keys, leaves))]
  return {**variables, 'batch_stats': jax.tree.unflatten(treedef, leaves)}


def test_drn_seg_d22_parameter_count():
  variables = _shapes(models.DRNSeg(num_classes=19), (1, 64, 64, 3))
  assert set(variables) == {'params', 'batch_stats'}  # Upsampler holds no variables.
  assert _count(variables['params']) == 15_890_499


@pytest.mark.parametrize('arch', sorted(IMAGENET_PARAMS))
def test_classifier_parameter_counts(arch):
  variables = _shapes(models.DRN(arch=arch, num_classes=1000), (1, 64, 64, 3))
  assert _count(variables['params']) == IMAGENET_PARAMS[arch]


def test_output_at_input_resolution_and_width_multiplier():
  model = models.DRNSeg(num_classes=4, width_multiplier=0.25)
  variables, x = _init(model)
  logits, _ = model.apply(variables, x, train=False)
  assert logits.shape == (2, 32, 64, 4)
  assert logits.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(logits)))
  kernel = variables['params']['layer_8']['conv_0']['kernel']
  assert kernel.shape == (3, 3, 128, 128)  # 512 * 0.25.


def _bilinear_reference(size):
  """The published fill: w[i, j] = (1 - |i/f - c|) (1 - |j/f - c|)."""
  f = math.ceil(size / 2)
  c = (2 * f - 1 - f % 2) / (2.0 * f)
  w = np.zeros((size, size))
  for i in range(size):
    for j in range(size):
      w[i, j] = (1 - abs(i / f - c)) * (1 - abs(j / f - c))
  return w


def test_upsampling_kernel_is_bilinear():
  np.testing.assert_allclose(_blocks.bilinear_kernel(16), _bilinear_reference(16),
                             atol=1e-7)


UPSAMPLERS = {8: _blocks.upsample_bilinear_x8,
              4: functools.partial(_blocks.upsample_bilinear, stride=4)}


@pytest.mark.parametrize('s', sorted(UPSAMPLERS))
def test_upsampling_equals_transposed_conv_formula(s):
  """Each input pixel scatters the kernel (size 2s) at stride s, cropped by
  padding s/2: PyTorch's ConvTranspose2d(2s, stride=s, padding=s//2)."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 3, 5, 2)).astype(np.float32)
  w = _bilinear_reference(2 * s)
  full = np.zeros((1, 3 * s + s, 5 * s + s, 2))
  for i in range(3):
    for j in range(5):
      full[0, s * i:s * i + 2 * s, s * j:s * j + 2 * s, :] += (
          w[:, :, None] * x[0, i, j][None, None, :])
  expected = full[:, s // 2:s // 2 + 3 * s, s // 2:s // 2 + 5 * s, :]
  got = UPSAMPLERS[s](jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5)


@pytest.mark.parametrize('s', sorted(UPSAMPLERS))
def test_upsampling_reproduces_constant_maps_inside(s):
  x = jnp.full((1, 4, 4, 1), 2.5)
  y = np.asarray(UPSAMPLERS[s](x))
  # Away from the border every output pixel gets total kernel weight 1.
  np.testing.assert_allclose(y[0, s // 2:-(s // 2), s // 2:-(s // 2), 0], 2.5, atol=1e-5)


@pytest.mark.parametrize('placement', ['stages', 'head', 'none'])
def test_trunk_then_tail_equals_call(placement):
  model = models.DRNSeg(num_classes=4, width_multiplier=0.25,
                        dropout_placement=placement)
  variables, x = _init(model)
  variables = _randomise_stats(variables)
  rngs = {'dropout': jax.random.key(7)}
  for mc in (False, True):
    full, _ = model.apply(variables, x, train=False, mc=mc, rngs=rngs)
    h = model.apply(variables, x, train=False, method='trunk')
    split = model.apply(variables, h, train=False, mc=mc, rngs=rngs, method='tail')
    np.testing.assert_array_equal(np.asarray(full), np.asarray(split))
  expected_stride = 4 if placement == 'stages' else 8
  assert h.shape[1:3] == (32 // expected_stride, 64 // expected_stride)
  small = model.apply(variables, h, train=False, mc=False, upsample=False,
                      method='tail')
  assert small.shape == (2, 4, 8, 4)


@pytest.mark.parametrize('placement', ['stages', 'head'])
def test_dropout_only_when_mc_or_train(placement):
  model = models.DRNSeg(num_classes=4, width_multiplier=0.25,
                        dropout_placement=placement)
  variables, x = _init(model)

  def run(key, *, train, mc):
    rngs = {'dropout': jax.random.key(key)}
    if train:
      (out, _), _ = model.apply(variables, x, train=True, mc=mc, rngs=rngs,
                           mutable=['batch_stats'])
    else:
      out, _ = model.apply(variables, x, train=False, mc=mc, rngs=rngs)
    return np.asarray(out)

  det_a = run(0, train=False, mc=False)
  det_b = run(1, train=False, mc=False)
  np.testing.assert_array_equal(det_a, det_b)
  np.testing.assert_array_equal(det_a, np.asarray(model.apply(variables, x, train=False)[0]))
  mc_a = run(0, train=False, mc=True)
  mc_b = run(1, train=False, mc=True)
  assert not np.allclose(mc_a, mc_b)
  assert not np.allclose(mc_a, det_a)
  np.testing.assert_array_equal(mc_a, run(0, train=False, mc=True))  # Key decides.
  train_a = run(0, train=True, mc=False)
  train_b = run(1, train=True, mc=False)
  assert not np.allclose(train_a, train_b)


def test_no_dropout_placement_is_deterministic_under_mc():
  model = models.DRNSeg(num_classes=4, width_multiplier=0.25, dropout_placement='none')
  variables, x = _init(model)
  a, _ = model.apply(variables, x, train=False, mc=True, rngs={'dropout': jax.random.key(0)})
  b, _ = model.apply(variables, x, train=False, mc=True, rngs={'dropout': jax.random.key(1)})
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_train_mode_updates_batch_stats():
  model = models.DRNSeg(num_classes=4, width_multiplier=0.25)
  variables, x = _init(model)
  _, updates = model.apply(variables, x, train=True, rngs={'dropout': jax.random.key(0)},
                           mutable=['batch_stats'])
  before = variables['batch_stats']['layer_0']['bn_0']['mean']
  after = updates['batch_stats']['layer_0']['bn_0']['mean']
  assert not np.allclose(before, after)


def test_features_are_the_ten_levels():
  model = models.DRNSeg(num_classes=4, width_multiplier=0.25)
  variables, x = _init(model)
  logits, extras = model.apply(variables, x, train=False)
  feats = extras['features']
  assert tuple(feats) == drn.FEATURE_KEYS and len(feats) == 10
  strides = [1, 2, 4, 8, 8, 8, 8, 8]
  chans = [4, 8, 16, 32, 64, 128, 128, 128]
  for i, (s, c) in enumerate(zip(strides, chans), start=1):
    assert feats[f'stage_{i}'].shape == (2, 32 // s, 64 // s, c)
  assert feats['logits'].shape == (2, 4, 8, 4)
  np.testing.assert_allclose(np.exp(feats['log_probs']).sum(-1), 1.0, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(logits),
                                np.asarray(model.apply(variables, x, train=False)[0]))


@pytest.mark.parametrize('stride,strides', [(4, [1, 2, 4, 4, 4, 4, 4, 4]),
                                            (2, [1, 2, 2, 2, 2, 2, 2, 2])])
def test_finer_output_stride_keeps_its_resolution_and_the_variables(stride, strides):
  model = models.DRNSeg(num_classes=4, width_multiplier=0.25, output_stride=stride)
  variables, x = _init(model)
  # The same variables as the stride-8 network (checkpoints move between them).
  assert (jax.tree.map(lambda l: l.shape, _shapes(model.clone(output_stride=8), (1, 32, 32, 3)))
          == jax.tree.map(lambda l: l.shape, variables))
  logits, extras = model.apply(variables, x, train=False)
  feats = extras['features']
  for i, s in enumerate(strides, start=1):
    assert feats[f'stage_{i}'].shape[1:3] == (32 // s, 64 // s)
  assert feats['logits'].shape == (2, 32 // stride, 64 // stride, 4)
  assert logits.shape == (2, 32, 64, 4)
  np.testing.assert_allclose(np.asarray(logits),
                             np.asarray(_blocks.upsample_bilinear(feats['logits'], stride)),
                             rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('arch,coarse,fine', [('drn_d_22', 8, 4), ('drn_c_26', 8, 4),
                                               ('drn_d_22', 4, 2), ('drn_c_26', 4, 2)])
def test_halved_output_stride_at_even_positions_is_the_coarser_network(arch, coarse, fine):
  """Dropping a stage's stride and doubling the later dilations keeps what each
  convolution sees: the stride-4 logits at even positions are the stride-8
  logits, and the stride-2 ones the stride-4 ones (same variables, inference
  BatchNorm); odd positions are new."""
  eight = models.DRNSeg(arch=arch, num_classes=4, width_multiplier=0.25,
                        dropout_placement='none', output_stride=coarse)
  four = eight.clone(output_stride=fine)
  variables = _randomise_stats(_numpy_variables(eight, (1, 32, 32, 3), seed=1))
  x = _images_like((2, 32, 64, 3))
  a = eight.apply(variables, eight.apply(variables, x, train=False, method='trunk'),
                  train=False, mc=False, upsample=False, method='tail')
  b = four.apply(variables, four.apply(variables, x, train=False, method='trunk'),
                 train=False, mc=False, upsample=False, method='tail')
  assert a.shape == (2, 32 // coarse, 64 // coarse, 4)
  assert b.shape == (2, 32 // fine, 64 // fine, 4)
  np.testing.assert_allclose(np.asarray(b[:, ::2, ::2]), np.asarray(a), rtol=1e-5,
                             atol=1e-5 * float(jnp.max(jnp.abs(a))))
  assert not np.allclose(np.asarray(b[:, 1::2, 1::2]), np.asarray(a), atol=1e-2)


def test_unknown_output_stride_is_a_user_error():
  x = jnp.zeros((1, 16, 16, 3))
  with pytest.raises(UserError, match='output stride 16 is not supported; use 8'):
    models.DRNSeg(output_stride=16).init({'params': jax.random.key(0)}, x, train=False)


def test_init_statistics_follow_he_fan_out():
  key = jax.random.key(0)
  k = _blocks.conv(256, 3).init(key, jnp.zeros((1, 3, 3, 16)))['params']['kernel']
  np.testing.assert_allclose(float(jnp.std(k)), math.sqrt(2 / (9 * 256)), rtol=0.03)
  # The classifier: normal with std sqrt(2 / (1 * 1 * num_classes)), bias 0.
  seg = _blocks.conv(19, 1, use_bias=True).init(key, jnp.zeros((1, 1, 1, 512)))
  np.testing.assert_allclose(float(jnp.std(seg['params']['kernel'])), math.sqrt(2 / 19),
                             rtol=0.05)
  np.testing.assert_array_equal(np.asarray(seg['params']['bias']), 0)
  block = _blocks.BasicBlock(8, stride=2).init(key, jnp.zeros((1, 4, 4, 4)), train=False)
  for bn in ('bn1', 'bn2', 'downsample_bn'):
    np.testing.assert_array_equal(np.asarray(block['params'][bn]['scale']), 1)
    np.testing.assert_array_equal(np.asarray(block['params'][bn]['bias']), 0)


def test_unknown_arch_and_placement_are_user_errors():
  x = jnp.zeros((1, 16, 16, 3))
  with pytest.raises(UserError, match='drn_x_1'):
    models.DRNSeg(arch='drn_x_1').init({'params': jax.random.key(0)}, x, train=False)
  with pytest.raises(UserError, match='everywhere'):
    models.DRNSeg(dropout_placement='everywhere').init(
        {'params': jax.random.key(0)}, x, train=False)


@pytest.mark.slow
@pytest.mark.parametrize('arch', sorted(drn.ARCHS))
def test_every_arch_runs_forward(arch):
  seg = models.DRNSeg(arch=arch, num_classes=3, width_multiplier=0.125)
  variables = _numpy_variables(seg, (1, 24, 40, 3))
  x = _images_like((1, 24, 40, 3))
  logits, extras = seg.apply(variables, x, train=False)
  feats = extras['features']
  assert logits.shape == (1, 24, 40, 3)
  assert feats['stage_8'].shape == (1, 3, 5, 64)
  assert bool(jnp.all(jnp.isfinite(logits)))
  cls = models.DRN(arch=arch, num_classes=7, width_multiplier=0.125)
  out, _ = cls.apply(_numpy_variables(cls, (1, 24, 40, 3)), x, train=False)
  assert out.shape == (1, 7) and out.dtype == jnp.float32


def _images_like(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def test_bfloat16_compute_matches_float32():
  variables, x = _init(models.DRNSeg(num_classes=4, width_multiplier=0.25))
  variables = _randomise_stats(variables)
  f32 = models.DRNSeg(num_classes=4, width_multiplier=0.25)
  bf16 = models.DRNSeg(num_classes=4, width_multiplier=0.25, dtype=jnp.bfloat16)
  ref = np.asarray(f32.apply(variables, x, train=False)[0])
  low, extras = bf16.apply(variables, x, train=False)
  feats = extras['features']
  assert low.dtype == jnp.float32 and feats['log_probs'].dtype == jnp.float32
  assert feats['stage_4'].dtype == jnp.bfloat16
  low = np.asarray(low)
  # bf16 has an 8-bit mantissa (relative step 2^-8); errors stay a few percent
  # of the logits' scale through 20 layers.
  scale = np.abs(ref).max()
  assert np.abs(low - ref).max() < 0.05 * scale
  assert np.mean(low.argmax(-1) == ref.argmax(-1)) > 0.9
  # Parameters are created in float32 whatever the compute dtype.
  shapes = _shapes(bf16, (1, 32, 32, 3))
  assert {l.dtype for l in jax.tree.leaves(shapes)} == {jnp.dtype('float32')}
