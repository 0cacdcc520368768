"""Early stopping on a held-out slice of the labeled set.

A cycle that stops early trains until the cross-entropy on a few held-out
labeled images stops improving, instead of for a fixed number of steps, so a
small labeled set is trained to convergence and a large one is not cut short.
The held-out images are labeled data (they count in the annotation cost) but
are not trained on. The rule is a pure function of the loss history
(`should_stop`); `Tracker` applies it during training, keeps the parameters of
the best evaluation (those are the cycle's model) and round-trips through the
run's checkpoints so a resumed cycle stops where an uninterrupted one would.

Rule: an evaluation improves when its loss is below (1 - min_delta) times the
best loss so far (the first evaluation always improves); training stops after
`patience` evaluations in a row without improvement.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from segal_jax.data import augment
from segal_jax.data import labels as labels_lib
from segal_jax import parallel
from segal_jax.training import losses


class Converged(Exception):
  """Raised from the epoch callback to end training: the held-out loss stopped improving."""


def improvements(history: Sequence[float], min_delta: float) -> list[bool]:
  """For each evaluation, whether it improved on the best loss before it."""
  best, out = np.inf, []
  for loss in history:
    better = loss < best * (1 - min_delta) if np.isfinite(best) else np.isfinite(loss)
    out.append(bool(better))
    if better:
      best = loss
  return out


def best_index(history: Sequence[float], min_delta: float) -> int | None:
  """Index of the last improving evaluation (whose parameters are kept); None if none."""
  flags = improvements(history, min_delta)
  return max((i for i, f in enumerate(flags) if f), default=None)


def should_stop(history: Sequence[float], patience: int, min_delta: float) -> bool:
  """True once the last `patience` evaluations all failed to improve.

  Args:
    history: held-out losses, one per evaluation, oldest first.
    patience: evaluations without improvement that end training (>= 1).
    min_delta: relative improvement that counts (0.01: 1% below the best).
  """
  best = best_index(history, min_delta)
  since = len(history) if best is None else len(history) - 1 - best
  return since >= patience


def holdout_split(indices, fraction: float, key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
  """(trained, held-out) images: a seeded `fraction` of `indices` is held out.

  At least one image is held out and at least one trained on; fewer than two
  images, or `fraction` 0, hold none out. Both parts are sorted.
  """
  indices = np.asarray(indices, np.int64).reshape(-1)
  n = len(indices)
  k = 0 if n < 2 or fraction <= 0 else int(np.clip(round(fraction * n), 1, n - 1))
  perm = indices[np.asarray(jax.random.permutation(key, n))]
  return np.sort(perm[k:]), np.sort(perm[:k])


def _loss_sums(variables, images, labels, *, apply_fn, mean, std):
  """(sum of the per-pixel cross-entropy, labeled pixels) of one batch (eval mode)."""
  x = augment.normalize(augment.to_float(images), mean, std)
  logits, _ = apply_fn(variables, x, train=False, mc=False)
  per_pixel, valid = losses.pixel_cross_entropy(logits, labels)
  return per_pixel.sum(), valid.sum()


_jit_loss_sums = jax.jit(_loss_sums, static_argnames=('apply_fn',))


def heldout_loss(apply_fn: Callable, variables: Any, source: Callable, indices, *,
                 batch_size: int, mean, std) -> float:
  """Cross-entropy over the labeled pixels of full images `indices` (eval mode).

  Runs on this process's first device with the variables' host values, so
  every process computes the same number. Last batch padded with ignored
  pixels (one compiled shape).
  """
  variables = jax.tree.map(parallel.fetch, variables)
  mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
  total, count = 0.0, 0
  indices = np.asarray(indices, np.int64)
  for start in range(0, len(indices), batch_size):
    idx = indices[start:start + batch_size]
    batch = source(idx)
    image = parallel.pad_rows(np.asarray(batch['image']), batch_size, fill=0)
    label = parallel.pad_rows(np.asarray(batch['label']), batch_size, fill=labels_lib.IGNORE)
    s, c = _jit_loss_sums(variables, image, label, apply_fn=apply_fn, mean=mean, std=std)
    total, count = total + float(s), count + int(c)
  return total / count if count else float('nan')


def eval_every_epochs(every_steps: int, steps_per_epoch: int) -> int:
  """Evaluate every this many epochs: about `every_steps` steps, at least one epoch."""
  return max(1, round(every_steps / max(1, steps_per_epoch)))


class Tracker:
  """Applies the rule during one cycle's training and keeps the best variables.

  `loss_fn(state) -> float` measures the held-out loss. `pack`/`unpack` put the
  best variables beside the training state in a checkpoint and `to_json`/
  `load_json` the history in its metadata, so a resumed cycle continues the
  same history.
  """

  def __init__(self, loss_fn: Callable[[Any], float], *, every: int, patience: int,
               min_delta: float):
    self.loss_fn, self.every = loss_fn, every
    self.patience, self.min_delta = patience, min_delta
    self.history: list[float] = []
    self.epochs: list[int] = []  # the epoch after which each evaluation ran
    self.best: Any = None

  @staticmethod
  def _variables(state) -> dict:
    # Host copies: the next train step donates the state's device buffers.
    return jax.tree.map(lambda a: np.array(parallel.fetch(a)),
                        {'params': state.params, 'batch_stats': state.batch_stats})

  def stopped(self) -> bool:
    return should_stop(self.history, self.patience, self.min_delta)

  def on_epoch_end(self, epoch: int, state) -> bool:
    """Evaluates when due; True when training should stop now."""
    if (epoch + 1) % self.every:
      return False
    self.history.append(float(self.loss_fn(state)))
    self.epochs.append(int(epoch))
    if best_index(self.history, self.min_delta) == len(self.history) - 1:
      self.best = self._variables(state)
    return self.stopped()

  def result(self, state):
    """`state` with the best evaluated variables (itself if none was evaluated)."""
    if self.best is None:
      return state
    return state.replace(params=self.best['params'], batch_stats=self.best['batch_stats'])

  def pack(self, state) -> dict:
    best = self.best if self.best is not None else self._variables(state)
    return {'train': state, 'best': best}

  def unpack(self, tree: dict, meta: dict):
    self.load_json(meta)
    self.best = tree['best'] if best_index(self.history, self.min_delta) is not None else None
    return tree['train']

  def to_json(self) -> dict:
    return {'holdout_losses': list(self.history), 'holdout_epochs': list(self.epochs)}

  def load_json(self, meta: dict) -> None:
    self.history = [float(x) for x in meta.get('holdout_losses', [])]
    self.epochs = [int(x) for x in meta.get('holdout_epochs', [])]
