"""Statistics of a comparison, against values worked out by hand.

Student t quantiles from a printed table: t(0.975, 1 dof) = 12.7062,
t(0.975, 2 dof) = 4.3027.
"""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from segal_jax.reporting import statistics

T1, T2 = 12.7062, 4.3027


def test_interval_two_and_three_values():
  # [0.40, 0.42]: mean 0.41, sample sd sqrt(2 * 0.01**2 / 1) = 0.014142, sem = 0.01,
  # half-width 12.7062 * 0.01 = 0.127062.
  iv = statistics.interval([0.40, 0.42])
  assert (iv.mean, iv.n) == (pytest.approx(0.41), 2)
  assert iv.low == pytest.approx(0.41 - 0.127062, abs=1e-5)
  assert iv.high == pytest.approx(0.41 + 0.127062, abs=1e-5)
  # [1, 2, 3]: mean 2, sd 1, sem 1/sqrt(3) = 0.577350, half-width 4.3027 * 0.577350 = 2.48417.
  iv = statistics.interval([1.0, 2.0, 3.0])
  assert (iv.low, iv.high) == (pytest.approx(-0.48417, abs=1e-4), pytest.approx(4.48417, abs=1e-4))


def test_interval_one_seed_and_missing_values():
  iv = statistics.interval([0.5])
  assert iv.mean == 0.5 and iv.n == 1 and math.isnan(iv.low) and math.isnan(iv.high)
  # NaN (a seed without that cycle) is left out: [1, 3] -> mean 2, sd sqrt(2), sem 1.
  iv = statistics.interval([1.0, math.nan, 3.0])
  assert iv.n == 2 and iv.mean == 2.0
  assert (iv.low, iv.high) == (pytest.approx(2 - T1, abs=1e-3), pytest.approx(2 + T1, abs=1e-3))
  assert statistics.interval([]).n == 0
  # Identical values: zero width, not NaN (e.g. the shared first cycle).
  iv = statistics.interval([0.3, 0.3, 0.3])
  assert iv.low == pytest.approx(0.3) and iv.high == pytest.approx(0.3)


def test_paired_difference_is_the_interval_of_the_differences():
  # d = [0.5-0.4, 0.6-0.55, 0.7-0.6] = [0.1, 0.05, 0.1]: mean 0.083333; deviations
  # 0.016667, -0.033333, 0.016667 -> sd sqrt(0.0016667 / 2) = 0.028868, sem 0.016667,
  # half-width 4.3027 * 0.016667 = 0.071712.
  iv = statistics.paired_difference([0.5, 0.6, 0.7], [0.4, 0.55, 0.6])
  assert iv.mean == pytest.approx(0.083333, abs=1e-6)
  assert iv.low == pytest.approx(0.083333 - 0.071712, abs=1e-4)
  assert iv.high == pytest.approx(0.083333 + 0.071712, abs=1e-4)
  # Unpaired, the seed-to-seed spread (0.1 in each) would swamp the difference.
  assert iv.high - iv.low < statistics.interval([0.5, 0.6, 0.7]).high - 0.6


def test_common_range():
  assert statistics.common_range([np.array([0, 10, 20]), np.array([5, 12, 30])]) == (5, 20)
  assert statistics.common_range([np.array([0, 1]), np.array([2, 3])]) is None
  assert statistics.common_range([np.array([0, 1, np.nan])]) == (0, 1)


def test_normalized_auc_by_hand():
  x, y = np.array([0, 10, 20]), np.array([0.0, 1.0, 1.0])
  # Whole range: 0.5 * 10 * 1 + 10 * 1 = 15, over 20 -> 0.75.
  assert statistics.normalized_auc(x, y, 0, 20) == pytest.approx(0.75)
  # [5, 15]: y(5) = 0.5, y(10) = 1, y(15) = 1 -> (0.5 + 1) / 2 * 5 + 1 * 5 = 8.75, over 10.
  assert statistics.normalized_auc(x, y, 5, 15) == pytest.approx(0.875)
  # Order of the points does not matter; NaN points (missing cycles) are dropped.
  assert statistics.normalized_auc(x[::-1], y[::-1], 5, 15) == pytest.approx(0.875)
  assert statistics.normalized_auc(np.append(x, np.nan), np.append(y, 0.3), 5, 15) == (
      pytest.approx(0.875))
  assert math.isnan(statistics.normalized_auc(x, y, -1, 15))  # not covered
  assert math.isnan(statistics.normalized_auc(x, y, 10, 10))  # no width


