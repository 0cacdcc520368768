"""One process per work directory: a second one is refused, a killed one's lock taken over."""

import os
import signal
import subprocess
import sys

import pytest

from segal_jax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOLD = ('import sys, time\n'
        'from segal_jax.state import lock as _lock\n'
        'with _lock.hold(sys.argv[1], log=lambda _: None):\n'
        '  print("held", flush=True)\n'
        '  time.sleep(120)\n')


def _holder(directory):
  """A real process holding the lock of `directory` (started and holding)."""
  proc = subprocess.Popen([sys.executable, '-c', HOLD, directory], cwd=REPO,
                          stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == 'held'
  return proc


def _listing(directory):
  return sorted((os.path.relpath(os.path.join(d, f), directory), os.path.getmtime(os.path.join(d, f)))
                for d, _, files in os.walk(directory) for f in files)


@pytest.mark.slow
def test_a_second_run_on_a_work_directory_exits_naming_the_first(tmp_path):
  # About 10 s: the second process imports the whole library.
  workdir = str(tmp_path / 'work')
  first = _holder(workdir)
  try:
    before = _listing(workdir)
    second = subprocess.run(
        [sys.executable, '-m', 'launch.run', f'--workdir={workdir}',
         '--dataset=synthetic_city', '--dataset_config=tiny', f'--data_dir={tmp_path / "tfds"}'],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert second.returncode != 0
    lines = second.stderr.strip().splitlines()
    assert lines[-1] == (f'error: {workdir} is in use by process {first.pid}, which runs the same '
                         'work directory; nothing was changed; wait for it to finish, or stop '
                         'that process, then rerun.'), second.stderr
    assert 'Traceback' not in second.stderr
    assert _listing(workdir) == before
    assert first.poll() is None
  finally:
    first.kill()
    first.wait()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
  from segal_jax.state import lock as _lock  # pylint: disable=g-import-not-at-top
  directory = str(tmp_path)
  first = _holder(directory)
  with pytest.raises(UserError, match=f'is in use by process {first.pid}'):
    with _lock.hold(directory):
      pass
  first.send_signal(signal.SIGKILL)
  first.wait()
  logs = []
  with _lock.hold(directory, logs.append):
    with open(os.path.join(directory, _lock.FILE)) as f:
      assert f.read() == str(os.getpid())
  assert logs == [f'lock: took over {os.path.join(directory, _lock.FILE)} from process '
                  f'{first.pid}, which stopped without releasing it']
  assert not os.path.exists(os.path.join(directory, _lock.FILE))  # released: nothing left
  logs.clear()
  with _lock.hold(directory, logs.append):
    pass
  assert logs == []
