"""Tests for segal_jax.training.losses against NumPy formulas and hand-computed cases."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segal_jax import config as config_lib
from segal_jax.data import labels as labels_lib
from segal_jax import models
from segal_jax.training import losses
from segal_jax.training import optim
from segal_jax.training import train

C = 4
KW = dict(arch='drn_d_22', num_classes=5, width_multiplier=0.125, dropout_placement='head')


def _np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_cross_entropy_averages_over_labeled_pixels_only():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 3, 5, C)).astype(np.float32) * 3
  labels = rng.integers(0, C, size=(2, 3, 5)).astype(np.uint8)
  labels[rng.random(labels.shape) < 0.4] = 255
  mask = labels != 255
  logp = _np_log_softmax(logits.astype(np.float64))
  picked = np.take_along_axis(logp, np.where(mask, labels, 0)[..., None].astype(int), -1)
  expected = -picked[..., 0][mask].mean()
  assert float(losses.masked_cross_entropy(logits, labels)) == pytest.approx(expected, rel=1e-5)


def test_cross_entropy_all_ignored_is_zero_with_finite_gradient():
  logits = jnp.ones((1, 2, 2, C))
  labels = jnp.full((1, 2, 2), 255, jnp.uint8)
  loss, grad = jax.value_and_grad(losses.masked_cross_entropy)(logits, labels)
  assert float(loss) == 0.0
  assert np.isfinite(np.asarray(grad)).all()


def _np_partial_loss(logits, allowed):
  """-log sum of the allowed classes' softmax probabilities, mean over pixels
  with at least one allowed class (float64 NumPy)."""
  logp = _np_log_softmax(logits.astype(np.float64))
  p = np.exp(logp)
  valid = allowed.any(-1)
  per_pixel = -np.log(np.where(allowed, p, 0.0).sum(-1)[valid])
  return per_pixel.mean() if per_pixel.size else 0.0


def test_partial_label_loss_matches_numpy():
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(2, 3, 5, C)).astype(np.float32) * 2
  allowed = rng.random((2, 3, 5, C)) < 0.4
  allowed[0, 0] = False  # an unlabeled pixel
  allowed[1, 2] = True   # every class allowed: zero loss there
  got = float(losses.masked_cross_entropy(logits, allowed))
  assert got == pytest.approx(_np_partial_loss(logits, allowed), rel=1e-5)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.0, 0.6))
def test_one_class_masks_give_exactly_the_integer_label_loss(seed, ignored):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(2, 4, 3, C)).astype(np.float32) * 4
  labels = rng.integers(0, C, size=(2, 4, 3)).astype(np.uint8)
  labels[rng.random(labels.shape) < ignored] = labels_lib.IGNORE
  onehot = (labels[..., None] == np.arange(C)) & (labels[..., None] != labels_lib.IGNORE)
  want = losses.masked_cross_entropy(jnp.asarray(logits), jnp.asarray(labels))
  got = losses.masked_cross_entropy(jnp.asarray(logits), jnp.asarray(onehot))
  assert float(got) == float(want)  # exactly, not approximately
  g_want = jax.grad(losses.masked_cross_entropy)(jnp.asarray(logits), jnp.asarray(labels))
  g_got = jax.grad(losses.masked_cross_entropy)(jnp.asarray(logits), jnp.asarray(onehot))
  np.testing.assert_allclose(np.asarray(g_got), np.asarray(g_want), rtol=1e-6, atol=1e-7)
  # Both against NumPy.
  mask = labels != labels_lib.IGNORE
  if mask.any():
    logp = _np_log_softmax(logits.astype(np.float64))
    picked = np.take_along_axis(logp, np.where(mask, labels, 0)[..., None].astype(int), -1)
    assert float(want) == pytest.approx(-picked[..., 0][mask].mean(), rel=1e-5)
  else:
    assert float(want) == 0.0


def test_margin_ranking_loss_matches_numpy_formula():
  predicted = np.array([0.3, 2.0, -1.0, 0.5, 1.0, 0.1], np.float32)
  true = np.array([1.0, 0.2, 3.0, 2.0, 0.2, 0.5], np.float32)
  margin = 1.0
  # Pairs (0, 3), (1, 4), (2, 5): targets -1, 0, +1.
  expected = np.mean([max(0.0, -np.sign(true[i] - true[i + 3]) * (predicted[i] - predicted[i + 3])
                          + margin) for i in range(3)])
  # By hand: max(0, (0.3-0.5)+1)=0.8; tie -> margin 1.0; max(0, -(-1-0.1)+1)=2.1.
  assert expected == pytest.approx((0.8 + 1.0 + 2.1) / 3, abs=1e-6)
  got = losses.margin_ranking_loss(jnp.asarray(predicted), jnp.asarray(true), margin)
  np.testing.assert_allclose(float(got), expected, rtol=1e-6)
  # An odd batch leaves the last image out; fewer than 2 images: no pairs.
  got = losses.margin_ranking_loss(jnp.asarray(predicted[:5]), jnp.asarray(true[:5]), 0.5)
  expected = np.mean([max(0.0, -np.sign(true[i] - true[i + 2]) * (predicted[i] - predicted[i + 2])
                          + 0.5) for i in range(2)])
  np.testing.assert_allclose(float(got), expected, rtol=1e-6)
  assert float(losses.margin_ranking_loss(jnp.ones(1), jnp.ones(1), 1.0)) == 0.0


def test_margin_ranking_loss_gradient_does_not_reach_true_losses():
  predicted, true = jnp.array([0.0, 1.0]), jnp.array([2.0, 1.0])
  g = jax.grad(lambda t: losses.margin_ranking_loss(predicted, t, 1.0))(true)
  np.testing.assert_array_equal(np.asarray(g), 0.0)
  # Correct order but inside the margin: the gradient pushes the pair apart.
  g = jax.grad(lambda p: losses.margin_ranking_loss(p, true, 1.0))(jnp.array([1.2, 1.0]))
  np.testing.assert_allclose(np.asarray(g), [-1.0, 1.0])


def test_per_image_loss_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 4, 5, 6)).astype(np.float32)
  labels = rng.integers(0, 6, size=(3, 4, 5)).astype(np.uint8)
  labels[0, :2] = 255
  labels[2] = 255  # nothing labeled
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  expected = []
  for b in range(3):
    valid = labels[b] != 255
    ce = [-logp[b][y, x, labels[b, y, x]] for y, x in zip(*np.nonzero(valid))]
    expected.append(np.mean(ce) if ce else 0.0)
  np.testing.assert_allclose(np.asarray(losses.per_image_loss(logits, labels)), expected, rtol=1e-5)


def test_schedule_controls():
  s = losses.JointLoss(weight=0.01, margin=1.0, warmup_epochs=1, detach_epoch=3)
  np.testing.assert_array_equal([s.controls(e) for e in range(5)],
                                np.array([[0, 0], [0.01, 0], [0.01, 0], [0.01, 1], [0.01, 1]],
                                         np.float32))
  assert losses.JointLoss.from_config(config_lib.ExperimentConfig()) == losses.JointLoss(
      1.0, 1.0, 2, 150)


def test_study_schedule_is_the_default():
  """The study's code: lambda 1, 2 warm-up epochs, features detached from epoch 150."""
  got = losses.JointLoss.from_config(config_lib.ExperimentConfig())
  assert got == losses.JointLoss()
  # epoch -> (ranking-loss weight, detach), by hand from the study's values.
  expected = {0: (0, 0), 1: (0, 0), 2: (1, 0), 149: (1, 0), 150: (1, 1), 249: (1, 1)}
  for epoch, want in expected.items():
    np.testing.assert_array_equal(got.controls(epoch), np.array(want, np.float32))
  flags = open(os.path.join(os.path.dirname(__file__), '..', 'configs', 'base.flags')).read()
  for line in ('--lp_weight=1.0', '--lp_warmup_epochs=2', '--lp_detach_epoch=150'):
    assert line in flags.splitlines()


