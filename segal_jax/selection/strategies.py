"""Selection: strategies and units in registries, budgets included.

A strategy (`STRATEGIES`) says how a unit is scored and, for learning loss,
which network and loss train it; a unit (`UNITS`: 'image', 'superpixel')
says what is offered and how a budget (a count, or an annotation cost by the
annotator's rule) is spent. Image units score a random candidate subset of
the unlabeled images (`al_candidate_factor` x what the budget needs; the study
used 3); superpixel units rank the superpixels of every open image (the
study's protocol; `sp_candidate_factor` > 0 scores a random subset instead).
Scores come from the one scorer (`scoring`); the top units are taken with
deterministic tie-breaking. Units already labeled are never offered again:
images labeled whole leave the pool, and a superpixel is eligible only while
its annotation could add a label (`eligible_superpixels`). A cost budget is
filled without exceeding it (`oracle.fill_budget`). Between ranking and
buying, `acquisition.arrange` may reweight (class balance), cap per image and
reorder for diversity the ranked superpixels. `al_study_exact` restores
the study's selection where segal-jax improves on it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import numpy as np

from segal_jax.annotation import oracle
from segal_jax.data import labels as labels_lib
from segal_jax.errors import UserError
from segal_jax import models
from segal_jax.scoring import scorer as scoring
from segal_jax.scoring import uncertainty
from segal_jax.selection import arrange as acquisition
from segal_jax.state import pool as pool_lib
from segal_jax.training import losses
from segal_jax.training import metrics


TRUE_LOSS = scoring.TRUE_LOSS
LOSS_PREDICTION = scoring.LOSS_PREDICTION


@dataclasses.dataclass(frozen=True)
class Strategy:
  """How a strategy scores a unit.

  measure: name of a per-pixel map in `uncertainty.MEASURES`, or None for
    random selection.
  full: label the whole pool at once (the full-data reference line; one cycle).
  loss_head: the network carries a loss-prediction head trained jointly
    (`losses.JointLoss`), and each cycle records its ranking accuracy.
  """
  measure: str | None
  full: bool = False
  loss_head: bool = False

  def network(self) -> type:
    """The network class this strategy trains."""
    return models.DRNSegWithLossHead if self.loss_head else models.DRNSeg

  def training_loss(self, config) -> losses.LossFn:
    """The train step's loss function under `config` (an `ExperimentConfig`)."""
    if self.loss_head:
      return losses.JointLoss.from_config(config)
    return (losses.balanced_segmentation_loss if config.train_class_balance
            else losses.segmentation_loss)

  @property
  def mc(self) -> bool:
    """Whether scoring needs MC-dropout passes (else one deterministic pass)."""
    return self.measure in uncertainty.MEASURES and uncertainty.MEASURES[self.measure].needs_mc


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
    # The oracle upper bound of the study: rank by the real loss against the
    # ground truth, which a real selector never has.
    'true_loss': Strategy(measure=TRUE_LOSS),
    # Learning loss (Yoo & Kweon 2019): rank by the loss the jointly trained
    # head predicts (`models.DRNSegWithLossHead`, `losses.JointLoss`); images only.
    'loss_prediction': Strategy(measure=LOSS_PREDICTION, loss_head=True),
}

# Names of the uncertainty measures themselves, accepted wherever a scoring
# strategy is (e.g. `launch.score --strategy=mc_mean_entropy`).
SCORING_NAMES: dict[str, str] = {
    **{name: s.measure for name, s in STRATEGIES.items() if s.measure in uncertainty.MEASURES},
    **{m: m for m in uncertainty.MEASURES},
}


def get(name: str) -> Strategy:
  if name not in STRATEGIES:
    raise UserError(f'unknown strategy {name!r}',
                    f'choose from {", ".join(sorted(STRATEGIES))}')
  return STRATEGIES[name]


