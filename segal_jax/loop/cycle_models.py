"""The models a run keeps: each cycle's newest model for `launch.score`, and
the seed's first cycle shared between strategies and flagfiles.

`save_cycle_model` writes a cycle's trained network to `<run_dir>/models/
cycle_NN` and drops the earlier cycles' (a warm-started cycle starts from the
one before it). A strategy with the plain network and loss
(`shares_first_cycle`) trains the same first cycle as every other such
strategy of its seed: the first to reach it keeps its model (`save_shared`,
tagged with `first_cycle_key` and with the run that trained it, `trainer`), the
others load it (`load_shared`) instead of training it again. A rerun of the
run that trained it (after an interruption between keeping the model and
finishing the cycle) loads it too, as its own model: its records are those
of the run never interrupted. Every process takes part in each save (Orbax,
through `checkpoint.save_model`).
"""

from __future__ import annotations

import os
import shutil

from segal_jax.errors import UserError
from segal_jax import models
from segal_jax import parallel
from segal_jax.selection import strategies as selection
from segal_jax.state import checkpoint
from segal_jax.training import optim
from segal_jax.training import train


def _write_model(target: str, model, ts, train_split, config, **extra) -> None:
  """Writes the trained segmentation network to `target` (replacing what an
  interrupted attempt left there), with every process taking part."""
  if parallel.is_writer():
    shutil.rmtree(target, ignore_errors=True)
  parallel.sync('save_model')  # every process takes part in the Orbax save
  checkpoint.save_model(
      target, models.segmentation_variables(
          {'params': ts.params, 'batch_stats': ts.batch_stats}),
      checkpoint.meta_for(model, mean=train_split.mean, std=train_split.std,
                          classes=train_split.classes,
                          image_size=list(train_split.images.shape[1:3]),
                          dataset=config.dataset, **extra))


def shares_first_cycle(strategy: selection.Strategy) -> bool:
  """Whether the strategy's first cycle is the common one of its seed: the
  plain network and loss (not the full-data line, not a loss-prediction head)."""
  return not strategy.full and not strategy.loss_head


def first_cycle_key(config, annotator) -> str:
  """What a shared first cycle must match: the configuration but for what only
  steers later purchases, and the form the annotator gives labels in
  (class maps, or `multi_class`'s masks trained with another loss)."""
  return config.first_cycle_fingerprint('masks' if annotator.mask else 'classes')


def trainer(config, strategy_name: str) -> str:
  """Names the run that trains a shared first cycle: its strategy and its
  configuration (the seed is the shared directory's)."""
  return f'{strategy_name}/{config.fingerprint()}'


def load_shared(directory: str, key: str, config, model, by: str):
  """(train state, steps, shared) of the seed's shared first cycle, or None
  when it is not there yet (or was trained under another configuration).
  `shared` is False when the run `by` (`trainer`) trained it itself; a model
  kept without its trainer counts as another run's."""
  try:
    _, variables, meta = checkpoint.load_model(directory, arch=config.arch)
  except (UserError, OSError, ValueError):
    return None
  if meta.get('fingerprint') != key:
    return None
  tx = optim.make_optimizer(optimizer=config.train_optimizer, lr=config.train_lr,
                            momentum=config.train_momentum,
                            weight_decay=config.train_weight_decay,
                            schedule='constant', total_steps=1, step_every=1)
  return (train.state_from_variables(model, variables, tx), meta['steps'],
          meta.get('trainer') != by)


def save_shared(directory: str, key: str, model, ts, steps: int, train_split, config,
                by: str) -> None:
  """Keeps a first cycle's model, trained by the run `by` (`trainer`), for the
  seed's other strategies (`load_shared`)."""
  _write_model(directory, model, ts, train_split, config, fingerprint=key,
               steps=int(steps), cycle=0, trainer=by)


def cycle_model_dir(run_dir: str, cycle: int) -> str:
  """Where `save_cycle_model` keeps a cycle's model."""
  return os.path.join(run_dir, 'models', f'cycle_{cycle:02d}')


def save_cycle_model(run_dir: str, cycle: int, model, ts, train_split, config) -> None:
  """The cycle's trained model, for `launch.score`; only the newest cycle is kept."""
  target = cycle_model_dir(run_dir, cycle)
  models_dir = os.path.dirname(target)
  _write_model(target, model, ts, train_split, config, cycle=cycle)
  for old in os.listdir(models_dir) if parallel.is_writer() else ():
    if old != os.path.basename(target):
      shutil.rmtree(os.path.join(models_dir, old), ignore_errors=True)
