"""The active-learning cycle: train, evaluate, score, select, repeat.

One run is one (strategy, seed) pair in its own directory. Every cycle trains
from the same initial variables (the reference protocol), so the
active-learning state between cycles is what has been labeled (`pool.PoolLabels`).
`run_state` saves it, with the records, at the end of each cycle and with the
training state every few epochs; a rerun with the same configuration resumes
where the run stopped. `run` is the cycle itself: train, record, select (the
unit and strategy registries of `selection`, the labels of an `annotators`
entry), save (the cycle's model through `cycle_models`).
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from segal_jax import annotators
from segal_jax import checkpoint
from segal_jax import cycle_models
from segal_jax import export
from segal_jax import figures
from segal_jax import label_requests
from segal_jax import losses
from segal_jax import metrics
from segal_jax import models
from segal_jax import optim
from segal_jax import parallel
from segal_jax import pool as pool_lib
from segal_jax import run_state as run_state_lib
from segal_jax import selection
from segal_jax import stopping
from segal_jax import train
from segal_jax.config import ExperimentConfig
from segal_jax.data import labels as labels_lib
from segal_jax.errors import UserError

# Streams of the experiment key; fold_in(seed_key, stream) keeps them apart.
_STREAMS = {name: i for i, name in enumerate(
    ('init', 'initial_set', 'train', 'candidates', 'score', 'select'))}

METRICS_FILE = 'metrics.jsonl'


def stream_key(seed: int, name: str, cycle: int) -> jax.Array:
  """The key of stream `name` (`_STREAMS`) at `cycle` in the run of `seed`."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _STREAMS[name]), cycle)


def build_model(config: ExperimentConfig, num_classes: int, strategy_name: str | None = None):
  """The configured network of the strategy (a DRNSeg, with a loss-prediction
  head for `loss_prediction`)."""
  cls = selection.get(strategy_name).network() if strategy_name else models.DRNSeg
  return cls(arch=config.arch, num_classes=num_classes,
             width_multiplier=config.width_multiplier,
             dropout_placement=config.dropout_placement,
             dropout_rate=config.dropout_rate,
             dtype=jnp.dtype(config.compute_dtype))


def initial_variables(config: ExperimentConfig, classes, log=print) -> dict | None:
  """The `--init_checkpoint` variables, checked against the configured network;
  of a model of other classes than `classes` (the data's table) only the trunk,
  said in one line (`checkpoint.load_trunk`)."""
  if not config.init_checkpoint:
    return None
  variables, note = checkpoint.load_trunk(
      config.init_checkpoint, classes, arch=config.arch,
      width_multiplier=config.width_multiplier, dropout_placement=config.dropout_placement,
      dropout_rate=config.dropout_rate)
  if note:
    log(note)
  return variables


def load_state(run_dir: str, config: ExperimentConfig) -> run_state_lib.RunState | None:
  """The saved state of a run (`run_state.load_run_state`); None if it has not started."""
  return run_state_lib.load_run_state(run_dir, config.fingerprint())


def _save_state(run_dir: str, state: run_state_lib.RunState) -> None:
  """The finished cycle: the run state (every process) and `metrics.jsonl` (the writer)."""
  run_state_lib.save_run_state(run_dir, state)
  if parallel.is_writer():
    export.write_jsonl(os.path.join(run_dir, METRICS_FILE), state.records)