def check_config(config, *, pool_size: int | None = None) -> None:
  """The checks of an `ExperimentConfig` that concern strategies and units.

  Raises:
    UserError: an unknown strategy, or one the configuration cannot serve.
  """
  strategies = [get(s) for s in config.al_strategies]
  needs_mc = [n for n, s in zip(config.al_strategies, strategies) if s.mc]
  if needs_mc and (config.dropout_placement == 'none' or config.dropout_rate == 0):
    raise UserError(f'strategy {needs_mc[0]} needs MC dropout but the network has none',
                    "set --dropout_placement=stages or head and --dropout_rate > 0")
  if config.al_unit == 'superpixel' and any(s.loss_head for s in strategies):
    raise UserError('strategy loss_prediction predicts the loss of whole images, so it cannot '
                    'rank superpixels',
                    'use --al_unit=image for loss_prediction, or another strategy for superpixels')
  selects = any(not s.full for s in strategies)
  if pool_size is not None and selects and config.al_initial > pool_size:
    raise UserError(f'--al_initial={config.al_initial} is more than the {pool_size} images '
                    'of the pool', f'set --al_initial to at most {pool_size}')
  if selects and config.al_cycles > 1 and config.al_budget == 0 and not config.al_budget_cost:
    raise UserError('--al_budget=0 selects nothing, so every cycle would train on the same images',
                    'set --al_budget (or --al_budget_cost) to at least 1, or --al_cycles=1')
  if (pool_size is not None and config.al_unit == 'image' and not config.al_budget_cost
      and selects):
    total = config.al_initial + (config.al_cycles - 1) * config.al_budget
    if total > pool_size:
      raise UserError(f'the experiment labels {total} images '
                      f'(al_initial + (al_cycles-1) x al_budget) but the pool has only {pool_size}',
                      'lower --al_budget, --al_cycles or --al_initial')


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


@dataclasses.dataclass(frozen=True)
class Request:
  """What one cycle's selection reads.

  strategy: how units are scored.
  pool: what is labeled (updated by `select`).
  split: the pool's data (`images`, `labels`, `instances`, `ids`, `mean`, `std`).
  costs: [N] cost of each whole image (`annotator.image_costs`).
  keys: PRNG keys 'candidates', 'score' and 'select' of this cycle.
  apply_fn, variables: the trained network.
  config: the `ExperimentConfig` (budget, candidates, MC passes, batch size).
  annotator: who labels the chosen units (`annotators.Annotator`).
  segments: [N, H, W] superpixels of the pool (superpixel unit).
  segment_counts: [N] superpixels of each pool image (None: read from `segments`).
  """
  strategy: Strategy
  pool: pool_lib.PoolLabels
  split: Any
  costs: np.ndarray
  keys: dict[str, jax.Array]
  apply_fn: Any
  variables: Any
  config: Any
  annotator: Any
  segments: np.ndarray | None = None
  segment_counts: np.ndarray | None = None

  def score(self, indices: np.ndarray, num_segments: int = 0) -> np.ndarray:
    """The strategy's scores of pool images `indices` ([k], or [k, S] superpixel means)."""
    c = self.config
    settings = scoring.Settings(self.strategy.measure, passes=c.mc_passes, chunk=c.mc_chunk,
                                mean=tuple(self.split.mean), std=tuple(self.split.std),
                                num_segments=num_segments)
    out = scoring.score_images(self.apply_fn, self.variables, self.split.images, indices,
                               self.keys['score'], settings=settings,
                               batches=scoring.Batches(c.eval_batch_size, progress=c.progress),
                               segments=self.segments, labels=self.split.labels)
    return out['segment_means' if num_segments else 'scores']

  def expected_clicks(self, indices: np.ndarray, num_segments: int = 0) -> np.ndarray:
    """[k] (or [k, S] per superpixel) clicks the annotator would charge for pool
    images `indices` if the network's predicted segmentation were the truth
    (`annotator.expected_clicks`; never the hidden labels)."""
    c, out = self.config, []
    settings = scoring.Settings('entropy', mean=tuple(self.split.mean), std=tuple(self.split.std),
                                prediction=True)
    step = 4 * c.eval_batch_size  # predictions of a few batches at a time on the host
    for start in range(0, len(indices), step):
      chunk = np.asarray(indices[start:start + step])
      preds = scoring.score_images(self.apply_fn, self.variables, self.split.images, chunk,
                                   self.keys['score'], settings=settings,
                                   batches=scoring.Batches(c.eval_batch_size, progress=False)
                                   )['prediction']
      out += [self.annotator.expected_clicks(
          p, None if not num_segments else np.asarray(self.segments[i]), num_segments)
              for p, i in zip(preds, chunk.tolist())]
    return np.asarray(out, np.float64).reshape((len(indices),) + ((num_segments,)
                                                                  if num_segments else ()))

  def ranking(self, scores: np.ndarray, indices: np.ndarray, num_segments: int = 0):
    """What units are ordered by: `scores`, or with `al_rank=score_per_click`
    scores per expected click (`expected_clicks`, at least 1)."""
    if self.config.al_rank != 'score_per_click':
      return scores
    return np.asarray(scores, np.float64) / np.maximum(
        self.expected_clicks(indices, num_segments), 1.0)


