"""Procedural street scenes in the Cityscapes label space (pure NumPy).

`render_scene(rng, height, width)` draws one random street seen from a car: sky,
road, sidewalks, facades, and depth-sorted objects painted far to near (the
painter's algorithm gives occlusion), then lighting, sensor noise and blur.
Things (person, rider, car, truck, bus, train, motorcycle, bicycle) are separate
instances `label_id * 1000 + k`; stuff pixels carry their label id; a little
void (bins, the ego vehicle's bonnet) maps to the ignore label.

The module constants below are the difficulty knobs; `render_scene` reads them
at call time, so they can be tuned by assignment or, for one call, with
`knobs(NAME=value, ...)`.
"""

import contextlib

import numpy as np

from segal_jax.data import _scenes_background as background
from segal_jax.data import _scenes_draw as draw
from segal_jax.data import _scenes_street as street
from segal_jax.data import _scenes_vehicles as vehicles
from segal_jax.data import labels

# Appearance difficulty.
TEXTURE = 1.0          # contrast of all textures (the main cue between confusable classes)
COLOR_JITTER = 0.12    # per-object colour spread
CONFUSION = 0.6        # 0: confusable classes keep their own colour; 1: share their partner's
PIXEL_NOISE = 0.035    # sensor noise std (image in [0, 1])
BLUR = 0.5             # weight of the 3x3 blur mixed into the image (0 = sharp)
GAIN_RANGE = (0.55, 1.35)  # global exposure
CAST_STD = 0.07        # per-channel colour cast
UNEVEN_LIGHT = 0.15    # amplitude of smooth illumination changes across the image
SHADOW_PROB = 0.5      # chance of a large cast shadow across the street

# Content: expected counts per image, and the chance an image holds a rare class.
MEAN_CARS = 5.0
MEAN_PERSONS = 3.5
MEAN_POLES = 5.0
MEAN_BINS = 0.6
P_TRUCK = 0.12
P_BUS = 0.08
P_TRAIN = 0.05
P_MOTORCYCLE = 0.1
P_CYCLIST = 0.15
P_PARKED_BICYCLES = 0.3
P_TREES = 0.45         # per side: a row of street trees
P_SIGN, P_LIGHT, P_ARM = 0.55, 0.3, 0.15   # per pole
P_EGO = 0.3            # the bonnet of the ego car at the bottom (void)
MAX_OBJECT_DEPTH = np.inf  # metres: objects stand no farther (larger objects when lower)

_KNOBS = ('TEXTURE', 'COLOR_JITTER', 'CONFUSION', 'PIXEL_NOISE', 'BLUR', 'GAIN_RANGE',
          'CAST_STD', 'UNEVEN_LIGHT', 'SHADOW_PROB', 'MEAN_CARS', 'MEAN_PERSONS',
          'MEAN_POLES', 'MEAN_BINS', 'P_TRUCK', 'P_BUS', 'P_TRAIN', 'P_MOTORCYCLE',
          'P_CYCLIST', 'P_PARKED_BICYCLES', 'P_TREES', 'P_SIGN', 'P_LIGHT', 'P_ARM',
          'P_EGO', 'MAX_OBJECT_DEPTH')


@contextlib.contextmanager
def knobs(**values):
  """Sets difficulty knobs (module constants) for the duration of a `with` block.

  Raises:
    KeyError: a name that is not a knob.
  """
  unknown = sorted(set(values) - set(_KNOBS))
  if unknown:
    raise KeyError(f'not scene knobs: {unknown}')
  saved = {name: globals()[name] for name in values}
  globals().update(values)
  try:
    yield
  finally:
    globals().update(saved)


def _log_uniform(rng, lo, hi, size=None):
  """Depths spread evenly in log depth; hi is raised to lo on very short images."""
  return np.exp(rng.uniform(np.log(lo), np.log(max(hi, lo)), size))


class _Placement:
  """What placing a scene's objects shares: the canvas, the generator, the
  street, the depth range and colour spread; `items` collects the
  [(depth, painter)] of every object.

  `x` is the across-street position last drawn for any object. Parked
  bicycles are painted there, not at their own rack: a quirk of the
  generator that the synthetic data sets were built with, kept so that they
  stay the same.
  """

  def __init__(self, cv, rng, st, z_near: float):
    self.cv, self.rng, self.st = cv, rng, st
    self.z_near, self.z_far = z_near, min(st.z_end * 0.95, MAX_OBJECT_DEPTH)
    self.spread = COLOR_JITTER
    self.items = []
    self.x = None

  def lane(self) -> float:
    return self.rng.uniform(self.st.road[0] + 1.2, self.st.road[1] - 1.2)

  def walk(self, side) -> float:
    st = self.st
    return (self.rng.uniform(st.facade[0] + 0.5, st.road[0] - 0.6) if side == 0
            else self.rng.uniform(st.road[1] + 0.6, st.facade[1] - 0.5))

  def depth(self, near: float, far: float) -> float:
    return _log_uniform(self.rng, near, far)

  def vehicle(self, name, x, z, side) -> None:
    cv, rng = self.cv, self.rng
    paint = vehicles.pick_paint(rng, name, self.spread)
    inst = cv.new_instance(vehicles.LABEL_IDS[name])
    self.items.append((z, lambda: vehicles.PAINTERS[name](cv, rng, x, z, side, paint, inst)))


