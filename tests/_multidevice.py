"""Checks that need several devices, run in a subprocess started by the tests.

The device count is fixed when JAX starts, so the caller sets
`XLA_FLAGS=--xla_force_host_platform_device_count=N` in this process's
environment. Usage:

  python tests/_multidevice.py steps                # train step, evaluate, scores
  python tests/_multidevice.py experiment WORKDIR   # the tiny experiment of `tiny_config`
  python tests/_multidevice.py processes HOST:PORT NUM ID  # `steps`, as process ID of NUM

Each check raises AssertionError (exit status 1) on a mismatch. The tests import
this module too, for `run_with_devices` and the selection comparison.
"""

import csv
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from segal_jax import config as config_lib
from segal_jax import errors
from segal_jax import parallel
from segal_jax.scoring import scorer as scoring
from segal_jax.training import optim
from segal_jax.training import train

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
C, H, W = 4, 16, 32
MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.25, 0.25)


def tiny_config() -> config_lib.ExperimentConfig:
  return config_lib.ExperimentConfig(
      dataset_config='tiny', width_multiplier=0.25, train_epochs=1, train_min_steps=2,
      train_batch_size=8, train_crop=(32, 64), eval_batch_size=8, al_initial=8,
      al_budget=8, al_cycles=2, mc_passes=3, progress=False,
      al_strategies=('mc_variance',))


def run_with_devices(n: int, *args: str, timeout: int = 900) -> str:
  """Runs this script with `n` simulated CPU devices; returns its standard output."""
  # PYTHONPATH: run as a script, this file's own checkout must be the one imported.
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={n}',
             JAX_PLATFORMS='cpu',
             PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get('PYTHONPATH')])))
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, f'{args} on {n} devices failed:\n{proc.stdout}\n{proc.stderr}'
  return proc.stdout


def read_selections(run_dir: str) -> dict[str, list[tuple[str, float]]]:
  """{file name: [(image name, score), ...]} of every selection CSV of a run."""
  out = {}
  for name in sorted(os.listdir(run_dir)):
    if name.startswith('selection_cycle') and name.endswith('.csv'):
      with open(os.path.join(run_dir, name)) as f:
        rows = list(csv.reader(f))[1:]
      out[name] = [(r[0], float(r[1])) for r in rows]
  return out


def assert_same_selections(a: str, b: str) -> None:
  """The same images in the same order in every cycle; scores equal to float rounding."""
  sel_a, sel_b = read_selections(a), read_selections(b)
  assert sel_a and sorted(sel_a) == sorted(sel_b), (sorted(sel_a), sorted(sel_b))
  for name in sel_a:
    assert [r[0] for r in sel_a[name]] == [r[0] for r in sel_b[name]], (name, sel_a, sel_b)
    np.testing.assert_allclose([r[1] for r in sel_a[name]], [r[1] for r in sel_b[name]],
                               rtol=1e-4, err_msg=name)


class TinySeg(nn.Module):
  """Conv + BatchNorm + dropout with the segmentation model's trunk/tail protocol."""

  def setup(self):
    self.conv = nn.Conv(8, (3, 3))
    self.bn = nn.BatchNorm(momentum=0.9)
    self.drop = nn.Dropout(0.3)
    self.head = nn.Conv(C, (1, 1))

  def trunk(self, x, *, train):
    return nn.relu(self.bn(self.conv(x), use_running_average=not train))

  def tail(self, h, *, train, mc=False, upsample=True):
    del upsample  # full resolution already
    return self.head(self.drop(h, deterministic=not (train or mc)))

  def __call__(self, x, *, train, mc=False):
    return self.tail(self.trunk(x, train=train), train=train, mc=mc), {}


def _dataset(n, seed=0):
  rng = np.random.default_rng(seed)
  label = rng.integers(0, C, size=(n, H, W)).astype(np.uint8)
  palette = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [200, 200, 30]])
  image = palette[label] + rng.integers(-40, 40, size=(n, H, W, 3))
  return np.clip(image, 0, 255).astype(np.uint8), label


def _close(a, b, what, rtol=1e-4, atol=1e-6):
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(parallel.fetch(x), parallel.fetch(y), rtol=rtol, atol=atol,
                               err_msg=f'{what} {jax.tree_util.keystr(path)}')


def check_train_step(mesh, images, labels):
  """`fit` for one step on every device equals `train.train_step` on one device."""
  n = len(images)
  tx = optim.make_optimizer(lr=0.1, total_steps=10, schedule='constant')
  state0 = train.create_train_state(TinySeg(), jax.random.key(0), image_shape=(H, W, 3), tx=tx)
  key = jax.random.key(7)
  inputs = train.InputSpec(MEAN, STD, (H, W), scale_range=(0.75, 1.25), flip=True)
  got, hist = train.fit(state0, lambda ids: {'image': images[ids], 'label': labels[ids]},
                        np.arange(n), schedule=train.Schedule(epochs=1, batch_size=n),
                        key=key, inputs=inputs, runtime=train.Runtime(progress=False, mesh=mesh))
  assert got.params['conv']['kernel'].sharding.mesh.size == jax.device_count()
  assert got.params['conv']['kernel'].sharding.is_fully_replicated
  # The reference: fit's documented keys, the same batch on the default device.
  perm = np.asarray(jax.random.permutation(
      jax.random.fold_in(jax.random.fold_in(key, 0), 0), n))
  ref, ref_metrics = train.train_step(
      jax.tree.map(jnp.copy, state0), {'image': images[perm], 'label': labels[perm]},
      jax.random.fold_in(key, 1),  # the step's key: fold_in(this, step 0)
      inputs=inputs)
  np.testing.assert_allclose(hist['loss'][0], float(ref_metrics['loss']), rtol=1e-5)
  _close(got.params, ref.params, 'params')
  # BatchNorm statistics of the global batch (a per-device mean would differ).
  _close(got.batch_stats, ref.batch_stats, 'batch_stats')
  assert int(parallel.fetch(got.step)) == 1
  return got