@dataclasses.dataclass(frozen=True)
class Selection:
  """What a cycle chose, highest score first.

  names: the CSV rows (`id`, or `id/superpixel`); scores: [k] their scores.
  top_images: the pool images in rank order, each once (for the figures).
  chosen: [k] image indices (image unit); picks: image -> superpixel ids
    (superpixel unit).
  counts: {'scored_units', 'scored_images'}: the units ranked and the images
    holding them.
  """
  names: list[str]
  scores: np.ndarray
  top_images: np.ndarray
  counts: dict[str, int]
  chosen: np.ndarray | None = None
  picks: dict[int, list[int]] | None = None


def candidate_count(factor: float, needed: int) -> int:
  """Images to score: factor x the `needed` images, or 0 (every open image) for factor 0."""
  return 0 if factor <= 0 else int(math.ceil(factor * needed))


def _candidates(key, eligible: np.ndarray, factor: float, needed: int) -> np.ndarray:
  return candidates(key, eligible, candidate_count(factor, needed))


def _choose_images(r: Request) -> Selection:
  """`al_budget` images, or with `al_budget_cost` > 0 images in rank order while
  their annotation cost fits in it (`oracle.fill_budget`; `al_study_exact`:
  the study's rule, the image that crosses the budget is bought)."""
  budget, budget_cost = r.config.al_budget, r.config.al_budget_cost
  unlabeled = np.setdiff1d(np.arange(len(r.split)), r.pool.images())
  needed = budget
  if budget_cost:
    needed = max(1, math.ceil(budget_cost / max(float(np.mean(r.costs)), 1.0)))
  if r.strategy.measure is None:
    chosen = unlabeled[np.asarray(jax.random.permutation(r.keys['select'], len(unlabeled)))]
    scores = np.zeros(len(chosen), np.float32)
  else:
    cand = _candidates(r.keys['candidates'], unlabeled, r.config.al_candidate_factor, needed)
    all_scores = r.score(cand)
    order = top_k(r.ranking(all_scores, cand), len(cand))
    chosen, scores = cand[order], all_scores[order]
  counts = {'scored_units': len(chosen), 'scored_images': len(chosen)}
  if budget_cost:
    # An image's ids are its own: `costs[i]` distinct placeholders stand for them.
    taken, _ = oracle.fill_budget(((i, np.arange(r.costs[i])) for i in chosen), budget_cost,
                                  overshoot=r.config.al_study_exact)
  else:
    taken = np.arange(min(budget, len(chosen)))
  chosen, scores = chosen[taken], scores[taken]
  return Selection([r.split.ids[i] for i in chosen], scores, chosen, counts, chosen=chosen)


def eligible_superpixels(annotator, pool: pool_lib.PoolLabels, split, segments,
                         images: np.ndarray, segment_counts: np.ndarray, num_segments: int, *,
                         exact: bool = False) -> np.ndarray:
  """[len(images), num_segments] bool: the superpixels that may be chosen.

  A superpixel is eligible when its annotation could add a label
  (`annotator.addable_superpixels`: not all void, not all inside instances
  labeled before), which also rules out every superpixel chosen before.
  `exact` (the study): every superpixel of the image, chosen or not.

  Args:
    annotator: an `annotators.Annotator`.
    split: the pool (`labels`, `instances` indexable by image).
    segments: [N, H, W] superpixel ids of the pool.
    images: [n] pool indices.
    segment_counts: [N] superpixels of each pool image.
  """
  images = np.asarray(images, np.int64)
  present = np.arange(num_segments)[None, :] < np.asarray(segment_counts)[images][:, None]
  if exact or not len(images):
    return present
  addable = np.stack([annotator.addable_superpixels(pool, split, segments, i, num_segments)
                      for i in images.tolist()])
  return present & addable


