"""People, bicycles and street furniture for the procedural scenes.

Painters for person, rider (on a bicycle or motorcycle), parked bicycle, pole
(with traffic sign / traffic light), tree and litter bin. Like the vehicles they
work in object-local metres (`u` right of the foot point, `v` above ground).
Thin parts are kept at least one pixel wide so they exist at every resolution,
which makes them thin, not absent. Persons and riders share one clothing
palette: a rider differs by posture and by the bike under it.
"""

import numpy as np

from segal_jax.data import _scenes_draw as draw
from segal_jax.data import _scenes_vehicles as vehicles

CLOTHES = np.array([
    (0.08, 0.08, 0.10), (0.20, 0.22, 0.30), (0.45, 0.42, 0.38), (0.70, 0.68, 0.65),
    (0.55, 0.12, 0.12), (0.15, 0.30, 0.50), (0.30, 0.35, 0.20), (0.60, 0.50, 0.30)],
    np.float32)
SKIN = np.array([(0.85, 0.65, 0.52), (0.62, 0.44, 0.32), (0.38, 0.26, 0.20)], np.float32)
POLE_PAINT = np.array([(0.45, 0.45, 0.46), (0.30, 0.31, 0.30), (0.20, 0.25, 0.22)], np.float32)
SIGN_FACES = np.array([(0.78, 0.10, 0.10), (0.10, 0.25, 0.65), (0.88, 0.76, 0.12),
                       (0.85, 0.85, 0.85)], np.float32)
LAMPS = np.array([(1.0, 0.15, 0.1), (1.0, 0.7, 0.1), (0.2, 1.0, 0.5)], np.float32)
FOLIAGE = np.array((0.22, 0.32, 0.10), np.float32)
BARK = np.array((0.28, 0.22, 0.16), np.float32)

PERSON, RIDER, BICYCLE, MOTORCYCLE = 24, 25, 33, 32
POLE, LIGHT, SIGN, VEGETATION, STATIC = 17, 19, 20, 21, 4


def _colours(rng, spread):
  top, legs = rng.choice(len(CLOTHES), 2)
  return (draw.jitter(rng, CLOTHES[top], spread), draw.jitter(rng, CLOTHES[legs], spread),
          draw.jitter(rng, SKIN[rng.integers(len(SKIN))], spread / 2))


def person(cv, rng, x_m, z_m, side, inst, spread):
  """A standing or walking pedestrian, seen from the front/back or the side."""
  height = rng.uniform(1.5, 1.95)
  fr = cv.frame(x_m, z_m, 0.4, height)
  if fr is None:
    return
  y0, x0, u, v, s = fr
  top, legs, skin = _colours(rng, spread)
  px = 1.0 / s
  hip, shoulder = 0.48 * height, 0.82 * height
  if side:
    stride = rng.uniform(0.0, 0.35)
    leg = (draw.segment(v, u, (0.0, hip), (stride, 0.0), max(0.15, px)) |
           draw.segment(v, u, (0.0, hip), (-stride, 0.0), max(0.15, px)))
    torso = (np.abs(u) < max(0.13, px)) & (v >= hip) & (v < shoulder)
  else:
    leg = (np.abs(np.abs(u) - 0.09) < max(0.07, px / 2)) & (v < hip)
    torso = (np.abs(u) < max(0.2, px)) & (v >= hip) & (v < shoulder)
    torso |= (np.abs(np.abs(u) - 0.23) < max(0.04, px / 2)) & (v > hip) & (v < shoulder)
  head = draw.ellipse(v, u, height - 0.12, 0.0, 0.12, 0.095)
  cv.paint(y0, x0, leg, legs, inst, fine=0.1)
  cv.paint(y0, x0, torso, top, inst, fine=0.1)
  cv.paint(y0, x0, head, skin, inst, fine=0.05, shade=1.0 - 0.5 * (v > height - 0.08))


def _bicycle_masks(u, v, s, side):
  px = 1.0 / s
  if not side:
    wheel = (np.abs(u) < max(0.03, px / 2)) & (v < 0.68)
    frame = ((np.abs(u) < max(0.03, px / 2)) & (v > 0.3) & (v < 1.0)) | \
            ((np.abs(u) < 0.3) & (np.abs(v - 1.0) < max(0.025, px / 2)))
    return wheel, frame
  r, t = 0.34, max(0.05, px)
  wheel = draw.ring(v, u, r, -0.52, r, t) | draw.ring(v, u, r, 0.52, r, t)
  pts = {'R': (-0.52, r), 'F': (0.52, r), 'B': (-0.05, 0.3), 'S': (-0.2, 0.92),
         'H': (0.38, 0.95), 'T': (0.32, 1.08)}
  frame = np.zeros(u.shape, bool)
  for a, b in ('RB', 'RS', 'BS', 'SH', 'BH', 'HF', 'HT'):
    frame |= draw.segment(v, u, pts[a], pts[b], max(0.045, px))
  return wheel, frame