def _own_ids(mesh, padded, batch_size):
  """The entries of `padded` ([k * batch_size] ids) on this process's rows of each batch."""
  rows = parallel.local_rows(batch_size, mesh)
  return sorted({int(i) for b in np.reshape(padded, (-1, batch_size)) for i in b[rows]})


class _Recorder:
  """An image array that records which rows are read."""

  def __init__(self, images):
    self.images, self.seen = images, set()

  def __getitem__(self, ids):
    self.seen.update(np.asarray(ids).reshape(-1).tolist())
    return self.images[ids]


def check_evaluate(mesh, state, images, labels):
  """Confusion on every device, last batch padded, equals a NumPy count.

  Each process reads only its rows of each global batch, each image once.
  """
  n = 13
  seen = []

  def source(ids):
    seen.extend(np.asarray(ids).tolist())
    return {'image': images[ids], 'label': labels[ids]}

  result = train.evaluate(state, source, n, batch_size=8, mean=MEAN, std=STD,
                          num_classes=C, progress=False, mesh=mesh)
  own = [i for i in _own_ids(mesh, np.arange(16), 8) if i < n]
  assert sorted(seen) == own, (seen, own)
  x = (images[:n] / 255.0 - np.array(MEAN)) / np.array(STD)
  variables = {'params': jax.tree.map(parallel.fetch, state.params),
               'batch_stats': jax.tree.map(parallel.fetch, state.batch_stats)}
  pred = np.asarray(TinySeg().apply(variables, jnp.asarray(x, jnp.float32),
                                    train=False)[0]).argmax(-1)
  expected = np.zeros((C, C), np.int64)
  np.add.at(expected, (labels[:n], pred), 1)
  np.testing.assert_array_equal(np.asarray(result['confusion']), expected)


def check_scores(mesh, state, images):
  """Pool scores on every device equal a per-image NumPy reference and 1 device."""
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  pool = np.array([3, 0, 14, 9, 1, 12, 5, 8, 11, 2, 15, 7, 4])  # 13: the last batch is padded
  key, passes = jax.random.key(3), 4
  settings = scoring.Settings('mc_variance', passes=passes, mean=MEAN, std=STD)
  model = TinySeg()
  recorder = _Recorder(images)
  got = scoring.score_images(model.apply, variables, recorder, pool, key, settings=settings,
                             batches=scoring.Batches(8, mesh, progress=False))['scores']
  own = _own_ids(mesh, np.concatenate([pool, np.repeat(pool[-1:], 3)]), 8)
  assert sorted(recorder.seen) == own, (recorder.seen, own)
  one_device = parallel.make_mesh(jax.local_devices()[:1])
  one = scoring.score_images(model.apply, variables, images, pool, key, settings=settings,
                             batches=scoring.Batches(8, one_device, progress=False))['scores']
  np.testing.assert_allclose(got, one, rtol=1e-5, atol=1e-8)
  # Reference: image i, pass d uses fold_in(fold_in(key, i), d); population
  # variance over passes, mean over classes, mean over pixels.
  host = {'params': jax.tree.map(parallel.fetch, state.params),
          'batch_stats': jax.tree.map(parallel.fetch, state.batch_stats)}
  expected = []
  for i in pool:
    x = jnp.asarray((images[i:i + 1] / 255.0 - np.array(MEAN)) / np.array(STD), jnp.float32)
    probs = []
    for d in range(passes):
      k = jax.random.fold_in(jax.random.fold_in(key, int(i)), d)
      logits = np.asarray(model.apply(host, x, train=False, mc=True, rngs={'dropout': k})[0],
                          np.float64)[0]
      e = np.exp(logits - logits.max(-1, keepdims=True))
      probs.append(e / e.sum(-1, keepdims=True))
    expected.append(np.var(np.stack(probs), axis=0).mean())
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)
  try:
    scoring.score_images(model.apply, variables, images, pool, key, settings=settings,
                         batches=scoring.Batches(12, mesh, progress=False))
  except errors.UserError as e:
    assert 'multiple of 8' in str(e), e
  else:
    raise AssertionError('a batch of 12 on 8 devices was accepted')


def check_steps():
  assert jax.device_count() == 8, jax.devices()
  mesh = parallel.make_mesh()
  if jax.process_count() > 1:
    per = 8 // jax.process_count()
    rows = parallel.local_rows(8, mesh)
    assert rows == slice(jax.process_index() * per, (jax.process_index() + 1) * per), rows
    # Every process contributes its rows and reads back the whole batch.
    got = parallel.shard_batch(np.arange(8)[rows] * 10, mesh, 8)
    np.testing.assert_array_equal(parallel.fetch(got), np.arange(8) * 10)
  images, labels = _dataset(16)
  state = check_train_step(mesh, images, labels)
  check_evaluate(mesh, state, images, labels)
  check_scores(mesh, state, images)


def main(argv):
  if argv[1] == 'steps':
    check_steps()
  elif argv[1] == 'processes':
    jax.distributed.initialize(argv[2], int(argv[3]), int(argv[4]))
    check_steps()
  elif argv[1] == 'experiment':
    from segal_jax import experiment  # pylint: disable=g-import-not-at-top
    experiment.run(tiny_config(), argv[2], log=lambda s: None)
  else:
    raise SystemExit(f'unknown check {argv[1]}')
  print(f'ok: {argv[1]} on {jax.device_count()} devices, process {jax.process_index()} '
        f'of {jax.process_count()}')


if __name__ == '__main__':
  main(sys.argv)