@pytest.mark.slow
def test_schedule_values_reach_the_train_step(monkeypatch):
  """Each step of `train.fit` receives the epoch's (lambda, detach) of the config."""
  seen = []
  real = train.jitted_train_step

  def spy(*args):
    fn = real(*args)

    def step(*a):
      seen.append(np.asarray(jax.device_get(a[5])).tolist())
      return fn(*a)
    return step

  monkeypatch.setattr(train, 'jitted_train_step', spy)
  config = config_lib.ExperimentConfig(lp_weight=1.0, lp_warmup_epochs=1, lp_detach_epoch=2)
  model = models.DRNSegWithLossHead(**KW, hidden=8)
  ts = train.create_train_state(model, jax.random.key(0), image_shape=(32, 64, 3),
                                tx=optax.sgd(0.01))
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (4, 32, 64, 3), np.uint8)
  labels = rng.integers(0, 5, (4, 32, 64), np.uint8)
  train.fit(ts, lambda idx: {'image': images[idx], 'label': labels[idx]}, np.arange(4),
            schedule=train.Schedule(epochs=3, batch_size=4), key=jax.random.key(1),
            inputs=train.InputSpec((0.5,) * 3, (0.2,) * 3, (32, 64)),
            runtime=train.Runtime(progress=False), loss_fn=losses.JointLoss.from_config(config))
  assert seen == [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]