def bicycle(cv, rng, x_m, z_m, side, inst, spread, direction=1):
  """A bicycle: thin rings and a thin frame, facing +u if direction is 1."""
  fr = cv.frame(x_m, z_m, 0.9, 1.15)
  if fr is None:
    return
  y0, x0, u, v, s = fr
  u = u * direction
  wheel, frame = _bicycle_masks(u, v, s, side)
  paint = draw.jitter(rng, CLOTHES[rng.integers(len(CLOTHES))], spread)
  cv.paint(y0, x0, wheel, vehicles.TYRE, inst, fine=0.2)
  cv.paint(y0, x0, frame, paint, inst, fine=0.1)


def rider(cv, rng, x_m, z_m, side, rider_inst, bike_inst, motor, spread):
  """A rider on a bicycle (`motor=False`) or a motorcycle: two instances."""
  direction = 1 if rng.random() < 0.5 else -1
  if motor:
    vehicles.motorcycle(cv, rng, x_m, z_m, side,
                        vehicles.pick_paint(rng, 'motorcycle', spread), bike_inst, direction)
  else:
    bicycle(cv, rng, x_m, z_m, side, bike_inst, spread, direction)
  fr = cv.frame(x_m, z_m, 0.9, 1.9)
  if fr is None:
    return
  y0, x0, u, v, s = fr
  px = 1.0 / s
  top, legs, skin = _colours(rng, spread)
  seat = 0.82 if motor else 0.95
  if motor:
    skin = draw.jitter(rng, CLOTHES[rng.integers(len(CLOTHES))], spread)  # helmet
  if side:
    u = u * direction
    hip, knee, foot = (-0.15, seat + 0.05), (0.15, seat - 0.25), (0.0, 0.3)
    shoulder, hand = (0.05 if motor else 0.12, seat + 0.6), (0.4, seat + 0.15)
    body = draw.segment(v, u, hip, shoulder, 0.32)
    arm = draw.segment(v, u, shoulder, hand, max(0.09, px))
    leg = draw.segment(v, u, hip, knee, max(0.15, px)) | draw.segment(v, u, knee, foot,
                                                                       max(0.12, px))
    head = draw.ellipse(v, u, shoulder[1] + 0.18, shoulder[0] + 0.05, 0.12, 0.11)
  else:
    body = (np.abs(u) < 0.2) & (v > seat) & (v < seat + 0.58)
    arm = (np.abs(np.abs(u) - 0.24) < max(0.04, px / 2)) & (v > seat + 0.1) & (v < seat + 0.5)
    leg = (np.abs(np.abs(u) - 0.13) < max(0.065, px / 2)) & (v > 0.3) & (v <= seat)
    head = draw.ellipse(v, u, seat + 0.72, 0.0, 0.12, 0.1)
  cv.paint(y0, x0, leg, legs, rider_inst, fine=0.1)
  cv.paint(y0, x0, body | arm, top, rider_inst, fine=0.1)
  cv.paint(y0, x0, head, skin, rider_inst, fine=0.05)


def pole(cv, rng, x_m, z_m, toward_road, p_sign, p_light, p_arm):
  """A pole, maybe carrying a traffic sign, a traffic light or an arm over the road.

  Args:
    toward_road: +1 if the road lies to the right of the pole, else -1.
  """
  height = rng.uniform(3.5, 8.0)
  arm = rng.random() < p_arm
  reach = rng.uniform(2.0, 4.5) if arm else 0.6
  fr = cv.frame(x_m, z_m, reach + 0.6, height + 0.5)
  if fr is None:
    return
  y0, x0, u, v, s = fr
  u = u * toward_road
  px = 1.0 / s
  paint = draw.jitter(rng, POLE_PAINT[rng.integers(len(POLE_PAINT))], 0.1)
  mast = (np.abs(u) < max(rng.uniform(0.06, 0.13), px / 2)) & (v < height)
  if arm:
    mast |= (u > 0) & (u < reach) & (np.abs(v - height + 0.3) < max(0.06, px / 2))
  cv.paint(y0, x0, mast, paint, POLE, fine=0.05, shade=1.0 - 0.3 * (u > 0))
  if arm and rng.random() < p_light / (p_light + 0.2):
    _light(cv, y0, x0, u - reach + 0.1, v - (height - 1.3), px, rng)
  elif rng.random() < p_light:
    _light(cv, y0, x0, u - 0.3, v - rng.uniform(2.2, 3.2), px, rng)
  if rng.random() < p_sign:
    _sign(cv, y0, x0, u - rng.choice([0.0, 0.35]), v - rng.uniform(2.0, 3.0), px, rng)


