"""Crash safety: a run killed anywhere and rerun ends exactly like one never interrupted.

Runs `launch.run` on the tiny synthetic config (one MC strategy, two cycles,
a checkpoint after every epoch) as a subprocess, kills it with SIGKILL at a
sequence of points found by watching the work directory and the progress
bars (during training, while a checkpoint or a model is being written, during
pool scoring, right after a selection is written), reruns it each time, and
compares the finished results with those of an uninterrupted run: the
per-cycle metrics (all but the timings), the selection CSVs, the labeled pool
and the final model's parameters must be identical. SIGTERM (preemption) must
save a checkpoint, exit non-zero with the rerun message, and resume the same
way, also when the newest checkpoint is then found damaged. This also checks
determinism: identical flags and seed, identical selections.

Every process shares one tfds data directory and one JAX compilation cache
(so reruns do not compile again; a cached executable is the same program).
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from segal_jax import data
from segal_jax.state import checkpoint
from segal_jax.state import run_state

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ('--flagfile=configs/synthetic/tiny.flags', '--al_strategies=mc_variance',
         '--train_min_steps=8', '--ckpt_every_epochs=1')
RUN = os.path.join('mc_variance', 'seed_0')  # the one run of the experiment
TIMEOUT = 300  # seconds for one launch on a busy 2-core machine


@pytest.fixture(scope='module')
def env(tmp_path_factory):
  base = tmp_path_factory.getbasetemp()
  tfds_dir = str(base / 'tfds')
  data.load('synthetic_city', 'train', config='tiny', data_dir=tfds_dir)
  return dict(os.environ, TFDS_DATA_DIR=tfds_dir,
              JAX_COMPILATION_CACHE_DIR=str(base / 'jax_cache'),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')


class _Launch:
  """One `launch.run` process, its output collected as it comes."""

  def __init__(self, workdir, env, *, progress=True):
    self.workdir = workdir
    self.proc = subprocess.Popen(
        [sys.executable, '-m', 'launch.run', *FLAGS, f'--workdir={workdir}',
         '--progress' if progress else '--noprogress'],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    self._out = {'stdout': [], 'stderr': []}
    self._readers = [threading.Thread(target=self._read, args=(name,), daemon=True)
                     for name in self._out]
    for t in self._readers:
      t.start()

  def _read(self, name):
    # Chunks, not lines: progress bars redraw with \r and never end a line.
    stream = getattr(self.proc, name)
    while chunk := os.read(stream.fileno(), 65536):
      self._out[name].append(chunk.decode(errors='replace'))

  @property
  def stderr(self) -> str:
    return ''.join(self._out['stderr'])

  @property
  def output(self) -> str:
    return ''.join(self._out['stdout']) + self.stderr

  def run_dir(self, *parts) -> str:
    return os.path.join(self.workdir, RUN, *parts)

  def listing(self, sub) -> set[str]:
    try:
      return set(os.listdir(self.run_dir(sub)))
    except FileNotFoundError:
      return set()

  def wait_for(self, condition, what: str) -> None:
    """Polls `condition()` every 2 ms while the process runs."""
    deadline = time.time() + TIMEOUT
    while not condition():
      if self.proc.poll() is not None:
        self.finish()
        pytest.fail(f'the run ended (exit {self.proc.returncode}) before {what}:\n'
                    f'{self.output[-3000:]}')
      if time.time() > deadline:
        self.kill()
        pytest.fail(f'no {what} after {TIMEOUT} s:\n{self.output[-3000:]}')
      time.sleep(0.002)

  def kill(self, sig=signal.SIGKILL) -> None:
    if self.proc.poll() is None:
      self.proc.send_signal(sig)
    self.finish()

  def finish(self) -> int:
    try:
      self.proc.wait(timeout=TIMEOUT)
    finally:
      if self.proc.poll() is None:
        self.proc.kill()
        self.proc.wait()
      for t in self._readers:
        t.join(timeout=10)
    return self.proc.returncode


def _complete(workdir, env) -> _Launch:
  run = _Launch(workdir, env, progress=False)
  assert run.finish() == 0, run.output[-3000:]
  assert 'Traceback' not in run.output
  return run


def _results(workdir):
  """Everything a finished run decides, without the timings."""
  run_dir = os.path.join(workdir, RUN)
  with open(os.path.join(run_dir, 'metrics.jsonl')) as f:
    records = [{k: v for k, v in json.loads(line).items() if not k.endswith('_seconds')}
               for line in f]
  with open(os.path.join(run_dir, 'selection_cycle01.csv')) as f:
    selection = f.read()
  state = _run_state(run_dir)
  _, variables, _ = checkpoint.load_model(os.path.join(run_dir, 'models', 'cycle_01'))
  flat = {k: np.asarray(v) for k, v in _flatten(variables)}
  return {'records': records, 'selection': selection, 'pool': state['pool'],
          'fingerprint': state['fingerprint'], 'variables': flat}


def _run_state(run_dir):
  """The newest saved run state (fingerprint, pool, records), as `checkpoint` reads it."""
  latest = checkpoint.RunCheckpointer(
      os.path.join(run_dir, run_state.RUN_CHECKPOINTS)).latest_al_state()
  return {} if latest is None else latest[1]


def _flatten(tree, prefix=''):
  for k, v in tree.items():
    if isinstance(v, dict):
      yield from _flatten(v, f'{prefix}{k}/')
    else:
      yield prefix + k, v


def _assert_same_results(got, want):
  assert len(got['records']) == 2  # both cycles finished
  assert got['records'] == want['records']
  assert got['selection'] == want['selection']
  assert len(got['selection'].splitlines()) == 1 + 8  # header + al_budget images
  assert got['pool'] == want['pool']
  assert got['fingerprint'] == want['fingerprint']
  assert got['variables'].keys() == want['variables'].keys()
  for k, v in want['variables'].items():
    np.testing.assert_array_equal(got['variables'][k], v, err_msg=k)


@pytest.fixture(scope='module')
def reference(env, tmp_path_factory):
  """The results of an uninterrupted run (which also fills the compilation cache)."""
  workdir = str(tmp_path_factory.mktemp('uninterrupted'))
  _complete(workdir, env)
  return _results(workdir)


def _committed_steps(run):
  return {n for n in run.listing('checkpoints') if n.isdigit()}


def _new_tmp(run, sub, before):
  return {n for n in run.listing(sub) - before if 'orbax-checkpoint-tmp' in n}


def _kill_during_write(workdir, env, sub, attempts=3):
  """SIGKILLs launches until one dies with a write to `sub` in progress."""
  for _ in range(attempts):
    run = _Launch(workdir, env)
    before = run.listing(sub)  # a stale temporary directory is not a write in progress
    run.wait_for(lambda: _new_tmp(run, sub, before), f'a write to {sub}/')
    run.kill()
    assert run.proc.returncode == -signal.SIGKILL
    if _new_tmp(run, sub, before):  # the write was cut off, not just finished
      return
  pytest.fail(f'{attempts} launches finished their writes to {sub}/ before the kill')


def test_sigkill_at_any_point_then_rerun_gives_identical_results(env, reference, tmp_path):
  workdir = str(tmp_path / 'killed')

  # 1. During training: right after the first checkpoint of cycle 0 is committed.
  run = _Launch(workdir, env)
  run.wait_for(lambda: _committed_steps(run), 'a checkpoint')
  run.kill()
  assert run.proc.returncode == -signal.SIGKILL
  assert not os.path.exists(run.run_dir('models')), 'cycle 0 had finished training'

  # 2. While a training-state checkpoint is being written, then 3. a model.
  _kill_during_write(workdir, env, 'checkpoints')
  _kill_during_write(workdir, env, 'models')

  # 4. During pool scoring (after training and evaluation of cycle 0).
  run = _Launch(workdir, env)
  run.wait_for(lambda: 'score pool' in run.stderr, 'pool scoring')
  run.kill()
  assert not os.path.exists(run.run_dir('selection_cycle01.csv')), 'scoring had finished'
  assert not _run_state(run.run_dir()).get('records'), 'cycle 0 had been saved as finished'

  # 5. Right after the selection is written (before or after the cycle's state).
  run = _Launch(workdir, env)
  run.wait_for(lambda: os.path.exists(run.run_dir('selection_cycle01.csv')), 'a selection')
  run.kill()

  _complete(workdir, env)
  assert not [n for n in os.listdir(os.path.join(workdir, RUN, 'checkpoints'))
              if 'tmp' in n], 'a temporary checkpoint directory was left behind'
  _assert_same_results(_results(workdir), reference)


def _assert_preempted(run, cycle):
  """Exit 1 with the one-line rerun message, and the checkpoint it names on disk."""
  assert run.proc.returncode == 1, run.output[-3000:]
  assert 'Traceback' not in run.output
  stderr = re.sub(r'[^\n]*\r', '', run.stderr)  # without the progress bars (redrawn by \r)
  lines = stderr.strip().splitlines()
  assert len(lines) == 1, run.stderr
  match = re.fullmatch(r'error: stopped on request during cycle (\d+) after epoch (\d+); '
                       r'the training state is saved; rerun the same command to resume\.',
                       lines[0])
  assert match, lines[0]
  assert int(match[1]) == cycle
  steps = checkpoint.RunCheckpointer(run.run_dir('checkpoints')).all_steps()
  assert max(steps) == cycle * 1_000_000 + int(match[2])  # the step of (cycle, epoch)


def test_sigterm_saves_a_checkpoint_and_the_rerun_resumes(env, reference, tmp_path):
  workdir = str(tmp_path / 'preempted')

  # During training: the epoch finishes, is saved, and the run stops.
  run = _Launch(workdir, env, progress=False)
  run.wait_for(lambda: _committed_steps(run), 'a checkpoint')
  run.kill(signal.SIGTERM)
  _assert_preempted(run, cycle=0)

  # During scoring: the cycle finishes, and the run stops after the next epoch.
  run = _Launch(workdir, env)
  run.wait_for(lambda: 'score pool' in run.stderr, 'pool scoring')
  run.proc.send_signal(signal.SIGTERM)
  run.finish()
  _assert_preempted(run, cycle=1)
  assert os.path.exists(run.run_dir('selection_cycle01.csv'))

  # The newest checkpoint is then damaged: the rerun falls back to the one
  # before (of cycle 0, so cycle 1 trains from its start), with a warning.
  latest = os.path.join(run.run_dir('checkpoints'), '1000000', 'train_state', 'manifest.ocdbt')
  with open(latest, 'wb') as f:
    f.write(b'\0 cut short')
  run = _complete(workdir, env)
  assert 'checkpoint step 1000000' in run.stderr and 'falling back' in run.stderr
  _assert_same_results(_results(workdir), reference)