@given(st.floats(0, 1), st.floats(1, 100), st.floats(1, 100))
@settings(deadline=None)  # a loaded machine is no failure
def test_auc_of_a_constant_is_the_constant(c, lo, width):
  x = np.array([0.0, lo, lo + width / 3, 200.0])
  assert statistics.normalized_auc(x, np.full(4, c), lo, lo + width) == pytest.approx(c)


def test_budget_to_reach_by_hand():
  x, y = np.array([100, 200, 300]), np.array([0.2, 0.4, 0.5])
  # 0.3 lies between (100, 0.2) and (200, 0.4): 100 + 0.1 * 100 / 0.2 = 150.
  assert statistics.budget_to_reach(x, y, 0.3) == pytest.approx(150)
  # 0.45: 200 + 0.05 * 100 / 0.1 = 250.
  assert statistics.budget_to_reach(x, y, 0.45) == pytest.approx(250)
  assert statistics.budget_to_reach(x, y, 0.1) == 100  # there from the start
  assert statistics.budget_to_reach(x, y, 0.5) == 300  # exactly at the last point
  assert math.isnan(statistics.budget_to_reach(x, y, 0.6))  # never reached
  # The first crossing counts: 0.4 between (100, 0.2) and (200, 0.5) = 100 + 0.2 * 100 / 0.3.
  assert statistics.budget_to_reach(x, np.array([0.2, 0.5, 0.3]), 0.4) == pytest.approx(166.6667)


def test_saving_pct():
  assert statistics.saving_pct(150, 200) == 25
  assert statistics.saving_pct(250, 200) == -25
  assert math.isnan(statistics.saving_pct(150, 0))


def _runs():
  """random: seeds 0, 1 to cost 300; mc: seeds 0, 1, 2 to cost 400 (random lacks seed 2)."""
  random = statistics.Runs(np.array([0, 1]), np.array([0, 1, 2]),
                           np.array([[100, 200, 300], [100, 200, 300]], float),
                           np.array([[4, 8, 12], [4, 8, 12]], float),
                           np.array([[0.2, 0.3, 0.4], [0.2, 0.32, 0.44]]))
  mc = statistics.Runs(np.array([0, 1, 2]), np.array([0, 1, 2]),
                       np.array([[100, 200, 400]] * 3, float), np.array([[4, 8, 12]] * 3, float),
                       np.array([[0.2, 0.4, 0.5], [0.2, 0.38, 0.5], [0.25, 0.41, 0.52]]))
  return {('random', 'image'): random, ('mc', 'image'): mc}


