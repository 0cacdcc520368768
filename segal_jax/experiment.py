"""A whole experiment: every strategy x every seed, then the comparison.

Layout of the work directory:

  config.json                       the configuration the experiment ran with
  environment.json                  the package versions and devices it ran on
  <strategy>/seed_<s>/metrics.jsonl per-cycle records (labeled images, cost, mIoU, ...)
  <strategy>/seed_<s>/selection_cycleNN.csv  the images chosen for cycle NN
  <strategy>/seed_<s>/checkpoints/  the run state and training state (Orbax, for resume)
  shared/seed_<s>/cycle_00/         the seed's first-cycle model, trained once and loaded
                                    by every strategy with the plain network and loss
                                    (or under --al_shared_dir, shared between flagfiles)
  results.md                        the comparison and the cycle-by-cycle table
  summary.json                      the same, for other tools (schema in docs/outputs.md)
  miou_vs_images.png, miou_vs_cost.png  the learning curves
  per_class_iou.png                 IoU per class (named by the class table) at the last cycle
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
from tensorflow_datasets.core import constants as tfds_constants

from segal_jax.annotation import annotators
from segal_jax.annotation import oracle
from segal_jax import config as config_lib
from segal_jax import data
from segal_jax import errors
from segal_jax import formats
from segal_jax.labelling import requests as label_requests
from segal_jax.labelling import session as human
from segal_jax import loop
from segal_jax import models
from segal_jax.models import convert
from segal_jax import parallel
from segal_jax import reporting
from segal_jax.scoring import superpixels
from segal_jax.selection import strategies as selection
from segal_jax.state import checkpoint
from segal_jax.state import lock as _lock


def validate(config: config_lib.ExperimentConfig, *, pool_size: int | None = None) -> None:
  """Every check of the configuration, before any expensive work.

  The fields (`config.validate`), the network and devices, the strategies
  (`selection.check_config`); with `pool_size` (once the data is loaded) the
  checks against the pool. Also reads `--init_checkpoint` (a fraction of a
  second) to check that it fits the configured network; a missing one names
  how to make it (`convert.init_checkpoint_fix`).

  Raises:
    UserError: naming the first problem found and its fix.
  """
  config_lib.validate(config)
  if config.arch not in models.ARCHS:
    raise errors.UserError(f'--arch={config.arch} is not known',
                           f'choose one of {", ".join(sorted(models.ARCHS))}')
  selection.check_config(config, pool_size=pool_size)
  annotators.check_config(config)
  human.check_config(config)
  parallel.check_batch_size(config.train_batch_size, '--train_batch_size')
  parallel.check_batch_size(config.eval_batch_size, '--eval_batch_size')
  if config.init_checkpoint and not os.path.isdir(config.init_checkpoint):
    raise errors.UserError(f'--init_checkpoint={config.init_checkpoint} does not exist',
                           convert.init_checkpoint_fix(config.arch, config.init_checkpoint))
  if config.init_checkpoint:
    # Its classes need not be the data's (`loop.initial_variables` keeps the trunk).
    checkpoint.load_model(config.init_checkpoint, arch=config.arch,
                          width_multiplier=config.width_multiplier)


ENVIRONMENT_FILE = 'environment.json'
# What numbers depend on beyond the flags: the same flags give other numbers
# under other versions of these (XLA's kernels and fusions change between
# releases), so the records carry them.
_PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'numpy', 'orbax-checkpoint', 'scikit-image',
             'tensorflow-datasets', 'grain')


def environment() -> dict[str, Any]:
  """The software and devices a run's numbers come from (`ENVIRONMENT_FILE`)."""
  versions = {}
  for name in _PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  devices = jax.devices()
  return {'python': platform.python_version(), 'platform': platform.platform(),
          'packages': versions, 'backend': jax.default_backend(),
          'devices': len(devices), 'device_kind': devices[0].device_kind,
          'processes': jax.process_count(), 'cpu_count': os.cpu_count(), 'cpu': _cpu()}


# XLA compiles for the host's vector extensions, so two CPUs that differ in
# these sum in other orders and a long training run ends elsewhere.
_CPU_FLAGS = ('avx', 'avx2', 'fma', 'avx512f', 'avx512_bf16', 'avx512_fp16', 'amx_tile', 'neon')


def _cpu() -> dict[str, Any]:
  """The host CPU's model and the vector extensions XLA may compile for."""
  model, flags = platform.processor(), set()
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        key, _, value = line.partition(':')
        if key.strip() == 'model name':
          model = value.strip()
        elif key.strip() in ('flags', 'Features'):
          flags = set(value.split())
          break
  except OSError:
    pass
  return {'model': model, 'extensions': [f for f in _CPU_FLAGS if f in flags]}


