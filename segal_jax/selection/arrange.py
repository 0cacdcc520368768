"""What a cycle's ranked superpixels become before they are bought.

Three optional steps, all off by default (the ranking is then unchanged),
applied in this order by `arrange`, the hook `selection` calls between
ranking and buying:

1. Class balance (`--al_class_balance`; Cai et al., "Revisiting Superpixels
   for Active Learning in Semantic Segmentation with Realistic Annotation
   Costs", CVPR 2021): each unit's score is multiplied by exp(-f_c), c the
   unit's dominant predicted class (the most frequent per-pixel argmax of one
   deterministic pass) and f_c the share of class c among the labeled pixels
   of the pool (`class_weights`). Rare classes keep their score, frequent ones
   lose up to a factor e. Units are re-ranked by the weighted score. (The
   multi-class-label code of Hwang et al., NeurIPS 2023, estimates f_c from
   the dominant predictions over the pool instead; here it is measured on
   what is labeled.)
2. Per-image cap (`--al_per_image_cap` K): at most K units of one image per
   cycle, the best-ranked (`diversity.per_image_cap`).
3. Diversity (`--al_diversity=kcenter`): the best `al_diversity_factor` x
   `al_budget` units are candidates; k-center greedy on their pooled,
   randomly projected last-stage features (`scoring.unit_outputs`,
   `al_feature_dim` dimensions) orders the first `al_budget` of them, seeded
   by the best-scored one; the rest follow in rank order (a cost budget buys
   along that order).

The predicted classes and features come from one extra deterministic pass of
the network over the candidate images (`scoring`, the cached scorer), only
when a step needs them.
"""

from __future__ import annotations

import math

import jax
import numpy as np

from segal_jax.data import labels as labels_lib
from segal_jax.scoring import scorer as scoring
from segal_jax.selection import diversity

DIVERSITY = ('none', 'kcenter')  # --al_diversity (checked in `config.validate`)


def active(config) -> bool:
  """Whether any step of `arrange` changes the ranking under `config`."""
  return bool(config.al_class_balance or config.al_per_image_cap > 0
              or config.al_diversity != 'none')


def class_counts(annotator, pool, split, num_classes: int) -> np.ndarray:
  """[C] int64 labeled pixels of each class over the pool (void left out)."""
  counts = np.zeros(num_classes, np.int64)
  for i in pool.images().tolist():  # one image at a time: pools of large images
    label = np.asarray(annotator.labels(pool, split, np.array([i]))[0]).ravel()
    label = label[(label != labels_lib.IGNORE) & (label < num_classes)]
    counts += np.bincount(label, minlength=num_classes)
  return counts


def class_weights(counts: np.ndarray) -> np.ndarray:
  """[C] exp(-f_c), f_c = counts[c] / sum(counts) (all 1 with nothing labeled)."""
  counts = np.asarray(counts, np.float64)
  total = counts.sum()
  freq = counts / total if total > 0 else np.zeros_like(counts)
  return np.exp(-freq)


def balance(scores: np.ndarray, classes: np.ndarray, weights: np.ndarray) -> np.ndarray:
  """Scores [...] times the weight of each unit's class [...] (-1: weight 1)."""
  w = np.where(classes >= 0, np.asarray(weights)[np.maximum(classes, 0)], 1.0)
  return np.asarray(scores, np.float64) * w


def _unit_outputs(r, cand: np.ndarray, num_segments: int) -> dict[str, np.ndarray]:
  c = r.config
  settings = scoring.Settings('entropy', mean=tuple(r.split.mean), std=tuple(r.split.std),
                              num_segments=num_segments, unit_classes=c.al_class_balance,
                              unit_features=c.al_feature_dim if c.al_diversity != 'none' else 0)
  return scoring.score_images(r.apply_fn, r.variables, r.split.images, cand,
                              jax.random.fold_in(r.keys['select'], 1), settings=settings,
                              batches=scoring.Batches(c.eval_batch_size, progress=c.progress,
                                                      desc='unit features'),
                              segments=r.segments)


def arrange(r, cand: np.ndarray, scores: np.ndarray,
            ranked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The ranked units after class balance, per-image cap and diversity.

  Args:
    r: the cycle's `selection.Request`.
    cand: [n] pool images whose superpixels are ranked.
    scores: [n, S] their scores.
    ranked: flat indices into `scores` (row * S + superpixel), best first,
      eligible units only.

  Returns:
    (scores [n, S], possibly reweighted; ranked flat indices, reordered or
    fewer). Unchanged when no step is on (`active`).
  """
  c = r.config
  if not active(c) or not len(ranked):
    return scores, ranked
  outputs, weights = {}, None
  if c.al_class_balance or c.al_diversity != 'none':
    outputs = _unit_outputs(r, cand, scores.shape[1])
  if c.al_class_balance:
    weights = class_weights(class_counts(r.annotator, r.pool, r.split, r.split.num_classes))
  return reorder(scores, ranked, classes=outputs.get('segment_classes'), weights=weights,
                 cap=c.al_per_image_cap, features=outputs.get('segment_features'),
                 picks=c.al_budget if c.al_diversity == 'kcenter' else 0,
                 factor=c.al_diversity_factor, chunk=c.al_diversity_chunk)


def reorder(scores: np.ndarray, ranked: np.ndarray, *, classes: np.ndarray | None = None,
            weights: np.ndarray | None = None, cap: int = 0,
            features: np.ndarray | None = None, picks: int = 0, factor: float = 4.0,
            chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
  """The three steps of `arrange` on arrays (no network).

  Args:
    scores: [n, S] unit scores; ranked: flat indices into them, best first.
    classes, weights: [n, S] dominant classes and [C] class weights (class
      balance when both are given).
    cap: most units per image row (0: no cap).
    features, picks, factor: [n, S, D] unit features; with picks > 0,
      k-center greedy picks `picks` of the best `factor` x `picks` units.
    chunk: units per block of the k-center distances.

  Returns:
    (scores, ranked) as `arrange`.
  """
  num_segments = scores.shape[1]
  if weights is not None:
    scores = balance(scores, classes, weights)
    # Re-ranked like `selection.top_k`: weighted score descending, then index.
    ranked = ranked[np.lexsort((ranked, -scores.ravel()[ranked].astype(np.float64)))]
  if cap > 0:
    ranked = ranked[diversity.per_image_cap(ranked // num_segments, cap)]
  if picks > 0:
    pool = ranked[:int(math.ceil(factor * picks))]
    feats = features.reshape(-1, features.shape[-1])[pool]
    order = diversity.kcenter_greedy(feats, picks, chunk=chunk)
    rest = np.setdiff1d(np.arange(len(ranked)), order, assume_unique=True)
    ranked = ranked[np.concatenate([order, rest])]
  return scores, ranked
