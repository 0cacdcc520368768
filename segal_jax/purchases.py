"""What a purchase buys: whole images against superpixels, from an experiment's records.

Random selection needs no model, so its purchases are replayed exactly from
the seed with the experiment's own selection and annotator (`replay`): the
same initial set, candidate and selection keys (`loop.stream_key`), budget
rule and superpixels. Each purchase is then described by what it added
(`purchase`): labeled pixels per class, instances bought (things and stuff
apart), pixels per instance, images touched. The replay is checked against
the records (`new_labeled_pixels`, `new_instances` of every cycle). For every
strategy, including those whose purchases need their models, the records'
mIoU is set against labeled pixels as well as instances (`curves`): the
labeled pixels of a cycle are the initial set's plus the records' purchases.

A configuration not run yet (e.g. on another data set) is replayed alike,
with nothing to check and no curves: what its purchases would buy.

Layout of `analyze`'s output directory:
  purchases.csv   one row per (unit, seed, cycle) purchase of random selection
  curves.csv      one row per record: unit, strategy, seed, cycle, instances, labeled pixels, mIoU
                  (with records)
  purchases.json  the rows' means over seeds, the replay's match, the class table
  geometry.json   `geometry.summarize` of the pool (with `geometry=True`)
  purchases.png   mIoU against instances and against labeled pixels; the class mix bought
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from typing import Any, Sequence

import jax
import numpy as np

from segal_jax.annotation import annotators
from segal_jax.annotation import oracle
from segal_jax import config as config_lib
from segal_jax.data import labels as labels_lib
from segal_jax.errors import UserError
from segal_jax import experiment
from segal_jax import formats
from segal_jax import loop
from segal_jax.reporting import geometry
from segal_jax.selection import strategies as selection
from segal_jax.state import pool as pool_lib

REPLAYED = 'random'  # the one strategy whose purchases need no model


def class_pixels(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """[C] int64 labeled pixels of each class in class maps `labels` [..., H, W]
  (`labels.IGNORE` not counted)."""
  flat = np.asarray(labels).ravel()
  return np.bincount(flat[flat != labels_lib.IGNORE], minlength=num_classes)[:num_classes]


def purchase_counts(labels_before: Sequence[np.ndarray], labels_after: Sequence[np.ndarray],
                    ids_before: Sequence[np.ndarray], ids_after: Sequence[np.ndarray],
                    num_classes: int) -> dict[str, Any]:
  """What a purchase added over the images it touched.

  Args:
    labels_before, labels_after: per touched image, its [H, W] uint8 training
      labels before and after the purchase.
    ids_before, ids_after: per touched image, the instance ids labeled before and after.

  Returns:
    {'pixels': [C] int64 newly labeled pixels per class, 'things', 'stuff':
     instances newly labeled of each kind (`geometry.is_thing`)}.
  """
  pixels = np.zeros(num_classes, np.int64)
  things = stuff = 0
  for lb, la, ib, ia in zip(labels_before, labels_after, ids_before, ids_after):
    pixels += class_pixels(la, num_classes) - class_pixels(lb, num_classes)
    new = np.setdiff1d(np.asarray(ia, np.int64), np.asarray(ib, np.int64))
    things += int(geometry.is_thing(new).sum())
    stuff += int((~geometry.is_thing(new)).sum())
  return {'pixels': pixels, 'things': things, 'stuff': stuff}


def labeled_ids(pool: pool_lib.PoolLabels, split, image: int) -> np.ndarray:
  """1-D int64 instance ids labeled in pool image `image` (all of them when it is whole)."""
  if image in set(pool.full):
    return geometry.instance_areas(split.instances[image], split.labels[image])[0]
  return np.asarray(pool.annotated.get(image, []), np.int64)


def copy_pool(pool: pool_lib.PoolLabels) -> pool_lib.PoolLabels:
  return pool_lib.PoolLabels.from_json(json.loads(json.dumps(pool.to_json())))


def touched(before: pool_lib.PoolLabels, after: pool_lib.PoolLabels) -> np.ndarray:
  """[n] sorted pool images whose labels `after` differs from `before` in."""
  full_before, full_after = set(before.full), set(after.full)
  return np.array([i for i in after.images().tolist()
                   if (i in full_after) != (i in full_before)
                   or after.annotated.get(i) != before.annotated.get(i)
                   or after.chosen.get(i) != before.chosen.get(i)], np.int64)


def purchase(annotator, before: pool_lib.PoolLabels, after: pool_lib.PoolLabels, split,
             thing_classes: Sequence[int]) -> dict[str, Any]:
  """One purchase described: a row of `purchases.csv` (see `purchase_counts`)."""
  images = touched(before, after)
  lab = lambda pool: [annotator.labels(pool, split, np.array([i]))[0] for i in images.tolist()]
  ids = lambda pool: [labeled_ids(pool, split, i) for i in images.tolist()]
  c = purchase_counts(lab(before), lab(after), ids(before), ids(after), split.num_classes)
  pixels, instances = c['pixels'], c['things'] + c['stuff']
  thing_px = int(pixels[list(thing_classes)].sum())
  total = int(pixels.sum())
  units = (len(set(after.full) - set(before.full))
           + after.num_superpixels() - before.num_superpixels())
  return {'units_bought': units, 'new_instances': instances, 'thing_instances': c['things'],
          'stuff_instances': c['stuff'], 'new_labeled_pixels': total,
          'pixels_per_instance': total / max(instances, 1),
          'thing_pixels': thing_px, 'stuff_pixels': total - thing_px,
          'thing_pixel_share': thing_px / max(total, 1),
          'pixels_per_thing': thing_px / max(c['things'], 1),
          'pixels_per_stuff': (total - thing_px) / max(c['stuff'], 1),
          'images_touched': len(images),
          'images_new': len(set(images.tolist()) - set(before.images().tolist())),
          **{f'px_{name}': int(v) for name, v in zip(split.classes.names, pixels)}}


def replay(config: config_lib.ExperimentConfig, seed: int, split, costs: np.ndarray,
           segments: np.ndarray | None = None, segment_counts: np.ndarray | None = None
           ) -> list[pool_lib.PoolLabels]:
  """The pools of random selection at the start of every cycle, and after the last purchase.

  `loop.run`'s selection with `al_strategies` = random, without training:
  `al_cycles` pools for the cycles, the last of which buys nothing.
  """
  strategy = selection.get(REPLAYED)
  annotator = annotators.from_config(config).bind(seed=seed, segments=segments)
  state = loop.initial_state(config, strategy, split, jax.random.key(seed), annotator)
  pool = pool_lib.PoolLabels.from_json(state.pool)
  pools = [copy_pool(pool)]
  for cycle in range(config.al_cycles - 1):
    if not loop.buys(config, cycle):
      break
    keys = {name: loop.stream_key(seed, name, cycle) for name in ('candidates', 'score', 'select')}
    request = selection.Request(strategy, pool, split, costs, keys, None, None, config,
                                annotator, segments, segment_counts)
    selection.select(config.al_unit, request)
    pools.append(copy_pool(pool))
  return pools


def load_config(workdir: str) -> config_lib.ExperimentConfig:
  """The configuration an experiment ran with (its `config.json`); fields added
  since keep their defaults."""
  path = os.path.join(workdir, 'config.json')
  try:
    with open(path) as f:
      raw = json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f'{path} is missing or unreadable ({e})',
                    'point --records at the work directory of a launch.run experiment') from e
  fields = {f.name for f in dataclasses.fields(config_lib.ExperimentConfig)}
  unknown = sorted(set(raw) - fields)
  if unknown:
    raise UserError(f'{path} has fields this version does not know: {", ".join(unknown)}',
                    'analyse it with the version that ran it')
  return config_lib.ExperimentConfig(**{k: tuple(v) if isinstance(v, list) else v
                                        for k, v in raw.items()})


def curves(records: Sequence[dict[str, Any]], initial_pixels: dict[int, int]) -> list[dict]:
  """One row per record: its cost in instances, labeled pixels and mIoU.

  A cycle's labeled pixels are the seed's initial set's (`initial_pixels`:
  seed -> pixels) plus the `new_labeled_pixels` of the run's earlier cycles.
  """
  rows = []
  runs: dict[tuple, list[dict]] = {}
  for r in records:
    runs.setdefault((r['unit'], r['strategy'], r['seed']), []).append(r)
  for (unit, strategy, seed), run in sorted(runs.items()):
    pixels = initial_pixels[seed]
    for r in sorted(run, key=lambda r: r['cycle']):
      rows.append({'unit': unit, 'strategy': strategy, 'seed': seed, 'cycle': r['cycle'],
                   'cost_instances': r['cost_instances'], 'labeled_pixels': pixels,
                   'labeled_images': r['labeled_images'], 'miou': r['miou']})
      pixels += r.get('new_labeled_pixels', 0)
  return rows


def _means(rows: Sequence[dict], keys: Sequence[str], by: Sequence[str]) -> list[dict]:
  groups: dict[tuple, list[dict]] = {}
  for r in rows:
    groups.setdefault(tuple(r[k] for k in by), []).append(r)
  return [{**dict(zip(by, g)), 'seeds': len(rs),
           **{k: float(np.mean([r[k] for r in rs])) for k in keys}}
          for g, rs in sorted(groups.items())]


def _replay_rows(config, workdir: str | None, split, costs, log) -> tuple[list, list, list]:
  """(purchase rows, curve rows, mismatches) of one experiment: random selection
  replayed for every seed of `config`, checked against `workdir`'s records when
  there are any (None: a configuration not run yet, nothing to check)."""
  records = experiment.collect(workdir) if workdir else []
  if workdir and not any(r['strategy'] == REPLAYED for r in records):
    raise UserError(f'{workdir} holds no {REPLAYED} run to replay',
                    f'point --records at experiments with --al_strategies including {REPLAYED}')
  segments = counts = None
  if config.al_unit == 'superpixel':
    segments, counts = experiment.pool_superpixels(config, split)
  rows, mismatches, initial = [], [], {}
  for seed in config.al_seeds:
    log(f'{workdir or config.al_unit}: replaying {REPLAYED} seed {seed}')
    pools = replay(config, seed, split, costs, segments, counts)
    bound = annotators.from_config(config).bind(seed=seed, segments=segments)
    initial[seed] = bound.labeled_counts(pools[0], split, pools[0].images())[0]
    recorded = sorted((r for r in records if r['strategy'] == REPLAYED and r['seed'] == seed),
                      key=lambda r: r['cycle'])
    for cycle, (before, after) in enumerate(zip(pools, pools[1:])):
      row = {'unit': loop.unit_name(config), 'seed': seed, 'cycle': cycle,
             **purchase(bound, before, after, split, split.classes.thing_ids)}
      if workdir:
        rec = recorded[cycle] if cycle < len(recorded) else {}
        row.update(record_new_labeled_pixels=rec.get('new_labeled_pixels'),
                   record_new_instances=rec.get('new_instances'))
        row['match'] = (row['record_new_labeled_pixels'] == row['new_labeled_pixels']
                        and row['record_new_instances'] == row['new_instances'])
        if not row['match']:
          mismatches.append(f"{row['unit']} seed {seed} cycle {cycle}")
      rows.append(row)
  return rows, curves(records, initial), mismatches


def pool_geometry(config: config_lib.ExperimentConfig, split) -> dict[str, Any]:
  """`geometry.summarize` of the pool's superpixels (`config`'s) against its instances."""
  segments, _ = experiment.pool_superpixels(config, split)
  per_image = (geometry.image_geometry(split.labels[i], split.instances[i], segments[i])
               for i in range(len(split)))
  return geometry.summarize(per_image, int(np.prod(split.labels.shape[1:])))


def analyze(sources: Sequence[tuple[config_lib.ExperimentConfig, str | None]], out: str, *,
            with_geometry: bool = False, log=print) -> dict[str, Any]:
  """Replays random selection of every source, describes its purchases, sets every
  record's mIoU against labeled pixels, and writes the files of the module
  docstring into `out`.

  Args:
    sources: (configuration, its work directory or None) pairs on the same data,
      e.g. `load_config(workdir)` of an image and a superpixel experiment.
  """
  if not sources:
    raise UserError('nothing to analyse', 'pass --records, or a configuration with --units')
  data = {(c.dataset, c.dataset_config, c.data_dir) for c, _ in sources}
  if len(data) > 1:
    raise UserError(f'the experiments are on different data ({sorted(data)})',
                    'analyse experiments on one data set together')
  rows, curve_rows, mismatches = [], [], []
  config = sources[0][0]
  split, _, costs = experiment.load_data(config)
  for config, workdir in sources:
    got = _replay_rows(config, workdir, split, costs, log)
    rows, curve_rows, mismatches = rows + got[0], curve_rows + got[1], mismatches + got[2]
  os.makedirs(out, exist_ok=True)
  _write_csv(os.path.join(out, 'purchases.csv'), rows)
  numeric = [k for k, v in rows[0].items() if isinstance(v, (int, float))
             and not isinstance(v, bool) and k not in ('seed', 'cycle')] if rows else []
  summary = {
      'records': [w for _, w in sources if w],
      'dataset': f'{config.dataset}/{config.dataset_config}',
      'replay_matches_records': not mismatches, 'mismatches': mismatches,
      'classes': list(split.classes.names), 'thing_classes': list(split.classes.thing_ids),
      'purchases': _means(rows, numeric, ('unit', 'cycle')),
      'purchases_all_cycles': _means(rows, numeric, ('unit',)),
      'curves': _means(curve_rows, ('cost_instances', 'labeled_pixels', 'labeled_images', 'miou'),
                       ('unit', 'strategy', 'cycle')),
  }
  if curve_rows:
    _write_csv(os.path.join(out, 'curves.csv'), curve_rows)
  formats.write_json(os.path.join(out, 'purchases.json'), summary)
  if with_geometry:
    formats.write_json(os.path.join(out, 'geometry.json'), pool_geometry(config, split))
  plot(os.path.join(out, 'purchases.png'), summary)
  return summary


def _write_csv(path: str, rows: Sequence[dict]) -> None:
  with formats.atomic_open(path) as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
    writer.writeheader()
    writer.writerows(rows)


def plot(path: str, summary: dict[str, Any]) -> None:
  """mIoU against instances and against labeled pixels (mean over seeds, a line per
  unit and strategy), and the class mix random selection bought per unit."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 3, figsize=(17, 4.8), dpi=110)
  lines: dict[tuple, list[dict]] = {}
  for c in summary['curves']:
    lines.setdefault((c['unit'], c['strategy']), []).append(c)
  colours: dict[str, str] = {}
  for (unit, strategy), cs in sorted(lines.items()):
    cs = sorted(cs, key=lambda c: c['cycle'])
    style = dict(color=colours.setdefault(strategy, f'C{len(colours)}'),
                 ls=':' if unit.startswith('superpixel') else '-',
                 marker='s' if unit.startswith('superpixel') else 'o', ms=4,
                 label=f'{strategy} ({unit})')
    axes[0].plot([c['cost_instances'] for c in cs], [c['miou'] for c in cs], **style)
    axes[1].plot([c['labeled_pixels'] / 1e6 for c in cs], [c['miou'] for c in cs], **style)
  if not lines:
    for ax in axes[:2]:
      ax.text(0.5, 0.5, 'no records: purchases replayed only', ha='center', va='center',
              transform=ax.transAxes)
  axes[0].set(xlabel='annotation cost (instances)', ylabel='validation mIoU')
  axes[1].set(xlabel='labeled pixels (millions)', ylabel='validation mIoU')
  if lines:
    axes[0].legend(fontsize=7)
  names = summary['classes']
  units = summary['purchases_all_cycles']
  bottom = np.zeros(len(units))
  for k, name in enumerate(names):
    share = np.array([u[f'px_{name}'] / max(u['new_labeled_pixels'], 1) for u in units])
    if not share.any():
      continue
    thing = k in summary['thing_classes']
    axes[2].bar(range(len(units)), share, bottom=bottom, label=name, hatch='//' if thing else None,
                color=plt.get_cmap('tab20')(k % 20))
    bottom += share
  axes[2].set_xticks(range(len(units)), [u['unit'] for u in units])
  axes[2].set(ylabel='share of the pixels a purchase labels (random)',
              title='class mix bought (hatched: things)')
  axes[2].legend(fontsize=6, ncol=2)
  for ax in axes[:2]:
    ax.grid(alpha=0.3)
  fig.tight_layout()
  with formats.atomic_open(path, 'wb') as f:
    fig.savefig(f, format='png')
  plt.close(fig)
