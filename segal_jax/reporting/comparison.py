"""The comparison of an experiment's lines: runs grouped by line, the full-data
reference, per-class IoU, and the summary (intervals, budgets, endpoint tests)."""

from __future__ import annotations

import collections
from typing import Any, Iterable, Sequence

import numpy as np

from segal_jax.errors import UserError
from segal_jax import formats
from segal_jax.reporting import endpoints
from segal_jax.reporting import statistics


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


def line_names(keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
  """Display names: `strategy`, or `strategy/unit` when the units mix."""
  keys = list(keys)
  mixed = len({unit for _, unit in keys}) > 1
  return {(s, u): f'{s}/{u}' if mixed else s for s, u in keys}


def full_reference(records: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
  """The `full` strategy's mIoU over its seeds ({'mean', 'low', 'high', 'n'}), or None."""
  values = [r['miou'] for r in records if r['strategy'] == 'full']
  return endpoints.interval_json(statistics.interval(values)) if values else None


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
  names = line_names({key for key, _ in last})
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
  """The JSON-able comparison written to summary.json (schema in docs/outputs.md).

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
  names = line_names(runs)
  opt = lambda iv: None if iv is None else endpoints.interval_json(iv)
  strategies = []
  for (strategy, unit), entry in stats['curves'].items():
    strategies.append({
        'name': names[strategy, unit], 'strategy': strategy,
        'unit': unit, 'seeds': [int(s) for s in runs[strategy, unit].seeds],
        'cycles': [{'cycle': c['cycle'], 'n': c['n'], 'labeled_images': c['images'],
                    'cost_instances': c['cost'], 'miou': endpoints.interval_json(c['miou']),
                    'diff_vs_reference': opt(c['diff'])} for c in entry['cycles']],
        'auc': endpoints.interval_json(entry['auc']),
        'auc_diff_vs_reference': opt(entry['auc_diff']),
        'budgets': [{'fraction': t, 'miou': b['miou'],
                     'cost_instances': formats.nan_to_none([b['cost']])[0],
                     'saving_vs_reference_pct': formats.nan_to_none([b['saving_pct']])[0],
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
