"""The loss_prediction strategy: joint head training, scoring, ranking accuracy."""

import dataclasses
import itertools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segal_jax import config as config_lib
from segal_jax import experiment
from segal_jax import loop
from segal_jax import loss_prediction_train as lpt
from segal_jax import models
from segal_jax import selection
from segal_jax import train
from segal_jax.errors import UserError

TINY = config_lib.ExperimentConfig(
    dataset='synthetic_city', dataset_config='tiny', width_multiplier=0.25,
    train_epochs=1, train_min_steps=2, train_batch_size=4, train_crop=(32, 64),
    eval_batch_size=8, al_strategies=('loss_prediction',), al_seeds=(0,),
    al_initial=6, al_budget=5, al_cycles=3, mc_passes=3, progress=False)

KW = dict(arch='drn_d_22', num_classes=5, width_multiplier=0.125, dropout_placement='head')


def test_margin_ranking_loss_matches_numpy_formula():
  predicted = np.array([0.3, 2.0, -1.0, 0.5, 1.0, 0.1], np.float32)
  true = np.array([1.0, 0.2, 3.0, 2.0, 0.2, 0.5], np.float32)
  margin = 1.0
  # Pairs (0, 3), (1, 4), (2, 5): targets -1, 0, +1.
  expected = np.mean([max(0.0, -np.sign(true[i] - true[i + 3]) * (predicted[i] - predicted[i + 3])
                          + margin) for i in range(3)])
  # By hand: max(0, (0.3-0.5)+1)=0.8; tie -> margin 1.0; max(0, -(-1-0.1)+1)=2.1.
  assert expected == pytest.approx((0.8 + 1.0 + 2.1) / 3, abs=1e-6)
  got = lpt.margin_ranking_loss(jnp.asarray(predicted), jnp.asarray(true), margin)
  np.testing.assert_allclose(float(got), expected, rtol=1e-6)
  # An odd batch leaves the last image out; fewer than 2 images: no pairs.
  got = lpt.margin_ranking_loss(jnp.asarray(predicted[:5]), jnp.asarray(true[:5]), 0.5)
  expected = np.mean([max(0.0, -np.sign(true[i] - true[i + 2]) * (predicted[i] - predicted[i + 2])
                          + 0.5) for i in range(2)])
  np.testing.assert_allclose(float(got), expected, rtol=1e-6)
  assert float(lpt.margin_ranking_loss(jnp.ones(1), jnp.ones(1), 1.0)) == 0.0


def test_margin_ranking_loss_gradient_does_not_reach_true_losses():
  predicted, true = jnp.array([0.0, 1.0]), jnp.array([2.0, 1.0])
  g = jax.grad(lambda t: lpt.margin_ranking_loss(predicted, t, 1.0))(true)
  np.testing.assert_array_equal(np.asarray(g), 0.0)
  # Correct order but inside the margin: the gradient pushes the pair apart.
  g = jax.grad(lambda p: lpt.margin_ranking_loss(p, true, 1.0))(jnp.array([1.2, 1.0]))
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
  np.testing.assert_allclose(np.asarray(lpt.per_image_loss(logits, labels)), expected, rtol=1e-5)


def test_ranking_accuracy_counts_pairs_like_brute_force():
  predicted = np.array([0.1, 0.4, 0.3, 0.9, 0.3])
  true = np.array([1.0, 2.0, 3.0, 4.0, 3.0])
  right = total = 0
  for i, j in itertools.combinations(range(5), 2):
    if true[i] == true[j]:
      continue
    total += 1
    right += np.sign(predicted[i] - predicted[j]) == np.sign(true[i] - true[j])
  # By hand: 10 pairs less the true tie (2, 4); (1, 2) and (1, 4) are swapped.
  assert (total, right) == (9, 7)
  assert lpt.ranking_accuracy(predicted, true) == pytest.approx(7 / 9)
  assert lpt.ranking_accuracy(true, true) == 1.0
  assert lpt.ranking_accuracy(-true, true) == 0.0
  assert np.isnan(lpt.ranking_accuracy(np.zeros(3), np.ones(3)))


def test_schedule_controls():
  s = lpt.Schedule(weight=0.01, margin=1.0, warmup_epochs=1, detach_epoch=3)
  np.testing.assert_array_equal([s.controls(e) for e in range(5)],
                                np.array([[0, 0], [0.01, 0], [0.01, 0], [0.01, 1], [0.01, 1]],
                                         np.float32))
  assert lpt.schedule_from_config(TINY) == lpt.Schedule(0.01, 1.0, 1, 120)


@pytest.mark.slow
def test_wrapper_logits_equal_drnseg():
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  model = lpt.DRNSegWithLossHead(**KW, hidden=8)
  variables = model.init({'params': jax.random.key(0), 'dropout': jax.random.key(1)}, x,
                         train=False)
  assert lpt.HEAD in variables['params']
  plain_vars = lpt.segmentation_variables(variables)
  assert lpt.HEAD not in plain_vars['params']
  assert set(plain_vars['params']) == set(variables['params']) - {lpt.HEAD}
  plain = models.DRNSeg(**KW)
  want = plain.apply(plain_vars, x, train=False)
  np.testing.assert_array_equal(np.asarray(model.apply(variables, x, train=False)),
                                np.asarray(want))
  logits, predicted = model.apply(variables, x, train=False, predict_loss=True)
  np.testing.assert_array_equal(np.asarray(logits), np.asarray(want))
  assert predicted.shape == (2,) and predicted.dtype == jnp.float32


