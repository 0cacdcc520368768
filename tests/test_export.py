"""Outputs: atomic writes, the SuperAnnotate CSV, the comparison table and plot."""

import csv
import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from segal_jax.errors import UserError
from segal_jax import experiment
from segal_jax import formats
from segal_jax.formats import annotation_files as annotations
from segal_jax import reporting


def _records():
  out = []
  for strategy, base in (('random', 0.30), ('mc_variance', 0.32)):
    for seed, jitter in ((0, 0.0), (1, 0.02)):
      for cycle in range(3):
        out.append({'strategy': strategy, 'seed': seed, 'cycle': cycle,
                    'labeled_images': 10 * (cycle + 1), 'cost_instances': 55 * (cycle + 1),
                    'miou': base + 0.1 * cycle + jitter})
  return out


def test_atomic_open_keeps_old_file_on_error(tmp_path):
  path = tmp_path / 'a.json'
  formats.write_json(str(path), {'x': 1})
  with pytest.raises(RuntimeError):
    with formats.atomic_open(str(path)) as f:
      f.write('{"x": 2, "trunc')
      raise RuntimeError('crash during write')
  assert path.read_text().replace(' ', '').replace('\n', '') == '{"x":1}'
  assert os.listdir(tmp_path) == ['a.json']  # no temporary left behind


