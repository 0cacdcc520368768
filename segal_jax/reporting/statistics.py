"""Statistics that compare active-learning strategies over seeds.

Pure NumPy/scipy, no I/O. A strategy's runs (one per seed, in one unit) are a
`Runs`: per seed and cycle its annotation cost, labeled images and mIoU.
Seeds are paired: the same seed gives every strategy the same initial set, so
differences to a reference line (by default random of the same unit) are taken
seed by seed.

- `interval`: mean and Student t confidence interval over seeds.
- `paired_difference`: the interval of a - b over the seeds both have.
- `common_range`, `normalized_auc`: area under mIoU-vs-cost over the cost range
  every compared run covers, divided by that range (a mean mIoU over it).
- `budget_to_reach`, `saving_pct`: the annotation at which a mean curve first
  reaches a target mIoU, and what that saves against a reference.
- `reference_of`, `line_order`: which line another is compared with, and the
  order lines are shown in.
- `compare`: all of the above for a set of strategies (what a report shows).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
from scipy import integrate
from scipy import stats

CONFIDENCE = 0.95
TARGETS = (0.90, 0.95)  # fractions of the full-data mIoU
REFERENCE = 'random'
# (strategy, unit): every line is compared with that line; unit None: with the
# strategy's line of the line's own unit.
Reference = tuple[str, str | None]
DEFAULT_REFERENCE: Reference = (REFERENCE, None)


@dataclasses.dataclass(frozen=True)
class Interval:
  """A mean over n values with its confidence interval (`low`, `high`: NaN when n < 2)."""
  mean: float
  low: float
  high: float
  n: int


@dataclasses.dataclass(frozen=True)
class Runs:
  """One strategy in one unit over seeds.

  seeds: [S] int; cycles: [K] int; cost, images, miou: [S, K] float, NaN where
  a seed has not (yet) finished that cycle.
  """
  seeds: np.ndarray
  cycles: np.ndarray
  cost: np.ndarray
  images: np.ndarray
  miou: np.ndarray


def interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
  """Mean and t-interval (n - 1 degrees of freedom) of the finite `values` [n]."""
  v = np.asarray(values, np.float64)
  v = v[np.isfinite(v)]
  n = len(v)
  if n == 0:
    return Interval(math.nan, math.nan, math.nan, 0)
  mean = float(v.mean())
  if n == 1:
    return Interval(mean, math.nan, math.nan, 1)
  half = float(stats.t.ppf((1 + confidence) / 2, n - 1) * stats.sem(v))
  return Interval(mean, mean - half, mean + half, n)


def paired_difference(a: Sequence[float], b: Sequence[float],
                      confidence: float = CONFIDENCE) -> Interval:
  """The interval of a - b over the pairs where both are finite; a, b: [S], same seed order."""
  return interval(np.asarray(a, np.float64) - np.asarray(b, np.float64), confidence)


def common_range(curves: Sequence[np.ndarray]) -> tuple[float, float] | None:
  """(lo, hi): the x range every curve [K_i] covers; None if they share none."""
  xs = [np.asarray(x, np.float64) for x in curves]
  xs = [x[np.isfinite(x)] for x in xs]
  if not xs or any(len(x) == 0 for x in xs):
    return None
  lo, hi = max(float(x.min()) for x in xs), min(float(x.max()) for x in xs)
  return (lo, hi) if lo <= hi else None


def normalized_auc(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
  """Trapezoid area under y(x) [K] from lo to hi, divided by hi - lo.

  The curve is interpolated linearly at lo and hi; points outside are dropped.
  NaN when lo == hi (no width) or the curve does not cover [lo, hi].
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  keep = np.isfinite(x) & np.isfinite(y)
  x, y = x[keep], y[keep]
  order = np.argsort(x, kind='stable')
  x, y = x[order], y[order]
  if hi <= lo or len(x) == 0 or x[0] > lo or x[-1] < hi:
    return math.nan
  inside = (x > lo) & (x < hi)
  xs = np.concatenate([[lo], x[inside], [hi]])
  ys = np.concatenate([[np.interp(lo, x, y)], y[inside], [np.interp(hi, x, y)]])
  return float(integrate.trapezoid(ys, xs) / (hi - lo))


