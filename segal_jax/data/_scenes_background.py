"""The background of a procedural street: sky, ground plane, facades, far block.

A street runs away from the camera along +Z. Across it (X, metres, right
positive) lie the road, a sidewalk on each side (sometimes with a grass verge
at the curb), and a facade line on each side. Along each facade line the
street is cut into lots: building, building behind a wall, park (vegetation),
park behind a fence, or a gap. A block of buildings closes the street at
`z_end`; an optional cross street replaces sidewalks and lots by road over a
band of depths. Everything here is painted with whole-image NumPy masks.
"""

import dataclasses

import numpy as np

from segal_jax.data import _scenes_draw as draw
from segal_jax.data import _scenes_street as street_objects

SKY, ROAD, SIDEWALK, TERRAIN = 23, 7, 8, 22
BUILDING, WALL, FENCE, VEGETATION = 11, 12, 13, 21
LOT_BUILDING, LOT_PARK, LOT_WALL, LOT_FENCE, LOT_GAP = range(5)
LOT_PROBS = (0.58, 0.14, 0.09, 0.11, 0.08)

ROAD_COLOR = np.array((0.34, 0.32, 0.35), np.float32)
SIDEWALK_COLOR = np.array((0.60, 0.50, 0.54), np.float32)
BUILDING_COLORS = np.array([(0.45, 0.44, 0.42), (0.62, 0.55, 0.45), (0.55, 0.36, 0.30),
                            (0.72, 0.71, 0.68), (0.40, 0.42, 0.46)], np.float32)
WALL_COLOR = np.array((0.50, 0.52, 0.64), np.float32)
FENCE_COLOR = np.array((0.60, 0.48, 0.46), np.float32)
TERRAIN_COLOR = np.array((0.56, 0.58, 0.28), np.float32)
GLASS = np.array((0.16, 0.20, 0.26), np.float32)


def mix(own, other, amount):
  """Moves a class colour towards a confusable class's colour by `amount`."""
  return (1 - amount) * np.asarray(own, np.float32) + amount * np.asarray(other, np.float32)


@dataclasses.dataclass
class Street:
  """The layout of one scene (metres)."""
  road: tuple[float, float]          # X of the left and right curb
  facade: tuple[float, float]        # X of the left and right facade line
  verge: tuple[float, float]         # width of the grass verge at each curb (0 = none)
  z_end: float                       # depth of the block closing the street
  cross: tuple[float, float] | None  # depth band of a cross street
  lots: tuple[dict, dict]            # per side: edges [n+1] and per-lot arrays [n]


def make_street(rng: np.random.Generator, spread: float, confusion: float) -> Street:
  """Draws a random street layout."""
  road = (-rng.uniform(2.5, 6.0), rng.uniform(2.5, 6.0))
  walks = rng.uniform(1.8, 4.5, 2)
  facade = (road[0] - walks[0], road[1] + walks[1])
  verge = tuple(float(rng.uniform(0.8, 1.6)) if rng.random() < 0.25 else 0.0 for _ in range(2))
  z_end = float(np.exp(rng.uniform(np.log(35), np.log(160))))
  cross = None
  if rng.random() < 0.35:
    z0 = rng.uniform(10, max(12, z_end - 15))
    cross = (z0, z0 + rng.uniform(8, 14))
  lots = []
  for _ in range(2):
    edges = [0.5]
    while edges[-1] < z_end:
      edges.append(min(edges[-1] + rng.uniform(6, 28), z_end))
    n = len(edges) - 1
    kind = rng.choice(5, n, p=LOT_PROBS)
    mids = (np.array(edges[:-1]) + edges[1:]) / 2
    if cross is not None:
      kind[(mids > cross[0] - 3) & (mids < cross[1] + 3)] = LOT_GAP
    colors = BUILDING_COLORS[rng.integers(len(BUILDING_COLORS), size=n)]
    colors = np.stack([draw.jitter(rng, c, spread) for c in colors])
    height = np.where(np.isin(kind, (LOT_PARK, LOT_FENCE)), rng.uniform(4, 11, n),
                      rng.uniform(7, 30, n))
    low = np.where(kind == LOT_WALL, rng.uniform(1.5, 3.5, n), rng.uniform(1.0, 2.0, n))
    wall = np.stack([draw.jitter(rng, mix(WALL_COLOR, c, confusion), spread) for c in colors])
    lots.append(dict(edges=np.array(edges), kind=kind, height=height, low=low,
                     color=colors, wall=wall, pitch=rng.uniform(1.6, 3.5, n),
                     floor=rng.uniform(2.8, 3.6, n)))
  return Street(road, facade, verge, z_end, cross, tuple(lots))


