"""Tests for the loss-prediction head."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segal_jax import models
from segal_jax.models import drn


def _features(rng, batch=3):
  shapes = {f'stage_{i}': (8, 8, 4 + i) for i in range(1, 9)}
  shapes['logits'] = (4, 4, 5)
  shapes['log_probs'] = (32, 32, 5)
  return {k: jnp.asarray(rng.normal(size=(batch,) + s), jnp.float32)
          for k, s in shapes.items()}


def test_matches_numpy_formula():
  rng = np.random.default_rng(0)
  feats = _features(rng)
  head = models.LossPredictionHead(hidden=16)
  params = head.init(jax.random.key(0), feats)['params']
  got = np.asarray(head.apply({'params': params}, feats))
  hidden = []
  for key in drn.FEATURE_KEYS:
    pooled = np.asarray(feats[key]).mean(axis=(1, 2))
    p = params[f'fc_{key}']
    hidden.append(np.maximum(pooled @ np.asarray(p['kernel']) + np.asarray(p['bias']), 0))
  h = np.concatenate(hidden, axis=-1)
  expected = h @ np.asarray(params['out']['kernel'])[:, 0] + np.asarray(params['out']['bias'])[0]
  assert got.shape == (3,)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  assert params['out']['kernel'].shape == (16 * 10, 1)


def test_missing_level_is_named():
  feats = _features(np.random.default_rng(0))
  del feats['stage_3']
  with pytest.raises(KeyError, match='stage_3'):
    models.LossPredictionHead().init(jax.random.key(0), feats)


def test_reads_drn_seg_features():
  model = models.DRNSeg(num_classes=4, width_multiplier=0.25)
  x = jnp.zeros((2, 32, 64, 3))
  shapes = jax.eval_shape(
      lambda x: model.init({'params': jax.random.key(0)}, x, train=False), x)
  variables = jax.tree.map(lambda s: jnp.full(s.shape, 0.01, s.dtype), shapes)
  _, extras = model.apply(variables, x + 1.0, train=False)
  feats = extras['features']
  head = models.LossPredictionHead()
  out = head.apply(head.init(jax.random.key(1), feats), feats)
  assert out.shape == (2,) and out.dtype == jnp.float32


KW = dict(arch='drn_d_22', num_classes=5, width_multiplier=0.125, dropout_placement='head')


def _head_model():
  """(x [2, 32, 32, 3], a small DRNSegWithLossHead, its initial variables)."""
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  model = models.DRNSegWithLossHead(**KW, hidden=8)
  variables = model.init({'params': jax.random.key(0), 'dropout': jax.random.key(1)}, x,
                         train=False)
  return x, model, variables


@pytest.mark.slow
def test_wrapper_logits_equal_drnseg():
  x, model, variables = _head_model()
  assert models.LOSS_HEAD in variables['params']
  plain_vars = models.segmentation_variables(variables)
  assert models.LOSS_HEAD not in plain_vars['params']
  assert set(plain_vars['params']) == set(variables['params']) - {models.LOSS_HEAD}
  plain = models.DRNSeg(**KW)
  want, _ = plain.apply(plain_vars, x, train=False)
  np.testing.assert_array_equal(
      np.asarray(model.apply(variables, x, train=False, predict_loss=False)[0]), np.asarray(want))
  logits, extras = model.apply(variables, x, train=False)
  predicted = extras['loss']
  np.testing.assert_array_equal(np.asarray(logits), np.asarray(want))
  assert predicted.shape == (2,) and predicted.dtype == jnp.float32


@pytest.mark.slow
def test_detach_stops_the_head_gradient_at_the_features():
  x, model, variables = _head_model()

  def head_output(params, detach):
    return model.apply({**variables, 'params': params}, x, train=False,
                       detach=detach)[1]['loss'].sum()

  for detach, reaches in ((0.0, True), (1.0, False)):
    grads = jax.grad(head_output)(variables['params'], detach)
    seg_norm = sum(float(jnp.abs(g).sum()) for g in
                   jax.tree.leaves(models.segmentation_variables({'params': grads})['params']))
    head_norm = sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads[models.LOSS_HEAD]))
    assert head_norm > 0
    assert (seg_norm > 0) == reaches
