"""launch.report's choice of reference line and output folder, run in-process.

Two flagfiles' work directories under one folder: random on polygons (unit P)
and random and mc on dominant labels (unit D), in clicks. Cost 100, 200, 300
clicks at cycles 0-2 everywhere; mc also has seed 2 and a cycle 3 (400 clicks).

  random P: seed 0: 0.30 0.40 0.50        seed 1: 0.32 0.42 0.52
  random D: seed 0: 0.33 0.45 0.55        seed 1: 0.31 0.47 0.54
  mc D:     seed 0: 0.35 0.50 0.60 0.62   seed 1: 0.33 0.46 0.58 0.60
            seed 2: 0.34 0.47 0.59 0.61

t(0.975, 1 dof) = 12.7062.
"""

import json
import os

import pytest
from absl import flags
from absl.testing import flagsaver

from launch import report
from segal_jax.errors import UserError
from segal_jax import formats

P, D = 'image/image_polygons', 'superpixel/dominant_label'
T1 = 12.7062
MIOU = {('random', P): {0: [0.30, 0.40, 0.50], 1: [0.32, 0.42, 0.52]},
        ('random', D): {0: [0.33, 0.45, 0.55], 1: [0.31, 0.47, 0.54]},
        ('mc', D): {0: [0.35, 0.50, 0.60, 0.62], 1: [0.33, 0.46, 0.58, 0.60],
                    2: [0.34, 0.47, 0.59, 0.61]}}


@pytest.fixture(name='workdir')
def _workdir(tmp_path):
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  for (strategy, unit), by_seed in MIOU.items():
    for seed, mious in by_seed.items():
      records = [{'strategy': strategy, 'unit': unit, 'seed': seed, 'cycle': c,
                  'labeled_images': 10 * (c + 1), 'cost_instances': 7 * (c + 1),
                  'cost_clicks': 100 * (c + 1), 'miou': m} for c, m in enumerate(mious)]
      folder = 'polygons' if unit == P else 'dominant'
      formats.write_jsonl(str(tmp_path / folder / strategy / f'seed_{seed}' / 'metrics.jsonl'),
                         records)
  return tmp_path


def _report(workdir, **kw):
  with flagsaver.flagsaver(workdir=[str(workdir)], cost="clicks", **kw):
    report.main([])


def _lines(path):
  s = json.loads((path / 'summary.json').read_text())
  return s, {(e['strategy'], e['unit']): e for e in s['strategies']}


def test_reference_across_units_and_out(workdir):
  out = workdir / 'vs_polygons'
  _report(workdir, reference=f'random@{P}', out=str(out), full_miou=0.6)
  assert not (workdir / 'summary.json').exists() and not (workdir / 'results.md').exists()
  assert {'results.md', 'summary.json', 'miou_vs_images.png', 'miou_vs_cost.png'} <= set(
      os.listdir(out))
  s, lines = _lines(out)
  assert s['schema'] == 3 and s['reference'] == {'strategy': 'random', 'unit': P}
  assert list(lines) == [('random', P), ('random', D), ('mc', D)]
  ref = lines['random', P]
  assert ref['auc_diff_vs_reference'] is None
  assert all(c['diff_vs_reference'] is None for c in ref['cycles'])
  # random D - random P, seed by seed: cycle 0: 0.03, -0.01 (mean 0.01, sem 0.02).
  d = lines['random', D]['cycles'][0]['diff_vs_reference']
  assert d['mean'] == pytest.approx(0.01) and d['n'] == 2
  assert d['high'] == pytest.approx(0.01 + T1 * 0.02, abs=1e-4)
  # mc D - random P over the seeds both have (0, 1): cycle 1: 0.10, 0.04 (mean 0.07, sem 0.03);
  # cycle 3: random P has none.
  mc = lines['mc', D]
  d = mc['cycles'][1]['diff_vs_reference']
  assert d['mean'] == pytest.approx(0.07) and d['n'] == 2
  assert d['low'] == pytest.approx(0.07 - T1 * 0.03, abs=1e-4)
  assert mc['cycles'][3]['diff_vs_reference'] is None and mc['cycles'][3]['n'] == 3
  # AUC over 100-300 clicks, (y0 + 2 y1 + y2) / 4: random P 0.40, 0.42; mc D 0.4875, 0.4575.
  assert s['auc_range'] == {'cost_instances': [100, 300]}
  assert mc['auc_diff_vs_reference']['mean'] == pytest.approx(0.0625)
  assert mc['auc_diff_vs_reference']['n'] == 2
  # 90% of 0.6 = 0.54: random P (means 0.31, 0.41, 0.51) never gets there, so savings are
  # lower bounds against its last 300 clicks. random D (0.32, 0.46, 0.545): 200 + 0.08 /
  # 0.085 * 100; mc D (0.34, 1.43 / 3, 0.59): 200 + (0.54 - 1.43 / 3) / (0.59 - 1.43 / 3) * 100.
  for key, cost in ((('random', D), 200 + 0.08 / 0.085 * 100),
                    (('mc', D), 200 + (0.54 - 1.43 / 3) / (0.59 - 1.43 / 3) * 100)):
    b = lines[key]['budgets'][0]
    assert b['cost_instances'] == pytest.approx(cost)
    assert b['saving_vs_reference_pct'] == pytest.approx(100 * (300 - cost) / 300)
    assert b['saving_is_lower_bound']
  text = (out / 'results.md').read_text()
  assert f'AUC - random/{P}' in text and f'saving vs random/{P}' in text
  assert f'| mc/{D} | 1 | 3 | 20.0 | 200 | ' in text


