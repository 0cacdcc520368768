"""What every entry point shares: clean errors and exit codes.

A problem the user can fix ends the program with one line on stderr,
`error: <problem>; <fix>.`, and a non-zero exit status, never a traceback:

* 2: the command line itself (an unknown flag, a value of the wrong type, a
  flagfile that cannot be read or holds a line that is not `--name=value`);
  flagfiles are checked before absl parses them, so the message names the file
  and line.
* 1: a `UserError` raised anywhere (bad values, missing data, an incompatible
  checkpoint, a stop on SIGTERM), or an `OSError` on a named path (an
  unwritable work directory, a full disk).
* 130: Ctrl-C.

`--debug` or `--verbosity=1` (and above) re-raises instead, with the traceback.
"""

from __future__ import annotations

import errno
import functools
import logging as std_logging
import os
import re
import sys
import traceback
from typing import Callable

from absl import app
from absl import flags
from absl import logging

from segal_jax.errors import UserError

_DEBUG = flags.DEFINE_bool('debug', False, 'Show full tracebacks for errors.')
_COMPILE_CACHE = flags.DEFINE_string(
    'compile_cache', os.path.join('~', '.cache', 'segal_jax', 'xla'),
    'Keep compiled XLA programs here, so that a rerun, a resumed run or the next seed does not '
    'compile its step functions again (JAX\'s persistent compilation cache); empty: off.')

# What to do about an OSError, by errno; the message names the path and the reason.
_OS_FIXES = {
    errno.ENOTDIR: 'part of that path is a file, not a folder: choose another path',
    errno.EISDIR: 'that path is a folder: pass a file',
    errno.EEXIST: 'that path is taken: remove it or choose another one',
    errno.ENOENT: 'check the path',
    errno.EACCES: 'choose a location you are allowed to write to (or fix its permissions)',
    errno.EPERM: 'choose a location you are allowed to write to (or fix its permissions)',
    errno.EROFS: 'choose a location on a writable file system',
    errno.ENOSPC: 'free some disk space, then rerun the same command to resume',
    errno.EDQUOT: 'free some disk space, then rerun the same command to resume',
}
# Warnings that describe normal operation, or repeat the error that follows
# them, and would bury the one-line message: (module path fragment, message start).
_QUIET_WARNINGS = (
    ('tensorflow_datasets', 'Variant folder %s has no %s'),  # a data set not built yet
    ('tensorflow_datasets', 'Using custom data configuration'),  # image_folder's config
    ('orbax', 'Failed to get item metadata'),  # a corrupt checkpoint, reported next
)


def _use_compile_cache(path: str) -> None:
  """Turns on JAX's persistent compilation cache under `path` (nothing when empty)."""
  if not path:
    return
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_compilation_cache_dir', os.path.expanduser(path))
  # Keep every program: the many small ones (metrics, augmentation) add up to
  # seconds of each start on a CPU.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def run(main: Callable[[list[str]], None]) -> None:
  """`absl.app.run(main)`, with user-fixable errors turned into one line on stderr."""

  @functools.wraps(main)
  def wrapped(argv):
    if not flags.FLAGS['verbosity'].present:
      # INFO is noise here (tfds and Orbax log every file); --verbosity=0 brings it back.
      logging.set_verbosity(logging.WARNING)
    logging.get_absl_logger().addFilter(_quiet)
    _use_compile_cache(_COMPILE_CACHE.value)
    if not _traceback_wanted():
      std_logging.getLogger('asyncio').addFilter(_not_orphaned_orbax_read)
      sys.unraisablehook = _unraisable
    if len(argv) > 1:
      _fail(f'unexpected arguments {" ".join(argv[1:])}; flags are written --name=value.',
            code=2)
    try:
      return main(argv)
    except UserError as e:
      if _traceback_wanted():
        raise
      _fail(str(e))
    except OSError as e:
      if e.filename is None or _traceback_wanted():
        raise  # not about a path the user chose: a bug, show where
      _fail(os_error_message(e))
    except KeyboardInterrupt:
      _fail('interrupted; rerun the same command to resume.', code=130)

  try:
    app.run(wrapped, flags_parser=_parse_flags)
  except flags.Error as e:  # raised outside main, e.g. by a required flag
    _fail(f'{e}', code=2)


