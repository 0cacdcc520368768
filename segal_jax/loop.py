"""The active-learning cycle: train, evaluate, score, select, repeat.

One run is one (strategy, seed) pair in its own directory. Every cycle trains
from the same initial variables (the reference protocol), so the
active-learning state between cycles is what has been labeled (`pool.PoolLabels`):
it is saved atomically after each cycle, the training state every few epochs,
and a rerun with the same configuration resumes where the run stopped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from segal_jax import checkpoint
from segal_jax import export
from segal_jax import figures
from segal_jax import loss_prediction_train
from segal_jax import models
from segal_jax import parallel
from segal_jax import pool as pool_lib
from segal_jax import selection
from segal_jax import stopping
from segal_jax import train
from segal_jax import uncertainty
from segal_jax import units
from segal_jax.config import ExperimentConfig
from segal_jax.errors import UserError

# Streams of the experiment key; fold_in(seed_key, stream) keeps them apart.
_INIT, _INITIAL_SET, _TRAIN, _CANDIDATES, _SCORE, _SELECT = range(6)

STATE_FILE = 'al_state.json'
# Checkpoint step of (cycle, epoch): cycle * this + epoch, increasing within a run.
_CKPT_STEPS_PER_CYCLE = 1_000_000
METRICS_FILE = 'metrics.jsonl'


@dataclasses.dataclass
class RunState:
  """What a run has done so far; enough to resume after any finished cycle.

  pool: `pool.PoolLabels.to_json()`, what the annotator has labeled.
  """
  fingerprint: str
  pool: dict[str, Any]
  records: list[dict[str, Any]]

  @property
  def next_cycle(self) -> int:
    return len(self.records)


def build_model(config: ExperimentConfig, num_classes: int, strategy_name: str | None = None):
  """The configured DRNSeg; with a loss-prediction head for `loss_prediction`."""
  cls = (loss_prediction_train.DRNSegWithLossHead
         if strategy_name == selection.LOSS_PREDICTION else models.DRNSeg)
  return cls(arch=config.arch, num_classes=num_classes,
             width_multiplier=config.width_multiplier,
             dropout_placement=config.dropout_placement,
             dropout_rate=config.dropout_rate,
             dtype=jnp.dtype(config.compute_dtype))


def initial_variables(config: ExperimentConfig, num_classes: int) -> dict | None:
  """The `--init_checkpoint` variables, checked against the configured network."""
  if not config.init_checkpoint:
    return None
  _, variables, _ = checkpoint.load_model(
      config.init_checkpoint, arch=config.arch, num_classes=num_classes,
      width_multiplier=config.width_multiplier, dropout_placement=config.dropout_placement,
      dropout_rate=config.dropout_rate)
  return variables


def load_state(run_dir: str, config: ExperimentConfig) -> RunState | None:
  """The saved state of a run; None if it has not started.

  Raises:
    UserError: unreadable, or made with other experiment-defining flags.
  """
  path = os.path.join(run_dir, STATE_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      raw = json.load(f)
    state = RunState(raw['fingerprint'], dict(raw['pool']), list(raw['records']))
  except (OSError, ValueError, KeyError) as e:
    raise UserError(f'the run state {path} is unreadable ({e})',
                    'delete that run directory to start it again') from e
  if state.fingerprint != config.fingerprint():
    raise UserError(f'{run_dir} holds a run with a different configuration',
                    'use a new --workdir, or the flags that run was started with')
  return state


def _save_state(run_dir: str, state: RunState) -> None:
  if not parallel.is_writer():
    return
  export.write_json(os.path.join(run_dir, STATE_FILE), dataclasses.asdict(state))
  export.write_jsonl(os.path.join(run_dir, METRICS_FILE), state.records)


def train_schedule(config: ExperimentConfig, n_labeled: int,
                   warm: bool = False) -> tuple[int, int]:
  """(epochs, total steps) for a labeled set: `train_epochs`, or more epochs when
  the set is so small that `train_min_steps` asks for them. A warm-started
  cycle trains `warm_start_fraction` of that."""
  per_epoch = max(1, n_labeled // config.train_batch_size)
  epochs = max(config.train_epochs, -(-config.train_min_steps // per_epoch))
  if warm:
    epochs = max(1, round(epochs * config.warm_start_fraction))
  return epochs, epochs * per_epoch


class Preempted(UserError):
  """Training stopped on request (e.g. SIGTERM) after saving a checkpoint."""


def _train_cycle(config, model, init_key, train_key, train_split, labels: pool_lib.PoolLabels,
                 run_dir, cycle, *, fingerprint: str, desc: str,
                 should_stop: Callable[[], bool] | None, log, init_variables: dict | None = None):
  """Trains one cycle, resuming from a mid-cycle checkpoint.

  Every cycle starts from the same initial variables (the seed's, or
  `init_variables`), or with `warm_start` from the previous cycle's model for
  a fraction of the epochs.

  Every `ckpt_every_epochs` epochs (and when `should_stop()` turns true) the
  training state is saved with the active-learning state that identifies the
  cycle; a rerun restores it and continues at the next epoch, which gives
  exactly the uninterrupted result (keys derive from the step and epoch).
  """
  get_batch = lambda idx: {'image': train_split.images[idx],
                           'label': labels.label_batch(train_split, idx)}
  labeled, tracker = _holdout(config, labels.images(), train_key, get_batch, train_split)
  warm = config.warm_start and cycle > 0
  if warm:  # start from the previous cycle's model (kept by _save_model)
    _, init_variables, _ = checkpoint.load_model(
        os.path.join(run_dir, 'models', f'cycle_{cycle - 1:02d}'), arch=config.arch,
        num_classes=train_split.num_classes, width_multiplier=config.width_multiplier,
        dropout_placement=config.dropout_placement, dropout_rate=config.dropout_rate)
  epochs, steps = train_schedule(config, len(labeled), warm)
  tx = train.make_optimizer(lr=config.train_lr, momentum=config.train_momentum,
                            weight_decay=config.train_weight_decay,
                            schedule=config.train_schedule, total_steps=steps,
                            step_every=max(1, int(steps * config.train_step_fraction)))
  ts = train.create_train_state(model, init_key, image_shape=train_split.images.shape[1:], tx=tx)
  if init_variables is not None:
    # Saved models hold the segmentation network only: a loss-prediction head
    # keeps its fresh initialisation.
    ts = ts.replace(params={**ts.params, **init_variables['params']},
                    batch_stats=init_variables.get('batch_stats', ts.batch_stats))
  lp_schedule = (loss_prediction_train.schedule_from_config(config)
                 if isinstance(model, loss_prediction_train.DRNSegWithLossHead) else None)
  identity = {'fingerprint': fingerprint, 'cycle': cycle, 'pool': labels.to_json()}
  ckpt = checkpoint.RunCheckpointer(os.path.join(run_dir, 'checkpoints'))
  start_epoch = 0
  pack = tracker.pack if tracker else (lambda state: state)
  restored = ckpt.restore_latest(pack(ts)) if ckpt.all_steps() else None
  if restored is not None:
    _, saved, al = restored
    if {k: al.get(k) for k in identity} == identity:
      ts, start_epoch = tracker.unpack(saved, al) if tracker else saved, int(al['epoch']) + 1
      log(f'{desc}: resuming at epoch {start_epoch} of {epochs}')

  def on_epoch_end(epoch, state):
    converged = tracker is not None and tracker.on_epoch_end(epoch, state)
    stop = should_stop is not None and should_stop()
    every = config.ckpt_every_epochs
    if stop or converged or (every and (epoch + 1) % every == 0 and epoch + 1 < epochs):
      # A copy: the next train step donates (reuses) the state's buffers.
      ckpt.save(cycle * _CKPT_STEPS_PER_CYCLE + epoch, pack(jax.tree.map(jnp.copy, state)),
                {**identity, 'epoch': epoch, **(tracker.to_json() if tracker else {})})
    if stop:
      ckpt.close()
      raise Preempted(f'stopped on request during cycle {cycle} after epoch {epoch}; '
                      'the training state is saved',
                      'rerun the same command to resume')
    if converged:
      raise stopping.Converged()

  try:
    if not (tracker and tracker.stopped()):  # a resumed cycle may have converged already
      ts, _ = train.fit(ts, get_batch, labeled, epochs=epochs,
                        batch_size=config.train_batch_size,
                        key=train_key, mean=train_split.mean, std=train_split.std,
                        crop=tuple(config.train_crop),
                        scale_range=(config.train_scale_min, config.train_scale_max),
                        progress=config.progress, desc=desc, start_epoch=start_epoch,
                        on_epoch_end=on_epoch_end, loss_prediction=lp_schedule)
  except stopping.Converged:
    pass
  finally:
    ckpt.close()
  if tracker is None:
    return ts, steps
  if tracker.stopped():
    steps = (tracker.epochs[-1] + 1) * (steps // epochs)
    log(f'{desc}: held-out loss stopped improving; stopped after {steps} steps')
  return tracker.result(ts), steps


def _holdout(config, labeled, train_key, get_batch, split):
  """(images to train on, `stopping.Tracker` or None): with `stop_holdout`, a
  seeded slice of the labeled images is held out to stop training early."""
  if config.stop_holdout <= 0:
    return labeled, None
  trained, held = stopping.holdout_split(labeled, config.stop_holdout,
                                         jax.random.fold_in(train_key, 2))
  if not len(held):
    return labeled, None
  loss = lambda s: stopping.heldout_loss(
      s.apply_fn, {'params': s.params, 'batch_stats': s.batch_stats}, get_batch, held,
      batch_size=config.eval_batch_size, mean=split.mean, std=split.std)
  every = stopping.eval_every_epochs(config.stop_every_steps,
                                     len(trained) // config.train_batch_size)
  return trained, stopping.Tracker(loss, every=every, patience=config.stop_patience,
                                   min_delta=config.stop_min_delta)


def _save_model(run_dir: str, cycle: int, model, ts, train_split, config) -> None:
  """The cycle's trained model, for `launch.score`; only the newest cycle is kept."""
  models_dir = os.path.join(run_dir, 'models')
  target = os.path.join(models_dir, f'cycle_{cycle:02d}')
  if parallel.is_writer():
    shutil.rmtree(target, ignore_errors=True)  # left by an interrupted attempt
  parallel.sync('save_model')  # every process takes part in the Orbax save
  checkpoint.save_model(
      target, loss_prediction_train.segmentation_variables(
          {'params': ts.params, 'batch_stats': ts.batch_stats}),
      checkpoint.meta_for(model, mean=train_split.mean, std=train_split.std,
                          image_size=list(train_split.images.shape[1:3]),
                          dataset=config.dataset, cycle=cycle))
  for old in os.listdir(models_dir) if parallel.is_writer() else ():
    if old != os.path.basename(target):
      shutil.rmtree(os.path.join(models_dir, old), ignore_errors=True)