def paint_sky(cv: draw.Canvas, rng: np.random.Generator) -> None:
  """Fills the canvas with sky: blue to overcast, lighter towards the horizon."""
  h = cv.height
  overcast = rng.uniform() ** 1.5
  zenith = mix((0.30, 0.48, 0.78), (0.70, 0.72, 0.75), overcast)
  horizon = mix((0.68, 0.78, 0.90), (0.85, 0.86, 0.86), overcast)
  t = np.clip((np.arange(h, dtype=np.float32) + 0.5) / max(cv.y_h, 1.0), 0, 1)[:, None, None]
  color = zenith * (1 - t) + horizon * t
  cv.paint(0, 0, np.ones((h, cv.width), bool), color, SKY, fine=0.01, blotch=0.06)


def paint_ground(cv: draw.Canvas, rng: np.random.Generator, st: Street, spread: float,
                 confusion: float, shadow_prob: float) -> None:
  """Road, sidewalks, verges and the ground behind the facades."""
  top = int(np.floor(cv.y_h)) + 1
  if top >= cv.height:
    return
  ys = np.arange(top, cv.height, dtype=np.float32)[:, None] + 0.5
  xs = np.arange(cv.width, dtype=np.float32)[None, :] + 0.5
  z = np.broadcast_to(cv.f * cv.cam_h / (ys - cv.y_h), (ys.size, xs.size))
  x = (xs - cv.x_v) * z / cv.f
  in_cross = np.zeros(z.shape, bool) if st.cross is None else (z > st.cross[0]) & (z < st.cross[1])
  road = ((x >= st.road[0]) & (x <= st.road[1])) | in_cross
  verge = ((x < st.road[0]) & (x > st.road[0] - st.verge[0])) | \
          ((x > st.road[1]) & (x < st.road[1] + st.verge[1]))
  behind = np.zeros(z.shape, bool)
  for side, lots in enumerate(st.lots):
    outside = x < st.facade[0] if side == 0 else x > st.facade[1]
    lot = np.clip(np.searchsorted(lots['edges'], z) - 1, 0, len(lots['kind']) - 1)
    behind |= outside & np.isin(lots['kind'][lot], (LOT_PARK, LOT_FENCE))
  terrain = (verge | behind) & ~road
  walk = ~road & ~terrain
  road_color = draw.jitter(rng, ROAD_COLOR, spread)
  mark = np.abs(x - (st.road[0] + st.road[1]) / 2) < 0.09
  mark &= (np.mod(z, 9.0) < 3.5) & (st.road[1] - st.road[0] > 7.5)
  for edge in st.road:
    mark |= np.abs(x - edge + np.sign(edge) * 0.35) < 0.08
  mark &= ~in_cross
  tiles = (np.mod(x, 0.6) < 0.05) | (np.mod(z, 0.6) < 0.05)
  curb = np.minimum(np.abs(x - st.road[0]), np.abs(x - st.road[1])) < 0.2
  walk_color = draw.jitter(rng, mix(SIDEWALK_COLOR, road_color, confusion), spread)
  terrain_color = draw.jitter(rng, mix(TERRAIN_COLOR, street_objects.FOLIAGE, confusion), spread)
  cv.paint(top, 0, road, road_color, ROAD, fine=0.12, blotch=0.08,
           shade=1.0 + 1.2 * mark)
  cv.paint(top, 0, walk, walk_color, SIDEWALK, fine=0.06, blotch=0.05,
           shade=1.0 - 0.15 * tiles + 0.2 * curb)
  cv.paint(top, 0, terrain, terrain_color, TERRAIN, fine=0.05, blotch=0.25)
  if rng.random() < shadow_prob:
    boundary = st.facade[0] + rng.uniform(0, st.facade[1] - st.facade[0]) + \
               rng.uniform(-0.1, 0.1) * z
    cv.darken(top, 0, x < boundary, rng.uniform(0.45, 0.75))


_LOT_FIELDS = ('kind', 'height', 'low', 'color', 'wall', 'pitch', 'floor')


