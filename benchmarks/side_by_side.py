"""segal-jax beside the study's PyTorch pipeline (`torch_peer`), same machine.

  python -m benchmarks.side_by_side --size=small --rounds=5 --out=/tmp/peer.json

`python -m launch.benchmark` runs it as its `peer` group (`hot_paths.run`).

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
after stages 3-6 / before the classifier), `train` (one SGD step). Sizes are
`launch.benchmark`'s (`_sizes.SIZES`), DRN-D-22 at full width (`tiny`: at
its own width, for tests).
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

from benchmarks import _harness as harness
from benchmarks import _sizes as sizes

TASKS = ('forward', 'mc_stages', 'mc_head', 'train')
# The workers run `-m benchmarks.side_by_side` from the directory holding `benchmarks/`.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class PeerSize:
  """MC scoring on `batch` images `height` x `width` with `passes` passes; the
  train step on `train_batch` crops `train_crop`; DRN-D-22 at `model_width`."""
  height: int
  width: int
  batch: int
  passes: int
  train_crop: tuple[int, int]
  train_batch: int
  model_width: float = 1.0


def peer_size(size: str) -> PeerSize:
  """The peer's problem of benchmark size `size` (a key of `_sizes.SIZES`)."""
  spec = sizes.SIZES[size]
  return PeerSize(spec.height, spec.width, spec.batch, spec.passes,
                  tuple(spec.train_crop), spec.train_batch,
                  spec.model_width if size == 'tiny' else 1.0)


def _torch_task(task: str, s: PeerSize) -> Callable[[], Any]:
  import torch  # pylint: disable=import-outside-toplevel
  from benchmarks import torch_peer  # pylint: disable=import-outside-toplevel
  if task == 'train':
    model = torch_peer.make_model('stages', width_multiplier=s.model_width)
    step = torch_peer.make_train_step(model)
    images, labels = torch_peer.inputs(s.train_batch, *s.train_crop)
    return lambda: step(images, labels)
  images, _ = torch_peer.inputs(s.batch, s.height, s.width)
  if task == 'forward':
    model = torch_peer.make_model('none', width_multiplier=s.model_width).eval()

    def forward():
      with torch.no_grad():
        return model(images).numpy()
    return forward
  model = torch_peer.make_model(task.split('_')[1], width_multiplier=s.model_width)
  return lambda: torch_peer.mc_scores(model, images, s.passes)


def _jax_task(task: str, s: PeerSize) -> Callable[[], Any]:
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from segal_jax import models  # pylint: disable=import-outside-toplevel
  from segal_jax.scoring import uncertainty
  from segal_jax.training import optim
  from segal_jax.training import train

  def model(placement):
    return models.DRNSeg(arch='drn_d_22', num_classes=19, dropout_placement=placement,
                         width_multiplier=s.model_width)

  rng = np.random.default_rng(0)
  if task == 'train':
    h, w = s.train_crop
    tx = optim.make_optimizer(lr=0.01, total_steps=1000)
    holder = {'state': train.create_train_state(
        model('stages'), jax.random.key(0), image_shape=(h, w, 3), tx=tx)}
    labels = rng.integers(0, 19, (s.train_batch, h, w)).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.1] = 255
    batch = {'image': rng.integers(0, 256, (s.train_batch, h, w, 3), dtype=np.uint8),
             'label': labels}
    inputs = train.InputSpec((0.5,) * 3, (0.25,) * 3, (h, w), scale_range=(0.5, 2.0), flip=True)

    def step():  # the step's key is fold_in(key(1), state.step)
      holder['state'], metrics = train.train_step(holder['state'], batch,
                                                  jax.random.key(1), inputs=inputs)
      return float(metrics['loss'])
    step.hlo_text = lambda: train.train_step.lower(
        holder['state'], batch, jax.random.key(1), inputs=inputs).compile().as_text()
    return step
  images = jnp.asarray(rng.standard_normal((s.batch, s.height, s.width, 3),
                                           dtype=np.float32))
  placement = 'none' if task == 'forward' else task.split('_')[1]
  m = model(placement)
  variables = jax.jit(lambda x: m.init(jax.random.key(0), x, train=False))(images[:1])
  if task == 'forward':
    fn, args = jax.jit(lambda v, x: m.apply(v, x, train=False)[0]), (variables, images)
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


def _worker(side: str, spec: PeerSize, threads: int | None) -> None:
  """Reads `task repeats` lines; answers each with one JSON line of wall and CPU times."""
  if side == 'torch' and threads:
    import torch  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(threads)
  make = _torch_task if side == 'torch' else _jax_task
  built: dict[str, Callable[[], Any]] = {}
  for line in sys.stdin:
    task, repeats = line.split()
    if task not in built:
      built[task] = make(task, spec)
      # Warm-up: compilation, and again for the train step, whose state comes
      # back from the first step with the step's own shardings.
      built[task]()
      built[task]()
    times = harness.time_runs(built[task], int(repeats), warmup=0)
    print(json.dumps({'wall': times['runs_s'], 'cpu': times['cpu_s']}), flush=True)