def _choose_superpixels(r: Request) -> Selection:
  """`al_budget` eligible superpixels over the pool (`eligible_superpixels`), or
  with `al_budget_cost` > 0 superpixels in rank order while the ids they newly
  touch (the annotator's cost rule, an id paid once however many chosen
  superpixels touch it) fit in it (`oracle.fill_budget`; `al_study_exact`: the
  study's rule, the superpixel that crosses the budget is bought).

  `sp_candidate_factor` 0 ranks the superpixels of every image not labeled
  whole; > 0 a random subset of that many x the images the budget needs.
  """
  c = r.config
  budget, budget_cost, exact = c.al_budget, c.al_budget_cost, c.al_study_exact
  segments, n_pool = r.segments, len(r.split)
  counts = r.segment_counts
  if counts is None:
    counts = np.array([segments[i].max() + 1 for i in range(n_pool)])
  num_segments = int(np.max(counts[:n_pool]))
  open_images = np.setdiff1d(np.arange(n_pool), r.pool.full)
  if budget_cost:  # images whose instances could pay the budget
    needed = math.ceil(budget_cost / max(float(np.mean(r.costs)), 1.0))
  else:  # images whose superpixels could fill the budget
    needed = math.ceil(budget / num_segments)
  cand = _candidates(r.keys['candidates'], open_images, c.sp_candidate_factor, max(1, needed))
  allowed = eligible_superpixels(r.annotator, r.pool, r.split, segments, cand, counts,
                                 num_segments, exact=exact)
  cand, allowed = cand[allowed.any(axis=1)], allowed[allowed.any(axis=1)]
  if r.strategy.measure is None:
    scores = np.asarray(jax.random.uniform(r.keys['select'], (len(cand), num_segments)))
  else:
    scores = r.score(cand, num_segments)
  ranked_by = scores if r.strategy.measure is None else r.ranking(scores, cand, num_segments)
  flat = top_k(ranked_by, scores.size if budget_cost or acquisition.active(c) else budget,
               exclude=~allowed)
  # Class balance, per-image cap, diversity (all off by default: unchanged);
  # the records keep the (balanced) scores, not the per-click ratios.
  arranged, flat = acquisition.arrange(r, cand, ranked_by, flat)
  scores = arranged if ranked_by is scores else scores
  flat = _within_cost(r, cand, flat, num_segments) if budget_cost else flat[:budget]
  return _superpixel_selection(r, cand, flat, scores, num_segments,
                               {'scored_units': int(allowed.sum()), 'scored_images': len(cand)})


def _within_cost(r: Request, cand: np.ndarray, flat: np.ndarray, num_segments: int):
  """The ranked superpixels `flat` (flat indices into [len(cand), num_segments])
  that `oracle.fill_budget` buys within `al_budget_cost`, an id paid once."""
  tables: dict[int, dict[int, np.ndarray]] = {}
  prices: dict[int, dict[int, int] | None] = {}  # id -> cost (None: 1 each), e.g. clicks

  def ids_of(f):
    row, sp = divmod(int(f), num_segments)
    i = int(cand[row])
    if i not in tables:
      tables[i] = r.annotator.superpixel_ids(r.split, r.segments, i)
      prices[i] = r.annotator.prices(r.split, i)
    return i, tables[i].get(sp, np.zeros(0, np.int64))

  taken, _ = oracle.fill_budget(map(ids_of, flat), r.config.al_budget_cost, r.pool.paid,
                                overshoot=r.config.al_study_exact,
                                price=lambda i, ids: oracle.priced(prices[i], ids),
                                floor=r.annotator.min_price)
  return flat[taken]


