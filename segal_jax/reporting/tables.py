"""Tables of a comparison, as text or markdown: mIoU per cycle, the summary,
the labelling time people took."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from segal_jax.reporting import comparison
from segal_jax.reporting import endpoints


def format_table(records: Sequence[dict[str, Any]], *, markdown: bool = False) -> str:
  """Cycle-by-cycle mIoU of every strategy (mean +- std over seeds), `full` included."""
  runs = comparison.runs_by_strategy(records, include_full=True)
  names = comparison.line_names(runs)
  order = sorted(runs, key=names.get)
  cycles = sorted({int(c) for r in runs.values() for c in r.cycles})
  header = ['cycle', 'labeled'] + [names[k] for k in order]
  rows = []
  for c in cycles:
    row, labeled = [str(c)], ''
    for key in order:
      r = runs[key]
      if c not in r.cycles:
        row.append('-')
        continue
      miou = r.miou[:, list(r.cycles).index(c)]
      miou = miou[np.isfinite(miou)]
      if key[0] != 'full':  # the full run's pool size is no cycle's label count
        labeled = str(int(np.nanmean(r.images[:, list(r.cycles).index(c)])))
      row.append(f'{miou.mean():.4f}' + (f' ± {miou.std():.4f}' if len(miou) > 1 else ''))
    rows.append([row[0], labeled] + row[1:])
  if markdown:
    return _markdown(header, rows)
  widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
            for i, h in enumerate(header)]
  fmt = lambda r: '  '.join(v.rjust(w) for v, w in zip(r, widths))
  return '\n'.join([fmt(header), fmt(['-' * w for w in widths])] + [fmt(r) for r in rows])


def _fmt_interval(iv: dict[str, Any] | None, digits: int = 4, signed: bool = False) -> str:
  """'mean [low, high]'; one value without an interval says so."""
  if iv is None or iv['mean'] is None:
    return '-'
  f = (lambda v: f'{v:+.{digits}f}') if signed else (lambda v: f'{v:.{digits}f}')
  if iv['low'] is None:
    return f"{f(iv['mean'])} (n={iv['n']}, no interval)"
  return f"{f(iv['mean'])} [{f(iv['low'])}, {f(iv['high'])}]"


def _fmt_budget(b: dict[str, Any]) -> tuple[str, str]:
  """('cost to reach', 'saving vs the reference') cells of one budget."""
  if b['cost_instances'] is None:
    return 'not reached', '-'
  saving = b['saving_vs_reference_pct']
  if saving is None:
    return f"{b['cost_instances']:.0f}", '-'
  return f"{b['cost_instances']:.0f}", (
      f"{'≥ ' if b['saving_is_lower_bound'] else ''}{saving:.1f}%")


def format_summary(s: dict[str, Any]) -> str:
  """`summary(records)` as markdown: the comparison, then mIoU per cycle."""
  pct = f"{100 * s['confidence']:.0f}%"
  ref = comparison.reference_name(s['reference'])
  same_unit = ' (same unit)' if s['reference']['unit'] is None else ''
  unit = s.get('cost_unit', 'instances')
  lines = [
      '# Results', '',
      f'Means over seeds with {pct} Student t-intervals (n - 1 degrees of freedom; '
      'one seed gives no interval). Seeds are paired: the same seed gives every strategy '
      f'the same initial set, so differences to {ref}{same_unit} are taken seed by seed.', '']
  full = s['full_data']
  if full is None:
    lines += ['Full-data mIoU: unknown (no `full` runs here; pass `--full_miou` or '
              '`--reference_workdir` to launch.report), so no budgets.', '']
  else:
    lines += [f"Full-data mIoU: {_fmt_interval(full)}, from {full['source']}.", '']
  auc_range = s['auc_range']
  auc_head = ('normalised AUC (no cost range common to all runs)' if auc_range is None else
              'normalised AUC, cost {:.0f}-{:.0f}'.format(*auc_range['cost_instances']))
  head = ['strategy', 'seeds', auc_head, f'AUC - {ref}']
  fractions = [b['fraction'] for b in (s['strategies'][0]['budgets'] if s['strategies'] else [])]
  for t in fractions:
    head += [f'cost to {100 * t:.0f}% of full', f'saving vs {ref}']
  rows = []
  for e in s['strategies']:
    row = [e['name'], ','.join(map(str, e['seeds'])), _fmt_interval(e['auc']),
           _fmt_interval(e['auc_diff_vs_reference'], signed=True)]
    for b in e['budgets']:
      row += _fmt_budget(b)
    rows.append(row)
  lines += ['## Comparison', '', _markdown(head, rows), '',
            f'AUC: the area under mIoU against annotation cost ({unit}) over the cost range '
            'every run covers, divided by that range (a mean mIoU over it). Cost to reach: '
            'linear interpolation on the mean curve; ≥ marks a saving where '
            f'{ref} never reached the target (it would need more than its last cost).', '']
  head = ['strategy', 'cycle', 'seeds', 'labeled images', f'cost ({unit})', 'mIoU',
          f'mIoU - {ref}']
  rows = [[e['name'], str(c['cycle']), str(c['n']), f"{c['labeled_images']:.1f}",
           f"{c['cost_instances']:.0f}", _fmt_interval(c['miou']),
           _fmt_interval(c['diff_vs_reference'], signed=True)]
          for e in s['strategies'] for c in e['cycles']]
  lines += ['## Validation mIoU per cycle', '', _markdown(head, rows), '']
  by_class = s.get('per_class_iou') or {}
  if by_class:
    strategies = list(by_class)
    classes = list(dict.fromkeys(c for v in by_class.values() for c in v))
    rows = [[c] + [_fmt_value(by_class[n].get(c)) for n in strategies] for c in classes]
    lines += ['## Validation IoU per class at the last cycle (mean over seeds)', '',
              _markdown(['class'] + strategies, rows), '']
  return ('\n'.join(lines) + endpoints.format_tests(s.get('tests', []))
          + endpoints.format_per_class(s.get('per_class_diff_vs_reference', {}), ref))


def _fmt_value(v: float | None) -> str:
  return '-' if v is None else f'{v:.4f}'


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  return '\n'.join(lines + ['| ' + ' | '.join(r) + ' |' for r in rows])


def format_labelling(records: Sequence[dict[str, Any]]) -> str:
  """The labelling time people took per cycle (records with `seconds_per_unit`),
  as markdown; empty when nobody labeled."""
  rows = [[str(r['cycle']), str(r['labelled_units']), f'{r["labelling_seconds"]:.0f}',
           f'{r["seconds_per_unit"]:.1f}', ', '.join(r.get('labelled_by', []))]
          for r in records if 'seconds_per_unit' in r]
  if not rows:
    return ''
  return ('\n## Labelling time\n\nFrom each request to its last returned file; the labels '
          'trained the cycle shown.\n\n'
          + _markdown(['cycle', 'units', 'seconds', 'seconds per unit', 'labelled by'], rows))
