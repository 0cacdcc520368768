"""Data parallelism over every device of every process, through JAX's SPMD runtime.

One `jax.sharding.Mesh` with a single axis, `data`, spans all devices of all
processes (ordered by process, so each process holds a contiguous block of every
batch). Variables are replicated; batches are split along their first axis. Steps
jitted with these shardings (`train`, `selection`) see the *global* batch, so
reductions over it, BatchNorm statistics included, are over every device's images
(synchronised BatchNorm) and XLA inserts the all-reduces itself: there is no
hand-written communication.

Batch sizes are global. Every process computes the same global batch of indices
(every random choice derives from the same key), reads only its own rows of it
(`local_rows`, `shard_batch`) and receives the gathered, replicated results
(`fetch`), so selection is computed identically everywhere. Writing files is the
caller's business: only process 0 (`is_writer()`) should write.

In a single process every function here also works, with one device or many
(`XLA_FLAGS=--xla_force_host_platform_device_count=8` simulates 8 on CPU).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from segal_jax import errors

DATA = 'data'


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A one-axis (`data`) mesh over `devices` (default: every device of every process).

  Devices are ordered by (process, id), so the rows of a batch that a process
  holds are contiguous.
  """
  devices = jax.devices() if devices is None else list(devices)
  devices = sorted(devices, key=lambda d: (d.process_index, d.id))
  return Mesh(np.asarray(devices, dtype=object), (DATA,))


@functools.lru_cache(maxsize=1)
def default_mesh() -> Mesh:
  """`make_mesh()` over all devices, built once (call after `jax.distributed.initialize`)."""
  return make_mesh()


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array."""
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """The first axis is split over the `data` axis."""
  return NamedSharding(mesh, P(DATA))


def is_writer() -> bool:
  """Whether this process writes outputs (only process 0 does)."""
  return jax.process_index() == 0


def check_batch_size(batch_size: int, flag: str = '--train_batch_size',
                     num_devices: int | None = None) -> None:
  """Raises `UserError` unless the global `batch_size` splits evenly over the devices.

  Args:
    batch_size: a global batch size.
    flag: the flag that set it, named in the message.
    num_devices: devices to split over (default: all, `jax.device_count()`).
  """
  n = jax.device_count() if num_devices is None else int(num_devices)
  if batch_size % n:
    lower, upper = batch_size // n * n, -(-batch_size // n) * n
    hint = f'{lower} or {upper}' if lower else f'{upper}'
    raise errors.UserError(
        f'{flag}={batch_size} is a global batch size and does not split over {n} devices',
        f'set {flag} to a multiple of {n}, e.g. {hint}')


def local_rows(global_size: int, mesh: Mesh) -> slice:
  """The rows of a [global_size, ...] batch that live on this process's devices.

  Raises:
    UserError: `global_size` does not split evenly over the mesh.
  """
  check_batch_size(global_size, 'batch size', mesh.size)
  spans = batch_sharded(mesh).addressable_devices_indices_map((global_size,)).values()
  starts = sorted({s[0].indices(global_size)[0] for s in spans})
  stops = sorted({s[0].indices(global_size)[1] for s in spans})
  rows = slice(starts[0], stops[-1])
  if rows.stop - rows.start != len(starts) * (global_size // mesh.size):
    raise ValueError('this process\'s devices are not contiguous in the mesh; '
                     'build it with make_mesh')
  return rows


def shard_batch(local: Any, mesh: Mesh, global_size: int) -> Any:
  """Assembles global batch arrays from each process's rows.

  Args:
    local: pytree of host arrays [len(local_rows(global_size, mesh)), ...]: this
      process's rows of the batch (in one process: the whole batch).
    mesh: the mesh.
    global_size: B, the global batch size.

  Returns:
    the pytree as global [B, ...] `jax.Array`s split along `data`.
  """
  sharding = batch_sharded(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(
          sharding, np.asarray(x), (global_size, *np.shape(x)[1:])), local)


def pad_rows(x: np.ndarray, size: int, fill: Any = None) -> np.ndarray:
  """`x` [n, ...] padded to [size, ...] rows: the last batch of a loop, made
  full so a step compiles once.

  Padding rows repeat the last row, or hold `fill` if given (zeros when `x`
  is empty). The caller drops them from the result (or gives them a label
  that is not counted).
  """
  x = np.asarray(x)
  pad = size - len(x)
  if pad <= 0:
    return x
  if fill is None and len(x):
    extra = np.repeat(x[-1:], pad, axis=0)
  else:
    extra = np.full((pad, *x.shape[1:]), 0 if fill is None else fill, x.dtype)
  return np.concatenate([x, extra])


def replicate(tree: Any, mesh: Mesh, *, copy: bool = False) -> Any:
  """Places every leaf of `tree` on every device of `mesh`.

  Every process must pass the same values. Leaves already replicated on `mesh`
  are returned as they are unless `copy` (needed before donating them to a
  step while the caller keeps the original); other leaves, typed PRNG keys
  included, go through host memory.

  Args:
    tree: pytree of arrays, NumPy arrays, scalars or PRNG keys.
    mesh: the mesh.
    copy: always return fresh buffers.
  """
  sharding = replicated(mesh)

  def put(x):
    if (not copy and isinstance(x, jax.Array)
        and x.sharding.is_equivalent_to(sharding, x.ndim)):
      return x
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      data = put(np.asarray(fetch(jax.random.key_data(x))))
      return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    host = np.asarray(fetch(x)) if isinstance(x, jax.Array) else np.asarray(x)
    return jax.make_array_from_process_local_data(sharding, host, host.shape)

  return jax.tree.map(put, tree)


def fetch(x: Any) -> np.ndarray:
  """The value of a replicated (or process-local) array as NumPy, on every process.

  A replicated array that spans other processes' devices cannot be read with
  `np.asarray`; its local copy can. Arrays split over processes are gathered.
  """
  if not isinstance(x, jax.Array) or x.is_fully_addressable:
    return np.asarray(x)
  if x.is_fully_replicated:
    return np.asarray(x.addressable_data(0))
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def sync(name: str) -> None:
  """Waits until every process reaches this point (no-op with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)
