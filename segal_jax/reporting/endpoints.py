"""Tests of a comparison's endpoints, corrected for multiplicity.

Pure NumPy/scipy, no I/O. Every line that has a reference line (paired by
seed, `statistics.reference_of`) is tested on up to four endpoints, the
pre-registered ones of docs/results/preregistration.md:

- `auc`: the paired difference in normalised AUC of mIoU against instances
  (over the range every run covers); paired t-test (`scipy.stats.ttest_rel`).
- `saving_95`, `saving_90`: the saving in instances to reach 95% / 90% of the
  full-data mIoU, `1 - c_line / c_ref` in percent, each `c` read off the mean
  curve of the seeds; paired bootstrap over seeds (`scipy.stats.bootstrap`,
  both lines resampled together), percentile intervals, two-sided p-value from
  the bootstrap distribution.
- `auc_clicks`: as `auc` with the cost in polygon clicks (when recorded).

`holm` adjusts every p-value of a report together (one family), and
`detectable_difference` says what paired difference the seeds could have
shown (the power statement of a negative result).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import optimize
from scipy import stats

from segal_jax.reporting import statistics

ALPHA = 0.05  # family-wise error rate
RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
POWER = 0.8
SAVING_TARGETS = (0.95, 0.90)


def holm(pvalues: Sequence[float]) -> list[float]:
  """Holm's step-down adjusted p-values [m], in the order given; NaN stays NaN
  and does not count towards m."""
  p = np.asarray(pvalues, np.float64)
  out = np.full(len(p), math.nan)
  finite = np.flatnonzero(np.isfinite(p))
  m = len(finite)
  running = 0.0
  for rank, i in enumerate(finite[np.argsort(p[finite], kind='stable')]):
    running = max(running, min(1.0, (m - rank) * p[i]))
    out[i] = running
  return out.tolist()


def paired_t(a: Sequence[float], b: Sequence[float]) -> dict:
  """Mean of a - b [S] over the pairs both have, its 95% t-interval and the
  two-sided paired t-test's p-value (NaN with fewer than 2 pairs)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  keep = np.isfinite(a) & np.isfinite(b)
  iv = statistics.paired_difference(a[keep], b[keep])
  p = math.nan
  if keep.sum() >= 2:
    d = a[keep] - b[keep]
    if np.allclose(d, d[0], rtol=0, atol=1e-12):  # no spread: t is infinite, or 0/0
      p = 1.0 if abs(d[0]) <= 1e-12 else 0.0
    else:
      p = float(stats.ttest_rel(a[keep], b[keep]).pvalue)
  sd = float(np.std(a[keep] - b[keep], ddof=1)) if keep.sum() >= 2 else math.nan
  return {'estimate': iv.mean, 'low': iv.low, 'high': iv.high, 'n': iv.n, 'p': p, 'sd': sd}


def mean_curve_saving(cost: np.ndarray, miou: np.ndarray, ref_cost: np.ndarray,
                      ref_miou: np.ndarray, target: float) -> tuple[float, bool]:
  """(saving in percent, whether it is a lower bound) of the line over its
  reference at `target` mIoU, from their mean curves over seeds.

  cost, miou, ref_cost, ref_miou: [S, K] (paired rows). Where the reference
  never reaches the target its last mean cost stands in (a lower bound); where
  the line never reaches it the saving is min(0, what its last cost would
  save): an unreached target never counts for the line. NaN when neither
  reaches it.
  """
  line = _mean_budget(cost, miou, target)
  ref = _mean_budget(ref_cost, ref_miou, target)
  if math.isnan(line[0]) and math.isnan(ref[0]):
    return math.nan, False
  ref_cost_at = ref[1] if math.isnan(ref[0]) else ref[0]
  if math.isnan(line[0]):
    return min(0.0, statistics.saving_pct(line[1], ref_cost_at)), False
  return statistics.saving_pct(line[0], ref_cost_at), math.isnan(ref[0])


