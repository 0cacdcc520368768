"""configs/base.flags holds every default: one line per config field, in its order.

`launch/_flags.py` defines one flag per field of `ExperimentConfig`; every
experiment flagfile includes base.flags and lists only what differs, so a
field missing from it, a line naming no field, or a value that is not the
field's default would make base.flags lie about what an experiment runs.
"""

import dataclasses
import os
import typing

from segal_jax import config as config_lib

BASE_FLAGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          'configs', 'base.flags')

# Values base.flags gives on purpose instead of the dataclass default, with why.
EXCEPTIONS = {
    # base.flags is the reference protocol, whose synthetic stand-in is the
    # `default` size; the dataclass default is the library's quick `small`
    # size (tests and `ExperimentConfig()` in code).
    'dataset_config': 'default',
}


def _lines(text):
  """[(name, value)] of the `--name=value` lines, comments and blank lines skipped."""
  out = []
  for line in text.splitlines():
    if line.strip() and not line.startswith(('#', '//')):
      name, _, value = line.strip().removeprefix('--').partition('=')
      out.append((name, value))
  return out


def _parse(hint, text):
  """A flag's text as the field's type (absl's spellings of bools and lists)."""
  if hint is bool:
    assert text.lower() in ('true', 'false'), text
    return text.lower() == 'true'
  if hint in (int, float, str):
    return hint(text)
  item = typing.get_args(hint)[0]
  return tuple(item(v) for v in text.split(',')) if text else ()


def _problems(text):
  """Every way `text` fails to list each config field once, in order, at its default."""
  fields = dataclasses.fields(config_lib.ExperimentConfig)
  hints = typing.get_type_hints(config_lib.ExperimentConfig)
  lines = _lines(text)
  names, known = [n for n, _ in lines], [f.name for f in fields]
  problems = [f'missing --{n}' for n in known if n not in names]
  problems += [f'--{n} is not a config field' for n in names if n not in known]
  problems += [f'--{n} is given {names.count(n)} times' for n in sorted(set(names))
               if names.count(n) > 1]
  listed = [n for n in names if n in known]
  if not problems and listed != known:
    problems.append('the lines are not in the order of ExperimentConfig')
  values = dict(lines)
  for f in fields:
    if f.name in values:
      got = _parse(hints[f.name], values[f.name])
      want = EXCEPTIONS.get(f.name, f.default)
      if got != want:
        problems.append(f'--{f.name}={values[f.name]} but the default is {want!r}')
  return problems


def test_base_flags_lists_every_field_once_in_order_at_its_default():
  with open(BASE_FLAGS) as f:
    assert _problems(f.read()) == []


def test_the_exceptions_still_differ_from_the_dataclass():
  # An exception that came to agree with the dataclass is no longer one.
  defaults = {f.name: f.default for f in dataclasses.fields(config_lib.ExperimentConfig)}
  for name, value in EXCEPTIONS.items():
    assert defaults[name] != value, name


def test_the_check_finds_a_missing_an_unknown_and_a_changed_line():
  with open(BASE_FLAGS) as f:
    text = f.read()
  broken = (text.replace('--al_protocol=instance_overlap\n', '')
            .replace('--train_lr=0.01\n', '--train_lr=0.02\n') + '--al_budgett=3\n')
  assert _problems(broken) == ['missing --al_protocol', '--al_budgett is not a config field',
                               '--train_lr=0.02 but the default is 0.01']
  lines = text.splitlines(keepends=True)
  swapped = [line for line in lines if line.startswith('--')]
  a, b = lines.index(swapped[0]), lines.index(swapped[1])
  lines[a], lines[b] = lines[b], lines[a]
  assert _problems(''.join(lines)) == ['the lines are not in the order of ExperimentConfig']
  assert _parse(tuple[int, ...], '0,1') == (0, 1) and _parse(bool, 'False') is False
