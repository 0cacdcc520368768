"""The active-learning cycle: train, evaluate, score, select, record, repeat.

`cycle` runs a run's cycles (`run` with its inputs in one `Run`), `cycle_training`
trains within a cycle (length, starting point, checkpoints, early stopping),
`cycle_models` keeps the models a run shares or leaves for `launch.score`, and
`streams` derives each stream's key from the seed.
"""

from segal_jax.loop import cycle
from segal_jax.loop.cycle import build_model
from segal_jax.loop.cycle import buys
from segal_jax.loop.cycle import initial_state
from segal_jax.loop.cycle import initial_variables
from segal_jax.loop.cycle import labeled_images
from segal_jax.loop.cycle import load_state
from segal_jax.loop.cycle import METRICS_FILE
from segal_jax.loop.cycle import pool_names
from segal_jax.loop.cycle import Run
from segal_jax.loop.cycle import run
from segal_jax.loop.cycle import unit_name
from segal_jax.loop import cycle_models
from segal_jax.loop import cycle_training
from segal_jax.loop.cycle_training import labeled_share
from segal_jax.loop.cycle_training import length_worth
from segal_jax.loop.cycle_training import Preempted
from segal_jax.loop.cycle_training import train_schedule
from segal_jax.loop import streams
from segal_jax.loop.streams import stream_key

__all__ = ['build_model', 'buys', 'cycle', 'cycle_models', 'cycle_training', 'initial_state',
           'initial_variables', 'labeled_images', 'labeled_share', 'length_worth',
           'load_state', 'METRICS_FILE', 'pool_names', 'Preempted', 'Run', 'run', 'stream_key',
           'streams', 'train_schedule', 'unit_name']
