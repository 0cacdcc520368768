"""Selection strategies: score the candidate units, choose the next batch.

Each strategy is a small entry of `STRATEGIES`; the shared code here draws the
candidates, scores them in jitted batches (only per-image scores leave the
device) and picks the top units with deterministic tie-breaking.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import auto as tqdm

from segal_jax import uncertainty
from segal_jax.data import augment


@dataclasses.dataclass(frozen=True)
class Strategy:
  """How a strategy scores a unit.

  measure: name of a per-pixel map in `uncertainty.MEASURES`, or None for
    random selection.
  full: label the whole pool at once (the full-data reference line; one cycle).
  """
  measure: str | None
  full: bool = False

  @property
  def mc(self) -> bool:
    """Whether scoring needs MC-dropout passes (else one deterministic pass)."""
    return self.measure is not None and uncertainty.MEASURES[self.measure].needs_mc


STRATEGIES: dict[str, Strategy] = {
    'random': Strategy(measure=None),
    'full': Strategy(measure=None, full=True),
    # Single deterministic pass.
    'softmax_entropy': Strategy(measure='entropy'),
    'margin': Strategy(measure='margin'),
    'least_confidence': Strategy(measure='least_confidence'),
    # MC dropout.
    'mc_entropy': Strategy(measure='mc_mean_entropy'),
    'mc_variance': Strategy(measure='mc_variance'),
    'bald': Strategy(measure='bald'),
}

# Names of the uncertainty measures themselves, accepted wherever a scoring
# strategy is (e.g. `launch.score --strategy=mc_mean_entropy`).
SCORING_NAMES: dict[str, str] = {
    **{name: s.measure for name, s in STRATEGIES.items() if s.measure is not None},
    **{m: m for m in uncertainty.MEASURES},
}


def get(name: str) -> Strategy:
  if name not in STRATEGIES:
    from segal_jax.errors import UserError  # pylint: disable=g-import-not-at-top
    raise UserError(f'unknown strategy {name!r}',
                    f'choose from {", ".join(sorted(STRATEGIES))}')
  return STRATEGIES[name]


def top_k(scores: np.ndarray, k: int, *, exclude: np.ndarray | None = None) -> np.ndarray:
  """Indices of the k highest scores, never an excluded one.

  Args:
    scores: [N] (or [N, S], flattened in row-major order) float scores.
    k: how many to return (fewer if fewer are eligible).
    exclude: bool mask like `scores`; True units are never returned
      (already labeled).

  Returns:
    [min(k, eligible)] int64 flat indices, highest score first; equal scores
    are broken by the lower index, so the result is deterministic.
  """
  flat = np.asarray(scores, np.float64).ravel()
  eligible = np.ones_like(flat, bool) if exclude is None else ~np.asarray(exclude, bool).ravel()
  idx = np.flatnonzero(eligible & ~np.isnan(flat))
  # lexsort sorts by the last key first: score descending, then index ascending.
  order = np.lexsort((idx, -flat[idx]))
  return idx[order[:k]]


def candidates(key: jax.Array, unlabeled: np.ndarray, count: int) -> np.ndarray:
  """A random subset (sorted) of `count` unlabeled indices; all if count >= len."""
  unlabeled = np.sort(np.asarray(unlabeled))
  if count <= 0 or count >= len(unlabeled):
    return unlabeled
  perm = np.asarray(jax.random.permutation(key, len(unlabeled)))
  return np.sort(unlabeled[perm[:count]])


@functools.lru_cache(maxsize=16)
def _score_fn(apply_fn: Callable[..., Any], measure: str, passes: int, chunk: int | None,
              mean: tuple[float, ...], std: tuple[float, ...]):
  """One jitted scorer per static configuration (never rebuilt in a loop)."""

  def score(variables, images, ids, key):
    x = augment.normalize(augment.to_float(images), mean, std)
    maps = uncertainty.mc_forward(apply_fn, variables, x, key, image_ids=ids, passes=passes,
                                  measures=(measure,), chunk_size=chunk)
    return uncertainty.image_scores(maps[measure])

  return jax.jit(score)


def score_images(apply_fn, variables, images: np.ndarray, indices: np.ndarray, key: jax.Array, *,
                 strategy: Strategy, passes: int, chunk: int | None, mean, std,
                 batch_size: int, progress: bool = True) -> np.ndarray:
  """Per-image uncertainty scores of `images[indices]`.

  Dropout keys belong to images (`fold_in(fold_in(key, index), pass)`), so a
  score does not depend on the batch it was computed in. The last batch is
  padded to a full one so the scorer compiles once.

  Returns:
    [len(indices)] float32 scores (higher = more uncertain).
  """
  fn = _score_fn(apply_fn, strategy.measure, passes, chunk or None, tuple(mean), tuple(std))
  out = np.zeros(len(indices), np.float32)
  bar = tqdm.tqdm(total=len(indices), desc='score pool', unit='img', disable=not progress,
                  leave=False)
  for start in range(0, len(indices), batch_size):
    idx = indices[start:start + batch_size]
    pad = batch_size - len(idx)
    padded = np.concatenate([idx, np.repeat(idx[-1:], pad)]) if pad else idx
    s = fn(variables, images[padded], jnp.asarray(padded, jnp.int32), key)
    out[start:start + len(idx)] = np.asarray(s)[:len(idx)]
    bar.update(len(idx))
  bar.close()
  return out
