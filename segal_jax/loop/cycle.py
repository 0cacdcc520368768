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

import dataclasses
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from segal_jax.annotation import annotators
from segal_jax.config import ExperimentConfig
from segal_jax import formats
from segal_jax.labelling import requests as label_requests
from segal_jax.loop import cycle_models
from segal_jax.loop import cycle_training
from segal_jax.loop import streams
from segal_jax import models
from segal_jax import parallel
from segal_jax.reporting import figures
from segal_jax.selection import strategies as selection
from segal_jax.state import checkpoint
from segal_jax.state import pool as pool_lib
from segal_jax.state import run_state as run_state_lib
from segal_jax.training import metrics
from segal_jax.training import train

METRICS_FILE = 'metrics.jsonl'



def build_model(config: ExperimentConfig, num_classes: int, strategy_name: str | None = None):
  """The configured network of the strategy (a DRNSeg, with a loss-prediction
  head for `loss_prediction`)."""
  cls = selection.get(strategy_name).network() if strategy_name else models.DRNSeg
  return cls(arch=config.arch, num_classes=num_classes,
             width_multiplier=config.width_multiplier,
             dropout_placement=config.dropout_placement,
             dropout_rate=config.dropout_rate,
             output_stride=config.output_stride,
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
    formats.write_jsonl(os.path.join(run_dir, METRICS_FILE), state.records)


def buys(config: ExperimentConfig, cycle: int) -> bool:
  """Whether labels are bought after `cycle` (all cycles, or the first
  `al_label_cycles`: the labels-versus-compute control)."""
  return not config.al_label_cycles or cycle < config.al_label_cycles


@dataclasses.dataclass(frozen=True, eq=False)
class Run:
  """What one run (a strategy with a seed) reads.

  costs: [len(train_split)] annotation cost of each full image
    (`annotator.image_costs`).
  run_dir: the run's own directory (records, checkpoints, selections).
  log: takes the run's progress lines.
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
  config: ExperimentConfig
  strategy_name: str
  seed: int
  train_split: Any
  val_split: Any
  costs: np.ndarray
  run_dir: str
  log: Callable[[str], None] = print
  should_stop: Callable[[], bool] | None = None
  init_variables: dict | None = None
  segments: np.ndarray | None = None
  segment_counts: np.ndarray | None = None
  annotator: annotators.Annotator | None = None
  shared_dir: str | None = None
  image_clicks: np.ndarray | None = None

  @property
  def strategy(self) -> selection.Strategy:
    return selection.get(self.strategy_name)

  @property
  def cycles(self) -> int:
    """The cycles of the run: one for the full-data line."""
    return 1 if self.strategy.full else self.config.al_cycles

  def key(self, name: str, cycle: int) -> jax.Array:
    """The key of stream `name` at `cycle` (`stream_key`)."""
    return streams.stream_key(self.seed, name, cycle)

  def desc(self, cycle: int) -> str:
    return f'[{self.strategy_name} seed {self.seed}] cycle {cycle}'

  def bound(self) -> Run:
    """These inputs as the run uses them: the annotator bound to the run
    (`Annotator.bind`), `log` silent but on the writing process."""
    annotator = self.annotator or annotators.from_config(self.config)
    return dataclasses.replace(
        self, annotator=annotator.bind(seed=self.seed, segments=self.segments),
        log=self.log if parallel.is_writer() else (lambda *_: None))


def run(r: Run) -> list[dict[str, Any]]:
  """Runs (or resumes) one strategy with one seed; returns the per-cycle records.

  A cycle trains (or loads the seed's shared first cycle, `_trained`), records,
  buys the next labels unless it is the last (`_buy`) and saves the run state.
  """
  r = r.bound()
  os.makedirs(r.run_dir, exist_ok=True)
  model = build_model(r.config, r.train_split.num_classes, r.strategy_name)
  state = _start(r)
  names = pool_names(r.train_split, r.annotator)
  # Pool image -> its polygon clicks.
  click_cache = ({} if r.image_clicks is None
                 else dict(enumerate(np.asarray(r.image_clicks).tolist())))
  for cycle in range(state.next_cycle, r.cycles):
    t0 = time.time()
    pool = pool_lib.PoolLabels.from_json(state.pool, names)
    ts, steps, shared = _trained(r, model, state, pool, cycle)
    t_train = time.time() - t0
    cycle_models.save_cycle_model(r.run_dir, cycle, model, ts, r.train_split, r.config)
    record = _record(r, cycle, ts, pool, steps, t_train, click_cache)
    record.update(next((x['summary'] for x in state.labelling if x['cycle'] == cycle), {}))
    if 'ranking_accuracy' in record:
      r.log(f'{r.desc(cycle)}: validation ranking accuracy {record["ranking_accuracy"]} '
            f'(the study: {metrics.STUDY_RANKING_ACCURACY})')
    if shared:
      record['first_cycle_shared'] = True
    t1 = time.time()
    record.update(scored_units=0, scored_images=0, bought_units=0, new_labeled_pixels=0,
                  new_instances=0, new_cost=0)
    if cycle + 1 < r.cycles and buys(r.config, cycle):
      _buy(r, cycle, ts, state, names, record, pool, (t0, t1))
    record.update(select_seconds=round(time.time() - t1, 2),
                  wall_seconds=round(time.time() - t0, 2))
    state.records.append(record)
    state.pool, state.images = pool.to_json(names), names
    _save_state(r.run_dir, state)
    r.log(f'{r.desc(cycle)}: {record["labeled_images"]} images, cost '
          f'{record["cost_instances"]}, mIoU {record["miou"]:.4f} '
          f'({record["wall_seconds"]:.0f} s); selection scored {record["scored_units"]} units '
          f'in {record["scored_images"]} images and bought {record["bought_units"]} '
          f'(cost {record["new_cost"]})')
  return state.records


def _start(r: Run) -> run_state_lib.RunState:
  """The run's state: new (`initial_state`) or saved; a run waiting for people's
  labels raises `label_requests.AwaitingLabels` again."""
  state = load_state(r.run_dir, r.config)
  if state is None:
    return initial_state(r.config, r.strategy, r.train_split, jax.random.key(r.seed),
                         r.annotator)
  if state.pending is not None:
    raise label_requests.AwaitingLabels(label_requests.instructions(
        state.pending, label_requests.request_dir(r.run_dir, state.pending['cycle'])))
  if state.next_cycle < r.cycles:
    r.log(f'[{r.strategy_name} seed {r.seed}] resuming at cycle {state.next_cycle}')
  return state


def _trained(r: Run, model, state, pool: pool_lib.PoolLabels, cycle: int):
  """(train state, steps, shared): the cycle's model, trained (`cycle_training.train_cycle`),
  or for a first cycle the seed's shares the model kept in `shared_dir`, which
  the first strategy to reach it trains and keeps (`shared`: True when another
  run trained it; a rerun of this one after an interruption loads its own)."""
  share = r.shared_dir if cycle == 0 and cycle_models.shares_first_cycle(r.strategy) else None
  key = cycle_models.first_cycle_key(r.config, r.annotator)
  by = cycle_models.trainer(r.config, r.strategy_name)
  loaded = share and cycle_models.load_shared(share, key, r.config, model, by)
  if loaded:
    if loaded[2]:
      r.log(f'{r.desc(cycle)}: the first cycle of seed {r.seed} is shared; its model was '
            f'trained once ({share})')
    return loaded
  ts, steps = cycle_training.train_cycle(r, model, state, pool, cycle)
  if share:
    cycle_models.save_shared(share, key, model, ts, steps, r.train_split, r.config, by)
  return ts, steps, False


def _buy(r: Run, cycle: int, ts, state, names, record: dict, pool, times) -> None:
  """Chooses the next cycle's units and has them labeled (updates `pool`; the
  record takes what selection counted and added), then writes the selection
  CSV and figures. With people labelling, the run ends at their request
  (`_request`; `times`: the cycle's and the selection's start)."""
  request = selection.Request(
      r.strategy, pool, r.train_split, r.costs,
      {name: r.key(name, cycle) for name in ('candidates', 'score', 'select')},
      ts.apply_fn, {'params': ts.params, 'batch_stats': ts.batch_stats}, r.config, r.annotator,
      r.segments, r.segment_counts)
  chosen = selection.choose(r.config.al_unit, request)
  if r.annotator.waits:  # people label between runs
    _request(r, cycle + 1, state, names, record, request, chosen, times)
  added = selection.annotate(r.config.al_unit, request, chosen)
  record.update(chosen.counts, bought_units=len(chosen.names), **added)
  if parallel.is_writer():
    formats.write_selection_csv(
        os.path.join(r.run_dir, f'selection_cycle{cycle + 1:02d}.csv'), chosen.names,
        chosen.scores)
    figures.cycle_figures(os.path.join(r.run_dir, 'figures'), cycle + 1, request, chosen)


def _request(r: Run, cycle: int, state, names, record, request, chosen, times) -> None:
  """Ends the run at a labelling request for people: writes it, saves the state
  with it pending, and raises `label_requests.AwaitingLabels` (`times`: the
  cycle's and the selection's start)."""
  t0, t1 = times
  pending = label_requests.write(
      r.run_dir, cycle, r.config.dataset.partition(':')[2], request.split.classes, request,
      chosen)
  record.update(chosen.counts, bought_units=len(chosen.names),
                select_seconds=round(time.time() - t1, 2),
                wall_seconds=round(time.time() - t0, 2))
  state.records.append(record)
  state.pool, state.images, state.pending = request.pool.to_json(names), names, pending
  _save_state(r.run_dir, state)
  raise label_requests.AwaitingLabels(label_requests.instructions(
      pending, label_requests.request_dir(r.run_dir, cycle)))


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
  initial = np.asarray(jax.random.permutation(jax.random.fold_in(root, streams.STREAMS['initial_set']),
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


def _record(r: Run, cycle: int, ts, pool: pool_lib.PoolLabels, steps: int, t_train: float,
            click_cache: dict[int, int]) -> dict[str, Any]:
  """The cycle's record: what is labeled, its cost (`cost_instances`: the study's
  instance count, or the budget's unit where that is not clicks; `cost_clicks`;
  `cost_images`: the budget's unit over a mean image's), the validation metrics
  and, for another protocol or a noisy annotator, `label_error` (the fraction
  of labeled pixels labeled wrongly, `annotators.label_error`)."""
  config, train_split, val_split = r.config, r.train_split, r.val_split
  annotator, costs = r.annotator, r.costs
  variables = {'params': ts.params, 'batch_stats': ts.batch_stats}
  val_get = lambda idx: {'image': val_split.images[idx], 'label': val_split.labels[idx]}
  val = train.evaluate(ts, val_get, len(val_split), batch_size=config.eval_batch_size,
                       mean=val_split.mean, std=val_split.std,
                       num_classes=val_split.num_classes, progress=config.progress)
  cost = annotator.cost(pool, costs, train_split)
  if annotator.cost_rule == 'clicks':  # the study's count: instances labeled
    cost = annotator.labeled_counts(pool, train_split, pool.images())[1]
  record = {
      'strategy': r.strategy_name, 'seed': r.seed, 'cycle': cycle, 'unit': unit_name(config),
      'labeled_images': int(len(pool.images())),
      'full_images': len(pool.full),
      'superpixels': pool.num_superpixels(),
      'cost_instances': cost,
      'cost_clicks': annotator.clicks(pool, train_split, click_cache),
      'cost_images': round(annotator.cost(pool, costs, train_split)
                           / max(float(np.mean(costs)), 1e-9), 2),
      'miou': float(val['miou']),
      'per_class_iou': formats.nan_to_none(val['per_class_iou']),
      'per_class': dict(zip(val_split.classes.names,
                            formats.nan_to_none(val['per_class_iou']))),
      'pixel_acc': float(val['pixel_acc']),
      'train_steps': int(steps), 'train_seconds': round(t_train, 2),
  }
  if annotator.noise.active or config.al_protocol != annotators.DEFAULT:
    record['label_error'] = round(annotators.label_error(annotator, pool, train_split,
                                                         pool.images()), 6)
  if r.strategy.loss_head:
    record['ranking_accuracy'] = formats.nan_to_none([selection.validation_ranking_accuracy(
        ts.apply_fn, variables, val_split, batch_size=config.eval_batch_size,
        progress=config.progress)])[0]
  return record