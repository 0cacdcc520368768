"""The Cityscapes label table: label ids, train ids, names and palette.

Ground truth on disk uses Cityscapes *label ids* (0..33, `-1` for the licence
plate); the network predicts *train ids* 0..18, with `IGNORE` for everything that
is not evaluated. Instance maps hold `label_id * 1000 + k` for "thing" pixels and
the plain label id for "stuff" pixels. Source and credit: see
`third_party/cityscapes_labels.md`.
"""

import dataclasses

import numpy as np

IGNORE = 255
NUM_CLASSES = 19


@dataclasses.dataclass(frozen=True)
class Label:
  """One row of the Cityscapes label table."""
  name: str
  id: int              # label id, as stored in *_labelIds.png; -1 = never stored
  train_id: int        # 0..18, or 255 (-1 for the licence plate) when not trained
  category: str
  category_id: int
  has_instances: bool
  ignore_in_eval: bool
  color: tuple[int, int, int]


# Every row of the official table, in the official order.
LABELS: tuple[Label, ...] = tuple(Label(*row) for row in (
    # name                   id  train  category        cat  inst   ignore color
    ('unlabeled',             0, 255, 'void',          0, False, True, (0, 0, 0)),
    ('ego vehicle',           1, 255, 'void',          0, False, True, (0, 0, 0)),
    ('rectification border',  2, 255, 'void',          0, False, True, (0, 0, 0)),
    ('out of roi',            3, 255, 'void',          0, False, True, (0, 0, 0)),
    ('static',                4, 255, 'void',          0, False, True, (0, 0, 0)),
    ('dynamic',               5, 255, 'void',          0, False, True, (111, 74, 0)),
    ('ground',                6, 255, 'void',          0, False, True, (81, 0, 81)),
    ('road',                  7, 0, 'flat',            1, False, False, (128, 64, 128)),
    ('sidewalk',              8, 1, 'flat',            1, False, False, (244, 35, 232)),
    ('parking',               9, 255, 'flat',          1, False, True, (250, 170, 160)),
    ('rail track',           10, 255, 'flat',          1, False, True, (230, 150, 140)),
    ('building',             11, 2, 'construction',    2, False, False, (70, 70, 70)),
    ('wall',                 12, 3, 'construction',    2, False, False, (102, 102, 156)),
    ('fence',                13, 4, 'construction',    2, False, False, (190, 153, 153)),
    ('guard rail',           14, 255, 'construction',  2, False, True, (180, 165, 180)),
    ('bridge',               15, 255, 'construction',  2, False, True, (150, 100, 100)),
    ('tunnel',               16, 255, 'construction',  2, False, True, (150, 120, 90)),
    ('pole',                 17, 5, 'object',          3, False, False, (153, 153, 153)),
    ('polegroup',            18, 255, 'object',        3, False, True, (153, 153, 153)),
    ('traffic light',        19, 6, 'object',          3, False, False, (250, 170, 30)),
    ('traffic sign',         20, 7, 'object',          3, False, False, (220, 220, 0)),
    ('vegetation',           21, 8, 'nature',          4, False, False, (107, 142, 35)),
    ('terrain',              22, 9, 'nature',          4, False, False, (152, 251, 152)),
    ('sky',                  23, 10, 'sky',            5, False, False, (70, 130, 180)),
    ('person',               24, 11, 'human',          6, True, False, (220, 20, 60)),
    ('rider',                25, 12, 'human',          6, True, False, (255, 0, 0)),
    ('car',                  26, 13, 'vehicle',        7, True, False, (0, 0, 142)),
    ('truck',                27, 14, 'vehicle',        7, True, False, (0, 0, 70)),
    ('bus',                  28, 15, 'vehicle',        7, True, False, (0, 60, 100)),
    ('caravan',              29, 255, 'vehicle',       7, True, True, (0, 0, 90)),
    ('trailer',              30, 255, 'vehicle',       7, True, True, (0, 0, 110)),
    ('train',                31, 16, 'vehicle',        7, True, False, (0, 80, 100)),
    ('motorcycle',           32, 17, 'vehicle',        7, True, False, (0, 0, 230)),
    ('bicycle',              33, 18, 'vehicle',        7, True, False, (119, 11, 32)),
    ('license plate',        -1, -1, 'vehicle',        7, False, True, (0, 0, 142)),
))

