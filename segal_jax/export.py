"""Everything an experiment writes: metrics, selection CSVs, plots, tables.

Every file is written atomically (a temporary file in the same directory, then
`os.replace`), so an interrupted run never leaves a half-written result.
"""

from __future__ import annotations

import collections
import csv
import io
import json
import math
from typing import Any, Iterable, Sequence

import numpy as np

from segal_jax import endpoints
from segal_jax import statistics
from segal_jax._files import atomic_open  # public here too: export.atomic_open
from segal_jax.errors import UserError


def write_json(path: str, obj: Any) -> None:
  with atomic_open(path) as f:
    json.dump(obj, f, indent=1)


def write_jsonl(path: str, records: Iterable[dict[str, Any]]) -> None:
  with atomic_open(path) as f:
    for r in records:
      f.write(json.dumps(r) + '\n')


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """The records of a JSON-lines file; a damaged line is a UserError naming it."""
  records = []
  with open(path) as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        records.append(json.loads(line))
      except ValueError as e:
        raise UserError(f'{path} line {n} is not valid JSON ({getattr(e, "msg", e)})',
                        'restore the file, or delete that run directory and rerun '
                        'launch.run to recompute it') from e
  return records


def write_selection_csv(path: str, names: Sequence[str], scores: Sequence[float]) -> None:
  """The SuperAnnotate upload format: `name,entropy_value`, highest first."""
  with atomic_open(path) as f:
    w = csv.writer(f)
    w.writerow(['name', 'entropy_value'])
    for n, s in zip(names, scores):
      w.writerow([n, f'{float(s):.6g}'])


def runs_by_strategy(records: Iterable[dict[str, Any]], *, include_full: bool = False,
                     reference: statistics.Reference = statistics.DEFAULT_REFERENCE
                     ) -> dict[tuple[str, str], statistics.Runs]:
  """{(strategy, unit): statistics.Runs} in `statistics.line_order` of
  `reference`; the `full` level only if `include_full`.

  A run is identified by strategy, unit and seed; two runs with the same three
  (e.g. two experiments of one unit under one directory) cannot be paired by
  seed, so they are refused.
  """
  grouped = collections.defaultdict(dict)
  for r in records:
    if r['strategy'] == 'full' and not include_full:
      continue
    key = (r['strategy'], r.get('unit', 'image'))
    cell = (r['seed'], r['cycle'])
    if cell in grouped[key]:
      raise UserError(f'two runs of {key[0]} ({key[1]}) seed {cell[0]} both have a cycle '
                      f'{cell[1]}', 'report each experiment\'s work directory on its own')
    grouped[key][cell] = r
  out = {}
  for key, cells in sorted(grouped.items(),
                           key=lambda kv: statistics.line_order(kv[0], reference)):
    seeds = sorted({s for s, _ in cells})
    cycles = sorted({c for _, c in cells})
    arrays = {f: np.full((len(seeds), len(cycles)), np.nan)
              for f in ('cost_instances', 'labeled_images', 'miou')}
    for (s, c), r in cells.items():
      for f, a in arrays.items():
        a[seeds.index(s), cycles.index(c)] = r[f]
    out[key] = statistics.Runs(np.array(seeds), np.array(cycles), arrays['cost_instances'],
                               arrays['labeled_images'], arrays['miou'])
  return out