def _facade_pixels(cv, rng, lot: dict, zcol, v, valid, spread, fence_color):
  """Paints one row of lots given per-column lot attributes.

  Args:
    lot: the per-column lot attributes (`_LOT_FIELDS`): 'kind', 'height',
      'low', 'pitch', 'floor' [1, W]; 'color', 'wall' [1, W, 3] building and
      wall colours.
    zcol: [1, W] depth along the facade of each column (for windows/slats).
    v: [H, W] height above ground of each pixel on the facade.
    valid: [1, W] columns covered by this facade.
  """
  kind, height, low, color, wall, pitch, floor = (lot[k] for k in _LOT_FIELDS)
  ragged = np.sin(zcol * 1.7) * 0.8 + np.sin(zcol * 4.3) * 0.4
  green = np.isin(kind, (LOT_PARK, LOT_FENCE))
  top = np.where(green, height + ragged, height)
  inside = valid & (kind != LOT_GAP) & (v >= 0) & (v < top)
  lower = v < low
  fence = inside & (kind == LOT_FENCE) & lower
  slat = (np.mod(zcol, 0.25) < 0.12) | (np.abs(v - low + 0.1) < 0.08) | (v < 0.15)
  vegetation = inside & green & ~(fence & slat)
  walls = inside & (kind == LOT_WALL) & lower
  building = inside & ~green & ~walls
  windows = building & (np.mod(zcol, pitch) > 0.3 * pitch) & (np.mod(zcol, pitch) < 0.75 * pitch)
  windows &= (np.mod(v, floor) > 0.35 * floor) & (np.mod(v, floor) < 0.85 * floor)
  windows &= (v > 3.2) & (v < top - 1.0)
  leaf = draw.jitter(rng, street_objects.FOLIAGE, spread)
  cv.paint(0, 0, building, color, BUILDING, fine=0.06, blotch=0.1)
  cv.paint(0, 0, windows, GLASS * rng.uniform(0.7, 1.4), BUILDING, fine=0.15)
  cv.paint(0, 0, walls, wall, WALL, fine=0.04, blotch=0.2,
           shade=1.0 - 0.1 * (np.mod(v, 0.5) < 0.06))
  clumps = np.sin(zcol * 3.1 + v * 1.3) * np.sin(v * 2.9 - zcol * 0.7)
  cv.paint(0, 0, vegetation, leaf, VEGETATION, fine=0.35, blotch=0.15,
           shade=1.0 + 0.25 * cv.texture * clumps)
  cv.paint(0, 0, fence & slat, fence_color, FENCE, fine=0.08)


def paint_facades(cv: draw.Canvas, rng: np.random.Generator, st: Street, spread: float,
                  confusion: float) -> None:
  """The block closing the street, then the lots along both facade lines."""
  ys = np.arange(cv.height, dtype=np.float32)[:, None] + 0.5
  xs = np.arange(cv.width, dtype=np.float32)[None, :] + 0.5
  fence_color = draw.jitter(rng, mix(FENCE_COLOR, WALL_COLOR, confusion / 2), spread)
  # Far block: fronto-parallel lots at z_end, from facade line to facade line.
  n = int(rng.integers(2, 7))
  xcol = (xs - cv.x_v) * st.z_end / cv.f
  edges = np.sort(rng.uniform(st.facade[0], st.facade[1], n - 1))
  seg = np.searchsorted(edges, xcol)
  far = dict(kind=np.where(rng.random(n) < 0.2, LOT_PARK, LOT_BUILDING),
             height=rng.uniform(5, 30, n), low=np.full(n, 1.0),
             color=np.stack([draw.jitter(rng, BUILDING_COLORS[rng.integers(5)], spread)
                             for _ in range(n)]),
             pitch=rng.uniform(1.6, 3.5, n), floor=rng.uniform(2.8, 3.6, n))
  far['wall'] = far['color']
  v = cv.cam_h - (ys - cv.y_h) * st.z_end / cv.f
  valid = (xcol >= st.facade[0] - 1) & (xcol <= st.facade[1] + 1)
  _facade_pixels(cv, rng, {k: far[k][seg] for k in _LOT_FIELDS}, xcol, v, valid, spread,
                 fence_color)
  for side, lots in enumerate(st.lots):
    dx = xs - cv.x_v
    valid = dx * (1 if side else -1) > 1e-3
    zcol = np.where(valid, cv.f * st.facade[side] / np.where(valid, dx, 1.0), np.inf)
    valid &= zcol < st.z_end
    lot = np.clip(np.searchsorted(lots['edges'], zcol) - 1, 0, len(lots['kind']) - 1)
    zcol = np.where(valid, zcol, 1.0)
    v = cv.cam_h - (ys - cv.y_h) * zcol / cv.f
    _facade_pixels(cv, rng, {k: lots[k][lot] for k in _LOT_FIELDS}, zcol, v, valid, spread,
                   fence_color)
