"""The optimizer: SGD with momentum and L2 weight decay, as torch's (or AdamW), and its schedules.

`make_optimizer` returns the same transformation object for equal arguments,
so the train steps jitted with it (`train.jitted_train_step`) are reused
across active-learning cycles. The current rate rides in the optimizer state
(`optax.inject_hyperparams`), where `current_lr` reads it for the step's metrics.
"""

import functools

import jax
import jax.numpy as jnp
import optax

from segal_jax import errors


def _sgd_with_l2(learning_rate, momentum, weight_decay):
  # torch.optim.SGD: g <- g + wd * p; buf <- momentum * buf + g; p <- p - lr * buf.
  return optax.chain(optax.add_decayed_weights(weight_decay),
                     optax.sgd(learning_rate, momentum=momentum))


def _adamw(learning_rate, momentum, weight_decay):
  # Adam with decoupled weight decay (optax.adamw); momentum is Adam's b1.
  return optax.adamw(learning_rate, b1=momentum, weight_decay=weight_decay)


_OPTIMIZERS = {'sgd': _sgd_with_l2, 'adamw': _adamw}

_SCHEDULES = {
    'constant': lambda lr, total, every, gamma: optax.constant_schedule(lr),
    'step': lambda lr, total, every, gamma: optax.exponential_decay(
        lr, transition_steps=every, decay_rate=gamma, staircase=True),
    'poly': lambda lr, total, every, gamma: optax.polynomial_schedule(
        lr, 0.0, power=0.9, transition_steps=total),
}


def make_optimizer(*, lr: float, total_steps: int, momentum: float = 0.9,
                   weight_decay: float = 1e-4, schedule: str = 'step',
                   step_every: int | None = None,
                   gamma: float = 0.1,
                   optimizer: str = 'sgd') -> optax.GradientTransformation:
  """SGD with momentum and L2 weight decay added to the gradient (as torch SGD).

  `optimizer='adamw'` is Adam with decoupled weight decay instead (`momentum` is
  its first-moment decay b1): faster from scratch on small folders.

  Schedules: 'constant'; 'step' multiplies the rate by `gamma` every `step_every`
  steps (default: a third of `total_steps`); 'poly' is lr * (1 - t/T)^0.9 with
  T = `total_steps`. The current rate is kept in the optimizer state
  (`optax.inject_hyperparams`) so `train.train_step` can report it. Equal
  arguments return the same object, so jitted steps are reused across calls.

  Raises:
    UserError: unknown schedule name or non-positive step counts.
  """
  if optimizer not in _OPTIMIZERS:
    raise errors.UserError(f'unknown optimizer {optimizer!r}',
                           f'use one of {sorted(_OPTIMIZERS)}')
  if schedule not in _SCHEDULES:
    raise errors.UserError(f'unknown learning-rate schedule {schedule!r}',
                           f'use one of {sorted(_SCHEDULES)}')
  if total_steps < 1:
    raise errors.UserError(f'total_steps is {total_steps}', 'train for at least one step')
  if step_every is None:
    step_every = max(1, total_steps // 3)
  if step_every < 1:
    raise errors.UserError(f'step_every is {step_every}', 'use a positive step count')
  return _make_optimizer(float(lr), int(total_steps), float(momentum),
                         float(weight_decay), schedule, int(step_every), float(gamma),
                         optimizer)


@functools.lru_cache(maxsize=64)
def _make_optimizer(lr, total_steps, momentum, weight_decay, schedule, step_every,
                    gamma, optimizer):
  sched = _SCHEDULES[schedule](lr, total_steps, step_every, gamma)
  return optax.inject_hyperparams(_OPTIMIZERS[optimizer])(
      learning_rate=sched, momentum=momentum, weight_decay=weight_decay)


def current_lr(opt_state) -> jax.Array:
  """[] float32 rate the last update used (NaN for an optimizer that does not keep it)."""
  hyper = getattr(opt_state, 'hyperparams', None)
  if hyper is not None and 'learning_rate' in hyper:
    return jnp.asarray(hyper['learning_rate'], jnp.float32)
  return jnp.float32(jnp.nan)