def _names(keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
  """Display names: `strategy`, or `strategy/unit` when the units mix."""
  keys = list(keys)
  mixed = len({unit for _, unit in keys}) > 1
  return {(s, u): f'{s}/{u}' if mixed else s for s, u in keys}


def full_reference(records: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
  """The `full` strategy's mIoU over its seeds ({'mean', 'low', 'high', 'n'}), or None."""
  values = [r['miou'] for r in records if r['strategy'] == 'full']
  return _interval_json(statistics.interval(values)) if values else None


_interval_json = endpoints.interval_json


def per_class(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
  """{strategy display name: {class name: IoU}}: the mean over seeds of each
  run's last cycle, from records that name their classes (`per_class`);
  None where no seed has a value (the class never occurs)."""
  last = {}
  for r in records:
    if 'per_class' not in r:
      continue
    run = ((r['strategy'], r.get('unit', 'image')), r['seed'])
    if run not in last or r['cycle'] > last[run]['cycle']:
      last[run] = r
  names = _names({key for key, _ in last})
  values = {}
  order = lambda run: (statistics.line_order(run[0]), run[1])
  for (key, _), r in sorted(last.items(), key=lambda kv: order(kv[0])):  # as runs_by_strategy
    for cls, v in r['per_class'].items():
      values.setdefault(names[key], {}).setdefault(cls, []).append(v)
  return {name: {cls: (float(np.mean([v for v in vs if v is not None]))
                       if any(v is not None for v in vs) else None)
                 for cls, vs in by_class.items()}
          for name, by_class in values.items()}


def parse_reference(text: str) -> statistics.Reference:
  """`STRATEGY@UNIT` -> (strategy, unit): every line against that line;
  `STRATEGY` -> (strategy, None): against that strategy of the line's own unit."""
  strategy, at, unit = text.partition('@')
  if not strategy or '@' in unit or (at and not unit):
    raise UserError(f'--reference={text} is neither STRATEGY nor STRATEGY@UNIT',
                    'pass e.g. --reference=random or --reference=random@image/image_polygons')
  return strategy, unit or None


def _check_reference(runs: dict[tuple[str, str], statistics.Runs],
                     reference: statistics.Reference) -> None:
  strategy, unit = reference
  if (strategy, unit) in runs or (unit is None and any(s == strategy for s, _ in runs)):
    return
  text = strategy if unit is None else f'{strategy}@{unit}'
  lines = ', '.join(f'{s}@{u}' for s, u in runs)
  raise UserError(f'--reference={text} names no line of these runs (they hold {lines})',
                  'pass one of those as STRATEGY@UNIT, or a strategy alone to compare each '
                  'line with that strategy of its own unit')


def reference_name(reference: dict[str, str | None]) -> str:
  """summary.json's `reference` as the tables and plots name it."""
  if reference['unit'] is None:
    return reference['strategy']
  return f"{reference['strategy']}/{reference['unit']}"


def summary(records: Sequence[dict[str, Any]], full: dict[str, Any] | None = None,
            reference: statistics.Reference | None = None, with_clicks: bool = True) -> dict:
  """The JSON-able comparison written to summary.json (schema in the README).

  `full` ({'mean', 'low', 'high', 'n', 'source'}) is the full-data mIoU; by
  default the `full` strategy's records, when there are any. `reference`
  (`parse_reference`) is the line every line is compared with, and must be
  among the records; by default random of each line's unit, where there is one.
  `tests` holds `endpoints.tests` of every line against its reference, with the
  AUC in clicks as well when `with_clicks` and every record has its clicks.

  Raises:
    UserError: `reference` names no line of `records`.
  """
  if full is None:
    full = full_reference(records)
    if full is not None:
      full = dict(full, source='the full strategy\'s runs')
  chosen, reference = reference is not None, reference or statistics.DEFAULT_REFERENCE
  runs = runs_by_strategy(records, reference=reference)
  if chosen:
    _check_reference(runs, reference)
  stats = statistics.compare(runs, None if full is None else full['mean'], reference=reference)
  names = _names(runs)
  opt = lambda iv: None if iv is None else _interval_json(iv)
  strategies = []
  for (strategy, unit), entry in stats['curves'].items():
    strategies.append({
        'name': names[strategy, unit], 'strategy': strategy,
        'unit': unit, 'seeds': [int(s) for s in runs[strategy, unit].seeds],
        'cycles': [{'cycle': c['cycle'], 'n': c['n'], 'labeled_images': c['images'],
                    'cost_instances': c['cost'], 'miou': _interval_json(c['miou']),
                    'diff_vs_reference': opt(c['diff'])} for c in entry['cycles']],
        'auc': _interval_json(entry['auc']), 'auc_diff_vs_reference': opt(entry['auc_diff']),
        'budgets': [{'fraction': t, 'miou': b['miou'],
                     'cost_instances': nan_to_none([b['cost']])[0],
                     'saving_vs_reference_pct': nan_to_none([b['saving_pct']])[0],
                     'saving_is_lower_bound': b['saving_is_lower_bound']}
                    for t, b in entry['budgets'].items()]})
  auc_range = stats['auc_range']
  clicks = None
  if with_clicks and records and all('cost_clicks' in r for r in records):
    clicks = runs_by_strategy([dict(r, cost_instances=r['cost_clicks']) for r in records],
                              reference=reference)
  tests = endpoints.tests(runs, None if full is None else full['mean'], reference, clicks)
  return {'schema': 3, 'confidence': statistics.CONFIDENCE,
          'reference': {'strategy': reference[0], 'unit': reference[1]}, 'full_data': full,
          'auc_range': None if auc_range is None else {'cost_instances': list(auc_range)},
          'strategies': strategies, 'per_class_iou': per_class(records),
          'tests': endpoints.to_json(tests, names),
          'per_class_diff_vs_reference': endpoints.per_class_differences(records, names,
                                                                         reference)}


def plot_curves(path: str, records: Sequence[dict[str, Any]], *, x_key: str = 'labeled_images',
                x_label: str = 'labeled images', title: str = '',
                comparison: dict | None = None) -> None:
  """mIoU against `x_key`: mean over seeds per strategy, band = 95% t-interval.

  The full-data mIoU is a dashed horizontal line. When there is a reference
  line, a second panel shows each line's paired difference to it.
  `comparison` is `summary(records)` when the caller already has it.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  s = summary(records) if comparison is None else comparison
  with_diff = any(c['diff_vs_reference'] for e in s['strategies'] for c in e['cycles'])
  ref = reference_name(s['reference'])
  fig, axes = plt.subplots(1, 2 if with_diff else 1, figsize=(12 if with_diff else 7, 4.8),
                           dpi=120, squeeze=False)
  # A colour per strategy (a unit's line styled apart) for one or two units; a
  # colour per line beyond (protocol comparisons), from a 20-colour map.
  by_line = len({e['unit'] for e in s['strategies']}) > 2
  ax, colours = axes[0, 0], {} if by_line else {s['reference']['strategy']: '0.35'}
  for e in s['strategies']:
    colour = colours.setdefault(e['name'] if by_line else e['strategy'],
                                f'C{len(colours) - 1}' if not by_line else
                                plt.get_cmap('tab20')(len(colours) % 20))
    n = max(c['n'] for c in e['cycles'])
    region = e['unit'].startswith('superpixel')
    style = dict(color=colour, marker='s' if region else 'o', ms=4, lw=1.6,
                 ls=':' if region else '-',
                 label=f"{e['name']} ({n} seed{'s' if n > 1 else ', no interval'})")
    xs = [c[x_key] for c in e['cycles']]
    _line_with_band(ax, xs, [c['miou'] for c in e['cycles']], style)
    if with_diff and any(c['diff_vs_reference'] for c in e['cycles']):
      _line_with_band(axes[0, 1], xs, [c['diff_vs_reference'] for c in e['cycles']],
                      dict(style, label=None))
  full = s['full_data']
  if full is not None:
    ax.axhline(full['mean'], color='k', ls='--', lw=1.2, label=f"full data ({full['mean']:.3f})")
    if full['low'] is not None:
      ax.axhspan(full['low'], full['high'], color='k', alpha=0.07, lw=0)
  ax.set_ylabel('validation mIoU')
  ax.set_title(title or 'mean over seeds; band: 95% t-interval', fontsize='medium')
  if with_diff:
    axes[0, 1].axhline(0, color='0.35', lw=1)
    axes[0, 1].set_ylabel(f'mIoU - {ref} (same seed)')
    axes[0, 1].set_title(f'paired difference to {ref}; band: 95% t-interval',
                         fontsize='medium')
  for a in axes[0]:
    a.set_xlabel(x_label)
    a.grid(alpha=0.3)
  _save_with_legend(path, fig, ax)
  plt.close(fig)


def _save_with_legend(path: str, fig, ax) -> None:
  """Writes `fig` as a PNG with `ax`'s legend below the panels, in as many
  rows as its labels need."""
  handles, labels = ax.get_legend_handles_labels()
  columns = min(len(labels), 4 if max(map(len, labels), default=0) < 40 else 2)
  fig.legend(handles, labels, loc='lower center', ncol=columns, fontsize='small',
             frameon=False)
  rows = math.ceil(len(labels) / max(columns, 1))
  fig.set_size_inches(fig.get_size_inches()[0], 4.5 + 0.22 * rows)  # room for the legend
  fig.tight_layout(rect=(0, (0.22 * rows + 0.1) / (4.5 + 0.22 * rows), 1, 1))
  buf = io.BytesIO()
  fig.savefig(buf, format='png')
  with atomic_open(path, 'wb') as f:
    f.write(buf.getvalue())


def _line_with_band(ax, xs: Sequence[float], intervals: Sequence[dict | None], style) -> None:
  """A mean line and, where there are intervals, the band between them."""
  points = [(x, iv) for x, iv in zip(xs, intervals) if iv is not None]
  ax.plot([x for x, _ in points], [iv['mean'] for _, iv in points], **style)
  banded = [(x, iv['low'], iv['high']) for x, iv in points if iv['low'] is not None]
  if len(banded) > 1:
    bx, lo, hi = zip(*banded)
    ax.fill_between(bx, lo, hi, color=style['color'], alpha=0.12, lw=0)


def format_table(records: Sequence[dict[str, Any]], *, markdown: bool = False) -> str:
  """Cycle-by-cycle mIoU of every strategy (mean +- std over seeds), `full` included."""
  runs = runs_by_strategy(records, include_full=True)
  names = _names(runs)
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
  ref = reference_name(s['reference'])
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


def plot_per_class(path: str, comparison: dict[str, Any]) -> None:
  """Horizontal bars of IoU per class at the last cycle, one colour per strategy
  (`summary(...)['per_class_iou']`); nothing is written when no record names
  its classes."""
  by_class = comparison.get('per_class_iou') or {}
  if not by_class:
    return
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  classes = list(dict.fromkeys(c for v in by_class.values() for c in v))
  height = 0.8 / len(by_class)
  fig, ax = plt.subplots(figsize=(7, 1.2 + 0.3 * len(classes) * max(1, len(by_class) / 2)),
                         dpi=120)
  for k, (name, values) in enumerate(by_class.items()):
    ys = np.arange(len(classes)) + k * height
    ax.barh(ys, [values.get(c) or 0.0 for c in classes], height, label=name, color=f'C{k}')
  ax.set_yticks(np.arange(len(classes)) + 0.4 - height / 2, classes)
  ax.invert_yaxis()
  ax.set_xlim(0, 1)
  ax.set_xlabel('validation IoU at the last cycle (mean over seeds)')
  ax.grid(axis='x', alpha=0.3)
  ax.legend(fontsize='small', frameon=False)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format='png')
  plt.close(fig)
  with atomic_open(path, 'wb') as f:
    f.write(buf.getvalue())


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


def nan_to_none(values: Iterable[float]) -> list[float | None]:
  return [None if (v is None or math.isnan(v)) else float(v) for v in values]