def _mean_budget(cost: np.ndarray, miou: np.ndarray, target: float) -> tuple[float, float]:
  """(cost where the mean curve [K] first reaches `target` or NaN, its last mean cost)."""
  x, y = np.nanmean(cost, axis=0), np.nanmean(miou, axis=0)
  return statistics.budget_to_reach(x, y, target), float(x[-1])


def bootstrap_saving(cost: np.ndarray, miou: np.ndarray, ref_cost: np.ndarray,
                     ref_miou: np.ndarray, target: float, *, resamples: int = RESAMPLES,
                     seed: int = BOOTSTRAP_SEED, alpha: float = ALPHA, tests: int = 1) -> dict:
  """`mean_curve_saving` with a paired bootstrap over seeds: the S rows of all
  four arrays [S, K] are resampled together. Returns {'estimate',
  'lower_bound', 'low', 'high' (1 - alpha interval), 'low_corrected',
  'high_corrected' (1 - alpha/tests, Bonferroni), 'p' (two-sided: twice the
  smaller share of resamples at or beyond 0, at least 1/(B+1)), 'n'}."""
  n = cost.shape[0]
  estimate, lower_bound = mean_curve_saving(cost, miou, ref_cost, ref_miou, target)
  out = {'estimate': estimate, 'lower_bound': lower_bound, 'n': n, 'low': math.nan,
         'high': math.nan, 'low_corrected': math.nan, 'high_corrected': math.nan,
         'p': 1.0 if math.isnan(estimate) else math.nan}
  if n < 2 or math.isnan(estimate):
    return out

  def statistic(idx):  # a resample where neither line reaches the target saves nothing
    idx = idx.astype(int)
    return np.nan_to_num(mean_curve_saving(cost[idx], miou[idx], ref_cost[idx], ref_miou[idx],
                                           target)[0], nan=0.0)

  res = stats.bootstrap((np.arange(n),), statistic, vectorized=False, n_resamples=resamples,
                        method='percentile', confidence_level=1 - alpha,
                        rng=np.random.default_rng(seed))
  dist = res.bootstrap_distribution
  out['low'], out['high'] = (float(v) for v in np.quantile(dist, [alpha / 2, 1 - alpha / 2]))
  corrected = alpha / tests
  out['low_corrected'], out['high_corrected'] = (
      float(v) for v in np.quantile(dist, [corrected / 2, 1 - corrected / 2]))
  below, above = int((dist <= 0).sum()), int((dist >= 0).sum())
  out['p'] = min(1.0, 2 * (min(below, above) + 1) / (len(dist) + 1))
  return out


def detectable_difference(sd: float, n: int, alpha: float = ALPHA,
                          power: float = POWER) -> float:
  """The smallest true mean of paired differences (sd `sd`, `n` pairs) that a
  two-sided paired t-test at level `alpha` detects with probability `power`
  (noncentral t); NaN when n < 2 or sd is not positive."""
  if n < 2 or not sd > 0:
    return math.nan
  df = n - 1
  crit = stats.t.ppf(1 - alpha / 2, df)

  def shortfall(delta):
    nc = delta * math.sqrt(n) / sd
    # The lower tail is below its central value alpha / 2 and falls fast with
    # nc; scipy's nct.cdf returns NaN at some far tails, where it is ~0.
    lower = np.nan_to_num(stats.nct.cdf(-crit, df, nc), nan=0.0)
    return stats.nct.sf(crit, df, nc) + lower - power

  hi = sd / math.sqrt(n)
  for _ in range(64):  # double until the power is reached (NaN: scipy's nct gave up)
    gap = shortfall(hi)
    if not gap < 0:
      break
    hi *= 2
  if not gap >= 0:
    return math.nan
  return float(optimize.brentq(shortfall, 0.0, hi))


