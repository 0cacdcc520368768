"""Units of annotation: whole images or superpixels, chosen under a budget.

Both choose from a random candidate subset of the pool (`al_candidate_factor`
x what the budget needs; the reference used 3), score the candidates with the
strategy, and take the top units. Units already labeled are never offered
again: images labeled whole leave the pool, chosen superpixels are masked.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np

from segal_jax import pool as pool_lib
from segal_jax import selection


@dataclasses.dataclass(frozen=True)
class Scoring:
  """What scoring needs besides the candidates (static for a cycle)."""
  apply_fn: Any
  variables: Any
  passes: int
  chunk: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  batch_size: int
  progress: bool


def _candidates(key, eligible: np.ndarray, factor: float, needed: int) -> np.ndarray:
  count = 0 if factor <= 0 else int(math.ceil(factor * needed))
  return selection.candidates(key, eligible, count)


def select_images(strategy: selection.Strategy, pool: pool_lib.PoolLabels, n_pool: int,
                  images, budget: int, factor: float, keys: dict[str, jax.Array],
                  scoring: Scoring) -> tuple[np.ndarray, np.ndarray]:
  """(chosen image indices [k], their scores [k]), highest score first."""
  unlabeled = np.setdiff1d(np.arange(n_pool), pool.images())
  k = min(budget, len(unlabeled))
  if strategy.measure is None:
    perm = np.asarray(jax.random.permutation(keys['select'], len(unlabeled)))
    chosen = np.sort(unlabeled[perm[:k]])
    return chosen, np.zeros(len(chosen), np.float32)
  cand = _candidates(keys['candidates'], unlabeled, factor, budget)
  scores = selection.score_images(
      scoring.apply_fn, scoring.variables, images, cand, keys['score'], strategy=strategy,
      passes=scoring.passes, chunk=scoring.chunk, mean=scoring.mean, std=scoring.std,
      batch_size=scoring.batch_size, progress=scoring.progress)
  order = selection.top_k(scores, k)
  return cand[order], scores[order]


def select_superpixels(strategy: selection.Strategy, pool: pool_lib.PoolLabels, n_pool: int,
                       images, segments, budget: int, factor: float,
                       keys: dict[str, jax.Array], scoring: Scoring
                       ) -> tuple[dict[int, list[int]], list[tuple[int, int]], np.ndarray]:
  """Chooses `budget` superpixels over the pool.

  Args:
    segments: [N, H, W] int32 superpixel ids of the pool (0..S_i-1 per image).

  Returns:
    picks: image index -> chosen superpixel ids;
    ranked: [(image index, superpixel id)] highest score first;
    scores: [k] their scores.
  """
  num_segments = int(np.max([segments[i].max() for i in range(n_pool)])) + 1
  eligible = np.setdiff1d(np.arange(n_pool), pool.full)
  cand = _candidates(keys['candidates'], eligible, factor,
                     max(1, math.ceil(budget / num_segments)))
  present = np.arange(num_segments)[None, :] <= np.array(
      [segments[i].max() for i in cand])[:, None]
  exclude = ~present | pool.chosen_mask(cand, num_segments)
  if strategy.measure is None:
    scores = np.asarray(jax.random.uniform(keys['select'], (len(cand), num_segments)))
  else:
    scores = selection.score_images(
        scoring.apply_fn, scoring.variables, images, cand, keys['score'], strategy=strategy,
        passes=scoring.passes, chunk=scoring.chunk, mean=scoring.mean, std=scoring.std,
        batch_size=scoring.batch_size, progress=scoring.progress, segments=segments,
        num_segments=num_segments)
  flat = selection.top_k(scores, budget, exclude=exclude)
  rows, sps = np.divmod(flat, num_segments)
  picks: dict[int, list[int]] = {}
  ranked = []
  for r, s in zip(rows, sps):
    picks.setdefault(int(cand[r]), []).append(int(s))
    ranked.append((int(cand[r]), int(s)))
  out_scores = np.asarray(scores).ravel()[flat] if strategy.measure else np.zeros(len(flat))
  return picks, ranked, out_scores.astype(np.float32)