NAME_TO_LABEL: dict[str, Label] = {l.name: l for l in LABELS}
ID_TO_LABEL: dict[int, Label] = {l.id: l for l in LABELS}

# The 19 evaluated classes in train-id order.
_TRAIN_LABELS = sorted((l for l in LABELS if 0 <= l.train_id < IGNORE),
                       key=lambda l: l.train_id)
CLASS_NAMES: tuple[str, ...] = tuple(l.name for l in _TRAIN_LABELS)
PALETTE: np.ndarray = np.array([l.color for l in _TRAIN_LABELS], np.uint8)  # [19, 3]
PALETTE.flags.writeable = False

# [256] uint8: label id -> train id (IGNORE for void and not-evaluated ids).
ID_TO_TRAIN_ID: np.ndarray = np.full(256, IGNORE, np.uint8)
for _l in LABELS:
  if _l.id >= 0:
    ID_TO_TRAIN_ID[_l.id] = _l.train_id if 0 <= _l.train_id < IGNORE else IGNORE
ID_TO_TRAIN_ID.flags.writeable = False

# [19] uint8: train id -> label id.
TRAIN_ID_TO_ID: np.ndarray = np.array([l.id for l in _TRAIN_LABELS], np.uint8)
TRAIN_ID_TO_ID.flags.writeable = False

# Train ids of the classes with instances (person, rider, car, truck, bus, train,
# motorcycle, bicycle).
THING_TRAIN_IDS: tuple[int, ...] = tuple(l.train_id for l in _TRAIN_LABELS
                                         if l.has_instances)

assert len(CLASS_NAMES) == NUM_CLASSES


def has_label(given: np.ndarray) -> np.ndarray:
  """Which pixels carry a label: [...] class ids not `IGNORE`, or for a
  partial-label mask [..., C] bool, any class allowed."""
  given = np.asarray(given)
  return given.any(-1) if given.dtype == bool else given != IGNORE


def train_id(name: str) -> int:
  """The train id of a class by its official name, e.g. `train_id('car') == 13`."""
  return NAME_TO_LABEL[name].train_id


def label_id(name: str) -> int:
  """The label id of a class by its official name, e.g. `label_id('car') == 26`."""
  return NAME_TO_LABEL[name].id


def colorize(label: np.ndarray) -> np.ndarray:
  """Paints a train-id map with the Cityscapes palette.

  Args:
    label: [H, W] uint8 train ids; IGNORE (and any id >= 19) paints black.

  Returns:
    [H, W, 3] uint8 colours.
  """
  lut = np.zeros((256, 3), np.uint8)
  lut[:NUM_CLASSES] = PALETTE
  return lut[np.asarray(label, np.uint8)]


def resize_nearest(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Nearest-neighbour resize that never mixes ids (labels, instance maps).

  Output pixel (i, j) takes source pixel (floor((i + 0.5) H / h), floor((j + 0.5) W / w)),
  the pixel under its centre; for an integer factor f that is `values[f//2::f, f//2::f]`.

  Args:
    values: [H, W] any dtype.
    size: (h, w) output size.

  Returns:
    [h, w], same dtype.
  """
  (big_h, big_w), (h, w) = values.shape[:2], size
  rows = np.minimum(((np.arange(h) + 0.5) * big_h / h).astype(np.int64), big_h - 1)
  cols = np.minimum(((np.arange(w) + 0.5) * big_w / w).astype(np.int64), big_w - 1)
  return values[rows[:, None], cols[None, :]]