def _superpixel_selection(r: Request, cand: np.ndarray, flat: np.ndarray, scores: np.ndarray,
                          num_segments: int, counts: dict[str, int]) -> Selection:
  """The `Selection` of the superpixels `flat` (flat indices into
  [len(cand), num_segments] `scores`), in rank order."""
  rows, sps = np.divmod(flat, num_segments)
  picks: dict[int, list[int]] = {}
  ranked = []
  for row, sp in zip(rows, sps):
    picks.setdefault(int(cand[row]), []).append(int(sp))
    ranked.append((int(cand[row]), int(sp)))
  out_scores = np.asarray(scores).ravel()[flat] if r.strategy.measure else np.zeros(len(flat))
  top = np.array(list(dict.fromkeys(i for i, _ in ranked)), np.int64)
  return Selection([f'{r.split.ids[i]}/{sp}' for i, sp in ranked],
                   out_scores.astype(np.float32), top, counts, picks=picks)


@dataclasses.dataclass(frozen=True)
class Unit:
  """A unit of annotation: how it is chosen, and how the annotator labels it."""
  choose: Callable[[Request], Selection]
  annotate: Callable[[Request, Selection], None]


UNITS: dict[str, Unit] = {
    'image': Unit(_choose_images,
                  lambda r, s: r.annotator.annotate_images(r.pool, r.split, s.chosen)),
    'superpixel': Unit(_choose_superpixels,
                       lambda r, s: r.annotator.annotate_superpixels(r.pool, r.split,
                                                                     r.segments, s.picks)),
}


def choose(unit: str, request: Request) -> Selection:
  """This cycle's units (`UNITS[unit].choose`); the pool is not changed yet."""
  return UNITS[unit].choose(request)


def annotate(unit: str, request: Request, chosen: Selection) -> dict[str, int]:
  """Has the annotator label what `choose` chose (updates `request.pool`).

  Returns:
    What that added, as the records name it: {'new_labeled_pixels',
    'new_instances'} over the images `chosen` touches, and 'new_cost' in the
    budget's unit (`annotator.cost`).
  """
  r, annotator = request, request.annotator
  touched = chosen.chosen if chosen.picks is None else np.array(sorted(chosen.picks), np.int64)
  pixels, instances = annotator.labeled_counts(r.pool, r.split, touched)
  cost = annotator.cost(r.pool, r.costs, r.split)
  UNITS[unit].annotate(request, chosen)
  pixels_after, instances_after = annotator.labeled_counts(r.pool, r.split, touched)
  return {'new_labeled_pixels': pixels_after - pixels,
          'new_instances': instances_after - instances,
          'new_cost': annotator.cost(r.pool, r.costs, r.split) - cost}


def select(unit: str, request: Request) -> Selection:
  """Chooses this cycle's units and has them annotated (updates `request.pool`)."""
  chosen = choose(unit, request)
  annotate(unit, request, chosen)
  return chosen


def validation_ranking_accuracy(apply_fn, variables, split, *, batch_size: int,
                                progress: bool = False, mesh=None) -> float:
  """`metrics.ranking_accuracy` of a loss-prediction head over a labeled split.

  Predicted losses come from a deterministic pass (`train=False`), true losses
  are each image's mean cross-entropy over its labeled pixels; images without
  a labeled pixel are left out. Both come from the one scorer, so they shard
  and batch like pool scoring.

  Args:
    apply_fn, variables: a `models.DRNSegWithLossHead`'s apply and variables.
    split: has `images` [N, H, W, 3] uint8, `labels` [N, H, W] uint8, `mean`, `std`.
  """
  indices = np.arange(len(split.images))
  key = jax.random.key(0)  # unused: both passes are deterministic

  def scores(measure):
    settings = scoring.Settings(measure, mean=tuple(split.mean), std=tuple(split.std))
    return scoring.score_images(apply_fn, variables, split.images, indices, key,
                                settings=settings,
                                batches=scoring.Batches(batch_size, mesh, progress),
                                labels=split.labels)['scores']

  labeled = np.asarray([np.any(np.asarray(split.labels[i]) != labels_lib.IGNORE) for i in indices])
  return metrics.ranking_accuracy(scores(LOSS_PREDICTION)[labeled],
                                  scores(TRUE_LOSS)[labeled])