def run_dir(workdir: str, strategy: str, seed: int) -> str:
  return os.path.join(workdir, strategy, f'seed_{seed}')


def shared_dir(workdir: str, seed: int, root: str = '') -> str:
  """Where the first cycle every strategy of `seed` shares is kept (`loop.run`):
  under `root` (`--al_shared_dir`), else the workdir's `shared/`."""
  return os.path.join(root or os.path.join(workdir, 'shared'), f'seed_{seed}', 'cycle_00')


def load_data(config: config_lib.ExperimentConfig):
  """(train split, val split, [N] annotation cost of each whole training image).

  Costs follow the protocol's unit (`--al_cost_rule`, or clicks) and are computed once, then read from
  `image_costs`'s file beside the data set.
  """
  kw = dict(data_dir=config.data_dir or None, config=config.dataset_config or None)
  train_split = data.load(config.dataset, 'train', **kw)
  val_split = data.load(config.dataset, 'validation', **kw)
  return (train_split, val_split,
          image_costs(config, train_split)[annotators.from_config(config).cost_rule])


def image_costs(config: config_lib.ExperimentConfig, split) -> dict[str, np.ndarray]:
  """{cost rule: [N] int64 cost of each whole image of `split`}, every rule of
  `oracle.COST_RULES` (`annotators.get(rule=...).image_costs`), stored in
  `<data_dir>/instance_counts/<dataset>/<config>.json` the first time
  (decoding every instance map takes minutes on Cityscapes); recomputed when the
  split's ids or build (`Split.build`: an image folder's files and class table)
  differ."""
  path = os.path.join(_data_root(config), 'instance_counts',
                      superpixels.safe_name(config.dataset),
                      superpixels.safe_name(config.dataset_config or 'default') + '.json')
  try:
    with open(path) as f:
      stored = json.load(f)
    if (stored['ids'] == [str(i) for i in split.ids]
        and stored.get('build', '') == getattr(split, 'build', '')):
      return {rule: np.asarray(stored[rule], np.int64) for rule in oracle.COST_RULES}
  except (OSError, ValueError, KeyError):
    pass
  out = {rule: annotators.get(rule=rule).image_costs(split) for rule in oracle.COST_RULES}
  if parallel.is_writer():
    formats.write_json(path, {'ids': [str(i) for i in split.ids],
                             'build': getattr(split, 'build', ''),
                             **{rule: v.tolist() for rule, v in out.items()}})
  return out


def _data_root(config: config_lib.ExperimentConfig) -> str:
  return config.data_dir or tfds_constants.DATA_DIR


def run(config: config_lib.ExperimentConfig, workdir: str,
        log: Callable[[str], None] = print,
        should_stop: Callable[[], bool] | None = None) -> list[dict[str, Any]]:
  """Runs (or resumes) the experiment; returns every per-cycle record.

  `should_stop` is polled after every training epoch: when it returns True the
  run saves its training state and raises `loop.Preempted` (rerun to resume).
  One process runs a work directory at a time (`_lock`): a second one is
  refused with a `UserError` naming the first one's PID.
  """
  os.makedirs(workdir, exist_ok=True)
  held = _lock.hold(workdir, log) if parallel.is_writer() else contextlib.nullcontext()
  with held:
    return _run(config, workdir, log, should_stop)


def _run(config, workdir, log, should_stop) -> list[dict[str, Any]]:
  t0 = time.time()
  if human.enabled(config):  # what people labeled since the last run, before the data is read
    human.check_config(config)
    the_run = run_dir(workdir, config.al_strategies[0], config.al_seeds[0])
    human.take_in(config, the_run, log)
    train_split, val_split, costs = human.load_data(config, the_run, log)
  else:
    train_split, val_split, costs = load_data(config)
  # People's runs start from what is labeled, not from --al_initial.
  validate(config, pool_size=None if human.enabled(config) else len(train_split))
  for seed in config.al_seeds:  # refuse changed flags before anything is written
    for strategy in config.al_strategies:
      loop.load_state(run_dir(workdir, strategy, seed), config)
  log = log if parallel.is_writer() else (lambda *_: None)
  if parallel.is_writer():
    formats.write_json(os.path.join(workdir, 'config.json'), config.to_json())
    formats.write_json(os.path.join(workdir, ENVIRONMENT_FILE), environment())
  log(f'data: {config.dataset}/{config.dataset_config}: {len(train_split)} train, '
      f'{len(val_split)} val images of {train_split.images.shape[1]}x'
      f'{train_split.images.shape[2]} ({time.time() - t0:.0f} s)')
  init_variables = loop.initial_variables(config, train_split.classes, log)
  segments = counts = None
  if config.al_unit == 'superpixel':
    segments, counts = pool_superpixels(config, train_split)
  # Stored beside the data; people's clicks are not counted.
  image_clicks = None if human.enabled(config) else image_costs(config, train_split)['clicks']
  records = []
  for seed in config.al_seeds:
    for strategy in config.al_strategies:
      try:
        records += loop.run(loop.Run(
            config, strategy, seed, train_split, val_split, costs,
            run_dir(workdir, strategy, seed), log=log, should_stop=should_stop,
            init_variables=init_variables, segments=segments, segment_counts=counts,
            shared_dir=shared_dir(workdir, seed, config.al_shared_dir),
            image_clicks=image_clicks))
      except label_requests.AwaitingLabels:
        if parallel.is_writer():  # the cycles so far, while people label
          summarize(workdir, collect(workdir))
          human.offer(config, run_dir(workdir, strategy, seed), log)  # to their tool
        raise
  if parallel.is_writer():
    summarize(workdir, records,
              cost='clicks' if annotators.from_config(config).cost_rule == 'clicks' else 'instances')
  return records


