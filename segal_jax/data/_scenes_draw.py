"""Drawing primitives for the procedural street scenes: canvas, camera, masks.

Everything is vectorised NumPy on small crops: an object computes its masks on
the integer pixel grid of its bounding box and paints them onto the canvas,
which clips them to the image. The canvas holds linear RGB in [0, 1] (float32)
and the Cityscapes instance id of every pixel; the label map is derived from the
instance ids at the end, so the two can never disagree.
"""

import dataclasses

import numpy as np


def smooth_noise(rng: np.random.Generator, height: int, width: int,
                 cell: float) -> np.ndarray:
  """Low-frequency noise: a coarse normal grid, bilinearly upsampled.

  Args:
    rng: random generator.
    height, width: output size.
    cell: spacing of the coarse grid in pixels.

  Returns:
    [height, width] float32, roughly unit variance.
  """
  gh, gw = int(np.ceil(height / cell)) + 2, int(np.ceil(width / cell)) + 2
  grid = rng.standard_normal((gh, gw)).astype(np.float32)
  ys = np.arange(height, dtype=np.float32) / cell
  xs = np.arange(width, dtype=np.float32) / cell
  y0, x0 = ys.astype(np.int32), xs.astype(np.int32)
  fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
  top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
  bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
  return top * (1 - fy) + bottom * fy


@dataclasses.dataclass
class Canvas:
  """The image being painted, its instance ids, and the camera.

  Camera: pinhole with focal length `f` pixels, horizon row `y_h`, vanishing
  column `x_v`, height `cam_h` metres above a flat ground. A point at lateral
  offset X, height v (metres) and depth Z projects to
  `x = x_v + f X / Z`, `y = y_h + f (cam_h - v) / Z`.
  """
  img: np.ndarray         # [H, W, 3] float32 linear RGB
  ids: np.ndarray         # [H, W] int32 Cityscapes instance ids
  fine: np.ndarray        # [H, W] float32 per-pixel noise (texture source)
  blotch: np.ndarray      # [H, W] float32 low-frequency noise (texture source)
  f: float
  y_h: float
  x_v: float
  cam_h: float
  texture: float          # scales all texture contrast
  counts: dict[int, int] = dataclasses.field(default_factory=dict)

  @property
  def height(self) -> int:
    return self.img.shape[0]

  @property
  def width(self) -> int:
    return self.img.shape[1]

  def new_instance(self, label_id: int) -> int:
    """The next Cityscapes instance id `label_id * 1000 + k` for a thing."""
    k = self.counts.get(label_id, 0)
    self.counts[label_id] = k + 1
    return label_id * 1000 + k

  def project(self, x_m: float, z_m: float, v_m: float = 0.0) -> tuple[float, float]:
    """(column, row) of a world point; see the class docstring."""
    return (self.x_v + self.f * x_m / z_m,
            self.y_h + self.f * (self.cam_h - v_m) / z_m)

  def crop(self, top: float, bottom: float, left: float, right: float):
    """Integer crop covering a float box, clipped to the image.

    Returns:
      None when the box misses the image, else (y0, x0, ys [h, 1], xs [1, w]):
      the crop's origin and its pixel-centre coordinates in image space.
    """
    y0, y1 = max(int(np.floor(top)), 0), min(int(np.ceil(bottom)), self.height)
    x0, x1 = max(int(np.floor(left)), 0), min(int(np.ceil(right)), self.width)
    if y1 <= y0 or x1 <= x0:
      return None
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
    return y0, x0, ys, xs

  def frame(self, x_m: float, z_m: float, half_w: float, height: float):
    """Object-local metric coordinates over the box of an object on the ground.

    Args:
      x_m, z_m: lateral offset and depth of the object's foot point (metres).
      half_w: half its width on screen (metres); height: its height (metres).

    Returns:
      None when off-image, else (y0, x0, u [h, w], v [h, w], s): crop origin,
      metres right of the foot point and above the ground at each pixel centre,
      and the scale s in pixels per metre.
    """
    s = self.f / z_m
    cx, yb = self.project(x_m, z_m)
    c = self.crop(yb - height * s - 1, yb + 1, cx - half_w * s - 1, cx + half_w * s + 1)
    if c is None:
      return None
    y0, x0, ys, xs = c
    u, v = np.broadcast_arrays((xs - cx) / s, (yb - ys) / s)
    return y0, x0, u, v, s

  def paint(self, y0: int, x0: int, mask: np.ndarray, color, inst_id: int,
            fine: float = 0.0, blotch: float = 0.0, shade=None) -> None:
    """Paints `mask` (a crop at y0, x0, already inside the image).

    Args:
      y0, x0: crop origin.
      mask: [h, w] bool.
      color: [3] or [h, w, 3] float base colour.
      inst_id: Cityscapes instance id written under the mask.
      fine, blotch: contrast of the per-pixel and low-frequency texture.
      shade: optional [h, w] (or broadcastable) multiplicative shading.
    """
    h, w = mask.shape
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
      return
    ys, xs = rows + y0, cols + x0
    gain = np.ones(rows.size, np.float32)
    if fine:
      gain += (self.texture * fine) * self.fine[ys, xs]
    if blotch:
      gain += (self.texture * blotch) * self.blotch[ys, xs]
    if shade is not None:
      gain *= np.broadcast_to(shade, (h, w))[rows, cols]
    color = np.asarray(color, np.float32)
    if color.ndim > 1:
      color = np.broadcast_to(color, (h, w, 3))[rows, cols]
    self.img[ys, xs] = color * gain[:, None]
    self.ids[ys, xs] = inst_id

  def darken(self, y0: int, x0: int, mask: np.ndarray, factor: float) -> None:
    """Multiplies the colour under `mask` (labels unchanged): cast shadows."""
    h, w = mask.shape
    region = self.img[y0:y0 + h, x0:x0 + w]
    region[mask] *= factor


def ellipse(ys, xs, cy, cx, ry, rx) -> np.ndarray:
  """[h, w] bool: points inside an ellipse."""
  return ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1.0


def ring(ys, xs, cy, cx, r, thickness) -> np.ndarray:
  """[h, w] bool: an annulus of outer radius r (a thin wheel seen from the side)."""
  d = np.sqrt((ys - cy) ** 2 + (xs - cx) ** 2)
  return (d <= r) & (d >= r - thickness)


def segment(ys, xs, p, q, thickness) -> np.ndarray:
  """[h, w] bool: points within thickness/2 of the segment p-q, given as (x, y)."""
  px, py = p
  dx, dy = q[0] - px, q[1] - py
  length2 = max(dx * dx + dy * dy, 1e-6)
  t = np.clip(((xs - px) * dx + (ys - py) * dy) / length2, 0.0, 1.0)
  ex, ey = xs - (px + t * dx), ys - (py + t * dy)
  return ex * ex + ey * ey <= (thickness / 2) ** 2


def jitter(rng: np.random.Generator, color, spread: float) -> np.ndarray:
  """A colour with a random brightness and per-channel perturbation."""
  c = np.asarray(color, np.float32)
  c = c * rng.uniform(1 - spread, 1 + spread) + rng.normal(0, spread / 3, 3)
  return np.clip(c, 0.02, 1.0).astype(np.float32)
