"""The report's tests against hand-computed cases, closed forms, brute-force
enumeration and simulation (segal_jax/reporting/endpoints.py)."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from segal_jax.reporting import endpoints
from segal_jax.reporting import statistics


def test_holm_by_hand():
  # Sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> 0.06).
  assert endpoints.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
  # Capped at 1; NaN does not count towards m = 2.
  adjusted = endpoints.holm([math.nan, 0.02, 0.7])
  assert math.isnan(adjusted[0]) and adjusted[1:] == pytest.approx([0.04, 0.7])
  assert endpoints.holm([0.6, 0.5]) == pytest.approx([1.0, 1.0])
  assert endpoints.holm([]) == []


def test_paired_t_matches_the_closed_form_for_two_degrees_of_freedom():
  # d = 1, 2, 3: mean 2, sd 1, t = 2 / (1 / sqrt 3) = sqrt 12; with 2 dof the
  # t CDF is 1/2 + t / (2 sqrt(t^2 + 2)), so p = 1 - sqrt 12 / sqrt 14.
  t = endpoints.paired_t([1.5, 2.5, 3.5], [0.5, 0.5, 0.5])
  assert t['estimate'] == pytest.approx(2.0) and t['n'] == 3 and t['sd'] == pytest.approx(1.0)
  assert t['p'] == pytest.approx(1 - math.sqrt(12 / 14))
  # No spread: a difference is certain, none is not one; one pair has no test.
  assert endpoints.paired_t([0.3, 0.4], [0.2, 0.3])['p'] == 0.0
  assert endpoints.paired_t([0.3, 0.4], [0.3, 0.4])['p'] == 1.0
  assert math.isnan(endpoints.paired_t([0.3], [0.2])['p'])


LINE_COST = np.array([[0.0, 100.0, 200.0]])
LINE = np.array([[0.1, 0.5, 0.9]])
REF = np.array([[0.1, 0.3, 0.5]])


def test_mean_curve_saving_by_hand():
  # 0.5: the line at 100, the reference at 200: half.
  assert endpoints.mean_curve_saving(LINE_COST, LINE, LINE_COST, REF, 0.5) == (50.0, False)
  # 0.7: the line at 150; the reference never, its last cost 200 stands in: at least 25%.
  assert endpoints.mean_curve_saving(LINE_COST, LINE, LINE_COST, REF, 0.7) == (25.0, True)
  # Swapped at 0.7: the line never reaches it, so it saves at most 0 (here 200 vs 150: -33%).
  saving, bound = endpoints.mean_curve_saving(LINE_COST, REF, LINE_COST, LINE, 0.7)
  assert saving == pytest.approx(-100 / 3) and not bound
  # ... and where its last cost would save something, it still counts as 0.
  saving, _ = endpoints.mean_curve_saving(LINE_COST * 0.5, REF, LINE_COST, LINE, 0.7)
  assert saving == 0.0
  assert math.isnan(endpoints.mean_curve_saving(LINE_COST, LINE, LINE_COST, REF, 0.95)[0])


def _seeds():
  """Three paired seeds whose savings at 0.5 differ: the line reaches 0.5 at 100,
  the reference at 150, 200 and 250 seed by seed (mean-curve statistics)."""
  cost = np.tile([0.0, 100.0, 200.0, 300.0], (3, 1))
  line = np.tile([0.1, 0.5, 0.6, 0.7], (3, 1))
  ref = np.array([[0.1, 0.4, 0.6, 0.7], [0.1, 0.3, 0.5, 0.6], [0.1, 0.2, 0.4, 0.6]])
  return cost, line, cost, ref


def test_bootstrap_saving_against_every_resample_enumerated():
  rows = _seeds()
  result = endpoints.bootstrap_saving(*rows, 0.5, resamples=4000)
  # Brute force: the 27 equally likely ordered resamples of 3 seeds.
  exact = np.array([endpoints.mean_curve_saving(*(r[list(idx)] for r in rows), 0.5)[0]
                    for idx in itertools.product(range(3), repeat=3)])
  assert result['estimate'] == pytest.approx(endpoints.mean_curve_saving(*rows, 0.5)[0])
  # The bootstrap's 2.5% and 97.5% quantiles sit inside the exact distribution's
  # range, near its quantiles.
  assert exact.min() - 1e-9 <= result['low'] <= np.quantile(exact, 0.1)
  assert np.quantile(exact, 0.9) <= result['high'] <= exact.max() + 1e-9
  # Every resample saves something here, so p is the floor 2 / (B + 1).
  assert (exact > 0).all() and result['p'] == pytest.approx(2 / 4001)
  # The Bonferroni interval of 4 tests is at least as wide.
  wide = endpoints.bootstrap_saving(*rows, 0.5, resamples=4000, tests=4)
  assert wide['low_corrected'] <= wide['low'] and wide['high_corrected'] >= wide['high']


def test_bootstrap_p_value_is_two_sided_share_of_the_other_side():
  cost, line, _, ref = _seeds()
  # Seed 2's line is now far worse than its reference: some resamples lose.
  line = line.copy()
  line[2] = [0.1, 0.1, 0.2, 0.5]
  ref = ref.copy()
  ref[2] = [0.1, 0.5, 0.6, 0.7]
  result = endpoints.bootstrap_saving(cost, line, cost, ref, 0.5, resamples=4000)
  exact = np.array([endpoints.mean_curve_saving(cost[list(i)], line[list(i)], cost[list(i)],
                                                ref[list(i)], 0.5)[0]
                    for i in itertools.product(range(3), repeat=3)])
  share = min((exact <= 0).mean(), (exact >= 0).mean())
  assert 0 < share < 0.5
  # Within 4 binomial standard errors of twice the exact share.
  assert result['p'] == pytest.approx(2 * share, abs=8 * math.sqrt(share * (1 - share) / 4000))


def test_detectable_difference_has_the_power_it_claims():
  # Large n: the normal approximation (z_0.975 + z_0.8) sd / sqrt(n).
  big = endpoints.detectable_difference(1.0, 400)
  assert big == pytest.approx((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) / 20, rel=0.01)
  # Six seeds at Holm's first level of four tests: simulated paired t-tests
  # reject with probability 0.8 at that difference.
  delta = endpoints.detectable_difference(0.005, 6, alpha=0.0125)
  rng = np.random.default_rng(0)
  d = rng.normal(delta, 0.005, size=(20000, 6))
  t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / math.sqrt(6))
  power = (np.abs(t) > stats.t.ppf(1 - 0.0125 / 2, 5)).mean()
  assert power == pytest.approx(0.8, abs=0.015)
  assert math.isnan(endpoints.detectable_difference(0.0, 6))
  assert math.isnan(endpoints.detectable_difference(0.01, 1))


def _runs(seeds, mious, costs):
  return statistics.Runs(np.array(seeds), np.arange(len(costs[0])), np.array(costs, float),
                         np.array(costs, float) / 10, np.array(mious, float))


def test_tests_cover_every_endpoint_and_adjust_them_together():
  cost = [[0, 100, 200]] * 3
  runs = {('random', 'image'): _runs([0, 1, 2], [[0.2, 0.3, 0.4], [0.2, 0.32, 0.41],
                                                 [0.2, 0.29, 0.42]], cost),
          ('mc', 'image'): _runs([0, 1, 2], [[0.2, 0.35, 0.45], [0.2, 0.33, 0.44],
                                             [0.2, 0.36, 0.47]], cost)}
  clicks = {k: _runs(r.seeds, r.miou, r.cost * 3) for k, r in runs.items()}
  found = endpoints.tests(runs, 0.5, clicks=clicks)
  assert [(t['line'], t['endpoint']) for t in found] == [
      (('mc', 'image'), e) for e in ('auc', 'saving_95', 'saving_90', 'auc_clicks')]
  assert [t['p_holm'] for t in found] == pytest.approx(endpoints.holm([t['p'] for t in found]))
  # AUC by hand, seed 0: mean of trapezoids (0.2+0.35)/2, (0.35+0.45)/2 minus
  # (0.2+0.3)/2, (0.3+0.4)/2 = 0.3375 - 0.3 = 0.0375.
  auc = found[0]
  d = [0.0375,
       ((0.2 + 0.33) / 2 + (0.33 + 0.44) / 2 - (0.2 + 0.32) / 2 - (0.32 + 0.41) / 2) / 2,
       ((0.2 + 0.36) / 2 + (0.36 + 0.47) / 2 - (0.2 + 0.29) / 2 - (0.29 + 0.42) / 2) / 2]
  assert auc['estimate'] == pytest.approx(np.mean(d))
  assert auc['p'] == pytest.approx(stats.ttest_1samp(d, 0).pvalue)
  # Clicks scale the cost axis only: the same areas.
  assert found[3]['estimate'] == pytest.approx(auc['estimate'])
  # 90% of 0.5 = 0.45: mc's mean curve (0.3467 at 100, 0.4533 at 200) reaches it
  # at 100 + 100 * 0.10333 / 0.10667 = 196.875; random's (0.41 at 200) never, so
  # its last cost stands in: a saving of at least 1.5625%.
  assert found[2]['estimate'] == pytest.approx(1.5625) and found[2]['lower_bound']
  assert found[1]['estimate'] is not None and math.isnan(found[1]['estimate'])
  assert found[1]['p'] == 1.0
  assert auc['detectable'] > 0
  # Without a full-data mIoU only the AUCs are tested.
  assert [t['endpoint'] for t in endpoints.tests(runs, None)] == ['auc']


def test_per_class_differences_at_the_last_shared_cycle_by_hand():
  def record(strategy, seed, cycle, road, car):
    return {'strategy': strategy, 'unit': 'image', 'seed': seed, 'cycle': cycle,
            'per_class': {'road': road, 'car': car}}
  records = [record('random', 0, 0, 0.5, 0.1), record('random', 0, 1, 0.6, 0.2),
             record('mc', 0, 0, 0.5, 0.1), record('mc', 0, 1, 0.7, 0.3),
             record('mc', 0, 2, 0.9, 0.9),  # random has no cycle 2: not compared
             record('random', 1, 0, 0.5, None), record('mc', 1, 0, 0.55, 0.2)]
  names = {('random', 'image'): 'random', ('mc', 'image'): 'mc'}
  diffs = endpoints.per_class_differences(records, names)
  assert list(diffs) == ['mc']
  road, car = diffs['mc']['road'], diffs['mc']['car']
  # road: seed 0 at cycle 1: +0.1; seed 1 at cycle 0: +0.05.
  assert road['n'] == 2 and road['mean'] == pytest.approx(0.075)
  half = stats.t.ppf(0.975, 1) * np.std([0.1, 0.05], ddof=1) / math.sqrt(2)
  assert road['high'] == pytest.approx(0.075 + half)
  # car: seed 1's random has no IoU for it, so only seed 0 (+0.1), no interval.
  assert car == {'mean': pytest.approx(0.1), 'low': None, 'high': None, 'n': 1}
  table = endpoints.format_per_class(diffs, 'random')
  assert '| road | +0.075 [' in table and '| car | +0.100 |' in table