def run(config: ExperimentConfig, strategy_name: str, seed: int, train_split, val_split,
        costs: np.ndarray, run_dir: str, *, log=print,
        should_stop: Callable[[], bool] | None = None,
        init_variables: dict | None = None,
        segments: np.ndarray | None = None) -> list[dict[str, Any]]:
  """Runs (or resumes) one strategy with one seed; returns the per-cycle records.

  Args:
    costs: [len(train_split)] annotation cost of each full image (instances).
    should_stop: polled after every epoch; when it returns True the training
      state is checkpointed and `Preempted` is raised.
    init_variables: start every cycle from these (see `initial_variables`)
      instead of the seed's random initialisation.
    segments: [N, H, W] superpixels of the pool (superpixel unit only).
  """
  strategy = selection.get(strategy_name)
  os.makedirs(run_dir, exist_ok=True)
  log = log if parallel.is_writer() else (lambda *_: None)
  root = jax.random.key(seed)
  model = build_model(config, train_split.num_classes, strategy_name)
  n_pool = len(train_split)
  state = load_state(run_dir, config)
  cycles = 1 if strategy.full else config.al_cycles
  if state is None:
    initial = np.asarray(jax.random.permutation(jax.random.fold_in(root, _INITIAL_SET), n_pool))
    n_initial = n_pool if strategy.full else config.al_initial
    state = RunState(config.fingerprint(),
                     pool_lib.PoolLabels(full=sorted(initial[:n_initial].tolist())).to_json(), [])
  elif state.next_cycle >= cycles:
    return state.records
  else:
    log(f'[{strategy_name} seed {seed}] resuming at cycle {state.next_cycle}')

  init_key = jax.random.fold_in(root, _INIT)
  for cycle in range(state.next_cycle, cycles):
    t0 = time.time()
    labels = pool_lib.PoolLabels.from_json(state.pool)
    try:
      ts, steps = _train_cycle(
          config, model, init_key, jax.random.fold_in(jax.random.fold_in(root, _TRAIN), cycle),
          train_split, labels, run_dir, cycle, fingerprint=state.fingerprint,
          desc=f'{strategy_name} s{seed} c{cycle} train', should_stop=should_stop, log=log,
          init_variables=init_variables)
    except Preempted:
      raise
    except UserError as e:  # e.g. a diverging loss: say which run and cycle
      raise UserError(f'[{strategy_name} seed {seed}] cycle {cycle}: {e.problem}', e.fix) from e
    t_train = time.time() - t0
    _save_model(run_dir, cycle, model, ts, train_split, config)
    val_get = lambda idx: {'image': val_split.images[idx], 'label': val_split.labels[idx]}
    metrics = train.evaluate(ts, val_get, len(val_split), batch_size=config.eval_batch_size,
                             mean=val_split.mean, std=val_split.std,
                             num_classes=val_split.num_classes, progress=config.progress)
    cost = labels.cost(costs)
    record = {
        'strategy': strategy_name, 'seed': seed, 'cycle': cycle, 'unit': config.al_unit,
        'labeled_images': int(len(labels.images())),
        'full_images': len(labels.full),
        'superpixels': labels.num_superpixels(),
        'cost_instances': cost,
        'cost_images': round(cost / max(float(np.mean(costs)), 1e-9), 2),
        'miou': float(metrics['miou']),
        'per_class_iou': export.nan_to_none(metrics['per_class_iou']),
        'pixel_acc': float(metrics['pixel_acc']),
        'train_steps': int(steps), 'train_seconds': round(t_train, 2),
    }
    if strategy.measure == selection.LOSS_PREDICTION:
      record['ranking_accuracy'] = export.nan_to_none([
          loss_prediction_train.validation_ranking_accuracy(
              ts.apply_fn, {'params': ts.params, 'batch_stats': ts.batch_stats}, val_split,
              batch_size=config.eval_batch_size, progress=config.progress)])[0]
    t1 = time.time()
    if cycle + 1 < cycles:
      keys = {name: jax.random.fold_in(jax.random.fold_in(root, stream), cycle)
              for name, stream in (('candidates', _CANDIDATES), ('score', _SCORE),
                                   ('select', _SELECT))}
      scoring = units.Scoring(ts.apply_fn, {'params': ts.params, 'batch_stats': ts.batch_stats},
                              config.mc_passes, config.mc_chunk, train_split.mean,
                              train_split.std, config.eval_batch_size, config.progress,
                              labels=train_split.labels)
      csv_path = os.path.join(run_dir, f'selection_cycle{cycle + 1:02d}.csv')
      if config.al_unit == 'image':
        chosen, scores = units.select_images(strategy, labels, n_pool, train_split.images,
                                             config.al_budget, config.al_candidate_factor,
                                             keys, scoring, costs=costs,
                                             budget_cost=config.al_budget_cost)
        labels.add_images(chosen)
        names = [train_split.ids[i] for i in chosen]
      else:
        picks, ranked, scores = units.select_superpixels(
            strategy, labels, n_pool, train_split.images, segments, config.al_budget,
            config.al_candidate_factor, keys, scoring, split=train_split,
            budget_cost=config.al_budget_cost, costs=costs)
        labels.add_superpixels(train_split, segments, picks)
        names = [f'{train_split.ids[i]}/{sp}' for i, sp in ranked]
      if parallel.is_writer():
        export.write_selection_csv(csv_path, names, scores)
        top = chosen[:config.out_figures] if config.al_unit == 'image' else (
            np.array(list(dict.fromkeys(i for i, _ in ranked)))[:config.out_figures])
        _draw_figures(config, strategy, run_dir, cycle + 1, train_split, segments, top, picks
                      if config.al_unit == 'superpixel' else None, scoring, keys['score'])
    record['select_seconds'] = round(time.time() - t1, 2)
    record['wall_seconds'] = round(time.time() - t0, 2)
    state.records.append(record)
    state.pool = labels.to_json()
    _save_state(run_dir, state)
    log(f'[{strategy_name} seed {seed}] cycle {cycle}: {record["labeled_images"]} images, '
        f'{cost} instances, mIoU {record["miou"]:.4f} ({record["wall_seconds"]:.0f} s)')
  return state.records


def _draw_figures(config, strategy, run_dir, cycle, split, segments, top, picks, scoring,
                  score_key) -> None:
  """The top-ranked images' uncertainty maps (and chosen superpixels) as PNGs."""
  if not config.out_figures or len(top) == 0:
    return
  top = np.sort(np.asarray(top, np.int64))
  directory = os.path.join(run_dir, 'figures')
  if strategy.measure in uncertainty.MEASURES:
    maps = figures.uncertainty_maps(scoring.apply_fn, scoring.variables, split.images[top], top,
                                    score_key, measure=strategy.measure,
                                    passes=config.mc_passes, mean=split.mean, std=split.std)
    figures.selection_figure(os.path.join(directory, f'cycle{cycle:02d}_uncertainty.png'),
                             split.images[top], maps, split.labels[top])
  if picks is not None:
    figures.superpixel_figure(os.path.join(directory, f'cycle{cycle:02d}_superpixels.png'),
                              split.images[top], segments[top], [picks[int(i)] for i in top])
