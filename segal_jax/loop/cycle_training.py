"""Training within a cycle: its length, its starting point, its checkpoints and
early stopping, resumed exactly after an interruption."""

from __future__ import annotations

import os
from typing import Callable, TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from segal_jax.config import ExperimentConfig
from segal_jax.data import labels as labels_lib
from segal_jax.errors import UserError
from segal_jax.loop import cycle_models
from segal_jax.loop import streams
from segal_jax.state import checkpoint
from segal_jax.state import pool as pool_lib
from segal_jax.state import run_state as run_state_lib
from segal_jax.training import optim
from segal_jax.training import stopping
from segal_jax.training import train

# Streams of the experiment key; fold_in(seed_key, stream) keeps them apart.
if TYPE_CHECKING:
  from segal_jax.loop.cycle import Run


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


def train_cycle(r: Run, model, state: run_state_lib.RunState, pool: pool_lib.PoolLabels,
                 cycle: int):
  """Trains one cycle, resuming from a mid-cycle checkpoint; returns (train state, steps).

  Every cycle starts from the same initial variables (`_initial_train_state`),
  or with `warm_start` from the previous cycle's model for a fraction of the
  epochs. The training labels are the annotator's; the length follows
  `train_schedule` (scaled by what the labels are worth, `length_worth`).

  Every `ckpt_every_epochs` epochs (and when `should_stop()` turns true) the
  training state is saved with the active-learning state that identifies the
  cycle; a rerun restores it and continues at the next epoch, which gives
  exactly the uninterrupted result (keys derive from the step and epoch). A
  `UserError` while training (e.g. a diverging loss) is raised again naming
  the run and cycle.
  """
  config, split = r.config, r.train_split
  desc = f'{r.strategy_name} s{r.seed} c{cycle} train'
  get_labels = lambda idx: r.annotator.labels(pool, split, idx)
  get_batch = lambda idx: {'image': split.images[idx], 'label': get_labels(idx)}
  train_key = r.key('train', cycle)
  labeled, tracker = _holdout(config, pool.images(), train_key, get_batch, split)
  worth = length_worth(pool, r.annotator.cost(pool, r.costs, split), r.costs)
  epochs, steps = train_schedule(config, len(labeled), config.warm_start and cycle > 0, worth)
  al_state = state.to_json()
  ckpt = checkpoint.RunCheckpointer(os.path.join(r.run_dir, run_state_lib.RUN_CHECKPOINTS))
  ts, start_epoch = _resume(ckpt, _initial_train_state(r, model, cycle, steps), tracker,
                            al_state)
  if start_epoch:
    r.log(f'{desc}: resuming at epoch {start_epoch} of {epochs}')
  try:
    if not (tracker and tracker.stopped()):  # a resumed cycle may have converged already
      weights = (labeled_share(get_labels, labeled, pool.full)
                 if config.train_sampling == 'labeled_pixels' else None)
      ts, _ = train.fit(
          ts, get_batch, labeled,
          schedule=train.Schedule(epochs, config.train_batch_size, start_epoch, weights),
          key=train_key, inputs=train.InputSpec(split.mean, split.std, config.train_crop,
                                                (config.train_scale_min, config.train_scale_max)),
          loss_fn=r.strategy.training_loss(config),
          runtime=train.Runtime(config.progress, desc,
                                _epoch_end(r, ckpt, tracker, al_state, cycle, epochs)))
  except stopping.Converged:
    pass
  except Preempted:
    raise
  except UserError as e:  # e.g. a diverging loss: say which run and cycle
    raise UserError(f'{r.desc(cycle)}: {e.problem}', e.fix) from e
  finally:
    ckpt.close()
  if tracker is None:
    return ts, steps
  if tracker.stopped():
    steps = (tracker.epochs[-1] + 1) * (steps // epochs)
    r.log(f'{desc}: held-out loss stopped improving; stopped after {steps} steps')
  return tracker.result(ts), steps


def _initial_train_state(r: Run, model, cycle: int, steps: int) -> train.TrainState:
  """The state a cycle starts from: the seed's initial variables (or
  `init_variables`; with `warm_start` the previous cycle's model) and the
  optimizer scheduled over `steps`."""
  config, init_variables = r.config, r.init_variables
  if config.warm_start and cycle > 0:  # kept by cycle_models.save_cycle_model
    _, init_variables, _ = checkpoint.load_model(
        cycle_models.cycle_model_dir(r.run_dir, cycle - 1), arch=config.arch,
        classes=r.train_split.classes, width_multiplier=config.width_multiplier,
        dropout_placement=config.dropout_placement, dropout_rate=config.dropout_rate)
  tx = optim.make_optimizer(optimizer=config.train_optimizer, lr=config.train_lr,
                            momentum=config.train_momentum,
                            weight_decay=config.train_weight_decay,
                            schedule=config.train_schedule, total_steps=steps,
                            step_every=max(1, int(steps * config.train_step_fraction)))
  init_key = jax.random.fold_in(jax.random.key(r.seed), streams.STREAMS['init'])
  ts = train.create_train_state(model, init_key, image_shape=r.train_split.images.shape[1:],
                                tx=tx)
  if init_variables is not None:
    # Saved models hold the segmentation network only: a loss-prediction head
    # keeps its fresh initialisation, and so does a classifier left out by
    # `initial_variables`.
    ts = ts.replace(params={**ts.params, **init_variables['params']},
                    batch_stats=init_variables.get('batch_stats', ts.batch_stats))
  return ts


def _resume(ckpt: checkpoint.RunCheckpointer, ts, tracker, al_state: dict):
  """(train state, first epoch to train): the cycle's mid-cycle checkpoint when
  it is of this cycle (fingerprint, cycle and pool match `al_state`), else `ts`, 0."""
  identity = {k: al_state[k] for k in ('fingerprint', 'cycle', 'pool')}
  pack = tracker.pack if tracker else (lambda state: state)
  restored = ckpt.restore_latest(pack(ts)) if ckpt.all_steps() else None
  if restored is not None:
    _, saved, al = restored
    if saved is not None and {k: al.get(k) for k in identity} == identity:
      return (tracker.unpack(saved, al) if tracker else saved), int(al['epoch']) + 1
  return ts, 0


def _epoch_end(r: Run, ckpt, tracker, al_state: dict, cycle: int, epochs: int):
  """`fit`'s `on_epoch_end`: saves the training state every `ckpt_every_epochs`
  epochs, on a stop request (then raises `Preempted`) and when the held-out
  loss stopped improving (then raises `stopping.Converged`)."""
  pack = tracker.pack if tracker else (lambda state: state)

  def on_epoch_end(epoch, state):
    converged = tracker is not None and tracker.on_epoch_end(epoch, state)
    stop = r.should_stop is not None and r.should_stop()
    every = r.config.ckpt_every_epochs
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

  return on_epoch_end


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
