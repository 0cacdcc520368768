"""Tests for segal_jax.training.optim: torch's SGD, the schedules and the reported rate."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from segal_jax import errors
from segal_jax.training import optim


def test_optimizer_follows_torch_sgd_for_two_steps():
  lr, m, wd, gamma = 0.5, 0.9, 0.1, 0.1
  p0 = np.array([1.0, -2.0, 3.0])
  g1 = np.array([0.3, 0.1, -0.2])
  g2 = np.array([-0.5, 0.4, 0.25])
  # torch.optim.SGD(momentum=m, weight_decay=wd) with StepLR(step_size=1, gamma).
  d1 = g1 + wd * p0
  buf = d1
  p1 = p0 - lr * buf
  d2 = g2 + wd * p1
  buf = m * buf + d2
  p2 = p1 - lr * gamma * buf
  tx = optim.make_optimizer(lr=lr, momentum=m, weight_decay=wd, schedule='step',
                            total_steps=10, step_every=1, gamma=gamma)
  params = jnp.asarray(p0)
  opt_state = tx.init(params)
  for g in (g1, g2):
    updates, opt_state = tx.update(jnp.asarray(g), opt_state, params)
    params = params + updates
  np.testing.assert_allclose(params, p2, rtol=1e-6)


def test_adamw_follows_the_published_update_for_two_steps():
  # Loshchilov & Hutter's AdamW, as torch.optim.AdamW(eps=1e-8) writes it:
  # p <- p - lr * wd * p; m, v <- moments; p <- p - lr * m_hat / (sqrt(v_hat) + eps).
  lr, b1, b2, eps, wd = 0.1, 0.9, 0.999, 1e-8, 0.5
  p = np.array([1.0, -2.0, 3.0])
  m = v = np.zeros(3)
  for t, g in enumerate((np.array([0.3, 0.1, -0.2]), np.array([-0.5, 0.4, 0.25])), 1):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
    p = p - lr * wd * p - lr * m_hat / (np.sqrt(v_hat) + eps)
  expected = p
  tx = optim.make_optimizer(optimizer='adamw', lr=lr, momentum=b1, weight_decay=wd,
                            schedule='constant', total_steps=10)
  params = jnp.asarray([1.0, -2.0, 3.0])
  opt_state = tx.init(params)
  for g in ([0.3, 0.1, -0.2], [-0.5, 0.4, 0.25]):
    updates, opt_state = tx.update(jnp.asarray(g), opt_state, params)
    params = params + updates
  np.testing.assert_allclose(params, expected, rtol=1e-5)


def test_make_optimizer_rejects_unknown_optimizer():
  with pytest.raises(errors.UserError, match='adagrad'):
    optim.make_optimizer(optimizer='adagrad', lr=0.1, total_steps=10)


@pytest.mark.parametrize('schedule,kw,expected', [
    ('constant', {}, lambda t: 0.1),
    ('step', {'step_every': 3, 'gamma': 0.5}, lambda t: 0.1 * 0.5 ** (t // 3)),
    ('poly', {}, lambda t: 0.1 * (1 - t / 10) ** 0.9),
])
def test_schedules(schedule, kw, expected):
  tx = optim.make_optimizer(lr=0.1, total_steps=10, schedule=schedule, **kw)
  params = jnp.zeros(2)
  opt_state = tx.init(params)
  for t in range(10):
    _, opt_state = tx.update(jnp.zeros(2), opt_state, params)
    # The injected rate is the one used by the update at step t.
    assert float(opt_state.hyperparams['learning_rate']) == pytest.approx(
        expected(t), rel=1e-5, abs=1e-8)


def test_make_optimizer_rejects_unknown_schedule():
  with pytest.raises(errors.UserError, match='cosine'):
    optim.make_optimizer(lr=0.1, total_steps=10, schedule='cosine')


def test_equal_arguments_give_the_same_optimizer_and_the_rate_is_reported():
  a = optim.make_optimizer(lr=0.1, total_steps=9, schedule='step')
  assert optim.make_optimizer(lr=0.1, total_steps=9, schedule='step') is a
  params = jnp.zeros(2)
  opt_state = a.init(params)
  for _ in range(4):  # 'step' by default divides the rate by 10 every 9 // 3 steps
    _, opt_state = a.update(jnp.zeros(2), opt_state, params)
  assert float(optim.current_lr(opt_state)) == pytest.approx(0.01)
  assert np.isnan(float(optim.current_lr(optax.sgd(0.1).init(params))))
