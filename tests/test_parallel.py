"""Tests for segal_jax.parallel: one device here, 8 simulated ones in a subprocess."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segal_jax import errors
from segal_jax import parallel

import _multidevice  # tests/ helper (on sys.path under pytest)


@pytest.mark.parametrize('size,devices,ok,hint', [
    (16, 8, True, None), (8, 8, True, None), (12, 8, False, '8 or 16'),
    (4, 8, False, 'e.g. 8'), (5, 1, True, None), (6, 4, False, '4 or 8')])
def test_check_batch_size(size, devices, ok, hint):
  if ok:
    parallel.check_batch_size(size, '--eval_batch_size', devices)
    return
  with pytest.raises(errors.UserError, match='--eval_batch_size') as e:
    parallel.check_batch_size(size, '--eval_batch_size', devices)
  assert hint in str(e.value) and f'over {devices} devices' in str(e.value)


def test_mesh_spans_every_device_on_one_data_axis():
  mesh = parallel.make_mesh()
  assert mesh.axis_names == (parallel.DATA,)
  assert mesh.size == jax.device_count()
  assert parallel.default_mesh() is parallel.default_mesh()
  assert parallel.is_writer()


def test_shard_batch_and_fetch_round_trip():
  mesh = parallel.make_mesh()
  batch = {'image': np.arange(4 * 3 * 2, dtype=np.uint8).reshape(4, 3, 2),
           'id': np.array([5, 1, 7, 3], np.int32)}
  assert parallel.local_rows(4, mesh) == slice(0, 4)  # one process holds every row
  got = parallel.shard_batch(batch, mesh, 4)
  assert got['image'].sharding.is_equivalent_to(parallel.batch_sharded(mesh), 3)
  for k in batch:
    assert got[k].shape == batch[k].shape and got[k].dtype == batch[k].dtype
    np.testing.assert_array_equal(parallel.fetch(got[k]), batch[k])


def test_replicate_copies_only_when_asked_and_keeps_keys():
  mesh = parallel.make_mesh()
  tree = {'w': np.arange(6, dtype=np.float32).reshape(2, 3), 'step': 3,
          'key': jax.random.key(11)}
  rep = parallel.replicate(tree, mesh)
  assert rep['w'].sharding.is_fully_replicated
  np.testing.assert_array_equal(parallel.fetch(rep['w']), tree['w'])
  assert int(parallel.fetch(rep['step'])) == 3
  # The key survives the trip: it draws the same numbers.
  np.testing.assert_array_equal(jax.random.uniform(rep['key'], (3,)),
                                jax.random.uniform(tree['key'], (3,)))
  assert parallel.replicate(rep, mesh)['w'] is rep['w']
  fresh = parallel.replicate(rep, mesh, copy=True)['w']
  assert fresh is not rep['w']
  # A donated copy leaves the original intact.
  jax.jit(lambda x: x + 1, donate_argnums=0)(fresh)
  np.testing.assert_array_equal(parallel.fetch(rep['w']), tree['w'])


def test_fetch_passes_host_values_through():
  np.testing.assert_array_equal(parallel.fetch(jnp.arange(3)), [0, 1, 2])
  np.testing.assert_array_equal(parallel.fetch(np.ones(2)), [1, 1])


def test_eight_devices_match_one_device():
  """Train step, evaluation and pool scores on 8 simulated devices (see _multidevice.py)."""
  assert 'ok: steps on 8 devices, process 0 of 1' in _multidevice.run_with_devices(8, 'steps')


@pytest.mark.slow
def test_experiment_on_eight_devices_selects_as_on_one(tmp_path):
  _multidevice.run_with_devices(1, 'experiment', str(tmp_path / 'one'))
  _multidevice.run_with_devices(8, 'experiment', str(tmp_path / 'eight'))
  run = os.path.join('mc_variance', 'seed_0')
  _multidevice.assert_same_selections(str(tmp_path / 'one' / run), str(tmp_path / 'eight' / run))
