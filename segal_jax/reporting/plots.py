"""Plots of a comparison: mIoU against cost with intervals, IoU per class."""

from __future__ import annotations

import io
import math
from typing import Any, Sequence

import numpy as np

from segal_jax.formats.files import atomic_open
from segal_jax.reporting import comparison as comparison_lib


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
  s = comparison_lib.summary(records) if comparison is None else comparison
  with_diff = any(c['diff_vs_reference'] for e in s['strategies'] for c in e['cycles'])
  ref = comparison_lib.reference_name(s['reference'])
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
