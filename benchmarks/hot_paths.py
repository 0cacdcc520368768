"""Side-by-side measurements of this product's hot paths and the reference algorithms.

`run(size)` measures, in one process and on the same inputs, each hot path of
the product next to a faithful host-side implementation of the original
study's algorithm (`benchmarks._reference`) and returns a JSON-able report;
`format_table` renders it. Entries (DESIGN §5): `mc_<placement>[_logit_res]`
(MC-dropout scoring of a batch), `segment_means`, `partial_labels`,
`watershed` (images/s, process pool vs one process), `memory_d<D>` (compiled
scratch bytes vs the host D x H x W x C stack), `train_<reduced|full>_<dtype>`
(images/s, no reference), `selection_kcenter` and `selection_step` (the
selection step over `selection_units` superpixels, `benchmarks.selection_step`),
`gpu_mc_tflops` (skipped on CPU) and, when
PyTorch is importable, `peer_<task>`: segal-jax beside the study's PyTorch
pipeline at full width (`benchmarks.side_by_side`; the `peer` and
`peer_ratio` fields, > 1: segal-jax is faster).

Times are the median (with min and max) of `repeats` runs after one warm-up
run (which includes compilation). `ratio` is always "times better than the
reference": reference time / product time, reference bytes / product bytes,
product images/s / reference images/s.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _harness as harness
from benchmarks import _reference as reference
from benchmarks import _sizes as sizes
from benchmarks import profile_ops
from benchmarks import selection_step
from benchmarks import side_by_side
from segal_jax.annotation import oracle
from segal_jax import data
from segal_jax import errors
from segal_jax import models
from segal_jax import parallel
from segal_jax.scoring import scorer as scoring
from segal_jax.scoring import superpixels
from segal_jax.training import optim
from segal_jax.training import train


GROUPS = ('mc', 'segment_means', 'partial_labels', 'watershed', 'memory', 'train',
          'selection', 'gpu', 'peer')
PLACEMENTS = ('stages', 'head')
# Re-exported pieces (see `benchmarks._harness` and `benchmarks._sizes`).
Size = sizes.Size
SIZES = sizes.SIZES
time_runs = harness.time_runs
time_pair = harness.time_pair
machine_info = harness.machine_info
format_table = harness.format_table
PEAK_TFLOPS = harness.PEAK_TFLOPS
NUM_CLASSES = 19
N_SEGMENTS = 100
# Normalisation of the benchmark images (any fixed affine map: timing only).
_MEAN, _STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)

def peer_available() -> bool:
  """Whether PyTorch is importable, so the `peer` group can run."""
  return importlib.util.find_spec('torch') is not None


def entry_names(size: str, only: Sequence[str] | None = None,
                peer: bool = True) -> list[str]:
  """The entries `run(size, only=only, peer=peer)` reports, in order."""
  spec = _size(size)
  groups = _groups(only, peer)
  names = []
  if 'mc' in groups:
    names += [f'mc_{p}{s}' for s in ('', '_logit_res') for p in PLACEMENTS]
  names += [g for g in ('segment_means', 'partial_labels', 'watershed') if g in groups]
  if 'memory' in groups:
    names += [f'memory_d{d}' for d in spec.memory_passes]
  if 'train' in groups:
    names += [f'train_{w}_{dt}' for w in ('reduced', 'full')
              for dt in ('float32', 'bfloat16')]
  if 'selection' in groups:
    names += ['selection_kcenter', 'selection_step']
  if 'gpu' in groups:
    names.append('gpu_mc_tflops')
  if 'peer' in groups and peer_available():
    names += [f'peer_{t}' for t in side_by_side.TASKS]
  return names


def _size(size: str) -> Size:
  if size not in SIZES:
    raise errors.UserError(f'unknown benchmark size {size!r}',
                           f'choose one of {", ".join(SIZES)}')
  return SIZES[size]


def _groups(only: Sequence[str] | None, peer: bool = True) -> tuple[str, ...]:
  unknown = [g for g in only or () if g not in GROUPS]
  if unknown:
    raise errors.UserError(f'unknown benchmark group(s) {", ".join(unknown)}',
                           f'choose from {", ".join(GROUPS)}')
  return tuple(g for g in GROUPS if (not only or g in only) and (peer or g != 'peer'))


# --- Inputs -----------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _scenes_of(n: int, height: int, width: int):
  """n rendered street scenes: images [n,H,W,3] uint8, labels, instances."""
  out = [data.render_scene(np.random.default_rng([7, k]), height, width)
         for k in range(n)]
  return tuple(np.stack([o[i] for o in out]) for i in range(3))


def _normalise(images: np.ndarray) -> jax.Array:
  x = images.astype(np.float32) / 255.0
  return jnp.asarray((x - np.float32(_MEAN)) / np.float32(_STD))


@functools.lru_cache(maxsize=8)
def _model(placement: str, width: float, dtype: str = 'float32'):
  model = models.DRNSeg(arch='drn_d_22', num_classes=NUM_CLASSES,
                        width_multiplier=width, dropout_placement=placement,
                        dtype=jnp.dtype(dtype))
  return model


@functools.lru_cache(maxsize=8)
def _variables(model, height: int, width: int):
  x = jnp.zeros((1, height, width, 3), jnp.float32)
  return jax.jit(functools.partial(model.init, train=False))(
      {'params': jax.random.key(0), 'dropout': jax.random.key(1)}, x)


# --- 1. MC-dropout scoring ----------------------------------------------------


def _product_scorer(model, passes: int, chunk: int | None, logit_res: bool):
  """The product's scorer (`scoring.jitted`): (variables, uint8 images, ids, key,
  extras) -> {'scores': [B] mc_variance image scores}."""
  settings = scoring.Settings('mc_variance', passes=passes, chunk=chunk, mean=_MEAN, std=_STD,
                              logit_resolution=logit_res)
  return scoring.jitted(model.apply, settings, parallel.make_mesh(jax.local_devices()[:1]))


def _flops(jitted, *args, compiled: bool = False) -> float | None:
  """XLA's FLOP count of `jitted(*args)` (None where the backend gives none)."""
  try:
    lowered = jitted.lower(*args)
    cost = lowered.compile().cost_analysis() if compiled else lowered.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  flops = (cost or {}).get('flops')
  return None if flops is None or flops < 0 else float(flops)


