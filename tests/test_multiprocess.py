"""Multi-process runs: launch._distributed's flags, and two processes on localhost."""

import os
import socket
import subprocess
import sys

import jax
import pytest
from absl import flags
from absl.testing import flagsaver

from launch import _distributed
from segal_jax.errors import UserError

import _multidevice  # tests/ helper (on sys.path under pytest)

_CLUSTER_VARS = ('JAX_COORDINATOR_ADDRESS', 'SLURM_JOB_ID', 'SLURM_NTASKS',
                 'OMPI_COMM_WORLD_SIZE', 'TPU_PROCESS_ADDRESSES', 'TPU_WORKER_HOSTNAMES',
                 'MEGASCALE_COORDINATOR_ADDRESS')

# The tiny experiment of tests/_multidevice.py:tiny_config, as flags.
TINY_FLAGS = ('--dataset_config=tiny', '--width_multiplier=0.25', '--train_epochs=1',
              '--train_min_steps=2', '--train_batch_size=8', '--train_crop=32,64',
              '--eval_batch_size=8', '--al_initial=8', '--al_budget=8', '--al_cycles=2',
              '--mc_passes=3', '--noprogress', '--al_strategies=mc_variance')


@pytest.fixture
def calls(monkeypatch):
  """Clean cluster environment; records jax.distributed.initialize instead of running it."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  for name in _CLUSTER_VARS:
    monkeypatch.delenv(name, raising=False)
  seen = []
  monkeypatch.setattr(jax.distributed, 'initialize', lambda **kw: seen.append(kw))
  return seen


def test_single_process_does_not_initialize(calls):
  with flagsaver.flagsaver(num_processes=1):
    _distributed.initialize()
  _distributed.initialize()
  assert not calls


def test_explicit_flags_are_passed_on(calls):
  with flagsaver.flagsaver(coordinator_address='host0:1234', num_processes=4, process_id=3):
    _distributed.initialize()
  assert calls == [dict(coordinator_address='host0:1234', num_processes=4, process_id=3)]


def test_num_processes_alone_leaves_the_rest_to_jax(calls):
  with flagsaver.flagsaver(num_processes=16):
    _distributed.initialize()
  assert calls == [dict(coordinator_address=None, num_processes=16, process_id=None)]


@pytest.mark.parametrize('env,detected', [
    ({'SLURM_JOB_ID': '7', 'SLURM_NTASKS': '4'}, True),
    ({'SLURM_JOB_ID': '7', 'SLURM_NTASKS': '1'}, False),
    ({'OMPI_COMM_WORLD_SIZE': '2'}, True),
    ({'TPU_WORKER_HOSTNAMES': 'w0,w1,w2,w3'}, True),
    ({'TPU_WORKER_HOSTNAMES': 'w0'}, False),
    ({'JAX_COORDINATOR_ADDRESS': '10.0.0.1:1234'}, True),
])
def test_cluster_environment_is_detected(calls, monkeypatch, env, detected):
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  _distributed.initialize()
  assert calls == ([dict(coordinator_address=None, num_processes=None, process_id=None)]
                   if detected else [])


def test_process_id_out_of_range_is_a_user_error(calls):
  with flagsaver.flagsaver(num_processes=2, process_id=2):
    with pytest.raises(UserError, match='--process_id=2'):
      _distributed.initialize()
  assert not calls


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _launch(workdir, *extra, devices: int) -> subprocess.Popen:
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
             JAX_PLATFORMS='cpu')
  return subprocess.Popen(
      [sys.executable, '-m', 'launch.run', *TINY_FLAGS, f'--workdir={workdir}', *extra],
      cwd=_multidevice.REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True)


def _finish(procs, timeout=900) -> list[tuple[str, str]]:
  """Waits for every process; (stdout, stderr) of each; fails if one fails."""
  outputs = []
  try:
    for p in procs:
      out, err = p.communicate(timeout=timeout)
      outputs.append((out, err))
      assert p.returncode == 0, f'exit {p.returncode}:\n{out}\n{err}'
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  return outputs


@pytest.mark.slow
def test_two_processes_select_as_one(tmp_path):
  """Two launch.run processes (4 CPU devices each) = one process on one device."""
  _finish([_launch(tmp_path / 'one', devices=1)])
  port = _free_port()
  procs = [_launch(tmp_path / 'two', f'--coordinator_address=localhost:{port}',
                   '--num_processes=2', f'--process_id={i}', '--verbosity=0', devices=4)
           for i in range(2)]
  for i, (_, log) in enumerate(_finish(procs)):
    assert f'process {i} of 2; 4 local and 8 global devices' in log, log[-3000:]
  run = os.path.join('mc_variance', 'seed_0')
  _multidevice.assert_same_selections(str(tmp_path / 'one' / run),
                                       str(tmp_path / 'two' / run))


@pytest.mark.slow
def test_two_processes_split_every_batch():
  """Train step, evaluation and scores as two processes of 4 devices (see _multidevice.py).

  Each process reads only its rows and gets the global results: the same checks
  as the 8-device single-process test, plus which rows each process read.
  """
  # PYTHONPATH: run as a script, the helper must import this checkout's library.
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu', PYTHONPATH=os.pathsep.join(
                 filter(None, [_multidevice.REPO, os.environ.get('PYTHONPATH')])))
  port = _free_port()
  script = os.path.join(_multidevice.HERE, '_multidevice.py')
  procs = [subprocess.Popen([sys.executable, script, 'processes', f'localhost:{port}', '2',
                             str(i)], cwd=_multidevice.REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  for i, (out, _) in enumerate(_finish(procs)):
    assert f'ok: processes on 8 devices, process {i} of 2' in out, out