def _place_objects(cv, rng, st, z_near):
  """Returns [(depth, painter)] for every object of the scene, unsorted."""
  p = _Placement(cv, rng, st, z_near)
  _place_vehicles(p)
  _place_people(p)
  _place_street_furniture(p)
  return p.items


def _place_vehicles(p: _Placement) -> None:
  """Cars (parked, driving, crossing) and the odd truck, bus or train."""
  rng, st = p.rng, p.st
  for _ in range(rng.poisson(MEAN_CARS)):
    parked = rng.random() < 0.5
    p.x = (st.road[rng.integers(2)] * 0.75 if parked else p.lane())
    p.vehicle('car', p.x, p.depth(p.z_near, p.z_far), False)
  cross_z = None if st.cross is None else (st.cross[0] + st.cross[1]) / 2
  if cross_z is not None:
    for _ in range(rng.poisson(1.0)):
      p.vehicle('car', rng.uniform(st.facade[0], st.facade[1]), cross_z + rng.uniform(-3, 3),
                True)
  for name, prob in (('truck', P_TRUCK), ('bus', P_BUS), ('train', P_TRAIN)):
    if rng.random() < prob:
      side_view = cross_z is not None and rng.random() < 0.5
      z = cross_z if side_view else p.depth(p.z_near * 1.3, p.z_far)
      p.x = rng.uniform(-6, 6) if side_view else (
          (st.road[0] + st.road[1]) / 2 if name == 'train' else p.lane())
      p.vehicle(name, p.x, z, side_view)


def _place_people(p: _Placement) -> None:
  """Pedestrians, cyclists and motorcyclists (some motorcycles parked)."""
  cv, rng, st, spread = p.cv, p.rng, p.st, p.spread
  for _ in range(rng.poisson(MEAN_PERSONS)):
    crossing = rng.random() < 0.15
    x = p.x = p.lane() if crossing else p.walk(rng.integers(2))
    z = p.depth(p.z_near * 0.9, p.z_far)
    inst = cv.new_instance(street.PERSON)
    p.items.append((z, lambda x=x, z=z, c=crossing, i=inst:
                    street.person(cv, rng, x, z, c or rng.random() < 0.3, i, spread)))
  riders = [(False, rng.random() < P_CYCLIST), (True, rng.random() < P_MOTORCYCLE)]
  for motor, present in riders:
    for _ in range(rng.integers(1, 3) if present else 0):
      x = p.x = st.road[rng.integers(2)] * rng.uniform(0.6, 0.85)
      z = p.depth(p.z_near, p.z_far)
      side_view = rng.random() < (0.5 if motor else 0.25)
      if motor and rng.random() < 0.2:  # parked, no rider
        p.vehicle('motorcycle', p.walk(rng.integers(2)), z, True)
        continue
      r_inst = cv.new_instance(street.RIDER)
      b_inst = cv.new_instance(street.MOTORCYCLE if motor else street.BICYCLE)
      p.items.append((z, lambda x=x, z=z, s=side_view, r=r_inst, b=b_inst, m=motor:
                      street.rider(cv, rng, x, z, s, r, b, m, spread)))


def _place_street_furniture(p: _Placement) -> None:
  """Parked bicycles, poles (signs, lights), rows of trees and litter bins."""
  cv, rng, st, spread = p.cv, p.rng, p.st, p.spread
  z_near, z_far = p.z_near, p.z_far
  if rng.random() < P_PARKED_BICYCLES:
    side, z0 = rng.integers(2), p.depth(z_near, z_far / 2)
    p.x = st.facade[side] + (0.8 if side == 0 else -0.8)
    for k in range(rng.integers(1, 5)):
      inst = cv.new_instance(street.BICYCLE)
      z = z0 + 0.7 * k
      # At `p.x` when painted: the last object's position (see `_Placement`).
      p.items.append((z, lambda z=z, i=inst: street.bicycle(cv, rng, p.x, z, True, i, spread)))
  for _ in range(rng.poisson(MEAN_POLES)):
    side = rng.integers(2)
    x = p.x = st.road[side] + (-0.5 if side == 0 else 0.5)
    z = p.depth(z_near, z_far)
    p.items.append((z, lambda x=x, z=z, d=1 if side == 0 else -1:
                    street.pole(cv, rng, x, z, d, P_SIGN, P_LIGHT, P_ARM)))
  for side in range(2):
    if rng.random() < P_TREES:
      x = p.x = st.road[side] + (-1.0 if side == 0 else 1.0)
      gap = rng.uniform(7, 14)
      for z in np.arange(rng.uniform(z_near, z_near + gap), z_far, gap):
        p.items.append((z, lambda x=x, z=z: street.tree(cv, rng, x, z, spread, TEXTURE)))
  for _ in range(rng.poisson(MEAN_BINS)):
    x = p.x = p.walk(rng.integers(2))
    z = p.depth(z_near, z_far / 2)
    p.items.append((z, lambda x=x, z=z: street.litter_bin(cv, rng, x, z)))


