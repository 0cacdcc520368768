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

from segal_jax import oracle
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
  labels: Any = None  # [N, H, W] ground truth, read only by the true_loss oracle


def _candidates(key, eligible: np.ndarray, factor: float, needed: int) -> np.ndarray:
  count = 0 if factor <= 0 else int(math.ceil(factor * needed))
  return selection.candidates(key, eligible, count)


def _within_cost(unit_costs: np.ndarray, budget_cost: int) -> int:
  """How many of the ranked units to take: until their cost reaches the budget."""
  reached = np.flatnonzero(np.cumsum(unit_costs) >= budget_cost)
  return int(reached[0]) + 1 if len(reached) else len(unit_costs)


def select_images(strategy: selection.Strategy, pool: pool_lib.PoolLabels, n_pool: int,
                  images, budget: int, factor: float, keys: dict[str, jax.Array],
                  scoring: Scoring, *, costs: np.ndarray | None = None,
                  budget_cost: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(chosen image indices [k], their scores [k]), highest score first.

  `budget` images, or with `budget_cost` > 0 images in rank order until their
  annotation cost (`costs` [N], instances) reaches `budget_cost`.
  """
  unlabeled = np.setdiff1d(np.arange(n_pool), pool.images())
  needed = budget
  if budget_cost:
    needed = max(1, math.ceil(budget_cost / max(float(np.mean(costs)), 1.0)))
  if strategy.measure is None:
    perm = np.asarray(jax.random.permutation(keys['select'], len(unlabeled)))
    chosen = unlabeled[perm]
    scores = np.zeros(len(chosen), np.float32)
  else:
    cand = _candidates(keys['candidates'], unlabeled, factor, needed)
    all_scores = selection.score_images(
        scoring.apply_fn, scoring.variables, images, cand, keys['score'], strategy=strategy,
        passes=scoring.passes, chunk=scoring.chunk, mean=scoring.mean, std=scoring.std,
        batch_size=scoring.batch_size, progress=scoring.progress, labels=scoring.labels)
    order = selection.top_k(all_scores, len(cand))
    chosen, scores = cand[order], all_scores[order]
  k = _within_cost(costs[chosen], budget_cost) if budget_cost else min(budget, len(chosen))
  return chosen[:k], scores[:k]


def select_superpixels(strategy: selection.Strategy, pool: pool_lib.PoolLabels, n_pool: int,
                       images, segments, budget: int, factor: float,
                       keys: dict[str, jax.Array], scoring: Scoring, *, split=None,
                       budget_cost: int = 0, costs: np.ndarray | None = None
                       ) -> tuple[dict[int, list[int]], list[tuple[int, int]], np.ndarray]:
  """Chooses `budget` superpixels over the pool.

  With `budget_cost` > 0, superpixels are taken in rank order until the
  instances they newly annotate (the simulated annotator's cost, counting an
  instance once however many chosen superpixels touch it) reach `budget_cost`.

  Args:
    segments: [N, H, W] int32 superpixel ids of the pool (0..S_i-1 per image).
    split: the pool's labels and instances (needed for `budget_cost`).
    costs: [N] instances of each whole image (needed for `budget_cost`: an
      image's superpixels can add at most that many, which sizes the candidates).

  Returns:
    picks: image index -> chosen superpixel ids;
    ranked: [(image index, superpixel id)] highest score first;
    scores: [k] their scores.
  """
  num_segments = int(np.max([segments[i].max() for i in range(n_pool)])) + 1
  eligible = np.setdiff1d(np.arange(n_pool), pool.full)
  if budget_cost:  # images whose instances could pay the budget
    needed = math.ceil(budget_cost / max(float(np.mean(costs)), 1.0))
  else:  # images whose superpixels could fill the budget
    needed = math.ceil(budget / num_segments)
  cand = _candidates(keys['candidates'], eligible, factor, max(1, needed))
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
        num_segments=num_segments, labels=scoring.labels)
  flat = selection.top_k(scores, scores.size if budget_cost else budget, exclude=exclude)
  rows, sps = np.divmod(flat, num_segments)
  if budget_cost:
    k = _within_cost(_marginal_costs(pool, split, segments, cand[rows], sps), budget_cost)
    flat, rows, sps = flat[:k], rows[:k], sps[:k]
  picks: dict[int, list[int]] = {}
  ranked = []
  for r, s in zip(rows, sps):
    picks.setdefault(int(cand[r]), []).append(int(s))
    ranked.append((int(cand[r]), int(s)))
  out_scores = np.asarray(scores).ravel()[flat] if strategy.measure else np.zeros(len(flat))
  return picks, ranked, out_scores.astype(np.float32)


def _marginal_costs(pool: pool_lib.PoolLabels, split, segments, images: np.ndarray,
                    sps: np.ndarray) -> np.ndarray:
  """[k] new instances each ranked superpixel adds, taking them in order."""
  seen: dict[int, set[int]] = {}
  out = np.zeros(len(images), np.int64)
  for n, (i, sp) in enumerate(zip(images.tolist(), sps.tolist())):
    if i not in seen:
      seen[i] = set(pool.annotated.get(i, []))
    inside = segments[i] == sp
    ids = np.unique(oracle.instance_ids(split.instances[i], split.labels[i])[inside])
    new = {int(v) for v in ids if v > 0} - seen[i]
    seen[i] |= new
    out[n] = len(new)
  return out
