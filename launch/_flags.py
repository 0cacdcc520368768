"""Flags generated from `ExperimentConfig`, one per field, and the config built from them.

The dataclass is the single source of names, types, defaults and help texts;
this module is the only place that turns flags into a config.
"""

from __future__ import annotations

import dataclasses
import typing

from absl import flags

from segal_jax import config as config_lib
from segal_jax.data import synthetic_city

_HOLDERS: dict[str, flags.FlagHolder] = {}


def define_config_flags() -> None:
  hints = typing.get_type_hints(config_lib.ExperimentConfig)
  for f in dataclasses.fields(config_lib.ExperimentConfig):
    hint, help_ = hints[f.name], f.metadata['help']
    if hint is bool:
      holder = flags.DEFINE_bool(f.name, f.default, help_)
    elif hint is int:
      holder = flags.DEFINE_integer(f.name, f.default, help_)
    elif hint is float:
      holder = flags.DEFINE_float(f.name, f.default, help_)
    elif hint is str:
      holder = flags.DEFINE_string(f.name, f.default, help_)
    elif typing.get_args(hint)[0] is int:
      holder = flags.DEFINE_list(f.name, [str(v) for v in f.default], help_)
    else:
      holder = flags.DEFINE_list(f.name, list(f.default), help_)
    _HOLDERS[f.name] = holder


def config_from_flags() -> config_lib.ExperimentConfig:
  """Builds the config; a non-integer in an integer list raises UserError."""
  from segal_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  hints = typing.get_type_hints(config_lib.ExperimentConfig)
  values = {}
  for name, holder in _HOLDERS.items():
    v = holder.value
    if isinstance(v, list):
      if typing.get_args(hints[name])[0] is int:
        try:
          v = [int(x) for x in v]
        except ValueError:
          raise UserError(f'--{name}={",".join(v)} is not a list of integers',
                          f'write e.g. --{name}=1,2') from None
      v = tuple(v)
    values[name] = v
  if values['dataset'].startswith('image_folder:') and (
      values['dataset_config'] in synthetic_city.config_names()):
    # A synthetic_city size (the default, or a CPU flagfile's) means nothing to a
    # folder, whose --dataset_config holds key=value options.
    values['dataset_config'] = ''
  return config_lib.ExperimentConfig(**values)