def _ego_vehicle(cv, rng):
  """The bonnet of the recording car: a dark band bulging up at the bottom (void)."""
  h, w = cv.height, cv.width
  c = cv.crop(h * 0.88, h, 0, w)
  y0, x0, ys, xs = c
  bulge = h * rng.uniform(0.04, 0.1) * (1 - ((xs - w / 2) / (w * 0.7)) ** 2)
  cv.paint(y0, x0, ys > h - bulge, (0.08, 0.08, 0.09), 1, fine=0.05,
           shade=1.0 + 0.5 * (ys < h - bulge + 1.5))


def _finish(cv, rng):
  """Lighting, sensor noise and blur; returns the uint8 image."""
  img = cv.img
  h, w = cv.height, cv.width
  gain = rng.uniform(*GAIN_RANGE) * (1 + rng.normal(0, CAST_STD, 3))
  light = 1 + UNEVEN_LIGHT * draw.smooth_noise(rng, h, w, max(h, w) / 3)
  img *= (gain.astype(np.float32) * light[..., None])
  img += PIXEL_NOISE * rng.standard_normal(img.shape, dtype=np.float32)
  if BLUR > 0:
    pad = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode='edge')
    rows = (pad[:-2] + pad[1:-1] + pad[2:]) / 3
    box = (rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]) / 3
    img = (1 - BLUR) * img + BLUR * box
  gamma = rng.uniform(0.85, 1.15)
  return (np.clip(img, 0, 1) ** gamma * 255 + 0.5).astype(np.uint8)


def _compact_instances(ids):
  """Renumbers thing ids so k runs 0..n-1 per class over the visible instances."""
  thing = ids >= 1000
  if not thing.any():
    return ids
  uniq, inverse = np.unique(ids[thing], return_inverse=True)
  cls = uniq // 1000
  first = np.searchsorted(uniq, cls * 1000)  # index of the class's first id in uniq
  out = ids.copy()
  out[thing] = (cls * 1000 + np.arange(uniq.size) - first)[inverse.ravel()]
  return out


def render_scene(rng: np.random.Generator, height: int, width: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Renders one random street scene.

  Args:
    rng: the scene's generator (fully determines the scene).
    height, width: image size in pixels.

  Returns:
    image: [height, width, 3] uint8.
    label: [height, width] uint8 train ids, 255 = ignore.
    instance: [height, width] int32 Cityscapes instance ids (label id for stuff,
      label_id * 1000 + k for things, 0 for unlabeled).
  """
  cv = draw.Canvas(
      img=np.zeros((height, width, 3), np.float32),
      ids=np.zeros((height, width), np.int32),
      fine=rng.standard_normal((height, width), dtype=np.float32),
      blotch=draw.smooth_noise(rng, height, width, max(height, width) / 24),
      f=width * rng.uniform(0.85, 1.1), y_h=height * rng.uniform(0.34, 0.46),
      x_v=width * rng.uniform(0.38, 0.62), cam_h=rng.uniform(1.3, 1.7), texture=TEXTURE)
  st = background.make_street(rng, COLOR_JITTER, CONFUSION)
  background.paint_sky(cv, rng)
  background.paint_ground(cv, rng, st, COLOR_JITTER, CONFUSION, SHADOW_PROB)
  background.paint_facades(cv, rng, st, COLOR_JITTER, CONFUSION)
  z_near = cv.f * cv.cam_h / (height - cv.y_h)  # depth of the bottom image row
  items = _place_objects(cv, rng, st, z_near * 0.9)
  for _, paint in sorted(items, key=lambda item: -item[0]):
    paint()
  if rng.random() < P_EGO:
    _ego_vehicle(cv, rng)
  image = _finish(cv, rng)
  instance = _compact_instances(cv.ids)
  label_ids = np.where(instance >= 1000, instance // 1000, instance)
  return image, labels.ID_TO_TRAIN_ID[label_ids], instance
