"""Per-op profiles of segal-jax and the PyTorch peer on the same work.

  python -m benchmarks.profile_ops --task=train --top=15

JAX: a `jax.profiler` trace of two runs, the XLA ops' durations summed by op
and labelled with the JAX operation they come from (the compiled HLO's
`op_name` metadata) and their FLOPs where the op is a convolution or a
matrix product. PyTorch: `torch.profiler`'s self CPU time by operator.
Tasks are `side_by_side`'s (`forward`, `mc_stages`, `mc_head`, `train`) at
its sizes (`--size`, default `small`).
"""

from __future__ import annotations

import argparse
import collections
import glob
import re
import tempfile

from benchmarks import side_by_side

_HLO_LINE = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name="([^"]*)"')


def _op_names(hlo_text: str) -> dict[str, str]:
  """HLO instruction name -> the JAX op_name of its metadata."""
  names = {}
  for line in hlo_text.splitlines():
    m = _HLO_LINE.match(line)
    if m:
      names[m.group(1)] = m.group(2)
  return names


# (category, predicate on the JAX op_name), first match wins.
CATEGORIES = (
    ('dropout random bits', lambda n: '_bernoulli' in n or '_uniform' in n),
    ('conv kernel gradient', lambda n: 'transpose(' in n and 'conv' in n
     and ('dot_general' in n or 'matmul' in n or '_conv_bwd' in n)),
    ('conv input gradient', lambda n: 'transpose(' in n and 'conv_general_dilated' in n),
    ('conv forward', lambda n: 'conv_general_dilated' in n),
    ('batch norm', lambda n: '/bn' in n or 'BatchNorm' in n),
    ('softmax, statistics, upsampling', lambda n: 'mc_forward' in n or 'scan' in n
     or 'while' in n or '_pass_probs' in n or 'cross_entropy' in n),
)


def categories(rows: list[tuple]) -> dict[str, float]:
  """ms per run by `CATEGORIES` (the rest under 'other') from `jax_profile` rows."""
  out = collections.Counter()
  for ms, _, name in rows:
    out[next((c for c, pred in CATEGORIES if pred(name)), 'other')] += ms
  return dict(out.most_common())


def jax_profile(task: str, size: str = 'small', runs: int = 2) -> list[tuple]:
  """[(ms per run, XLA op, JAX op_name)] over all XLA ops, largest first."""
  import jax  # pylint: disable=import-outside-toplevel
  from jax.profiler import ProfileData  # pylint: disable=import-outside-toplevel
  fn = side_by_side._jax_task(task, side_by_side.peer_size(size))  # pylint: disable=protected-access
  fn()
  fn()  # the train step compiles twice (see side_by_side._worker)
  with tempfile.TemporaryDirectory() as d:
    jax.profiler.start_trace(d)
    for _ in range(runs):
      fn()
    jax.profiler.stop_trace()
    data = ProfileData.from_file(glob.glob(f'{d}/**/*.xplane.pb', recursive=True)[0])
  total = collections.Counter()
  for plane in data.planes:
    for line in plane.lines:
      if not line.name.startswith('tf_XLA'):
        continue
      for ev in line.events:
        if not ev.name.startswith(('ThunkExecutor', 'SlinkyThreadPool')):
          total[ev.name] += ev.duration_ns / runs / 1e6
  names = _op_names(fn.hlo_text())
  return [(ms, op, names.get(op, '')) for op, ms in total.most_common()]


def torch_profile(task: str, size: str = 'small', runs: int = 2) -> list[tuple]:
  """[(ms per run, operator)] by self CPU time, largest first."""
  import torch  # pylint: disable=import-outside-toplevel
  fn = side_by_side._torch_task(task, side_by_side.peer_size(size))  # pylint: disable=protected-access
  fn()
  with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
    for _ in range(runs):
      fn()
  rows = [(e.self_cpu_time_total / runs / 1e3, e.key) for e in prof.key_averages()]
  return sorted(rows, reverse=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--task', default='train', choices=side_by_side.TASKS)
  parser.add_argument('--side', default='both', choices=('both', 'jax', 'torch'))
  parser.add_argument('--top', type=int, default=15)
  parser.add_argument('--size', default='small', choices=('tiny', 'small', 'cityscapes'))
  args = parser.parse_args()
  if args.side in ('both', 'jax'):
    rows = jax_profile(args.task, args.size)
    print(f'segal-jax, {args.task}: {sum(r[0] for r in rows):.0f} ms of XLA ops per run')
    for category, ms in categories(rows).items():
      print(f'  {ms:8.1f} ms  [{category}]')
    other = [r for r in rows
             if not any(pred(r[2]) for _, pred in CATEGORIES)][:args.top]
    print('  largest in [other]:')
    for ms, op, name in other:
      print(f'  {ms:8.1f} ms  {op:32s} {name}')
    print('  largest ops:')
    for ms, op, name in rows[:args.top]:
      print(f'  {ms:8.1f} ms  {op:32s} {name}')
  if args.side in ('both', 'torch'):
    rows = torch_profile(args.task, args.size)
    print(f'PyTorch, {args.task}: {sum(r[0] for r in rows):.0f} ms self CPU per run')
    for ms, op in rows[:args.top]:
      print(f'  {ms:8.1f} ms  {op}')


if __name__ == '__main__':
  main()