def bench_mc(spec: Size, placement: str, logit_res: bool, repeats: int,
             profile: bool = False) -> dict[str, Any]:
  """MC-dropout image scores of one batch: product vs reference."""
  model = _model(placement, spec.model_width)
  variables = _variables(model, spec.height, spec.width)
  raw = _scenes_of(spec.batch, spec.height, spec.width)[0]
  images = _normalise(raw)  # the reference's input; the product normalises on the device
  raw = jnp.asarray(raw)
  key = jax.random.key(42)
  ids = jnp.arange(spec.batch, dtype=jnp.int32)
  scorer = _product_scorer(model, spec.passes, spec.mc_chunk, logit_res)
  forward = reference.make_forward(model)
  keys = [jax.random.fold_in(key, d) for d in range(spec.passes)]
  product, ref = harness.time_pair(
      lambda: np.asarray(scorer(variables, raw, ids, key, {})['scores']),
      lambda: reference.mc_variance_scores(forward, variables, images, keys),
      repeats)
  extra = {}
  if profile:
    ref_flops = _flops(forward, variables, images, key)
    extra = {'product_flops': _flops(scorer, variables, raw, ids, key, {}),
             'reference_flops': None if ref_flops is None else ref_flops * spec.passes,
             'parts': profile_ops.mc_parts(model, variables, images, key, spec.passes,
                                          repeats)}
  return harness.make_entry(product, ref, ref['median_s'] / product['median_s'], 's',
                passes=spec.passes, batch=spec.batch, chunk=spec.mc_chunk,
                image=[spec.height, spec.width], model_width=spec.model_width,
                **extra)


# --- 2. Superpixel means --------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _segments_of(n: int, height: int, width: int) -> np.ndarray:
  images = _scenes_of(n, height, width)[0]
  return superpixels.watershed_batch(images, n_segments=N_SEGMENTS, workers=1,
                                     progress=False)