def per_class_differences(records: Sequence[dict], names: dict[tuple[str, str], str],
                          reference: statistics.Reference = statistics.DEFAULT_REFERENCE
                          ) -> dict[str, dict[str, dict]]:
  """{line name: {class: {'mean', 'low', 'high', 'n'}}}: each line's paired
  difference in per-class IoU to its reference line at the last cycle they
  share, seed by seed (95% t-intervals; exploratory, not corrected). Classes
  without an IoU in a pair (absent from the validation set) are left out;
  records without `per_class` are ignored."""
  by_run = {}
  for r in records:
    if 'per_class' in r and r['strategy'] != 'full':
      by_run.setdefault(((r['strategy'], r.get('unit', 'image')), r['seed']), {})[r['cycle']] = r
  out = {}
  for key in names:
    ref_key = statistics.reference_of(key, reference)
    if ref_key == key or ref_key not in names:
      continue
    diffs = {}
    for (line, seed), cycles in by_run.items():
      ref = by_run.get((ref_key, seed)) if line == key else None
      shared = sorted(set(cycles) & set(ref or ()))
      if not shared:
        continue
      a, b = cycles[shared[-1]]['per_class'], ref[shared[-1]]['per_class']
      for cls, v in a.items():
        if v is not None and b.get(cls) is not None:
          diffs.setdefault(cls, []).append(v - b[cls])
    out[names[key]] = {cls: interval_json(statistics.interval(d)) for cls, d in diffs.items()}
  return out


def interval_json(iv: statistics.Interval) -> dict:
  """{'mean', 'low', 'high', 'n'}, None for NaN (strict JSON)."""
  clean = lambda v: None if math.isnan(v) else v
  return {'mean': clean(iv.mean), 'low': clean(iv.low), 'high': clean(iv.high), 'n': iv.n}


def _paired_rows(runs: statistics.Runs, ref: statistics.Runs):
  """The rows [S', K'] of both lines over their common seeds and cycles."""
  seeds = np.intersect1d(runs.seeds, ref.seeds)
  cycles = np.intersect1d(runs.cycles, ref.cycles)
  take = lambda r, a: a[np.ix_([list(r.seeds).index(s) for s in seeds],
                               [list(r.cycles).index(c) for c in cycles])]
  return (take(runs, runs.cost), take(runs, runs.miou), take(ref, ref.cost),
          take(ref, ref.miou))


def _auc_test(runs: dict, key, ref_key) -> dict:
  """The `auc` endpoint of line `key` against `ref_key` over the range every run covers."""
  auc_range = statistics.common_range([c for r in runs.values() for c in r.cost])
  cost, miou, ref_cost, ref_miou = _paired_rows(runs[key], runs[ref_key])
  if auc_range is None or auc_range[0] == auc_range[1]:
    return paired_t([], [])
  area = lambda cs, ms: [statistics.normalized_auc(c, m, *auc_range) for c, m in zip(cs, ms)]
  return paired_t(area(cost, miou), area(ref_cost, ref_miou))


def tests(runs: dict[tuple[str, str], statistics.Runs], full_miou: float | None,
          reference: statistics.Reference = statistics.DEFAULT_REFERENCE,
          clicks: dict[tuple[str, str], statistics.Runs] | None = None) -> list[dict]:
  """Every endpoint of every line with a reference line, Holm-adjusted together.

  runs: the lines with the cost in instances; clicks: the same lines with the
  cost in clicks (None: no `auc_clicks`). Returns [{'line': (strategy, unit),
  'reference': (strategy, unit), 'endpoint', 'estimate', 'low', 'high', 'p',
  'p_holm', 'n', ...}] in line order, then endpoint order. The AUC endpoints
  also give `detectable`: the difference their seeds detect with 80% power at
  Holm's first level (alpha / tests); the savings their Bonferroni-level
  interval (`low_corrected`, `high_corrected`).
  """
  pairs = [(k, r) for k in runs
           if (r := statistics.reference_of(k, reference)) != k and r in runs]
  has_clicks = lambda k, r: clicks is not None and k in clicks and r in clicks
  family = sum(1 + (len(SAVING_TARGETS) if full_miou is not None else 0) + has_clicks(k, r)
               for k, r in pairs)

  def auc(lines, key, ref_key):
    t = _auc_test(lines, key, ref_key)
    return dict(t, detectable=detectable_difference(t['sd'], t['n'], ALPHA / family))

  out = []
  for key, ref_key in pairs:
    found = [dict(auc(runs, key, ref_key), endpoint='auc')]
    if full_miou is not None:
      rows = _paired_rows(runs[key], runs[ref_key])
      found += [dict(bootstrap_saving(*rows, t * full_miou, tests=family),
                     endpoint=f'saving_{round(100 * t)}') for t in SAVING_TARGETS]
    if has_clicks(key, ref_key):
      found.append(dict(auc(clicks, key, ref_key), endpoint='auc_clicks'))
    out += [dict(f, line=key, reference=ref_key) for f in found]
  for t, p in zip(out, holm([t['p'] for t in out])):
    t['p_holm'] = p
  return out


