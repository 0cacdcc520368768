"""Class tables: the label set a data set, a model and an annotator share.

A table lists the classes the network predicts, in output order: each has a
name, a colour (figures, overlays, annotation tools), whether it is a *thing*
(countable instances: the simulated annotator and the cost rules count its
8-connected regions) or *stuff*, and the value that stands for it in label
PNGs. One more value, `ignore`, marks unlabeled pixels (255 by default).

An image_folder root may hold a `classes.json`:

  {"ignore": 255,
   "classes": [{"name": "healthy", "color": [0, 160, 0], "thing": false, "value": 0},
               {"name": "rust", "color": [200, 90, 0], "thing": true, "value": 1}]}

Cityscapes' 19 evaluated classes, with their train ids as values, are the
built-in table of `cityscapes`, `synthetic_city` and of a folder without one
(`CITYSCAPES`). Inside the library labels are class indices 0..C-1 with
`labels.IGNORE` (255) for unlabeled pixels; `lookup` maps PNG values to them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from segal_jax.data import labels
from segal_jax import errors

FILE = 'classes.json'
_FORMAT_FIX = ('write classes.json as {"ignore": 255, "classes": [{"name": ..., '
               '"color": [r, g, b], "thing": true|false, "value": 0..255}, ...]}')


@dataclasses.dataclass(frozen=True)
class ClassInfo:
  """One class of a table."""
  name: str
  color: tuple[int, int, int]
  thing: bool
  value: int  # its value in label PNGs


@dataclasses.dataclass(frozen=True)
class ClassTable:
  """The classes a network predicts, in output order, and the ignore value."""
  classes: tuple[ClassInfo, ...]
  ignore: int = labels.IGNORE

  @property
  def num_classes(self) -> int:
    return len(self.classes)

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(c.name for c in self.classes)

  @property
  def palette(self) -> np.ndarray:
    """[C, 3] uint8 colours in class order."""
    return np.array([c.color for c in self.classes], np.uint8).reshape(-1, 3)

  @property
  def thing_ids(self) -> tuple[int, ...]:
    """Class indices of the thing classes."""
    return tuple(i for i, c in enumerate(self.classes) if c.thing)

  def lookup(self) -> np.ndarray:
    """[256] int16: PNG value -> class index, `labels.IGNORE` for the ignore
    value, -1 for a value the table does not know."""
    table = np.full(256, -1, np.int16)
    table[self.ignore] = labels.IGNORE
    for i, c in enumerate(self.classes):
      table[c.value] = i
    return table

  def values(self) -> np.ndarray:
    """[256] uint8: class index -> PNG value (the inverse of `lookup`); index
    `labels.IGNORE` and anything unknown give the ignore value."""
    out = np.full(256, self.ignore, np.uint8)
    out[:self.num_classes] = [c.value for c in self.classes]
    return out

  def colorize(self, label: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8: class indices painted in the table's colours (black for
    ignore and anything out of range)."""
    lut = np.zeros((256, 3), np.uint8)
    lut[:self.num_classes] = self.palette
    return lut[np.asarray(label, np.uint8)]

  def to_json(self) -> dict[str, Any]:
    return {'ignore': self.ignore,
            'classes': [{'name': c.name, 'color': list(c.color), 'thing': c.thing,
                         'value': c.value} for c in self.classes]}


def from_json(obj: Any, where: str = 'the class table') -> ClassTable:
  """A checked `ClassTable` from its JSON form (`ClassTable.to_json`).

  Raises:
    UserError: naming the first problem (missing field, bad colour, a value
      outside 0..255 or used twice, a duplicate name, the ignore value used by
      a class, no classes).
  """
  if not isinstance(obj, dict) or not isinstance(obj.get('classes'), list):
    raise errors.UserError(f'{where} has no "classes" list', _FORMAT_FIX)
  ignore = obj.get('ignore', labels.IGNORE)
  if not isinstance(ignore, int) or not 0 <= ignore <= 255:
    raise errors.UserError(f'{where}: ignore value {ignore!r} is not in 0..255', _FORMAT_FIX)
  out, names, values = [], set(), set()
  for k, row in enumerate(obj['classes']):
    try:
      name, color, thing, value = row['name'], row['color'], row['thing'], row['value']
    except (TypeError, KeyError) as e:
      raise errors.UserError(f'{where}: class {k} lacks the field {e}', _FORMAT_FIX) from e
    if not isinstance(name, str) or not name:
      raise errors.UserError(f'{where}: class {k} has no name', _FORMAT_FIX)
    if (not isinstance(color, (list, tuple)) or len(color) != 3
        or not all(isinstance(v, int) and 0 <= v <= 255 for v in color)):
      raise errors.UserError(f'{where}: the colour of "{name}" is {color!r}',
                             'give three integers 0..255, e.g. [128, 64, 128]')
    if not isinstance(thing, bool):
      raise errors.UserError(f'{where}: "thing" of "{name}" is {thing!r}', 'use true or false')
    if not isinstance(value, int) or not 0 <= value <= 255 or value == ignore:
      raise errors.UserError(f'{where}: the value of "{name}" is {value!r}',
                             f'use a label PNG value 0..255 other than the ignore value {ignore}')
    if name in names or value in values:
      raise errors.UserError(f'{where}: class "{name}" (value {value}) repeats a name or value',
                             'give every class its own name and value')
    names.add(name)
    values.add(value)
    out.append(ClassInfo(name, tuple(color), thing, value))
  if not out:
    raise errors.UserError(f'{where} lists no classes', _FORMAT_FIX)
  if len(out) >= labels.IGNORE:
    raise errors.UserError(f'{where} lists {len(out)} classes',
                           f'use at most {labels.IGNORE - 1} classes')
  return ClassTable(tuple(out), ignore)


def load(path: str) -> ClassTable:
  """The table in a `classes.json` file (a folder: its `classes.json`)."""
  if os.path.isdir(path):
    path = os.path.join(path, FILE)
  try:
    with open(os.path.expanduser(path)) as f:
      obj = json.load(f)
  except (OSError, ValueError) as e:
    raise errors.UserError(f'cannot read the class table {path} ({e})', _FORMAT_FIX) from e
  return from_json(obj, path)


def _cityscapes() -> ClassTable:
  rows = sorted((l for l in labels.LABELS if 0 <= l.train_id < labels.IGNORE),
                key=lambda l: l.train_id)
  return ClassTable(tuple(ClassInfo(l.name, l.color, l.has_instances, l.train_id)
                          for l in rows))


# Cityscapes' 19 evaluated classes; values are the train ids.
CITYSCAPES: ClassTable = _cityscapes()
