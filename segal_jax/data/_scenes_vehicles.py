"""Vehicles for the procedural street scenes: car, truck, bus, train, motorcycle.

Each painter draws one instance standing on the ground at lateral offset `x_m`
and depth `z_m` (metres), seen from behind/in front (`side=False`, driving along
the street) or from the side (`side=True`, crossing the street). Shapes are
written in object-local metres (`u` to the right of the centre, `v` above the
ground) so they look the same at every resolution. Cars, trucks, buses and
trains share one paint palette: they differ by size, proportions, windows and
wheels, not by colour.
"""

import numpy as np

from segal_jax.data import _scenes_draw as draw
from segal_jax.data import labels

# Paint shared by all vehicle classes, with per-class preferences (weights).
VEHICLE_PAINT = np.array([
    (0.07, 0.07, 0.08), (0.82, 0.82, 0.80), (0.58, 0.59, 0.61), (0.33, 0.34, 0.36),
    (0.10, 0.14, 0.33), (0.58, 0.10, 0.09), (0.20, 0.34, 0.58), (0.14, 0.30, 0.20),
    (0.75, 0.62, 0.18)], np.float32)
_PAINT_WEIGHTS = {
    'car': (4, 3, 3, 3, 2, 2, 2, 1, 1),
    'truck': (1, 5, 3, 2, 1, 2, 2, 1, 1),
    'bus': (1, 4, 1, 1, 1, 3, 2, 1, 3),
    'train': (1, 4, 2, 1, 1, 3, 2, 1, 2),
    'motorcycle': (5, 1, 2, 2, 1, 2, 1, 0, 0),
}
GLASS = np.array((0.10, 0.12, 0.15), np.float32)
TYRE = np.array((0.05, 0.05, 0.05), np.float32)


def pick_paint(rng: np.random.Generator, name: str, spread: float) -> np.ndarray:
  """A body colour for a vehicle class: [3] float32."""
  w = np.asarray(_PAINT_WEIGHTS[name], np.float64)
  return draw.jitter(rng, VEHICLE_PAINT[rng.choice(len(w), p=w / w.sum())], spread)


def _ground_shadow(cv, fr, half_w):
  y0, x0, u, v, s = fr
  cv.darken(y0, x0, (np.abs(u) < half_w * 1.1) & (v < 0.12) & (v > -0.25), 0.45)


def _box_frame(cv, rng, at, side, sizes):
  """(frame, half extent across the view, height) of a box-shaped vehicle at
  `at` (x, z metres) whose (length, width, height) are drawn uniformly from
  `sizes` ((low, high) each, in that order), its ground shadow painted; None
  when it is out of view."""
  length, width, height = (rng.uniform(low, high) for low, high in sizes)
  half = (length if side else width) / 2
  fr = cv.frame(*at, half, height)
  if fr is None:
    return None
  _ground_shadow(cv, fr, half)
  return fr, half, height


def car(cv, rng, x_m, z_m, side, paint, inst):
  """A car: lower body, narrower cabin with glass, wheels, lights."""
  box = _box_frame(cv, rng, (x_m, z_m), side, ((3.9, 4.8), (1.65, 1.9), (1.35, 1.6)))
  if box is None:
    return
  (y0, x0, u, v, s), half, height = box
  belt = height * rng.uniform(0.55, 0.65)
  if side:
    r = 0.33
    wheels = (((u + half * 0.62) ** 2 + (v - r) ** 2 <= r * r) |
              ((u - half * 0.62) ** 2 + (v - r) ** 2 <= r * r))
    body = (np.abs(u) < half) & (v > 0.22) & (v < belt)
    lean = (v - belt) / (height - belt)
    cabin = (v >= belt) & (v < height) & (u > -half * (0.55 - 0.25 * lean)) & \
            (u < half * (0.35 - 0.2 * lean))
    glass = cabin & (v > belt + 0.06) & (v < height - 0.07) & (np.abs(u - half * 0.1) > 0.05)
  else:
    wheels = (np.abs(u) < half * 0.95) & (np.abs(u) > half * 0.62) & (v < 0.35)
    body = (np.abs(u) < half) & (v >= 0.25) & (v < belt)
    taper = 0.1 + 0.15 * (v - belt) / (height - belt)
    cabin = (v >= belt) & (v < height) & (np.abs(u) < half - taper)
    glass = cabin & (v > belt + 0.06) & (v < height - 0.08) & (np.abs(u) < half - taper - 0.08)
  cv.paint(y0, x0, wheels, TYRE, inst, fine=0.2)
  cv.paint(y0, x0, body | cabin, paint, inst, fine=0.04, shade=1.0 - 0.25 * (v < 0.45))
  cv.paint(y0, x0, glass, GLASS, inst, fine=0.1, shade=1.0 + 0.6 * (v > height - 0.3))
  if not side:
    lamp = (np.abs(u) > half - 0.3) & (np.abs(u) < half - 0.05) & (np.abs(v - belt + 0.15) < 0.07)
    cv.paint(y0, x0, lamp, (0.8, 0.12, 0.1) if rng.random() < 0.7 else (0.95, 0.92, 0.8), inst)