def _light(cv, y0, x0, u, v, px, rng):
  """A traffic light housing (0.34 x 0.95 m, lower edge at v=0) with one lit lamp."""
  housing = (np.abs(u) < max(0.17, px / 2)) & (v > 0) & (v < 0.95)
  dark = rng.random() < 0.75
  cv.paint(y0, x0, housing, (0.1, 0.1, 0.09) if dark else (0.55, 0.48, 0.12), LIGHT, fine=0.1)
  k = rng.integers(3)
  lamp = draw.ellipse(v, u, 0.78 - 0.31 * k, 0.0, 0.1, 0.1)
  cv.paint(y0, x0, lamp, LAMPS[k], LIGHT, fine=0.05)


def _sign(cv, y0, x0, u, v, px, rng):
  """A traffic sign (disc, triangle, rectangle or back side) centred at u=0, v=0."""
  r = rng.uniform(0.28, 0.42)
  shape = rng.integers(4)
  if shape == 0:
    plate = draw.ellipse(v, u, 0.0, 0.0, r, r)
  elif shape == 1:
    plate = (v > -r) & (v < r * 0.9) & (np.abs(u) < (r * 0.9 - v) * 0.62)
  else:
    plate = (np.abs(u) < max(r * (1.3 if shape == 2 else 0.8), px / 2)) & (np.abs(v) < r)
  back = rng.random() < 0.25
  face = POLE_PAINT[0] * 1.1 if back else SIGN_FACES[rng.integers(len(SIGN_FACES))]
  cv.paint(y0, x0, plate, face, SIGN, fine=0.05)
  if not back and rng.random() < 0.6:
    inner = plate & (u ** 2 + v ** 2 < (0.6 * r) ** 2)
    cv.paint(y0, x0, inner, SIGN_FACES[3], SIGN, fine=0.05)


def tree(cv, rng, x_m, z_m, spread, texture):
  """A street tree: trunk and a ragged, textured canopy (all vegetation)."""
  crown_v, ry, rx = rng.uniform(3.5, 6.5), rng.uniform(1.4, 3.0), rng.uniform(1.2, 3.0)
  fr = cv.frame(x_m, z_m, rx + 0.5, crown_v + ry + 0.5)
  if fr is None:
    return
  y0, x0, u, v, s = fr
  trunk = (np.abs(u) < max(0.15, 0.5 / s)) & (v < crown_v)
  h, w = u.shape
  rough = cv.blotch[y0:y0 + h, x0:x0 + w] * 0.25 + cv.fine[y0:y0 + h, x0:x0 + w] * 0.1
  crown = ((v - crown_v) / ry) ** 2 + (u / rx) ** 2 + rough < 1.0
  cv.paint(y0, x0, trunk, draw.jitter(rng, BARK, spread), VEGETATION, fine=0.15)
  leaf = draw.jitter(rng, FOLIAGE, spread)
  clumps = np.sin(u * 5.1 + v * 2.3) * np.sin(v * 4.7 - u * 1.9)
  cv.paint(y0, x0, crown, leaf, VEGETATION, fine=0.35, blotch=0.15,
           shade=1.0 + 0.25 * texture * clumps)


def litter_bin(cv, rng, x_m, z_m):
  """A bin or box on the sidewalk: void ('static'), ignored in evaluation."""
  fr = cv.frame(x_m, z_m, 0.4, 1.1)
  if fr is None:
    return
  y0, x0, u, v, s = fr
  body = (np.abs(u) < 0.3) & (v < rng.uniform(0.8, 1.1))
  cv.paint(y0, x0, body, draw.jitter(rng, POLE_PAINT[rng.integers(3)], 0.2), STATIC, fine=0.1)
