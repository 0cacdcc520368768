"""One process owns a work directory at a time.

`hold(directory)` takes an exclusive `fcntl.flock` on `<directory>/.lock` for
as long as the run lasts and writes its PID there. The kernel releases the lock
of a process that dies, however it dies, so the lock of a killed run is taken
over by the next one, which says so; a second process while the first runs is
refused at once with one line naming the first one's PID. The file goes when
the run ends normally, so a PID left in it marks a run that was killed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from typing import Callable

from segal_jax.errors import UserError

FILE = '.lock'


def _read_pid(f) -> str:
  f.seek(0)
  return f.read().strip()


def _acquire(path: str):
  """The open lock file of `path`, locked; a file another process unlinked
  while this one waited for it is not the lock any more, so it opens it again."""
  while True:
    f = open(path, 'a+')  # pylint: disable=consider-using-with (held by the caller)
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      pid = _read_pid(f)
      f.close()
      if e.errno not in (errno.EAGAIN, errno.EACCES):
        raise
      raise UserError(f'{os.path.dirname(path)} is in use by process {pid or "unknown"}, which '
                      'runs the same work directory; nothing was changed',
                      'wait for it to finish, or stop that process, then rerun') from None
    try:
      if os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:
        return f
    except FileNotFoundError:
      pass
    f.close()


@contextlib.contextmanager
def hold(directory: str, log: Callable[[str], None] = print):
  """Holds the lock of `directory` (made if missing) inside the `with` block;
  the lock file goes when the block ends.

  Raises:
    UserError: another running process holds it (naming its PID); nothing is
      touched.
  """
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, FILE)
  f = _acquire(path)
  try:
    stale = _read_pid(f)
    if stale and stale != str(os.getpid()):
      log(f'lock: took over {path} from process {stale}, which stopped without releasing it')
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    yield
  finally:
    os.unlink(path)  # before unlocking, so a waiting process sees a new file
    f.close()