def budget_to_reach(x: np.ndarray, y: np.ndarray, target: float) -> float:
  """The x at which y [K] (ordered by x [K]) first reaches `target`; NaN if never.

  Linear interpolation between the last point below and the first at or above
  the target; a curve already there at its first point needs x[0].
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  reached = np.flatnonzero(y >= target)
  if len(reached) == 0:
    return math.nan
  i = int(reached[0])
  if i == 0:
    return float(x[0])
  return float(x[i - 1] + (target - y[i - 1]) * (x[i] - x[i - 1]) / (y[i] - y[i - 1]))


def saving_pct(budget: float, reference: float) -> float:
  """How much less annotation `budget` needs than `reference`, in percent (NaN if either is)."""
  return 100.0 * (reference - budget) / reference if reference > 0 else math.nan


def reference_of(key: tuple[str, str], reference: Reference = DEFAULT_REFERENCE
                 ) -> tuple[str, str]:
  """The (strategy, unit) line that line `key` is compared with."""
  strategy, unit = reference
  return (strategy, key[1] if unit is None else unit)


def line_order(key: tuple[str, str], reference: Reference = DEFAULT_REFERENCE) -> tuple:
  """Sort key of a report's lines: a fixed reference line first, then unit by
  unit, each unit's reference strategy first."""
  return (reference[1] is None or key != reference, key[1], key[0] != reference[0], key[0])


def _paired(runs: Runs, ref: Runs, values, ref_values) -> Interval:
  """paired_difference over the seeds both runs have; values: [S], ref_values: [S_ref]."""
  common = np.intersect1d(runs.seeds, ref.seeds)
  a = [values[list(runs.seeds).index(s)] for s in common]
  b = [ref_values[list(ref.seeds).index(s)] for s in common]
  return paired_difference(a, b)


def compare(runs: dict[tuple[str, str], Runs], full_miou: float | None = None,
            targets: Sequence[float] = TARGETS,
            reference: Reference = DEFAULT_REFERENCE) -> dict:
  """Every statistic of a report, keyed like `runs` by (strategy, unit).

  Returns {'auc_range': (lo, hi) | None (no common range of non-zero width), 'curves':
  {key: {'cycles': [{'cycle', 'n', 'cost', 'images', 'miou': Interval,
  'diff': Interval | None}], 'auc': Interval, 'auc_diff': Interval | None,
  'budgets': {target: {'miou', 'cost', 'saving_pct', 'saving_is_lower_bound'}}}}}.
  Differences and savings are against each line's `reference_of` line when
  present (none for that line itself), paired by seed and cycle (a cycle the
  reference lacks has none); budgets need `full_miou`. A saving is a lower
  bound when the reference never reaches the target (it would need more than
  its last cost); NaN when that bound is below zero.
  """
  auc_range = common_range([cost for r in runs.values() for cost in r.cost])
  if auc_range is not None and auc_range[0] == auc_range[1]:
    auc_range = None  # the runs share a single cost: no area
  aucs = {key: np.array([normalized_auc(cost, miou, *auc_range) if auc_range else math.nan
                         for cost, miou in zip(r.cost, r.miou)]) for key, r in runs.items()}
  out = {}
  for key, r in runs.items():
    ref_key = reference_of(key, reference)
    ref = None if ref_key == key else runs.get(ref_key)
    cycles = []
    for k, c in enumerate(r.cycles):
      diff = None
      if ref is not None and c in ref.cycles:
        diff = _paired(r, ref, r.miou[:, k], ref.miou[:, list(ref.cycles).index(c)])
      cycles.append({'cycle': int(c), 'n': int(np.isfinite(r.miou[:, k]).sum()),
                     'cost': float(np.nanmean(r.cost[:, k])),
                     'images': float(np.nanmean(r.images[:, k])),
                     'miou': interval(r.miou[:, k]), 'diff': diff})
    entry = {'cycles': cycles, 'auc': interval(aucs[key]),
             'auc_diff': None if ref is None else _paired(r, ref, aucs[key], aucs[ref_key]),
             'budgets': {}}
    if full_miou is not None:
      for t in targets:
        entry['budgets'][t] = {'miou': t * full_miou}
    out[key] = entry
  for key, entry in out.items():
    ref_key = reference_of(key, reference)
    for b in entry['budgets'].values():
      b['cost'] = _mean_curve_budget(entry['cycles'], b['miou'])
      b['saving_pct'], b['saving_is_lower_bound'] = math.nan, False
      if ref_key not in out or ref_key == key or math.isnan(b['cost']):
        continue
      ref_cost = _mean_curve_budget(out[ref_key]['cycles'], b['miou'])
      if not math.isnan(ref_cost):
        b['saving_pct'] = saving_pct(b['cost'], ref_cost)
      elif b['cost'] <= (last := max(c['cost'] for c in out[ref_key]['cycles'])):
        # The reference needs more than its last cost: the saving is at least this much.
        b['saving_pct'], b['saving_is_lower_bound'] = saving_pct(b['cost'], last), True
  return {'auc_range': auc_range, 'curves': out}


def _mean_curve_budget(cycles: list[dict], target: float) -> float:
  """budget_to_reach on the mean cost / mean mIoU curve of `compare`'s cycles."""
  x = np.array([c['cost'] for c in cycles])
  y = np.array([c['miou'].mean for c in cycles])
  return budget_to_reach(x, y, target)
