"""Timing, machine description and table formatting of every benchmark.

Imports no framework at module level: the PyTorch worker of `side_by_side`
times its tasks with the same `time_runs`.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from typing import Any, Callable


# Dense peak TFLOP/s by `device_kind`, from the vendors' data sheets: bf16, and
# the rate at which XLA runs float32 convolutions at default precision (TF32
# tensor cores on NVIDIA; bf16 passes on TPU).
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    'NVIDIA H100 80GB HBM3': {'bfloat16': 989.0, 'float32': 494.7},
    'NVIDIA H100 PCIe': {'bfloat16': 756.0, 'float32': 378.0},
    'NVIDIA H200': {'bfloat16': 989.0, 'float32': 494.7},
    'NVIDIA A100-SXM4-80GB': {'bfloat16': 312.0, 'float32': 156.0},
    'NVIDIA A100-SXM4-40GB': {'bfloat16': 312.0, 'float32': 156.0},
    'NVIDIA A100-PCIE-40GB': {'bfloat16': 312.0, 'float32': 156.0},
    'NVIDIA L4': {'bfloat16': 121.0, 'float32': 60.0},
    'TPU v4': {'bfloat16': 275.0, 'float32': 275.0},
    'TPU v5 lite': {'bfloat16': 197.0, 'float32': 197.0},
    'TPU v5': {'bfloat16': 459.0, 'float32': 459.0},
    'TPU v6 lite': {'bfloat16': 918.0, 'float32': 918.0},
}


def time_runs(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> dict[str, Any]:
  """Median, min and max wall time of `fn()` (which must block until done).

  Returns:
    {'median_s', 'min_s', 'max_s', 'runs_s': [repeats], 'cpu_s': [repeats]}:
    wall seconds, and this process's CPU seconds of each run.
  """
  for _ in range(warmup):
    fn()
  runs, cpu = [], []
  for _ in range(max(1, repeats)):
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    runs.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
  return {'median_s': statistics.median(runs), 'min_s': min(runs),
          'max_s': max(runs), 'runs_s': runs, 'cpu_s': cpu}


def time_pair(product: Callable[[], Any], reference_: Callable[[], Any],
              repeats: int, warmup: int = 1) -> tuple[dict[str, Any], dict[str, Any]]:
  """`time_runs` of two functions, interleaved run by run.

  On a shared machine the load drifts; alternating the two keeps the drift
  out of their ratio.
  """
  for _ in range(warmup):
    product()
    reference_()
  runs: tuple[list[float], list[float]] = ([], [])
  for _ in range(max(1, repeats)):
    for fn, out in zip((product, reference_), runs):
      start = time.perf_counter()
      fn()
      out.append(time.perf_counter() - start)
  return tuple({'median_s': statistics.median(r), 'min_s': min(r), 'max_s': max(r),
                'runs_s': r} for r in runs)


def rate(times: dict[str, Any], count: int) -> dict[str, Any]:
  """Times of `count` items -> items/s (min rate from the slowest run)."""
  return {'median': count / times['median_s'], 'min': count / times['max_s'],
          'max': count / times['min_s'], 'runs_s': times['runs_s']}


def make_entry(product, reference_, ratio, unit, **extra) -> dict[str, Any]:
  """One result: product and reference measurements, their ratio, the unit."""
  return {'product': product, 'reference': reference_,
          'ratio': None if ratio is None else float(ratio), 'unit': unit, **extra}


def machine_info() -> dict[str, Any]:
  """CPU model, cores, load, JAX version and backend, date."""
  import jax  # pylint: disable=import-outside-toplevel
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          cpu = line.split(':', 1)[1].strip()
          break
  except OSError:
    pass
  try:
    load = list(os.getloadavg())
  except OSError:
    load = None
  return {
      'cpu': cpu, 'cores': os.cpu_count(), 'load_average': load,
      'python': platform.python_version(), 'platform': platform.platform(),
      'jax': jax.__version__, 'backend': jax.default_backend(),
      'devices': [d.device_kind for d in jax.devices()],
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
  }


# --- Table ---------------------------------------------------------------------


def _fmt_time(t: float) -> str:
  return f'{t * 1e3:.3g} ms' if t < 1 else f'{t:.3g} s'


def _fmt(value: Any, unit: str) -> str:
  if value is None:
    return '-'
  if unit == 's':
    return (f"{_fmt_time(value['median_s'])} ({_fmt_time(value['min_s'])}"
            f"-{_fmt_time(value['max_s'])})")
  if unit == 'images/s':
    return f"{value['median']:.3g} img/s ({value['min']:.3g}-{value['max']:.3g})"
  if unit == 'bytes':
    return f'{value / 2**20:.3g} MiB'
  return f'{value:.3g} {unit}'


def cells(result: dict[str, Any]) -> tuple[str, str, str]:
  """(this product, reference, ratio) cells of one entry."""
  if result.get('skipped'):
    return 'skipped', '-', result['skipped']
  ratio = '-' if result['ratio'] is None else f"{result['ratio']:.3g}x"
  unit = result['unit']
  return _fmt(result['product'], unit), _fmt(result['reference'], unit), ratio


def peer_cells(result: dict[str, Any]) -> tuple[str, str]:
  """(PyTorch peer, ratio to the peer) cells of one entry ('-' without a peer).

  The ratio cell is the ratio of medians (> 1: this product is faster), the
  range of the per-round ratios and the ratio of CPU times.
  """
  if result.get('peer') is None:
    return '-', '-'
  lo, hi = result['peer_ratio_rounds']
  return (_fmt(result['peer'], result['unit']),
          f"{result['peer_ratio']:.2f}x ({lo:.2f}-{hi:.2f}), "
          f"CPU {result['peer_cpu_ratio']:.2f}x")


def format_table(report: dict[str, Any]) -> str:
  """A markdown table: name | this product | reference | ratio, and the columns
  PyTorch peer | vs PyTorch when some entry has a peer."""
  results = report['results']
  with_peer = any(r.get('peer') is not None for r in results.values())
  head = ('name', 'this product', 'reference', 'ratio')
  head += ('PyTorch peer', 'vs PyTorch (rounds), CPU') if with_peer else ()
  rows = [head, ('---',) * len(head)]
  rows += [(name, *cells(r), *(peer_cells(r) if with_peer else ()))
           for name, r in results.items()]
  return '\n'.join('| ' + ' | '.join(r) + ' |' for r in rows)