def test_default_reference_is_random_of_each_unit(workdir):
  _report(workdir)
  s, lines = _lines(workdir)
  assert s['reference'] == {'strategy': 'random', 'unit': None}
  assert lines['random', P]['auc_diff_vs_reference'] is None  # no other line of P
  assert lines['random', D]['auc_diff_vs_reference'] is None
  # mc D - random D at cycle 1: 0.05, -0.01.
  assert lines['mc', D]['cycles'][1]['diff_vs_reference']['mean'] == pytest.approx(0.02)
  assert 'differences to random (same unit)' in (workdir / 'results.md').read_text()
  # A strategy alone: every line against mc of its own unit (P has none).
  _report(workdir, reference='mc')
  s, lines = _lines(workdir)
  assert s['reference'] == {'strategy': 'mc', 'unit': None}
  assert list(lines) == [('random', P), ('mc', D), ('random', D)]
  assert lines['random', D]['cycles'][1]['diff_vs_reference']['mean'] == pytest.approx(-0.02)
  assert lines['random', P]['cycles'][1]['diff_vs_reference'] is None


@pytest.mark.parametrize('reference,message', [
    ('random@image', f'names no line of these runs (they hold random@{P}, random@{D}, mc@{D})'),
    ('kcenter', 'names no line'),
    ('random@', 'is neither STRATEGY nor STRATEGY@UNIT'),
    ('@image', 'is neither'),
    ('a@b@c', 'is neither'),
])
def test_bad_reference(workdir, reference, message):
  with pytest.raises(UserError, match='--reference') as e:
    _report(workdir, reference=reference, out=str(workdir / 'never'))
  assert message in str(e.value) and str(e.value).count('; ') == 1
  assert not (workdir / 'never').exists()


def test_merged_work_directories_give_the_numbers_of_one(workdir, tmp_path_factory):
  """Seeds kept in separate work directories (finished at different times)
  report exactly as when they sit in one."""
  split = tmp_path_factory.mktemp('split')
  for path in workdir.rglob('metrics.jsonl'):
    seed_dir = path.parent.name  # seed_<s>
    target = split / seed_dir / path.relative_to(workdir)
    target.parent.mkdir(parents=True)
    target.write_bytes(path.read_bytes())
  one, merged = workdir / 'one', workdir / 'merged'
  _report(workdir, out=str(one), full_miou=0.6)
  dirs = sorted(str(d) for d in split.iterdir())
  assert len(dirs) == 3
  with flagsaver.flagsaver(workdir=dirs, cost='clicks', out=str(merged), full_miou=0.6):
    report.main([])
  assert (one / 'summary.json').read_text() == (merged / 'summary.json').read_text()
  assert (one / 'results.md').read_text() == (merged / 'results.md').read_text()


def test_merging_refuses_a_run_found_twice_and_needs_out(workdir):
  with pytest.raises(UserError, match=r'mc \(superpixel/dominant_label\) seed 0 has runs in both'):
    with flagsaver.flagsaver(workdir=[str(workdir), str(workdir / 'dominant')],
                             out=str(workdir / 'o')):
      report.main([])
  with pytest.raises(UserError, match='--out is not set'):
    with flagsaver.flagsaver(workdir=[str(workdir / 'polygons'), str(workdir / 'dominant')]):
      report.main([])