def _env(threads: int | None) -> dict[str, str]:
  """The workers' environment; `threads` caps both frameworks' intra-op threads."""
  env = dict(os.environ)
  if threads:
    env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' --xla_cpu_multi_thread_eigen='
                        f'{str(threads > 1).lower()} intra_op_parallelism_threads={threads}')
    env['OMP_NUM_THREADS'] = str(threads)
  return env


def _ask(proc: subprocess.Popen, side: str, task: str, repeats: int) -> dict[str, list]:
  proc.stdin.write(f'{task} {repeats}\n')
  proc.stdin.flush()
  line = proc.stdout.readline()
  if not line:
    raise RuntimeError(f'the {side} worker exited during {task!r} (its error is above)')
  return json.loads(line)


def run(size: str | PeerSize, tasks=TASKS, rounds: int = 5, repeats: int = 2,
        threads: int | None = None) -> dict[str, Any]:
  """Alternating bursts of `repeats` runs, `rounds` times, per task and side.

  `size`: a benchmark size name (`peer_size`) or a `PeerSize`.
  `threads`: intra-op threads of both frameworks (None: their defaults, one
  per core). On a machine shared with other work, 1 thread keeps either side
  from waiting on a descheduled sibling thread (PyTorch's OpenMP barriers suffer
  most: 3x slower at 2 threads under a load of 8 on 2 cores).
  """
  s = peer_size(size) if isinstance(size, str) else size
  cmd = [sys.executable, '-m', 'benchmarks.side_by_side',
         f'--spec={json.dumps(dataclasses.asdict(s))}']
  if threads:
    cmd.append(f'--threads={threads}')
  procs = {side: subprocess.Popen(cmd + [f'--worker={side}'], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, env=_env(threads),
                                  cwd=_ROOT)
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
          times = _ask(procs[side], side, t, repeats)
          runs[t][side] += times['wall']
          cpu[t][side] += times['cpu']
          medians[side] = statistics.median(times['wall'])
        round_ratios[t].append(medians['torch'] / medians['jax'])
  finally:
    for p in procs.values():
      p.stdin.close()
      p.wait()
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
  return {'size': size if isinstance(size, str) else None,
          'spec': dataclasses.asdict(s), 'rounds': rounds,
          'repeats': repeats, 'threads': threads, 'load_average_1min': {
              'min': min(loads), 'median': statistics.median(loads), 'max': max(loads)},
          'machine': {'cores': os.cpu_count(), 'uname': ' '.join(os.uname())},
          'results': results}


def _times(wall: list[float], cpu: list[float]) -> dict[str, Any]:
  return {'median_s': statistics.median(wall), 'min_s': min(wall), 'max_s': max(wall),
          'runs_s': wall, 'cpu_median_s': statistics.median(cpu), 'cpu_s': cpu}


def entries(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
  """`run`'s report as benchmark entries `peer_<task>` (see `_harness.make_entry`):
  segal-jax as the product, PyTorch as the `peer`, `peer_ratio` = PyTorch time /
  segal-jax time (> 1: segal-jax is faster), with its per-round range and the
  ratio of CPU times."""
  s = report['spec']
  out = {}
  for t, r in report['results'].items():
    jax_t, torch_t = (_times(r['runs_s'][k], r['cpu_s'][k]) for k in ('jax', 'torch'))
    if t == 'train':
      jax_t, torch_t = (harness.rate(x, s['train_batch']) for x in (jax_t, torch_t))
    out[f'peer_{t}'] = harness.make_entry(
        jax_t, None, None, 'images/s' if t == 'train' else 's', peer=torch_t,
        peer_ratio=r['ratio'], peer_ratio_rounds=[r['round_ratio_min'],
                                                  r['round_ratio_max']],
        peer_cpu_ratio=r['cpu_ratio'], spec=s, threads=report['threads'],
        load_average_1min=report['load_average_1min'])
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--size', default='small', choices=('tiny', 'small', 'cityscapes'))
  parser.add_argument('--tasks', default=','.join(TASKS))
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--repeats', type=int, default=2)
  parser.add_argument('--threads', type=int, default=None,
                      help='intra-op threads of both sides (default: all cores)')
  parser.add_argument('--out')
  parser.add_argument('--worker', choices=('torch', 'jax'), help=argparse.SUPPRESS)
  parser.add_argument('--spec', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    spec = json.loads(args.spec)
    _worker(args.worker, PeerSize(**{**spec, 'train_crop': tuple(spec['train_crop'])}),
            args.threads)
    return
  report = run(args.size, tuple(args.tasks.split(',')), args.rounds, args.repeats,
               args.threads)
  print(harness.format_table({'results': entries(report)}))
  print(f"load average (1 min) during the run: {report['load_average_1min']}")
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(report, f, indent=1)


if __name__ == '__main__':
  main()
