"""One process owns a work directory at a time.

`hold(directory)` takes an exclusive `fcntl.flock` on `<directory>/.lock` for
as long as the run lasts and writes its PID there. The kernel releases the lock
of a process that dies, however it dies, so the lock of a killed run is taken
over by the next one, which says so; a second process while the first runs is
refused at once with one line naming the first one's PID. The file is emptied
when the run ends normally, so a PID left in it marks a run that was killed.
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


@contextlib.contextmanager
def hold(directory: str, log: Callable[[str], None] = print):
  """Holds the lock of `directory` (made if missing) inside the `with` block.

  Raises:
    UserError: another running process holds it (naming its PID); nothing is
      touched.
  """
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, FILE)
  f = open(path, 'a+')  # pylint: disable=consider-using-with (held for the block)
  try:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EAGAIN, errno.EACCES):
        raise
      raise UserError(f'{directory} is in use by process {_read_pid(f) or "unknown"}, which '
                      'runs the same work directory; nothing was changed',
                      'wait for it to finish, or stop that process, then rerun') from None
    stale = _read_pid(f)
    if stale and stale != str(os.getpid()):
      log(f'lock: took over {path} from process {stale}, which stopped without releasing it')
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    try:
      yield
    finally:
      f.seek(0)
      f.truncate()
      f.flush()
      fcntl.flock(f, fcntl.LOCK_UN)
  finally:
    f.close()