def pool_superpixels(config: config_lib.ExperimentConfig, split) -> tuple[np.ndarray, np.ndarray]:
  """([N, H, W] int32 superpixels of the pool, [N] superpixels of each image),
  computed once and cached beside the data."""
  cache = superpixels.SuperpixelCache(os.path.join(_data_root(config), 'superpixels'))
  key = f'{config.dataset}/{config.dataset_config}'
  params = dict(n_segments=config.sp_segments, compactness=config.sp_compactness)
  segments = cache.get_or_compute(key, split.ids, split.images, **params,
                                  workers=config.sp_workers or None, progress=config.progress)
  return segments, cache.segment_counts(key, split.ids, segments, **params)


def collect(workdir: str) -> list[dict[str, Any]]:
  """Every record of every finished cycle under `workdir`."""
  records = []
  for root, _, files in sorted(os.walk(workdir)):
    if loop.METRICS_FILE in files:
      records += formats.read_jsonl(os.path.join(root, loop.METRICS_FILE))
  return records


def collect_many(workdirs: Sequence[str]) -> list[dict[str, Any]]:
  """`collect` over several work directories, merged: each run (strategy, unit,
  seed) must come from one of them.

  Raises:
    UserError: a directory holds no finished cycle, or two hold the same run.
  """
  records, origin = [], {}
  for workdir in workdirs:
    found = collect(workdir)
    if not found:
      raise errors.UserError(f'no finished cycle under {workdir}',
                             'point --workdir at the directory given to launch.run')
    for run in sorted({(r['strategy'], r.get('unit', 'image'), r['seed']) for r in found}):
      if origin.setdefault(run, workdir) != workdir:
        raise errors.UserError(
            f'{run[0]} ({run[1]}) seed {run[2]} has runs in both {origin[run]} and {workdir}',
            'report each run from one work directory only')
    records += found
  return records


COSTS = ('instances', 'clicks')


def summarize(workdir: str, records: list[dict[str, Any]],
              full: dict[str, Any] | None = None, cost: str = 'instances',
              reference: tuple[str, str | None] | None = None) -> str:
  """Writes summary.json, results.md and the plots into `workdir` (made if
  missing); returns the results as markdown.

  `full` is the full-data mIoU ({'mean', 'low', 'high', 'n', 'source'}); by
  default the `full` strategy's records, when there are any. `cost`: the cost
  axis of the comparison, 'instances' (records' `cost_instances`) or 'clicks'
  (`cost_clicks`; summary.json's `cost_instances` fields then hold clicks and
  its `cost_unit` says so). `reference`: the line every line is compared with
  (`reporting.summary`).
  """
  if cost == 'clicks':
    missing = [r for r in records if 'cost_clicks' not in r]
    if missing:
      raise errors.UserError(f'{len(missing)} records have no cost in clicks (runs made before '
                             'clicks were recorded)', 'report them with --cost=instances')
    records = [dict(r, cost_instances=r['cost_clicks']) for r in records]
  comparison = dict(reporting.summary(records, full, reference, with_clicks=cost == 'instances'),
                    cost_unit=cost)
  formats.write_json(os.path.join(workdir, 'summary.json'), comparison)
  reporting.plot_curves(os.path.join(workdir, 'miou_vs_images.png'), records,
                     comparison=comparison)
  reporting.plot_curves(os.path.join(workdir, 'miou_vs_cost.png'), records, x_key='cost_instances',
                     x_label=f'annotation cost ({cost})', comparison=comparison)
  reporting.plot_per_class(os.path.join(workdir, 'per_class_iou.png'), comparison)
  text = reporting.format_summary(comparison) + reporting.format_labelling(records)
  with formats.atomic_open(os.path.join(workdir, 'results.md')) as f:
    f.write(text)
  return text
