"""Per-op profiles of segal-jax and the PyTorch peer on the same work.

  python -m benchmarks.profile_ops --task=train --top=15

JAX: a `jax.profiler` trace of two runs, the XLA ops' durations summed by op
and labelled with the JAX operation they come from (the compiled HLO's
`op_name` metadata) and their FLOPs where the op is a convolution or a
matrix product. PyTorch: `torch.profiler`'s self CPU time by operator.
Tasks are `side_by_side`'s (`forward`, `mc_stages`, `mc_head`, `train`) at
its sizes (`--size`, default `small`). `mc_parts` times each part of the
product's and the reference algorithm's MC scoring (`hot_paths`' `parts`).
"""

from __future__ import annotations

import argparse
import collections
import glob
import re
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special

from benchmarks import _harness as harness
from benchmarks import _reference as reference
from benchmarks import side_by_side
from segal_jax import models
from segal_jax.scoring import uncertainty

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


def mc_parts(model, variables, images, key, passes: int, repeats: int
              ) -> dict[str, float]:
  """Median seconds of the pieces of both scoring paths (where the time goes).

  Product: trunk once; D tail passes per image at logit resolution; D x8
  upsamplings; the full-resolution softmax and pass statistics. Reference: D
  full forward passes on the device; the host part (copy, softmax, var).
  """
  batch = images.shape[0]
  keys = jax.random.split(key, batch * passes)
  trunk = jax.jit(lambda v, x: model.apply(v, x, train=False, method='trunk'))
  h = trunk(variables, images)

  @jax.jit
  def tails(v, h):  # [B * D, h, w, C] low-resolution logits
    h = jnp.repeat(h, passes, axis=0)
    return jax.vmap(lambda hi, k: model.apply(
        v, hi[None], train=False, mc=True, upsample=False, method='tail',
        rngs={'dropout': k})[0])(h, keys)

  logits = tails(variables, h)
  upsample = jax.jit(models.upsample_bilinear_x8)
  full = upsample(logits)
  reduce = jax.jit(lambda l: jax.vmap(uncertainty.pass_stats)(
      l.reshape(batch, passes, *l.shape[1:])))
  forward = reference.make_forward(model)
  pass_keys = [jax.random.fold_in(key, d) for d in range(passes)]

  def forwards():
    return jax.block_until_ready([forward(variables, images, k) for k in pass_keys])

  device_logits = forwards()

  def host():
    probs = [scipy.special.softmax(np.asarray(l), axis=-1)
             for l in device_logits]
    return reference.mc_variance_from_probs(np.stack(probs))

  def timed(fn, *args):
    return harness.time_runs(lambda: jax.block_until_ready(fn(*args)), repeats)['median_s']

  return {'product_trunk_s': timed(trunk, variables, images),
          'product_tails_logit_res_s': timed(tails, variables, h),
          'product_upsample_s': timed(upsample, logits),
          'product_full_res_stats_s': timed(reduce, full),
          'reference_device_forwards_s': timed(forwards),
          'reference_host_numpy_s': timed(host)}


def jax_profile(task: str, size: str = 'small', runs: int = 2) -> list[tuple]:
  """[(ms per run, XLA op, JAX op_name)] over all XLA ops, largest first."""
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
