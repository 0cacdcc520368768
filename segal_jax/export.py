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

from segal_jax._files import atomic_open  # public here too: export.atomic_open


def write_json(path: str, obj: Any) -> None:
  with atomic_open(path) as f:
    json.dump(obj, f, indent=1)


def write_jsonl(path: str, records: Iterable[dict[str, Any]]) -> None:
  with atomic_open(path) as f:
    for r in records:
      f.write(json.dumps(r) + '\n')


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """The records of a JSON-lines file; a damaged line is a UserError naming it."""
  from segal_jax.errors import UserError  # pylint: disable=g-import-not-at-top
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


def _by_strategy(records: Iterable[dict[str, Any]], x_key: str):
  """{strategy: (xs, mean mIoU, std mIoU, n seeds)} over seeds, per cycle.

  When the records mix units (image and superpixel runs), each line is named
  `strategy/unit` so the two are not averaged together.
  """
  records = list(records)
  mixed = len({r.get('unit', 'image') for r in records}) > 1
  grouped = collections.defaultdict(lambda: collections.defaultdict(list))
  for r in records:
    name = f"{r['strategy']}/{r.get('unit', 'image')}" if mixed else r['strategy']
    grouped[name][r['cycle']].append((r[x_key], r['miou']))
  out = {}
  for strategy, cycles in grouped.items():
    cs = sorted(cycles)
    xs = np.array([np.mean([x for x, _ in cycles[c]]) for c in cs])
    ys = [np.array([y for _, y in cycles[c]]) for c in cs]
    out[strategy] = (cs, xs, np.array([y.mean() for y in ys]), np.array([y.std() for y in ys]),
                     [len(y) for y in ys])
  return out


def plot_curves(path: str, records: Sequence[dict[str, Any]], *, x_key: str = 'labeled_images',
                x_label: str = 'labeled images', title: str = '') -> None:
  """mIoU against `x_key`, one line per strategy, mean +- std over seeds."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
  for strategy, (_, xs, mean, std, _) in sorted(_by_strategy(records, x_key).items()):
    if strategy == 'full':  # the full-data reference: a level, not a curve
      ax.axhline(mean[0], color='k', ls='--', lw=1, label=f'full data ({int(xs[0])})')
      ax.axhspan(mean[0] - std[0], mean[0] + std[0], color='k', alpha=0.08)
      continue
    line, = ax.plot(xs, mean, marker='o', label=strategy)
    ax.fill_between(xs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
  ax.set_xlabel(x_label)
  ax.set_ylabel('validation mIoU')
  ax.grid(alpha=0.3)
  ax.legend()
  if title:
    ax.set_title(title)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format='png')
  plt.close(fig)
  with atomic_open(path, 'wb') as f:
    f.write(buf.getvalue())


def format_table(records: Sequence[dict[str, Any]], *, markdown: bool = False) -> str:
  """Cycle-by-cycle mIoU of every strategy (mean +- std over seeds)."""
  curves = _by_strategy(records, 'labeled_images')
  strategies = sorted(curves)
  cycles = sorted({c for s in strategies for c in curves[s][0]})
  header = ['cycle', 'labeled'] + strategies
  rows = []
  for c in cycles:
    row, labeled = [str(c)], ''
    for s in strategies:
      cs, xs, mean, std, n = curves[s]
      if c in cs:
        i = cs.index(c)
        labeled = str(int(xs[i]))
        row.append(f'{mean[i]:.4f}' + (f' ± {std[i]:.4f}' if n[i] > 1 else ''))
      else:
        row.append('-')
    rows.append([row[0], labeled] + row[1:])
  if markdown:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(r) + ' |' for r in rows]
    return '\n'.join(lines)
  widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
            for i, h in enumerate(header)]
  fmt = lambda r: '  '.join(v.rjust(w) for v, w in zip(r, widths))
  return '\n'.join([fmt(header), fmt(['-' * w for w in widths])] + [fmt(r) for r in rows])


def nan_to_none(values: Iterable[float]) -> list[float | None]:
  return [None if (v is None or math.isnan(v)) else float(v) for v in values]