def train_schedule(config: ExperimentConfig, n_labeled: int,
                   warm: bool = False, worth: float = 1.0) -> tuple[int, int]:
  """(epochs, total steps) for a labeled set: `train_epochs`, or more epochs when
  the set is so small that `train_min_steps` asks for them. A warm-started
  cycle trains `warm_start_fraction` of that.

  With `train_length='cost'` the epochs are scaled by `worth`, the whole images
  the labeled cost is worth per labeled image (`length_worth`), so that a set
  of partly labeled images trains as long as whole images of the same cost.
  """
  per_epoch = max(1, n_labeled // config.train_batch_size)
  epochs = config.train_epochs
  if config.train_length == 'cost' and epochs:
    epochs = max(1, round(epochs * worth))
  epochs = max(epochs, -(-config.train_min_steps // per_epoch))
  if warm:
    epochs = max(1, round(epochs * config.warm_start_fraction))
  return epochs, epochs * per_epoch


def buys(config: ExperimentConfig, cycle: int) -> bool:
  """Whether labels are bought after `cycle` (all cycles, or the first
  `al_label_cycles`: the labels-versus-compute control)."""
  return not config.al_label_cycles or cycle < config.al_label_cycles


def length_worth(pool: pool_lib.PoolLabels, cost: float, costs: np.ndarray) -> float:
  """Whole images the labels of `pool` are worth, per labeled image: a fully
  labeled image counts one, the partly labeled ones what their annotation
  cost buys in images of mean cost. 1 for whole images, below 1 for
  superpixels spread over many images.

  Args:
    cost: the total annotation cost of `pool` (`Annotator.cost`).
    costs: [N] annotation cost of each whole pool image.
  """
  costs = np.asarray(costs)
  partial = cost - float(costs[np.asarray(pool.full, np.int64)].sum())
  worth = len(pool.full) + partial / max(float(np.mean(costs)), 1e-9)
  return worth / max(len(pool.images()), 1)


def labeled_share(get_labels: Callable[[np.ndarray], np.ndarray], images, full=(),
                  chunk: int = 64) -> np.ndarray:
  """[N] `--train_sampling`'s weights: 1 for an image labeled whole (in `full`,
  void and all), else the share of its pixels that carry a label (class maps:
  not `IGNORE`; partial-label masks: any class allowed)."""
  images, full = np.asarray(images, np.int64), set(int(i) for i in full)
  out = np.ones(len(images))
  partial = np.array([k for k, i in enumerate(images.tolist()) if i not in full], np.int64)
  for k in range(0, len(partial), chunk):
    rows = partial[k:k + chunk]
    has = labels_lib.has_label(get_labels(images[rows]))
    out[rows] = has.reshape(len(has), -1).mean(1)
  return out


class Preempted(UserError):
  """Training stopped on request (e.g. SIGTERM) after saving a checkpoint."""


def _train_cycle(config, model, init_key, train_key, train_split, labels: pool_lib.PoolLabels,
                 run_dir, cycle, *, run_state: run_state_lib.RunState, desc: str,
                 should_stop: Callable[[], bool] | None, log, init_variables: dict | None = None,
                 loss_fn: losses.LossFn = losses.segmentation_loss,
                 get_labels: Callable[[np.ndarray], np.ndarray], where: str = '',
                 worth: float = 1.0):
  """Trains one cycle, resuming from a mid-cycle checkpoint.

  Every cycle starts from the same initial variables (the seed's, or
  `init_variables`), or with `warm_start` from the previous cycle's model for
  a fraction of the epochs.

  Every `ckpt_every_epochs` epochs (and when `should_stop()` turns true) the
  training state is saved with the active-learning state that identifies the
  cycle; a rerun restores it and continues at the next epoch, which gives
  exactly the uninterrupted result (keys derive from the step and epoch).

  `get_labels(indices)` gives the training labels (the annotator's); a
  `UserError` while training (e.g. a diverging loss) is raised again naming
  `where` (the run and cycle). `worth` scales the length (`train_schedule`).
  """
  get_batch = lambda idx: {'image': train_split.images[idx], 'label': get_labels(idx)}
  labeled, tracker = _holdout(config, labels.images(), train_key, get_batch, train_split)
  warm = config.warm_start and cycle > 0
  if warm:  # start from the previous cycle's model (kept by cycle_models.save_cycle_model)
    _, init_variables, _ = checkpoint.load_model(
        cycle_models.cycle_model_dir(run_dir, cycle - 1), arch=config.arch,
        classes=train_split.classes, width_multiplier=config.width_multiplier,
        dropout_placement=config.dropout_placement, dropout_rate=config.dropout_rate)
  epochs, steps = train_schedule(config, len(labeled), warm, worth)
  tx = optim.make_optimizer(lr=config.train_lr, momentum=config.train_momentum,
                            weight_decay=config.train_weight_decay,
                            schedule=config.train_schedule, total_steps=steps,
                            step_every=max(1, int(steps * config.train_step_fraction)))
  ts = train.create_train_state(model, init_key, image_shape=train_split.images.shape[1:], tx=tx)
  if init_variables is not None:
    # Saved models hold the segmentation network only: a loss-prediction head
    # keeps its fresh initialisation, and so does a classifier left out by
    # `initial_variables`.
    ts = ts.replace(params={**ts.params, **init_variables['params']},
                    batch_stats=init_variables.get('batch_stats', ts.batch_stats))
  al_state = run_state.to_json()
  identity = {k: al_state[k] for k in ('fingerprint', 'cycle', 'pool')}
  ckpt = checkpoint.RunCheckpointer(os.path.join(run_dir, run_state_lib.RUN_CHECKPOINTS))
  start_epoch = 0
  pack = tracker.pack if tracker else (lambda state: state)
  restored = ckpt.restore_latest(pack(ts)) if ckpt.all_steps() else None
  if restored is not None:
    _, saved, al = restored
    if saved is not None and {k: al.get(k) for k in identity} == identity:
      ts, start_epoch = tracker.unpack(saved, al) if tracker else saved, int(al['epoch']) + 1
      log(f'{desc}: resuming at epoch {start_epoch} of {epochs}')

  def on_epoch_end(epoch, state):
    converged = tracker is not None and tracker.on_epoch_end(epoch, state)
    stop = should_stop is not None and should_stop()
    every = config.ckpt_every_epochs
    if stop or converged or (every and (epoch + 1) % every == 0 and epoch + 1 < epochs):
      # A copy: the next train step donates (reuses) the state's buffers.
      ckpt.save(cycle * run_state_lib.STEPS_PER_CYCLE + epoch,
                pack(jax.tree.map(jnp.copy, state)),
                {**al_state, 'epoch': epoch, **(tracker.to_json() if tracker else {})})
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
                        key=train_key, inputs=train.InputSpec(
                            train_split.mean, train_split.std, config.train_crop,
                            (config.train_scale_min, config.train_scale_max)),
                        progress=config.progress, desc=desc, start_epoch=start_epoch,
                        on_epoch_end=on_epoch_end, loss_fn=loss_fn,
                        weights=(labeled_share(get_labels, labeled, labels.full)
                                 if config.train_sampling == 'labeled_pixels' else None))
  except stopping.Converged:
    pass
  except Preempted:
    raise
  except UserError as e:  # e.g. a diverging loss: say which run and cycle
    raise UserError(f'{where}: {e.problem}', e.fix) from e
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


def run(config: ExperimentConfig, strategy_name: str, seed: int, train_split, val_split,
        costs: np.ndarray, run_dir: str, *, log=print,
        should_stop: Callable[[], bool] | None = None,
        init_variables: dict | None = None,
        segments: np.ndarray | None = None,
        segment_counts: np.ndarray | None = None,
        annotator: annotators.Annotator | None = None,
        shared_dir: str | None = None,
        image_clicks: np.ndarray | None = None) -> list[dict[str, Any]]:
  """Runs (or resumes) one strategy with one seed; returns the per-cycle records.

  Args:
    costs: [len(train_split)] annotation cost of each full image
      (`annotator.image_costs`).
    should_stop: polled after every epoch; when it returns True the training
      state is checkpointed and `Preempted` is raised.
    init_variables: start every cycle from these (see `initial_variables`)
      instead of the seed's random initialisation.
    segments: [N, H, W] superpixels of the pool (superpixel unit only).
    segment_counts: [N] superpixels of each pool image (None: read from `segments`).
    annotator: who labels the chosen units (default: `annotators.from_config(config)`,
      the simulated annotator under `al_protocol` and `al_cost_rule`).
    shared_dir: where the seed's first cycle is kept: the first strategy of the
      seed to reach it trains it and saves the model there, the others load it
      (the same initial set, key and network give the same model).
    image_clicks: [len(train_split)] polygon clicks of each whole image, if known
      (`experiment.image_costs`); else counted as images are labeled whole.
  """
  strategy = selection.get(strategy_name)
  annotator = (annotator or annotators.from_config(config)).bind(seed=seed, segments=segments)
  os.makedirs(run_dir, exist_ok=True)
  log = log if parallel.is_writer() else (lambda *_: None)
  root = jax.random.key(seed)
  stream = lambda name, cycle: stream_key(seed, name, cycle)
  model = build_model(config, train_split.num_classes, strategy_name)
  state = load_state(run_dir, config)
  cycles = 1 if strategy.full else config.al_cycles
  # Pool image -> its polygon clicks.
  click_cache = {} if image_clicks is None else dict(enumerate(np.asarray(image_clicks).tolist()))
  if state is None:
    state = initial_state(config, strategy, train_split, root, annotator)
  elif state.pending is not None:
    raise label_requests.AwaitingLabels(label_requests.instructions(
        state.pending, label_requests.request_dir(run_dir, state.pending['cycle'])))
  elif state.next_cycle >= cycles:
    return state.records
  else:
    log(f'[{strategy_name} seed {seed}] resuming at cycle {state.next_cycle}')
  names = pool_names(train_split, annotator)
  for cycle in range(state.next_cycle, cycles):
    t0 = time.time()
    pool = pool_lib.PoolLabels.from_json(state.pool, names)
    desc = f'[{strategy_name} seed {seed}] cycle {cycle}'
    share = shared_dir if cycle == 0 and cycle_models.shares_first_cycle(strategy) else None
    key = cycle_models.first_cycle_key(config, annotator)
    shared = share and cycle_models.load_shared(share, key, config, model, train_split)
    if shared:
      ts, steps = shared
      log(f'{desc}: the first cycle of seed {seed} is shared; its model was trained once '
          f'({share})')
    else:
      worth = length_worth(pool, annotator.cost(pool, costs, train_split), costs)
      ts, steps = _train_cycle(
          config, model, jax.random.fold_in(root, _STREAMS['init']), stream('train', cycle),
          train_split, pool, run_dir, cycle, run_state=state,
          desc=f'{strategy_name} s{seed} c{cycle} train', should_stop=should_stop, log=log,
          init_variables=init_variables, loss_fn=strategy.training_loss(config),
          get_labels=lambda idx, pool=pool: annotator.labels(pool, train_split, idx),
          where=desc, worth=worth)
      if share:
        cycle_models.save_shared(share, key, model, ts, steps, train_split, config)
    t_train = time.time() - t0
    cycle_models.save_cycle_model(run_dir, cycle, model, ts, train_split, config)
    record = _record(config, strategy_name, seed, cycle, ts, train_split, val_split, pool,
                     annotator, costs, steps, t_train, click_cache)
    record.update(next((r['summary'] for r in state.labelling if r['cycle'] == cycle), {}))
    if 'ranking_accuracy' in record:
      log(f'{desc}: validation ranking accuracy {record["ranking_accuracy"]} '
          f'(the study: {metrics.STUDY_RANKING_ACCURACY})')
    if shared:
      record['first_cycle_shared'] = True
    t1 = time.time()
    record.update(scored_units=0, scored_images=0, bought_units=0, new_labeled_pixels=0,
                  new_instances=0, new_cost=0)
    if cycle + 1 < cycles and buys(config, cycle):
      request = selection.Request(
          strategy, pool, train_split, costs,
          {name: stream(name, cycle) for name in ('candidates', 'score', 'select')},
          ts.apply_fn, {'params': ts.params, 'batch_stats': ts.batch_stats}, config, annotator,
          segments, segment_counts)
      chosen = selection.choose(config.al_unit, request)
      if annotator.waits:  # people label between runs
        _request(run_dir, cycle + 1, state, pool, names, record, request, chosen, t0, t1)
      touched = chosen.chosen if chosen.picks is None else np.array(sorted(chosen.picks),
                                                                    np.int64)
      before = annotator.labeled_counts(pool, train_split, touched)
      cost_before = annotator.cost(pool, costs, train_split)
      selection.annotate(config.al_unit, request, chosen)
      after = annotator.labeled_counts(pool, train_split, touched)
      record.update(chosen.counts, bought_units=len(chosen.names),
                    new_labeled_pixels=after[0] - before[0], new_instances=after[1] - before[1],
                    new_cost=annotator.cost(pool, costs, train_split) - cost_before)
      if parallel.is_writer():
        export.write_selection_csv(
            os.path.join(run_dir, f'selection_cycle{cycle + 1:02d}.csv'), chosen.names,
            chosen.scores)
        figures.cycle_figures(os.path.join(run_dir, 'figures'), cycle + 1, request, chosen)
    record.update(select_seconds=round(time.time() - t1, 2),
                  wall_seconds=round(time.time() - t0, 2))
    state.records.append(record)
    state.pool, state.images = pool.to_json(names), names
    _save_state(run_dir, state)
    log(f'{desc}: {record["labeled_images"]} images, cost {record["cost_instances"]}, '
        f'mIoU {record["miou"]:.4f} ({record["wall_seconds"]:.0f} s); selection scored '
        f'{record["scored_units"]} units in {record["scored_images"]} images and bought '
        f'{record["bought_units"]} (cost {record["new_cost"]})')
  return state.records


def _request(run_dir, cycle, state, pool, names, record, request, chosen, t0, t1) -> None:
  """Ends the run at a labelling request for people: writes it, saves the state
  with it pending, and raises `label_requests.AwaitingLabels`."""
  config = request.config
  pending = label_requests.write(
      run_dir, cycle, config.dataset.partition(':')[2], request.split.classes, request, chosen)
  record.update(chosen.counts, bought_units=len(chosen.names),
                select_seconds=round(time.time() - t1, 2),
                wall_seconds=round(time.time() - t0, 2))
  state.records.append(record)
  state.pool, state.images, state.pending = pool.to_json(names), names, pending
  _save_state(run_dir, state)
  raise label_requests.AwaitingLabels(label_requests.instructions(
      pending, label_requests.request_dir(run_dir, cycle)))


def pool_names(split, annotator) -> list[str] | None:
  """The pool's image names when the annotator is people (their folder may grow
  or shrink between runs, so the run state keeps images by name); None: the
  pool is fixed and kept by position."""
  return [str(i) for i in split.ids] if annotator.waits else None


def labeled_images(split) -> np.ndarray:
  """[n] indices of the images of `split` with a label file."""
  return np.flatnonzero(split.labeled).astype(np.int64)


def initial_state(config, strategy, split, root: jax.Array,
                   annotator) -> run_state_lib.RunState:
  """A new run: the seed's random initial set (the whole pool for `full`); with
  people labelling, the images labeled so far."""
  names = pool_names(split, annotator)
  if names is not None:
    return run_state_lib.RunState(config.fingerprint(), pool_lib.PoolLabels(
        full=labeled_images(split).tolist()).to_json(names), [], images=names)
  n_pool = len(split)
  initial = np.asarray(jax.random.permutation(jax.random.fold_in(root, _STREAMS['initial_set']),
                                              n_pool))
  n_initial = n_pool if strategy.full else config.al_initial
  return run_state_lib.RunState(config.fingerprint(),
                  pool_lib.PoolLabels(full=sorted(initial[:n_initial].tolist())).to_json(), [])


def unit_name(config: ExperimentConfig) -> str:
  """The records' `unit`: `al_unit`, then the protocol when it is not the study's,
  `per_click` for cost-aware ordering, `balanced`, `cap<K>` and the diversity
  method for the acquisition steps, and `noisy` for a noisy annotator (runs
  that differ in these are separate lines of one report)."""
  parts = [config.al_unit]
  if config.al_protocol != annotators.DEFAULT:
    parts.append(config.al_protocol)
  if config.al_rank == 'score_per_click':
    parts.append('per_click')
  if config.al_class_balance:
    parts.append('balanced')
  if config.al_per_image_cap:
    parts.append(f'cap{config.al_per_image_cap}')
  if config.al_diversity != 'none':
    parts.append(config.al_diversity)
  if config.noise_flip > 0 or config.noise_erode > 0:
    parts.append('noisy')
  return '/'.join(parts)


def _record(config, strategy_name, seed, cycle, ts, train_split, val_split, pool, annotator,
            costs, steps, t_train, click_cache) -> dict[str, Any]:
  """The cycle's record: what is labeled, its cost (`cost_instances`: the study's
  instance count, or the budget's unit where that is not clicks; `cost_clicks`;
  `cost_images`: the budget's unit over a mean image's), the validation metrics
  and, for another protocol or a noisy annotator, `label_error` (the fraction
  of labeled pixels labeled wrongly, `annotators.label_error`)."""
  variables = {'params': ts.params, 'batch_stats': ts.batch_stats}
  val_get = lambda idx: {'image': val_split.images[idx], 'label': val_split.labels[idx]}
  val = train.evaluate(ts, val_get, len(val_split), batch_size=config.eval_batch_size,
                       mean=val_split.mean, std=val_split.std,
                       num_classes=val_split.num_classes, progress=config.progress)
  cost = annotator.cost(pool, costs, train_split)
  if annotator.cost_rule == 'clicks':  # the study's count: instances labeled
    cost = annotator.labeled_counts(pool, train_split, pool.images())[1]
  record = {
      'strategy': strategy_name, 'seed': seed, 'cycle': cycle, 'unit': unit_name(config),
      'labeled_images': int(len(pool.images())),
      'full_images': len(pool.full),
      'superpixels': pool.num_superpixels(),
      'cost_instances': cost,
      'cost_clicks': annotator.clicks(pool, train_split, click_cache),
      'cost_images': round(annotator.cost(pool, costs, train_split)
                           / max(float(np.mean(costs)), 1e-9), 2),
      'miou': float(val['miou']),
      'per_class_iou': export.nan_to_none(val['per_class_iou']),
      'per_class': dict(zip(val_split.classes.names,
                            export.nan_to_none(val['per_class_iou']))),
      'pixel_acc': float(val['pixel_acc']),
      'train_steps': int(steps), 'train_seconds': round(t_train, 2),
  }
  if annotator.noise.active or config.al_protocol != annotators.DEFAULT:
    record['label_error'] = round(annotators.label_error(annotator, pool, train_split,
                                                         pool.images()), 6)
  if selection.get(strategy_name).loss_head:
    record['ranking_accuracy'] = export.nan_to_none([selection.validation_ranking_accuracy(
        ts.apply_fn, variables, val_split, batch_size=config.eval_batch_size,
        progress=config.progress)])[0]
  return record
