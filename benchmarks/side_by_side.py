"""segal-jax beside the study's PyTorch pipeline (`torch_peer`), same machine.

  python -m benchmarks.side_by_side --size=small --rounds=5 --out=/tmp/peer.json

Each framework runs in its own long-lived worker process (so neither's thread
pool spins while the other works); the driver sends both the same tasks in
alternating order, a short burst at a time, and reports per task the median
over all runs of each side, the ratio of the medians (PyTorch time / segal-jax
time: > 1 means segal-jax is faster), the spread of the per-round ratios, and
the same ratio of process CPU times (with one thread a side, the work done,
whatever share of the cores the machine's other jobs leave).
The load average is sampled before every burst (the machine may be shared).

Tasks: `forward` (one deterministic forward of the MC batch), `mc_stages` and
`mc_head` (exact MC-dropout variance scores of one batch, D passes, dropout
after stages 3-6 / before the classifier), `train` (one SGD step).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
from typing import Any, Callable

TASKS = ('forward', 'mc_stages', 'mc_head', 'train')


@dataclasses.dataclass(frozen=True)
class PeerSize:
  """MC scoring on `batch` images `height` x `width` with `passes` passes; the
  train step on `train_batch` crops `train_crop`; DRN-D-22 at full width."""
  height: int
  width: int
  batch: int
  passes: int
  train_crop: tuple[int, int]
  train_batch: int


# The benchmark's `small` and `cityscapes` problem sizes, at full network width.
SIZES = {
    'small': PeerSize(128, 256, 4, 10, (128, 256), 2),
    'cityscapes': PeerSize(1024, 2048, 1, 10, (896, 896), 8),
}


def _torch_task(task: str, s: PeerSize) -> Callable[[], Any]:
  import torch  # pylint: disable=import-outside-toplevel
  from benchmarks import torch_peer  # pylint: disable=import-outside-toplevel
  if task == 'train':
    model = torch_peer.make_model('stages')
    step = torch_peer.make_train_step(model)
    images, labels = torch_peer.inputs(s.train_batch, *s.train_crop)
    return lambda: step(images, labels)
  images, _ = torch_peer.inputs(s.batch, s.height, s.width)
  if task == 'forward':
    model = torch_peer.make_model('none').eval()

    def forward():
      with torch.no_grad():
        return model(images).numpy()
    return forward
  model = torch_peer.make_model(task.split('_')[1])
  return lambda: torch_peer.mc_scores(model, images, s.passes)


def _jax_task(task: str, s: PeerSize) -> Callable[[], Any]:
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from segal_jax import models, train, uncertainty  # pylint: disable=import-outside-toplevel

  def model(placement):
    return models.DRNSeg(arch='drn_d_22', num_classes=19, dropout_placement=placement)

  rng = np.random.default_rng(0)
  if task == 'train':
    h, w = s.train_crop
    tx = train.make_optimizer(lr=0.01, total_steps=1000)
    holder = {'state': train.create_train_state(
        model('stages'), jax.random.key(0), image_shape=(h, w, 3), tx=tx), 'step': 0}
    labels = rng.integers(0, 19, (s.train_batch, h, w)).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.1] = 255
    batch = {'image': rng.integers(0, 256, (s.train_batch, h, w, 3), dtype=np.uint8),
             'label': labels}
    mean, std = jnp.full((3,), 0.5), jnp.full((3,), 0.25)

    kwargs = {'mean': mean, 'std': std, 'crop': (h, w), 'scale_range': (0.5, 2.0),
              'flip': True}

    def step():
      key = jax.random.fold_in(jax.random.key(1), holder['step'])
      holder['state'], metrics = train.train_step(holder['state'], batch, key, **kwargs)
      holder['step'] += 1
      return float(metrics['loss'])
    step.hlo_text = lambda: train.train_step.lower(
        holder['state'], batch, jax.random.key(1), **kwargs).compile().as_text()
    return step
  images = jnp.asarray(rng.standard_normal((s.batch, s.height, s.width, 3),
                                           dtype=np.float32))
  placement = 'none' if task == 'forward' else task.split('_')[1]
  m = model(placement)
  variables = jax.jit(lambda x: m.init(jax.random.key(0), x, train=False))(images[:1])
  if task == 'forward':
    fn, args = jax.jit(lambda v, x: m.apply(v, x, train=False)), (variables, images)
  else:
    @jax.jit
    def fn(v, x, key, ids):
      maps = uncertainty.mc_forward(m.apply, v, x, key, image_ids=ids,
                                    passes=s.passes, measures=('mc_variance',))
      return uncertainty.image_scores(maps['mc_variance'])
    args = (variables, images, jax.random.key(42), jnp.arange(s.batch, dtype=jnp.int32))

  def run():
    return np.asarray(fn(*args))
  run.hlo_text = lambda: fn.lower(*args).compile().as_text()
  return run


def _worker(side: str, size: str, threads: int | None) -> None:
  """Reads `task repeats` lines; answers each with one JSON line of wall times."""
  import time  # pylint: disable=import-outside-toplevel
  if side == 'torch' and threads:
    import torch  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(threads)
  make = _torch_task if side == 'torch' else _jax_task
  built: dict[str, Callable[[], Any]] = {}
  for line in sys.stdin:
    task, repeats = line.split()
    if task not in built:
      built[task] = make(task, SIZES[size])
      built[task]()  # warm-up (and compilation)
    runs, cpu = [], []
    for _ in range(int(repeats)):
      start, start_cpu = time.perf_counter(), time.process_time()
      built[task]()
      runs.append(time.perf_counter() - start)
      cpu.append(time.process_time() - start_cpu)
    print(json.dumps({'wall': runs, 'cpu': cpu}), flush=True)


def _env(threads: int | None) -> dict[str, str]:
  """The workers' environment; `threads` caps both frameworks' intra-op threads."""
  env = dict(os.environ)
  if threads:
    env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' --xla_cpu_multi_thread_eigen='
                        f'{str(threads > 1).lower()} intra_op_parallelism_threads={threads}')
    env['OMP_NUM_THREADS'] = str(threads)
  return env


def run(size: str, tasks=TASKS, rounds: int = 5, repeats: int = 2,
        threads: int | None = None) -> dict[str, Any]:
  """Alternating bursts of `repeats` runs, `rounds` times, per task and side.

  `threads`: intra-op threads of both frameworks (None: their defaults, one
  per core). On a machine shared with other work, 1 thread keeps either side
  from waiting on a descheduled sibling thread (PyTorch's OpenMP barriers suffer
  most: 3x slower at 2 threads under a load of 8 on 2 cores).
  """
  cmd = [sys.executable, '-m', 'benchmarks.side_by_side', f'--size={size}']
  if threads:
    cmd.append(f'--threads={threads}')
  procs = {side: subprocess.Popen(cmd + [f'--worker={side}'], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, env=_env(threads))
           for side in ('torch', 'jax')}
  runs = {t: {'torch': [], 'jax': []} for t in tasks}
  cpu = {t: {'torch': [], 'jax': []} for t in tasks}
  round_ratios = {t: [] for t in tasks}
  loads = []
  try:
    for r in range(rounds):
      for t in tasks:
        medians = {}
        for side in (('torch', 'jax') if r % 2 == 0 else ('jax', 'torch')):
          loads.append(os.getloadavg()[0])
          procs[side].stdin.write(f'{t} {repeats}\n')
          procs[side].stdin.flush()
          times = json.loads(procs[side].stdout.readline())
          runs[t][side] += times['wall']
          cpu[t][side] += times['cpu']
          medians[side] = statistics.median(times['wall'])
        round_ratios[t].append(medians['torch'] / medians['jax'])
  finally:
    for p in procs.values():
      p.stdin.close()
      p.wait()
  s = SIZES[size]
  results = {}
  for t in tasks:
    torch_s, jax_s = (statistics.median(runs[t][k]) for k in ('torch', 'jax'))
    items = s.train_batch if t == 'train' else s.batch
    torch_cpu, jax_cpu = (statistics.median(cpu[t][k]) for k in ('torch', 'jax'))
    results[t] = {'torch_median_s': torch_s, 'jax_median_s': jax_s,
                  'ratio': torch_s / jax_s, 'torch_cpu_s': torch_cpu,
                  'jax_cpu_s': jax_cpu, 'cpu_ratio': torch_cpu / jax_cpu,
                  'round_ratio_min': min(round_ratios[t]),
                  'round_ratio_max': max(round_ratios[t]),
                  'torch_images_per_s': items / torch_s,
                  'jax_images_per_s': items / jax_s, 'runs_s': runs[t],
                  'cpu_s': cpu[t]}
  return {'size': size, 'spec': dataclasses.asdict(s), 'rounds': rounds,
          'repeats': repeats, 'threads': threads, 'load_average_1min': {
              'min': min(loads), 'median': statistics.median(loads), 'max': max(loads)},
          'machine': {'cores': os.cpu_count(), 'uname': ' '.join(os.uname())},
          'results': results}


def format_table(report: dict[str, Any]) -> str:
  rows = ['| task | PyTorch | segal-jax | segal-jax / PyTorch (per-round range) '
          '| CPU-time ratio |', '|---|---|---|---|---|']
  for t, r in report['results'].items():
    if t == 'train':
      a, b = (f"{r[k]:.2f} img/s" for k in ('torch_images_per_s', 'jax_images_per_s'))
    else:
      a, b = (f"{r[k]:.3f} s" for k in ('torch_median_s', 'jax_median_s'))
    rows.append(f"| {t} | {a} | {b} | {r['ratio']:.2f}x "
                f"({r['round_ratio_min']:.2f}-{r['round_ratio_max']:.2f}) "
                f"| {r['cpu_ratio']:.2f}x |")
  return '\n'.join(rows)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--size', default='small', choices=sorted(SIZES))
  parser.add_argument('--tasks', default=','.join(TASKS))
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--repeats', type=int, default=2)
  parser.add_argument('--threads', type=int, default=None,
                      help='intra-op threads of both sides (default: all cores)')
  parser.add_argument('--out')
  parser.add_argument('--worker', choices=('torch', 'jax'), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    _worker(args.worker, args.size, args.threads)
    return
  report = run(args.size, tuple(args.tasks.split(',')), args.rounds, args.repeats,
               args.threads)
  print(format_table(report))
  print(f"load average (1 min) during the run: {report['load_average_1min']}")
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(report, f, indent=1)


if __name__ == '__main__':
  main()
