"""Outputs: atomic writes, the SuperAnnotate CSV, the comparison table and plot."""

import csv
import os

import pytest

from segal_jax import export


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
  export.write_json(str(path), {'x': 1})
  with pytest.raises(RuntimeError):
    with export.atomic_open(str(path)) as f:
      f.write('{"x": 2, "trunc')
      raise RuntimeError('crash during write')
  assert path.read_text().replace(' ', '').replace('\n', '') == '{"x":1}'
  assert os.listdir(tmp_path) == ['a.json']  # no temporary left behind


def test_selection_csv_format(tmp_path):
  path = tmp_path / 's.csv'
  export.write_selection_csv(str(path), ['img_b', 'img_a'], [0.75, 0.5])
  rows = list(csv.reader(path.open()))
  assert rows == [['name', 'entropy_value'], ['img_b', '0.75'], ['img_a', '0.5']]


def test_jsonl_round_trip(tmp_path):
  path = str(tmp_path / 'm.jsonl')
  export.write_jsonl(path, _records())
  assert export.read_jsonl(path) == _records()


def test_table_mean_and_std():
  table = export.format_table(_records())
  lines = table.splitlines()
  assert lines[0].split() == ['cycle', 'labeled', 'mc_variance', 'random']
  # cycle 1: random seeds give 0.40 and 0.42 -> mean 0.41, std 0.01.
  assert '0.4100 ± 0.0100' in lines[3]
  assert '0.4300 ± 0.0100' in lines[3]
  md = export.format_table(_records(), markdown=True)
  assert md.splitlines()[1].startswith('|---')


def test_plot_is_png(tmp_path):
  path = tmp_path / 'p.png'
  export.plot_curves(str(path), _records())
  assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_mixed_units_are_separate_lines():
  records = [dict(r, unit='image') for r in _records()]
  records += [dict(r, unit='superpixel', miou=r['miou'] + 0.05) for r in _records()]
  header = export.format_table(records).splitlines()[0].split()
  assert header == ['cycle', 'labeled', 'mc_variance/image', 'mc_variance/superpixel',
                    'random/image', 'random/superpixel']