def bench_segment_means(spec: Size, repeats: int) -> dict[str, Any]:
  segments = _segments_of(spec.pool, spec.height, spec.width)
  maps = np.random.default_rng(0).random(segments.shape, dtype=np.float32)
  num_segments = int(segments.max()) + 1
  # The product's maps are already on the device (mc_forward's output) and the
  # cached superpixels are put there once per pool.
  maps_dev, segments_dev = jax.device_put(maps), jax.device_put(segments)

  def product_fn():
    means, _ = superpixels.segment_means(maps_dev, segments_dev, num_segments)
    return np.asarray(means)

  product, ref = harness.time_pair(product_fn,
                           lambda: reference.segment_means(maps, segments), repeats)
  return harness.make_entry(product, ref, ref['median_s'] / product['median_s'], 's',
                images=spec.pool, image=[spec.height, spec.width],
                segments=num_segments)


# --- 3. Partial labels ------------------------------------------------------------


def _chosen(segments: np.ndarray) -> list[np.ndarray]:
  """About a third of each image's superpixels (32 of 100, as 4755 per 150 images)."""
  rng = np.random.default_rng(1)
  return [rng.choice(int(s.max()) + 1, size=max(1, (int(s.max()) + 1) // 3),
                     replace=False) for s in segments]


def bench_partial_labels(spec: Size, repeats: int) -> dict[str, Any]:
  _, labels, instances = _scenes_of(spec.pool, spec.height, spec.width)
  segments = _segments_of(spec.pool, spec.height, spec.width)
  chosen = _chosen(segments)
  product, ref = harness.time_pair(
      lambda: oracle.annotate_batch(labels, instances, segments, chosen),
      lambda: [reference.partial_label(*args) for args in
               zip(labels, instances, segments, chosen)], repeats)
  # The same formulation with the touched ids in a NumPy array (µs a pixel):
  # one run, it is slow.
  array = harness.time_runs(lambda: [reference.partial_label(*args, membership='array')
                             for args in zip(labels, instances, segments, chosen)],
                    1, warmup=0)
  return harness.make_entry(product, ref, ref['median_s'] / product['median_s'], 's',
                images=spec.pool, image=[spec.height, spec.width],
                reference_array_membership=array,
                ratio_array_membership=array['median_s'] / product['median_s'],
                note="reference: touched ids in a Python set; "
                     "*_array_membership: in a NumPy array")


# --- 4. Watershed -----------------------------------------------------------------


def bench_watershed(spec: Size, repeats: int) -> dict[str, Any]:
  workers = os.cpu_count() or 1
  images = _scenes_of(spec.watershed_images, *spec.watershed_size)[0]
  repeats = min(repeats, 3)  # every run starts a process pool: seconds each

  def with_workers(n):
    return lambda: superpixels.watershed_batch(images, n_segments=N_SEGMENTS,
                                               workers=n, progress=False)

  pool = harness.time_runs(with_workers(workers), repeats, warmup=0)
  one = harness.time_runs(with_workers(1), repeats)
  # The pool's fixed cost: spawning the workers (each imports the package).
  blank = np.zeros((workers, 8, 8, 3), np.uint8)
  startup = harness.time_runs(lambda: superpixels.watershed_batch(blank, workers=workers,
                                                          progress=False),
                      1, warmup=0)['median_s']
  n = len(images)
  product, ref = harness.rate(pool, n), harness.rate(one, n)
  steady = n / max(pool['median_s'] - startup, 1e-9)
  return harness.make_entry(product, ref, product['median'] / ref['median'], 'images/s',
                workers=workers, images=n, image=list(spec.watershed_size),
                pool_startup_s=startup, steady_images_per_s=steady,
                steady_ratio=steady / ref['median'],
                note='product includes starting the pool; steady_* leaves out '
                     'pool_startup_s (spawning workers that import the package)')


# --- 5. Memory --------------------------------------------------------------------


def _temp_bytes(jitted, *args) -> dict[str, int]:
  analysis = jitted.lower(*args).compile().memory_analysis()
  return {k: int(getattr(analysis, f'{k}_size_in_bytes'))
          for k in ('temp', 'argument', 'output')}


@functools.lru_cache(maxsize=4)
def _forward_temp(model, height: int, width: int) -> dict[str, int]:
  images = jnp.zeros((1, height, width, 3), jnp.float32)
  return _temp_bytes(reference.make_forward(model), _variables(model, height, width),
                     images, jax.random.key(0))


def bench_memory(spec: Size, passes: int) -> dict[str, Any]:
  """Compiled scratch memory of scoring one image, chunked (1 pass at a time)."""
  model = _model('stages', spec.model_width)
  variables = _variables(model, spec.height, spec.width)
  images = jnp.zeros((1, spec.height, spec.width, 3), jnp.uint8)  # the scorer normalises
  key, ids = jax.random.key(0), jnp.zeros((1,), jnp.int32)
  chunked = _temp_bytes(_product_scorer(model, passes, 1, False),
                        variables, images, ids, key, {})
  unchunked = _temp_bytes(_product_scorer(model, passes, None, False),
                          variables, images, ids, key, {})
  forward = _forward_temp(model, spec.height, spec.width)
  host = reference.host_probs_bytes(passes, 1, spec.height, spec.width, NUM_CLASSES)
  return harness.make_entry(chunked['temp'], host, host / max(chunked['temp'], 1), 'bytes',
                passes=passes, image=[spec.height, spec.width],
                product_unchunked_temp=unchunked['temp'],
                reference_forward_temp=forward['temp'],
                note='product: compiled temp bytes of the scorer (chunk_size=1); '
                     'reference: host D x H x W x C float32 probabilities')


# --- 6. Train step -------------------------------------------------------------


def bench_train(spec: Size, width: float, dtype: str, repeats: int) -> dict[str, Any]:
  model = _model('stages', width, dtype)
  h, w = spec.train_crop
  tx = optim.make_optimizer(lr=0.01, total_steps=1000)
  state = train.create_train_state(model, jax.random.key(0), image_shape=(h, w, 3),
                                   tx=tx)
  images, labels, _ = _scenes_of(spec.train_batch, h, w)
  batch = {'image': images, 'label': labels}
  inputs = train.InputSpec(_MEAN, _STD, (h, w), scale_range=(0.5, 2.0), flip=True)
  holder = {'state': state, 'step': 0}

  def step():
    new, metrics = train.train_step(holder['state'], batch,
                                    jax.random.fold_in(jax.random.key(1), holder['step']),
                                    inputs=inputs)
    jax.block_until_ready(metrics['loss'])
    holder['state'], holder['step'] = new, holder['step'] + 1

  times = harness.time_runs(step, repeats)
  return harness.make_entry(harness.rate(times, spec.train_batch), None, None, 'images/s',
                model_width=width, dtype=dtype, crop=[h, w], batch=spec.train_batch,
                step_s=times)


# --- 7. GPU: achieved TFLOP/s ----------------------------------------------------


def bench_gpu_tflops(spec: Size, repeats: int) -> dict[str, Any]:
  if jax.default_backend() == 'cpu':
    return harness.make_entry(None, None, None, 'TFLOP/s',
                  skipped='CPU backend: run --size=cityscapes on a GPU')
  model = _model('stages', spec.model_width)
  variables = _variables(model, spec.height, spec.width)
  images = jnp.asarray(_scenes_of(spec.batch, spec.height, spec.width)[0])
  key, ids = jax.random.key(42), jnp.arange(spec.batch, dtype=jnp.int32)
  scorer = _product_scorer(model, spec.passes, spec.mc_chunk, False)
  flops = _flops(scorer, variables, images, ids, key, {}, compiled=True)
  times = harness.time_runs(
      lambda: np.asarray(scorer(variables, images, ids, key, {})['scores']), repeats)
  kind = jax.devices()[0].device_kind
  peak = harness.PEAK_TFLOPS.get(kind, {}).get('float32')
  achieved = None if flops is None else flops / times['median_s'] / 1e12
  fraction = None if achieved is None or peak is None else achieved / peak
  return harness.make_entry(achieved, peak, fraction, 'TFLOP/s', device_kind=kind, flops=flops,
                step_s=times, note='ratio = fraction of the float32 peak')


# --- Driver -------------------------------------------------------------------


def run(size: str = 'small', *, repeats: int | None = None,
        only: Sequence[str] | None = None, peer: bool = True,
        peer_threads: int | None = None,
        log: Callable[[str], None] | None = None) -> dict[str, Any]:
  """Runs the benchmarks of `size` and returns the report.

  Args:
    size: a key of `SIZES`.
    repeats: timed runs per measurement; None = the size's default. The peer
      group alternates the two sides `repeats` times, one run a side a round.
    only: groups to run (names from `GROUPS`); None = all. Without PyTorch
      the `peer` group is left out (one line through `log`).
    peer: False leaves the `peer` group out.
    peer_threads: intra-op threads of both sides of the peer group (None:
      their defaults, one per core).
    log: progress callback (one line per entry); None = stderr.

  Returns:
    {'machine': machine_info(), 'size': name, 'config': Size as dict,
     'results': {entry name: {'product', 'reference', 'ratio', 'unit', ...}}}.
  """
  spec = _size(size)
  groups = _groups(only, peer)
  repeats = spec.repeats if repeats is None else max(1, int(repeats))
  log = log or (lambda s: print(s, file=sys.stderr, flush=True))
  jobs: list[tuple[str, Callable[[], dict]]] = []
  if 'mc' in groups:
    for suffix, logit_res in (('', False), ('_logit_res', True)):
      for p in PLACEMENTS:
        jobs.append((f'mc_{p}{suffix}', functools.partial(
            bench_mc, spec, p, logit_res, repeats, profile=not logit_res)))
  if 'segment_means' in groups:
    jobs.append(('segment_means', functools.partial(bench_segment_means, spec, repeats)))
  if 'partial_labels' in groups:
    jobs.append(('partial_labels', functools.partial(bench_partial_labels, spec, repeats)))
  if 'watershed' in groups:
    jobs.append(('watershed', functools.partial(bench_watershed, spec, repeats)))
  if 'memory' in groups:
    jobs += [(f'memory_d{d}', functools.partial(bench_memory, spec, d))
             for d in spec.memory_passes]
  if 'train' in groups:
    for name, width in zip(('reduced', 'full'), spec.train_widths):
      for dtype in ('float32', 'bfloat16'):
        jobs.append((f'train_{name}_{dtype}', functools.partial(
            bench_train, spec, width, dtype, repeats)))
  if 'selection' in groups:
    picks = (spec.selection_units, spec.selection_picks, repeats)
    jobs += [('selection_kcenter', functools.partial(selection_step.bench_kcenter, *picks)),
             ('selection_step', functools.partial(selection_step.bench_step, *picks))]
  if 'gpu' in groups:
    jobs.append(('gpu_mc_tflops', functools.partial(bench_gpu_tflops, spec, repeats)))
  if 'peer' in groups and not peer_available():
    log('PyTorch is not importable: no peer column (pip install torch to add it)')
  elif 'peer' in groups:
    jobs.append(('peer', lambda: side_by_side.entries(side_by_side.run(
        size, rounds=repeats, repeats=1, threads=peer_threads))))

  results = {}
  for i, (name, job) in enumerate(jobs):
    log(f'[{i + 1}/{len(jobs)}] {name} ...')
    start = time.perf_counter()
    done = job()
    done = done if name == 'peer' else {name: done}  # the peer group: one entry a task
    results.update(done)
    for entry, result in done.items():
      ratio = harness.cells(result)[2] if name != 'peer' else harness.peer_cells(result)[1]
      log(f'[{i + 1}/{len(jobs)}] {entry}: {ratio} ({time.perf_counter() - start:.1f} s)')
  return {'machine': harness.machine_info(), 'size': size,
          'config': {**dataclasses.asdict(spec), 'repeats': repeats},
          'results': results}