def truck(cv, rng, x_m, z_m, side, paint, inst):
  """A truck: tall plain cargo box, a cab (seen from the side), dual wheels."""
  box = _box_frame(cv, rng, (x_m, z_m), side, ((6.5, 10.0), (2.3, 2.55), (2.9, 3.8)))
  if box is None:
    return
  (y0, x0, u, v, s), half, height = box
  box_paint = paint if rng.random() < 0.5 else draw.jitter(rng, VEHICLE_PAINT[1], 0.08)
  if side:
    r = 0.48
    centres = (-half * 0.8, half * 0.35, half * 0.6)
    wheels = np.zeros(u.shape, bool)
    for c in centres:
      wheels |= (u - c) ** 2 + (v - r) ** 2 <= r * r
    cab_len = 2.2
    direction = 1 if rng.random() < 0.5 else -1
    cab_u = direction * u  # cab at the positive end
    cab = (cab_u > half - cab_len) & (cab_u < half) & (v > 0.5) & (v < height * 0.8)
    cargo = (cab_u <= half - cab_len - 0.15) & (cab_u > -half) & (v > 0.9) & (v < height)
    chassis = (np.abs(u) < half) & (v > 0.55) & (v < 0.95)
    glass = cab & (cab_u > half - cab_len * 0.55) & (v > height * 0.45) & (v < height * 0.72)
    cv.paint(y0, x0, wheels | chassis, TYRE, inst, fine=0.2)
    cv.paint(y0, x0, cab, paint, inst, fine=0.04)
    cv.paint(y0, x0, cargo, box_paint, inst, fine=0.06, blotch=0.05)
    cv.paint(y0, x0, glass, GLASS, inst, fine=0.1)
  else:
    wheels = (np.abs(u) < half * 0.95) & (np.abs(u) > half * 0.35) & (v < 0.6)
    cargo = (np.abs(u) < half) & (v > 0.75) & (v < height)
    bumper = (np.abs(u) < half * 0.9) & (v >= 0.55) & (v <= 0.75)
    seam = cargo & (np.abs(u) < max(0.03, 0.5 / s))
    cv.paint(y0, x0, wheels | bumper, TYRE, inst, fine=0.2)
    cv.paint(y0, x0, cargo, box_paint, inst, fine=0.06, blotch=0.05,
             shade=1.0 - 0.1 * (np.abs(u) > half - 0.08))
    cv.paint(y0, x0, seam, box_paint * 0.6, inst)