@pytest.mark.parametrize('umask, mode', [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
  old = os.umask(umask)
  try:
    formats.write_json(str(tmp_path / 'request.json'), {'x': 1})
    annotations.write_png(str(tmp_path / 'labels' / 'a.png'), np.zeros((2, 3), np.uint8))
  finally:
    os.umask(old)
  for path in (tmp_path / 'request.json', tmp_path / 'labels' / 'a.png'):
    assert stat.S_IMODE(os.stat(path).st_mode) == mode, path


def test_selection_csv_format(tmp_path):
  path = tmp_path / 's.csv'
  formats.write_selection_csv(str(path), ['img_b', 'img_a'], [0.75, 0.5])
  rows = list(csv.reader(path.open()))
  assert rows == [['name', 'entropy_value'], ['img_b', '0.75'], ['img_a', '0.5']]


def test_jsonl_round_trip(tmp_path):
  path = str(tmp_path / 'm.jsonl')
  formats.write_jsonl(path, _records())
  assert formats.read_jsonl(path) == _records()


def test_table_mean_and_std():
  table = reporting.format_table(_records())
  lines = table.splitlines()
  assert lines[0].split() == ['cycle', 'labeled', 'mc_variance', 'random']
  # cycle 1: random seeds give 0.40 and 0.42 -> mean 0.41, std 0.01.
  assert '0.4100 ± 0.0100' in lines[3]
  assert '0.4300 ± 0.0100' in lines[3]
  md = reporting.format_table(_records(), markdown=True)
  assert md.splitlines()[1].startswith('|---')


def test_plot_is_png(tmp_path):
  path = tmp_path / 'p.png'
  reporting.plot_curves(str(path), _records())
  assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_mixed_units_are_separate_lines():
  records = [dict(r, unit='image') for r in _records()]
  records += [dict(r, unit='superpixel', miou=r['miou'] + 0.05) for r in _records()]
  header = reporting.format_table(records).splitlines()[0].split()
  assert header == ['cycle', 'labeled', 'mc_variance/image', 'mc_variance/superpixel',
                    'random/image', 'random/superpixel']


# --- the comparison: summary.json, results.md, plots -------------------------
# _records(): random gives 0.30 + 0.1 c (seed 0) and 0.32 + 0.1 c (seed 1) at cost 55 (c + 1);
# mc_variance the same plus 0.02. Hand-computed, t(0.975, 1 dof) = 12.7062.


def test_summary_by_hand():
  s = reporting.summary(_records(), {'mean': 0.5, 'low': None, 'high': None, 'n': 1,
                                  'source': '--full_miou'})
  assert [e['name'] for e in s['strategies']] == ['random', 'mc_variance']
  random, mc = s['strategies']
  c1 = random['cycles'][1]  # 0.40 and 0.42: mean 0.41, sem 0.01
  assert (c1['n'], c1['cost_instances'], c1['labeled_images']) == (2, 110, 20)
  assert c1['miou']['mean'] == pytest.approx(0.41)
  assert c1['miou']['high'] == pytest.approx(0.41 + 12.7062 * 0.01, abs=1e-4)
  # Every seed of mc_variance is 0.02 above random's same seed: a zero-width difference.
  d = mc['cycles'][2]['diff_vs_reference']
  assert (d['mean'], d['low'], d['high'], d['n']) == (pytest.approx(0.02), pytest.approx(0.02),
                                                      pytest.approx(0.02), 2)
  # Straight lines from cost 55 to 165: the normalised AUC is the mid value, 0.40 / 0.42.
  assert s['auc_range'] == {'cost_instances': [55, 165]}
  assert random['auc']['mean'] == pytest.approx(0.41)
  assert mc['auc_diff_vs_reference']['mean'] == pytest.approx(0.02)
  # 90% of 0.5 = 0.45. random (mean 0.31, 0.41, 0.51): 110 + 0.04 / 0.1 * 55 = 132;
  # mc_variance (0.33, 0.43, 0.53): 110 + 0.02 / 0.1 * 55 = 121; saving 11 / 132 = 8.33%.
  b = mc['budgets'][0]
  assert b['fraction'] == 0.9 and b['cost_instances'] == pytest.approx(121)
  assert b['saving_vs_reference_pct'] == pytest.approx(100 * 11 / 132)
  # 95% = 0.475: random 110 + 0.065 / 0.1 * 55 = 145.75, mc 110 + 0.045 / 0.1 * 55 = 134.75.
  assert mc['budgets'][1]['saving_vs_reference_pct'] == pytest.approx(100 * 11 / 145.75)
  json.dumps(s, allow_nan=False)  # strict JSON: no NaN


def test_summary_full_from_records_never_reached_and_one_seed():
  records = [r for r in _records() if r['seed'] == 0]
  records.append({'strategy': 'full', 'seed': 0, 'cycle': 0, 'labeled_images': 1000,
                  'cost_instances': 5000, 'miou': 0.9})
  s = reporting.summary(records)
  assert s['full_data']['mean'] == 0.9 and 'full' in s['full_data']['source']
  assert [e['name'] for e in s['strategies']] == ['random', 'mc_variance']  # full: a level
  random = s['strategies'][0]
  assert random['cycles'][0]['miou']['low'] is None  # one seed: no interval
  assert random['budgets'][0]['cost_instances'] is None  # 0.81 is never reached
  md = reporting.format_summary(s)
  assert 'not reached' in md and '0.3000 (n=1, no interval)' in md
  assert 'Full-data mIoU: 0.9000' in md


def test_summary_missing_seed_pairs_common_seeds():
  # mc_variance lacks seed 1: its differences pair seed 0 only.
  records = [r for r in _records() if not (r['strategy'] == 'mc_variance' and r['seed'] == 1)]
  mc = reporting.summary(records)['strategies'][1]
  assert mc['seeds'] == [0] and mc['cycles'][1]['diff_vs_reference']['n'] == 1
  assert mc['cycles'][1]['diff_vs_reference']['mean'] == pytest.approx(0.02)
  assert mc['cycles'][1]['diff_vs_reference']['low'] is None


def test_summary_refuses_two_runs_of_one_seed():
  with pytest.raises(UserError, match='two runs of random'):
    reporting.summary(_records() + _records()[:1])


def test_report_files_from_a_workdir(tmp_path):
  # What launch.report does: collect metrics.jsonl files, then summarize.
  for r in _records():
    path = tmp_path / r['strategy'] / f"seed_{r['seed']}" / 'metrics.jsonl'
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open('a') as f:
      f.write(json.dumps(r) + '\n')
  text = experiment.summarize(str(tmp_path), experiment.collect(str(tmp_path)))
  s = json.loads((tmp_path / 'summary.json').read_text())
  assert s['schema'] == 3 and s['full_data'] is None
  assert s['strategies'][1]['auc']['mean'] == pytest.approx(0.43)
  assert (tmp_path / 'results.md').read_text() == text
  assert '| mc_variance | 2 | 2 | 30.0 | 165 | 0.5300 [' in text
  for png in ('miou_vs_images.png', 'miou_vs_cost.png'):
    assert (tmp_path / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_per_class_iou_at_the_last_cycle_by_hand(tmp_path):
  records = _records()
  named = {(0, 2): {'soil': 0.5, 'rust': None}, (1, 2): {'soil': 0.7, 'rust': 0.2},
           (0, 1): {'soil': 0.0, 'rust': 0.0}}  # an earlier cycle: not the last
  for r in records:
    if r['strategy'] == 'random' and (r['seed'], r['cycle']) in named:
      r['per_class'] = named[r['seed'], r['cycle']]
    elif r['strategy'] == 'mc_variance' and r['cycle'] == 2:
      r['per_class'] = {'soil': 0.9, 'rust': None}
  s = reporting.summary(records)
  assert s['per_class_iou'] == {'random': {'soil': pytest.approx(0.6), 'rust': 0.2},
                                'mc_variance': {'soil': pytest.approx(0.9), 'rust': None}}
  text = reporting.format_summary(s)
  assert '| class | random | mc_variance |' in text
  assert '| soil | 0.6000 | 0.9000 |' in text and '| rust | 0.2000 | - |' in text
  reporting.plot_per_class(str(tmp_path / 'p.png'), s)
  assert (tmp_path / 'p.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  reporting.plot_per_class(str(tmp_path / 'none.png'), reporting.summary(_records()))
  assert not (tmp_path / 'none.png').exists()  # no record names its classes


@pytest.mark.slow
def test_launch_report_reference_workdir(tmp_path):
  work, ref = tmp_path / 'work', tmp_path / 'ref'
  formats.write_jsonl(str(work / 'random' / 'seed_0' / 'metrics.jsonl'), _records()[:3])
  formats.write_jsonl(str(ref / 'full' / 'seed_0' / 'metrics.jsonl'),
                     [{'strategy': 'full', 'seed': 0, 'cycle': 0, 'labeled_images': 100,
                       'cost_instances': 600, 'miou': 0.4}])
  run = lambda *a: subprocess.run([sys.executable, '-m', 'launch.report', f'--workdir={work}',
                                   *a], capture_output=True, text=True, check=False,
                                  cwd=os.path.dirname(os.path.dirname(__file__)))
  proc = run(f'--reference_workdir={ref}')
  assert proc.returncode == 0, proc.stderr
  s = json.loads((work / 'summary.json').read_text())
  assert s['full_data']['mean'] == 0.4 and str(ref) in s['full_data']['source']
  # 90% of 0.4 = 0.36 on 0.30, 0.40, 0.50 at 55, 110, 165: 55 + 0.06 / 0.1 * 55 = 88.
  assert s['strategies'][0]['budgets'][0]['cost_instances'] == pytest.approx(88)
  assert '| random | 0 |' in (work / 'results.md').read_text()
  assert run('--full_miou=0.45').returncode == 0
  assert json.loads((work / 'summary.json').read_text())['full_data']['source'] == '--full_miou'
  proc = run('--full_miou=0.45', f'--reference_workdir={ref}')
  assert proc.returncode == 1 and 'pass only one of them' in proc.stderr
  proc = run(f'--reference_workdir={work}')
  assert proc.returncode == 1 and 'no finished run of the full strategy' in proc.stderr
  ref2 = tmp_path / 'ref2'  # seeds finished in another directory: the line is their mean
  formats.write_jsonl(str(ref2 / 'full' / 'seed_1' / 'metrics.jsonl'),
                     [{'strategy': 'full', 'seed': 1, 'cycle': 0, 'labeled_images': 100,
                       'cost_instances': 600, 'miou': 0.5}])
  assert run(f'--reference_workdir={ref},{ref2}').returncode == 0
  s = json.loads((work / 'summary.json').read_text())
  assert s['full_data']['mean'] == pytest.approx(0.45) and s['full_data']['n'] == 2


def test_summary_single_cost_has_no_auc():
  # Only the first cycle: every run sits at cost 55, a range of zero width.
  s = reporting.summary([r for r in _records() if r['cycle'] == 0])
  assert s['auc_range'] is None and s['strategies'][0]['auc']['mean'] is None
  json.dumps(s, allow_nan=False)
  assert 'no cost range common to all runs' in reporting.format_summary(s)


def test_report_in_clicks(tmp_path):
  records = [dict(r, cost_clicks=10 * r['cost_instances']) for r in _records()]
  text = experiment.summarize(str(tmp_path), records, cost='clicks')
  s = json.loads((tmp_path / 'summary.json').read_text())
  assert s['cost_unit'] == 'clicks'
  # The cost axis is the records' clicks: ten times their instances here.
  assert s['strategies'][1]['cycles'][2]['cost_instances'] == pytest.approx(1650)
  assert 'cost (clicks)' in text and '| 1650 |' in text
  with pytest.raises(UserError, match='no cost in clicks'):
    experiment.summarize(str(tmp_path), _records(), cost='clicks')