def test_compare_auc_differences_and_missing_seed():
  out = statistics.compare(_runs())
  assert out['auc_range'] == (100, 300)  # the range every run covers
  random, mc = out['curves']['random', 'image'], out['curves']['mc', 'image']
  # random seed 0: (0.2+0.3)/2*100 + (0.3+0.4)/2*100 = 60, over 200 = 0.30; seed 1:
  # (0.26 + 0.38) * 100 / 200 = 0.32.
  assert random['auc'].mean == pytest.approx(0.31)
  assert random['auc'].high - 0.31 == pytest.approx(T1 * 0.01, abs=1e-4)
  assert random['auc_diff'] is None and random['cycles'][1]['diff'] is None
  # mc at cost 300 is interpolated halfway between cycles 1 and 2: seed 0 0.45, seed 1 0.44,
  # seed 2 0.465. AUCs: (0.3 + 0.425) / 2 = 0.3625, (0.29 + 0.41) / 2 = 0.35,
  # (0.33 + 0.4375) / 2 = 0.38375.
  assert mc['auc'].mean == pytest.approx((0.3625 + 0.35 + 0.38375) / 3)
  assert mc['auc'].n == 3
  # Paired with random over seeds 0 and 1 only: 0.0625 and 0.03.
  assert mc['auc_diff'].mean == pytest.approx(0.04625) and mc['auc_diff'].n == 2
  # Cycle 1: differences 0.1 and 0.06 -> mean 0.08, sd 0.028284, sem 0.02.
  diff = mc['cycles'][1]['diff']
  assert diff.mean == pytest.approx(0.08) and diff.n == 2
  assert diff.low == pytest.approx(0.08 - T1 * 0.02, abs=1e-3)
  c = mc['cycles'][2]
  assert (c['cycle'], c['n'], c['cost'], c['images']) == (2, 3, 400, 12)
  assert c['miou'].mean == pytest.approx((0.5 + 0.5 + 0.52) / 3)
  assert mc['budgets'] == {}  # no full-data mIoU, no budgets


def test_compare_budgets_and_savings():
  # Mean curves. random: cost 100, 200, 300 -> mIoU 0.2, 0.31, 0.42.
  # mc: cost 100, 200, 400 -> mIoU 0.216667, 0.396667, 0.506667.
  out = statistics.compare(_runs(), full_miou=0.44)
  random, mc = out['curves']['random', 'image'], out['curves']['mc', 'image']
  # 90% of 0.44 = 0.396. random: 200 + (0.396 - 0.31) / 0.11 * 100 = 278.1818;
  # mc: 100 + (0.396 - 0.216667) / 0.18 * 100 = 199.6296; saving 78.5522 / 278.1818 = 28.24%.
  assert random['budgets'][0.9]['cost'] == pytest.approx(278.1818, abs=1e-3)
  assert math.isnan(random['budgets'][0.9]['saving_pct'])  # no saving against itself
  b = mc['budgets'][0.9]
  assert b['miou'] == pytest.approx(0.396)
  assert b['cost'] == pytest.approx(199.6296, abs=1e-3)
  assert b['saving_pct'] == pytest.approx(28.2377, abs=1e-3) and not b['saving_is_lower_bound']
  # 95% = 0.418. random: 200 + 0.108 / 0.11 * 100 = 298.1818; mc: 200 + 0.021333 / 0.11 * 200
  # = 238.7879; saving 59.3939 / 298.1818 = 19.92%.
  assert mc['budgets'][0.95]['cost'] == pytest.approx(238.7879, abs=1e-3)
  assert mc['budgets'][0.95]['saving_pct'] == pytest.approx(19.9187, abs=1e-3)


def test_compare_target_random_never_reaches():
  out = statistics.compare(_runs(), full_miou=0.5)
  random, mc = out['curves']['random', 'image'], out['curves']['mc', 'image']
  assert math.isnan(random['budgets'][0.9]['cost'])  # 0.45 > 0.42, random's best
  # mc reaches 0.45 at 200 + 0.053333 / 0.11 * 200 = 296.9697, within random's 300: the
  # saving is at least (300 - 296.9697) / 300 = 1.01%.
  b = mc['budgets'][0.9]
  assert b['cost'] == pytest.approx(296.9697, abs=1e-3)
  assert b['saving_pct'] == pytest.approx(1.0101, abs=1e-3) and b['saving_is_lower_bound']
  # 0.475 at 200 + 0.078333 / 0.11 * 200 = 342.42, beyond random's 300: unknown.
  b = mc['budgets'][0.95]
  assert b['cost'] == pytest.approx(342.4242, abs=1e-3) and math.isnan(b['saving_pct'])
  out = statistics.compare(_runs(), full_miou=0.6)  # 0.54: nobody gets there
  assert math.isnan(out['curves']['mc', 'image']['budgets'][0.9]['cost'])


