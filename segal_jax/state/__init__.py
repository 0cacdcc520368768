"""What a run keeps between cycles and processes: the labeled pool (by image name),
the run state, the checkpoints (the one place that talks to Orbax), the work
directory's lock.
"""

from segal_jax.state import checkpoint
from segal_jax.state.checkpoint import load_model
from segal_jax.state.checkpoint import RunCheckpointer
from segal_jax.state.checkpoint import save_model
from segal_jax.state import lock
from segal_jax.state.lock import hold
from segal_jax.state import pool
from segal_jax.state.pool import PoolLabels
from segal_jax.state import run_state
from segal_jax.state.run_state import load_run_state
from segal_jax.state.run_state import RunState
from segal_jax.state.run_state import save_run_state

__all__ = ['checkpoint', 'hold', 'load_model', 'load_run_state', 'lock', 'pool', 'PoolLabels',
           'run_state', 'RunCheckpointer', 'RunState', 'save_model', 'save_run_state']