def os_error_message(e: OSError) -> str:
  """One line naming the path, the reason and what to do."""
  reason = (e.strerror or type(e).__name__).rstrip('.')
  fix = _OS_FIXES.get(e.errno, 'check the path and that you may write there')
  return f'cannot use {e.filename} ({reason}); {fix}.'


def flagfile_problem(args: list[str]) -> str | None:
  """The first flagfile (of `args`, or included by one) that absl would misread.

  absl passes a flagfile line that does not start with `-` on as a positional
  argument, and reads `--name value` as a flag named `name value`; either way
  its error would not say where the line is. Returns None when all is well.
  """
  for i, arg in enumerate(args):
    if arg == '--':
      break
    path = None
    if arg.startswith(('--flagfile=', '-flagfile=')):
      path = arg.split('=', 1)[1]
    elif arg in ('--flagfile', '-flagfile') and i + 1 < len(args):
      path = args[i + 1]
    if path is not None:
      problem = _check_flagfile(os.path.expanduser(path.strip()), [])
      if problem:
        return problem
  return None


def _check_flagfile(path: str, parents: list[str]) -> str | None:
  if path in parents:
    return None  # absl warns about the cycle and skips it
  try:
    with open(path) as f:
      lines = f.readlines()
  except OSError as e:
    where = f' (included by {parents[-1]})' if parents else ''
    return (f'cannot read the flagfile {path}{where} ({e.strerror}); check the path (a '
            f'relative one is read from {os.getcwd()})')
  for number, line in enumerate(lines, 1):
    # The same rules as absl: blank lines and lines starting with # or // are skipped.
    if line.isspace() or line.startswith(('#', '//')):
      continue
    text = line.strip()
    if line.startswith(('--flagfile=', '-flagfile=')):
      problem = _check_flagfile(os.path.expanduser(text.split('=', 1)[1].strip()),
                                parents + [path])
      if problem:
        return problem
      continue
    name = text.split('=', 1)[0]
    if not text.startswith('-') or re.search(r'\s', name):
      return (f'{path} line {number}: {text!r} is not a flag; write one --name=value per line '
              '(comments start with # at the beginning of a line)')
  return None


def _parse_flags(argv):
  problem = flagfile_problem(argv[1:])
  if problem:
    _fail(problem, code=2)
  try:
    return flags.FLAGS(argv)
  except flags.IllegalFlagValueError as e:
    text = str(e).rstrip('. ')
    required = re.fullmatch(r'flag --(\w+)=None: Flag --\1 must have a value other than None',
                            text)
    if required:
      _fail(f'--{required[1]} is required; pass --{required[1]}=VALUE.', code=2)
    _fail(f'{text}; see --helpfull for what each flag takes.', code=2)
  except flags.Error as e:
    _fail(f'{str(e).rstrip(". ")}; see --helpfull for the known flags.', code=2)


def _traceback_wanted() -> bool:
  return _DEBUG.value or flags.FLAGS.verbosity >= 1


def _quiet(record: std_logging.LogRecord) -> bool:
  return not (record.levelno == std_logging.WARNING
              and any(where in record.pathname and str(record.msg).startswith(start)
                      for where, start in _QUIET_WARNINGS))


# The aftermath of a failed Orbax restore (a corrupt checkpoint, reported as a
# `UserError` or, for a run's checkpoints, a warning before falling back to the
# previous step): reads still in flight finish after the restore's event loop
# has closed, and report it as unraisable 'Event loop is closed' exceptions and
# as asyncio's 'Task exception was never retrieved' errors, hundreds of
# tracebacks around the one line that explains the problem.


def _unraisable(info) -> None:
  if isinstance(info.exc_value, RuntimeError) and str(info.exc_value) == 'Event loop is closed':
    return
  sys.__unraisablehook__(info)


def _not_orphaned_orbax_read(record: std_logging.LogRecord) -> bool:
  exc = record.exc_info[1] if record.exc_info else None
  frames = traceback.extract_tb(exc.__traceback__) if exc is not None else []
  return not ('exception was never retrieved' in record.getMessage()
              and any(f'{os.sep}orbax{os.sep}' in frame.filename for frame in frames))


def _fail(message: str, code: int = 1) -> None:
  message = re.sub(r'\s*\n\s*', ' ', message.strip())  # one line, whatever the message holds
  print(f'error: {message}', file=sys.stderr)
  sys.exit(code)
