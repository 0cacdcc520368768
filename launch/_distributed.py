"""Multi-process flags and `jax.distributed` start-up, shared by entry points.

One process per machine (or per GPU) runs the same command; together they see
every device of the job as one mesh (`segal_jax.parallel`). Call `initialize()`
first thing in `main`, before anything touches JAX devices.

Explicit (any cluster, or several processes on one machine):

  python -m launch.run ... --coordinator_address=HOST0:1234 --num_processes=2 --process_id=0

Automatic: where JAX finds the job's layout itself (Slurm, Open MPI, Cloud TPU
pods and GKE TPU), `--num_processes=N` alone is enough; under `srun`/`mpirun`
with more than one task, or when `JAX_COORDINATOR_ADDRESS` is set, nothing is
needed at all.
"""

from __future__ import annotations

import os

from absl import flags
from absl import logging
import jax

from segal_jax.errors import UserError

_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', '',
    'host:port of process 0, which every process connects to (multi-process runs).')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', None, 'Number of processes of a multi-process run.', lower_bound=1)
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, 'Index of this process, 0 .. num_processes - 1.', lower_bound=0)


def _env_int(name: str) -> int:
  try:
    return int(os.environ.get(name, '0'))
  except ValueError:
    return 0


def _cluster_detected() -> bool:
  """Whether the environment describes a job of several processes that JAX can join."""
  if os.environ.get('JAX_COORDINATOR_ADDRESS'):
    return True
  if 'SLURM_JOB_ID' in os.environ and _env_int('SLURM_NTASKS') > 1:
    return True
  if _env_int('OMPI_COMM_WORLD_SIZE') > 1:
    return True
  hosts = os.environ.get('TPU_PROCESS_ADDRESSES') or os.environ.get('TPU_WORKER_HOSTNAMES', '')
  return ',' in hosts or bool(os.environ.get('MEGASCALE_COORDINATOR_ADDRESS'))


def requested() -> bool:
  """Whether the flags or the environment ask for a multi-process run."""
  explicit = (_COORDINATOR.value or _PROCESS_ID.value is not None
              or (_NUM_PROCESSES.value or 1) > 1)
  return bool(explicit) or _cluster_detected()


def initialize() -> None:
  """Joins the multi-process job when the flags or the environment ask for one.

  Does nothing for a single process. Values not given by flags are left to
  JAX's cluster detection.

  Raises:
    UserError: inconsistent flags, or the coordinator could not be reached.
  """
  if not requested():
    return
  num, pid = _NUM_PROCESSES.value, _PROCESS_ID.value
  if num is not None and pid is not None and pid >= num:
    raise UserError(f'--process_id={pid} is not below --num_processes={num}',
                    f'number the processes 0 .. {num - 1}')
  try:
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value or None,
                               num_processes=num, process_id=pid)
  except (ValueError, RuntimeError) as e:
    raise UserError(f'could not join the multi-process run ({e})',
                    'pass --coordinator_address=HOST:PORT, --num_processes and '
                    '--process_id to every process, with HOST reachable from all') from e
  logging.info('process %d of %d; %d local and %d global devices', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