def bus(cv, rng, x_m, z_m, side, paint, inst):
  """A bus: long box with a band of large windows, two axles."""
  box = _box_frame(cv, rng, (x_m, z_m), side, ((11.0, 13.0), (2.45, 2.6), (2.9, 3.3)))
  if box is None:
    return
  (y0, x0, u, v, s), half, height = box
  body = (np.abs(u) < half) & (v > 0.3) & (v < height)
  if side:
    r = 0.5
    wheels = (((u + half * 0.7) ** 2 + (v - r) ** 2 <= r * r) |
              ((u - half * 0.55) ** 2 + (v - r) ** 2 <= r * r))
    pane = rng.uniform(1.1, 1.5)
    glass = body & (v > 1.25) & (v < height - 0.35) & (np.mod(u, pane) > 0.12)
    door = body & (np.abs(u - half * 0.75) < 0.6) & (v < height - 0.35)
    glass |= door
  else:
    wheels = (np.abs(u) < half * 0.95) & (np.abs(u) > half * 0.6) & (v < 0.45)
    glass = body & (v > height * 0.55) & (v < height - 0.25) & (np.abs(u) < half - 0.15)
  cv.paint(y0, x0, wheels, TYRE, inst, fine=0.2)
  cv.paint(y0, x0, body, paint, inst, fine=0.05, blotch=0.04)
  cv.paint(y0, x0, glass, GLASS, inst, fine=0.1, shade=1.0 + 0.3 * (v > height - 0.8))


def train(cv, rng, x_m, z_m, side, paint, inst):
  """A tram: very long (side) or tall with a wide windscreen (front)."""
  length, width, height = rng.uniform(25.0, 40.0), 2.65, rng.uniform(3.4, 3.8)
  half = (length if side else width) / 2
  fr = cv.frame(x_m, z_m, half, height + 0.8)
  if fr is None:
    return
  y0, x0, u, v, s = fr
  body = (np.abs(u) < half) & (v > 0.45) & (v < height)
  skirt = (np.abs(u) < half) & (v <= 0.45) & (v > 0.05)
  mast = (np.abs(u) < max(0.04, 0.5 / s)) & (v >= height) & (v < height + 0.8)
  stripe = body & (np.abs(v - 0.9) < 0.15)
  if side:
    car_len = length / rng.integers(2, 4)
    joint = np.abs(np.mod(u + half, car_len)) < 0.25
    glass = body & (v > 1.4) & (v < height - 0.5) & (np.mod(u, 1.8) > 0.25) & ~joint
  else:
    glass = body & (v > 1.5) & (v < height - 0.3) & (np.abs(u) < half - 0.2)
  cv.paint(y0, x0, skirt | mast, TYRE, inst, fine=0.2)
  cv.paint(y0, x0, body, paint, inst, fine=0.05, blotch=0.04)
  cv.paint(y0, x0, stripe, paint * 0.55, inst, fine=0.05)
  cv.paint(y0, x0, glass, GLASS, inst, fine=0.1)


def motorcycle(cv, rng, x_m, z_m, side, paint, inst, direction=1):
  """A motorcycle: two thick wheels and a compact body, facing +u if direction is 1."""
  length, width = rng.uniform(1.9, 2.2), 0.75
  half = (length if side else width) / 2
  fr = cv.frame(x_m, z_m, half, 1.25)
  if fr is None:
    return
  y0, x0, u, v, s = fr
  u = u * direction
  if side:
    r = 0.31
    wheels = (((u + half - r) ** 2 + (v - r) ** 2 <= r * r) |
              ((u - half + r) ** 2 + (v - r) ** 2 <= r * r))
    body = ((u / (half * 0.6)) ** 2 + ((v - 0.62) / 0.22) ** 2 <= 1.0)
    bars = (np.abs(u - half * 0.55) < 0.06) & (v > 0.5) & (v < 1.1)
  else:
    wheels = (np.abs(u) < max(0.08, 0.5 / s)) & (v < 0.6)
    body = (np.abs(u) < half * 0.55) & (v >= 0.35) & (v < 0.85)
    bars = (np.abs(u) < half) & (np.abs(v - 1.0) < max(0.04, 0.5 / s))
  cv.paint(y0, x0, wheels, TYRE, inst, fine=0.2)
  cv.paint(y0, x0, body | bars, paint, inst, fine=0.08)


NAMES = ('car', 'truck', 'bus', 'train', 'motorcycle')
PAINTERS = {'car': car, 'truck': truck, 'bus': bus, 'train': train, 'motorcycle': motorcycle}
LABEL_IDS = {n: labels.label_id(n) for n in NAMES}
