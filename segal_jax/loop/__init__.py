"""The active-learning cycle: train, evaluate, score, select, record, repeat; and
the models a run keeps.
"""

from segal_jax.loop import cycle
from segal_jax.loop.cycle import METRICS_FILE
from segal_jax.loop.cycle import Preempted
from segal_jax.loop.cycle import Run
from segal_jax.loop.cycle import run

__all__ = ['cycle', 'METRICS_FILE', 'Preempted', 'Run', 'run']