@pytest.mark.slow
def test_train_step_adds_weighted_ranking_loss():
  model = models.DRNSegWithLossHead(**KW, hidden=8)
  tx = optim.make_optimizer(lr=0.01, total_steps=10, schedule='constant')
  ts = train.create_train_state(model, jax.random.key(0), image_shape=(32, 32, 3), tx=tx)
  rng = np.random.default_rng(0)
  batch = {'image': rng.integers(0, 255, (4, 32, 32, 3)).astype(np.uint8),
           'label': rng.integers(0, 5, (4, 32, 32)).astype(np.uint8)}
  kw = dict(inputs=train.InputSpec(np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32),
                                    (16, 16), scale_range=(1.0, 1.0), flip=False),
            loss_fn=losses.JointLoss(margin=1.0))
  copy = lambda t: jax.tree.map(jnp.copy, t)
  _, m = train.train_step(copy(ts), batch, jax.random.key(2), controls=jnp.array([0.0, 0.0]),
                          **kw)
  assert float(m['loss']) == pytest.approx(float(m['ce']))
  new, m = train.train_step(copy(ts), batch, jax.random.key(2),
                            controls=jnp.array([0.5, 0.0]), **kw)
  assert float(m['rank_loss']) >= 0
  assert float(m['loss']) == pytest.approx(float(m['ce']) + 0.5 * float(m['rank_loss']), rel=1e-5)
  assert not np.allclose(np.asarray(new.params[models.LOSS_HEAD]['out']['kernel']),
                         np.asarray(ts.params[models.LOSS_HEAD]['out']['kernel']))


def test_balanced_cross_entropy_against_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 6, 4)).astype(np.float32)
  labels = np.zeros((2, 5, 6), np.uint8)
  labels[0, 1, 2:4] = 3  # a thin object on 2 of 60 pixels
  labels[1, 0, :] = 255  # unlabeled
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  valid = labels != 255
  y = np.where(valid, labels, 0)
  ce = -np.take_along_axis(log_p, y[..., None], -1)[..., 0]
  share = np.bincount(y[valid], minlength=4) / valid.sum()
  weight = np.where(valid, 1 / np.sqrt(share[y]), 0)
  expected = (weight * ce).sum() / weight.sum()
  got = losses.balanced_cross_entropy(jnp.asarray(logits), jnp.asarray(labels))
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # One class only: every weight is equal, so it is the plain mean.
  np.testing.assert_allclose(
      losses.balanced_cross_entropy(jnp.asarray(logits), jnp.zeros((2, 5, 6), jnp.uint8)),
      losses.masked_cross_entropy(jnp.asarray(logits), jnp.zeros((2, 5, 6), jnp.uint8)),
      rtol=1e-5)
  assert losses.balanced_cross_entropy(jnp.asarray(logits),
                                       jnp.full((2, 5, 6), 255, jnp.uint8)) == 0.0