_TITLES = {'auc': 'AUC difference (instances)', 'saving_95': 'saving to 95% of full (%)',
           'saving_90': 'saving to 90% of full (%)', 'auc_clicks': 'AUC difference (clicks)'}


def to_json(found: list[dict], names: dict[tuple[str, str], str]) -> list[dict]:
  """`tests` for summary.json: lines by display name, NaN as None."""
  clean = lambda v: None if isinstance(v, float) and math.isnan(v) else v
  return [{k: names[v] if k in ('line', 'reference') else clean(v) for k, v in t.items()}
          for t in found]


def format_per_class(diffs: dict[str, dict[str, dict]], reference: str) -> str:
  """`per_class_differences` as a markdown section (empty when there is none)."""
  if not any(diffs.values()):
    return ''
  lines = list(diffs)
  classes = list(dict.fromkeys(c for d in diffs.values() for c in d))
  fmt = lambda iv: ('-' if iv is None or iv['mean'] is None else
                    f"{iv['mean']:+.3f}" + ('' if iv['low'] is None else
                                            f" [{iv['low']:+.3f}, {iv['high']:+.3f}]"))
  rows = [f"| {c} | " + ' | '.join(fmt(diffs[n].get(c)) for n in lines) + ' |' for c in classes]
  return '\n'.join([
      '', f'## IoU per class minus {reference}, at the last shared cycle (exploratory)', '',
      '| class | ' + ' | '.join(lines) + ' |', '|---|' + '---|' * len(lines), *rows, '',
      'Paired by seed, 95% t-intervals, not corrected for multiplicity.', ''])


def format_tests(found: list[dict]) -> str:
  """`to_json(tests(...))` as a markdown section (empty when there is no test)."""
  if not found:
    return ''
  fmt = lambda v, spec: '-' if v is None else format(v, spec)
  rows = []
  for t in found:
    saving = t['endpoint'].startswith('saving')
    spec = '+.1f' if saving else '+.4f'
    estimate = ('not reached' if t['estimate'] is None else
                ('≥ ' if t.get('lower_bound') else '') + fmt(t['estimate'], spec))
    extra = (f"[{fmt(t['low_corrected'], spec)}, {fmt(t['high_corrected'], spec)}]" if saving
             else fmt(t.get('detectable'), '.4f'))
    rows.append(f"| {t['line']} | {t['reference']} | {_TITLES[t['endpoint']]} | {estimate} | "
                f"[{fmt(t['low'], spec)}, {fmt(t['high'], spec)}] | {extra} | {t['n']} | "
                f"{fmt(t['p'], '.4f')} | {fmt(t['p_holm'], '.4f')} |")
  return '\n'.join([
      '## Tests (Holm-corrected over every row)', '',
      '| line | against | endpoint | estimate | 95% interval | corrected interval / detectable '
      'difference | seeds | p | p (Holm) |',
      '|---|---|---|---|---|---|---|---|---|', *rows, '',
      'AUC differences: paired t-test over seeds; the detectable difference is the one '
      'the seeds would detect with 80% power at Holm\'s first level. Savings: from the mean '
      'curves, paired bootstrap over seeds (10,000 resamples), percentile intervals, the '
      'corrected one at the Bonferroni level 1 - 0.05/tests; ≥: the reference never reached '
      'the target (its last cost stands in); a line that never reaches it saves at most 0.', ''])
