"""What every entry point shares: clean errors and exit codes."""

from __future__ import annotations

import functools
import sys
from typing import Callable

from absl import app
from absl import flags
from absl import logging

from segal_jax.errors import UserError

_DEBUG = flags.DEFINE_bool('debug', False, 'Show full tracebacks for errors.')


def run(main: Callable[[list[str]], None]) -> None:
  """`absl.app.run(main)`, with `UserError` turned into one line on stderr and exit 1."""

  @functools.wraps(main)
  def wrapped(argv):
    if not flags.FLAGS['verbosity'].present:
      # INFO is noise here (tfds and Orbax log every file); --verbosity=0 brings it back.
      logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
      _fail(f'unexpected arguments {" ".join(argv[1:])}; flags are written --name=value.')
    try:
      return main(argv)
    except UserError as e:
      if _DEBUG.value or flags.FLAGS.verbosity >= 1:
        raise
      _fail(str(e))
    except KeyboardInterrupt:
      _fail('interrupted; rerun the same command to resume.', code=130)

  try:
    app.run(wrapped, flags_parser=_parse_flags)
  except flags.Error as e:  # raised outside main, e.g. by a malformed flagfile
    _fail(f'{e}', code=2)


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(f'{e}; see --helpfull for the known flags.', code=2)


def _fail(message: str, code: int = 1) -> None:
  print(f'error: {message}', file=sys.stderr)
  sys.exit(code)