def test_compare_one_seed_and_units_apart():
  runs = {key: statistics.Runs(r.seeds[:1], r.cycles, r.cost[:1], r.images[:1], r.miou[:1])
          for key, r in _runs().items()}
  runs['mc', 'superpixel'] = runs.pop(('mc', 'image'))
  out = statistics.compare(runs)
  sp = out['curves']['mc', 'superpixel']
  assert sp['auc'].n == 1 and math.isnan(sp['auc'].low)
  # No random superpixel run: no differences (image random is another unit).
  assert sp['auc_diff'] is None and sp['cycles'][1]['diff'] is None


def test_compare_against_one_line_across_units():
  runs = _runs()
  # mc on superpixels: seeds 0, 1 at cycles 1-3 (cost 200, 300, 400); random image has no cycle 3.
  runs['mc', 'superpixel'] = statistics.Runs(
      np.array([0, 1]), np.array([1, 2, 3]), np.array([[200, 300, 400]] * 2, float),
      np.array([[8, 12, 16]] * 2, float), np.array([[0.35, 0.45, 0.5], [0.36, 0.40, 0.5]]))
  out = statistics.compare(runs, full_miou=0.44, reference=('random', 'image'))
  sp = out['curves']['mc', 'superpixel']
  # Against random image seed by seed: cycle 1 0.35 - 0.3, 0.36 - 0.32; cycle 2 0.45 - 0.4,
  # 0.40 - 0.44; cycle 3: random has none.
  assert sp['cycles'][0]['diff'].mean == pytest.approx(0.045) and sp['cycles'][0]['diff'].n == 2
  assert sp['cycles'][1]['diff'].mean == pytest.approx(0.005)
  assert sp['cycles'][1]['diff'].high == pytest.approx(0.005 + T1 * 0.045, abs=1e-4)
  assert sp['cycles'][2]['diff'] is None
  # AUC over cost 200-300 (every line covers it): random 0.35, 0.38; mc superpixel 0.40, 0.38.
  assert out['auc_range'] == (200, 300)
  assert sp['auc_diff'].mean == pytest.approx(0.025) and sp['auc_diff'].n == 2
  # 90% of 0.44 = 0.396. random image 278.1818 (test_compare_budgets_and_savings); mc
  # superpixel (means 0.355, 0.425 at 200, 300): 200 + 0.041 / 0.07 * 100 = 258.5714.
  b = sp['budgets'][0.9]
  assert b['cost'] == pytest.approx(258.5714, abs=1e-3)
  assert b['saving_pct'] == pytest.approx(100 * (278.1818 - 258.5714) / 278.1818, abs=1e-3)
  assert out['curves']['random', 'image']['cycles'][1]['diff'] is None  # the reference itself
  assert out['curves']['mc', 'image']['cycles'][1]['diff'].mean == pytest.approx(0.08)


def test_compare_against_a_strategy_of_each_unit():
  runs = _runs()
  runs['random', 'superpixel'] = runs['random', 'image']
  out = statistics.compare(runs, reference=('mc', None))
  # random image against mc image: cycle 1 0.3 - 0.4, 0.32 - 0.38.
  assert out['curves']['random', 'image']['cycles'][1]['diff'].mean == pytest.approx(-0.08)
  assert out['curves']['mc', 'image']['auc_diff'] is None
  # No mc superpixel line: random superpixel is compared with nothing.
  assert out['curves']['random', 'superpixel']['auc_diff'] is None


def test_line_order():
  keys = [('b', 'sp'), ('random', 'sp'), ('a', 'image'), ('random', 'image')]
  assert sorted(keys, key=statistics.line_order) == [
      ('random', 'image'), ('a', 'image'), ('random', 'sp'), ('b', 'sp')]
  assert sorted(keys, key=lambda k: statistics.line_order(k, ('b', 'sp'))) == [
      ('b', 'sp'), ('a', 'image'), ('random', 'image'), ('random', 'sp')]
  assert sorted(keys, key=lambda k: statistics.line_order(k, ('b', None)))[-2:] == [
      ('b', 'sp'), ('random', 'sp')]