@pytest.mark.slow
def test_detach_stops_the_head_gradient_at_the_features():
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  model = lpt.DRNSegWithLossHead(**KW, hidden=8)
  variables = model.init({'params': jax.random.key(0), 'dropout': jax.random.key(1)}, x,
                         train=False)

  def head_output(params, detach):
    return model.apply({**variables, 'params': params}, x, train=False, predict_loss=True,
                       detach=detach)[1].sum()

  for detach, reaches in ((0.0, True), (1.0, False)):
    grads = jax.grad(head_output)(variables['params'], detach)
    seg_norm = sum(float(jnp.abs(g).sum()) for g in
                   jax.tree.leaves(lpt.segmentation_variables({'params': grads})['params']))
    head_norm = sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads[lpt.HEAD]))
    assert head_norm > 0
    assert (seg_norm > 0) == reaches


@pytest.mark.slow
def test_train_step_adds_weighted_ranking_loss():
  model = lpt.DRNSegWithLossHead(**KW, hidden=8)
  tx = train.make_optimizer(lr=0.01, total_steps=10, schedule='constant')
  ts = train.create_train_state(model, jax.random.key(0), image_shape=(32, 32, 3), tx=tx)
  rng = np.random.default_rng(0)
  batch = {'image': rng.integers(0, 255, (4, 32, 32, 3)).astype(np.uint8),
           'label': rng.integers(0, 5, (4, 32, 32)).astype(np.uint8)}
  kw = dict(mean=np.full(3, 0.5, np.float32), std=np.full(3, 0.25, np.float32),
            crop=(16, 16), scale_range=(1.0, 1.0), flip=False, lp_margin=1.0)
  copy = lambda t: jax.tree.map(jnp.copy, t)
  _, m = train.train_step(copy(ts), batch, jax.random.key(2), lp_controls=jnp.array([0.0, 0.0]),
                          **kw)
  assert float(m['loss']) == pytest.approx(float(m['ce']))
  new, m = train.train_step(copy(ts), batch, jax.random.key(2),
                            lp_controls=jnp.array([0.5, 0.0]), **kw)
  assert float(m['rank_loss']) >= 0
  assert float(m['loss']) == pytest.approx(float(m['ce']) + 0.5 * float(m['rank_loss']), rel=1e-5)
  assert not np.allclose(np.asarray(new.params[lpt.HEAD]['out']['kernel']),
                         np.asarray(ts.params[lpt.HEAD]['out']['kernel']))


def test_validate_rejects_loss_prediction_with_superpixels():
  with pytest.raises(UserError, match='loss_prediction'):
    config_lib.validate(dataclasses.replace(TINY, al_unit='superpixel'))
  config_lib.validate(TINY)
  assert selection.get('loss_prediction').measure == selection.LOSS_PREDICTION
  assert not selection.get('loss_prediction').mc
  assert isinstance(loop.build_model(TINY, 19, 'loss_prediction'), lpt.DRNSegWithLossHead)
  assert type(loop.build_model(TINY, 19, 'random')) is models.DRNSeg  # pylint: disable=unidiomatic-typecheck


@pytest.mark.slow
def test_experiment_runs_loss_prediction(tmp_path):
  config = dataclasses.replace(TINY, data_dir=str(tmp_path / 'tfds'), lp_detach_epoch=2,
                               train_min_steps=6)
  workdir = str(tmp_path / 'run')
  records = experiment.run(config, workdir, log=lambda *_: None)
  assert [r['labeled_images'] for r in records] == [6, 11, 16]
  for r in records:
    assert 0.0 <= r['ranking_accuracy'] <= 1.0
  run_dir = experiment.run_dir(workdir, 'loss_prediction', 0)
  labeled = set()
  for cycle in (1, 2):
    with open(os.path.join(run_dir, f'selection_cycle{cycle:02d}.csv')) as f:
      chosen = [line.split(',')[0] for line in f.read().splitlines()[1:]]
    assert len(chosen) == len(set(chosen)) == config.al_budget
    assert not labeled & set(chosen)
    labeled |= set(chosen)
  with open(os.path.join(run_dir, loop.STATE_FILE)) as f:
    state = json.load(f)
  ids = experiment.load_data(config)[0].ids
  final = {ids[i] for i in state['pool']['full']}
  assert labeled <= final and len(final) == 16
  # The saved model is a plain segmentation network (usable by launch.score).
  from segal_jax import checkpoint  # pylint: disable=g-import-not-at-top
  model, _, _ = checkpoint.load_model(os.path.join(run_dir, 'models', 'cycle_02'))
  assert type(model) is models.DRNSeg  # pylint: disable=unidiomatic-typecheck
