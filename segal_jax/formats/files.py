"""Atomic file writes: a temporary file in the same directory, then `os.replace`.

An interrupted write leaves the old file (or none), never half of a new one.
Every file the product writes outside Orbax goes through `atomic_open`.

Files get the permissions of any file the user creates (0666 less the umask),
so teammates read what the product writes. The temporary file is hidden
(`.<name>.<pid>.<random>.part`), so no listing mistakes it for a product file,
and it names the process that writes it: `remove_stale_parts` deletes the
ones a killed process left behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets

_PART = re.compile(r'^\..+\.(\d+)\.[0-9a-f]{8}\.part$')


def _part_name(path: str) -> str:
  return os.path.join(os.path.dirname(path), f'.{os.path.basename(path)}.{os.getpid()}.'
                      f'{secrets.token_hex(4)}.part')


@contextlib.contextmanager
def atomic_open(path: str, mode: str = 'w'):
  """Opens a temporary file beside `path`; renames it over `path` on success."""
  path = os.path.abspath(path)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = _part_name(path)
  # os.open applies the umask to 0o666, as open() does for a new file.
  fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
  try:
    with os.fdopen(fd, mode) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    raise


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's process
    return True
  return True


def remove_stale_parts(directory: str) -> list[str]:
  """Deletes the temporary files under `directory` whose writer is no longer
  running (killed during a write); returns their paths."""
  removed = []
  for d, _, files in os.walk(directory):
    for f in files:
      m = _PART.match(f)
      if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
        with contextlib.suppress(FileNotFoundError):
          os.unlink(os.path.join(d, f))
          removed.append(os.path.join(d, f))
  return sorted(removed)
