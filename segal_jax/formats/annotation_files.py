"""What annotators load: COCO polygons, superpixel id masks, uncertainty heat maps.

Coordinates follow COCO: pixel (row i, column j) covers the square
[j, j + 1) x [i, i + 1), so its centre is (j + 0.5, i + 0.5) and a polygon
around the whole W x H image is [0, 0, W, 0, W, H, 0, H]. To rasterise a
polygon with `skimage.draw.polygon` (which tests pixel centres at integer
coordinates), subtract 0.5 from its coordinates first.

COCO categories of a class table (`categories`) have ids `class index + 1`;
class-less superpixel pre-annotations use `CATEGORY` alone, or beside a
table's categories `region_category(table)` (id `num_classes + 1`).

Every file is written atomically (`files.atomic_open`).
"""

from __future__ import annotations

import datetime
import io
from typing import Any, Sequence

import numpy as np
from PIL import Image
import scipy.ndimage
import skimage.measure

from segal_jax.data import classes as classes_lib
from segal_jax.data import image_folder
from segal_jax.formats import files

CATEGORY = {'id': 1, 'name': 'unlabelled', 'supercategory': 'superpixel'}


_CROSS = scipy.ndimage.generate_binary_structure(2, 1)  # 4-connectivity.
_SQUARE = scipy.ndimage.generate_binary_structure(2, 2)  # 8-connectivity.


def _outline(region: np.ndarray, fully_connected: str) -> np.ndarray:
  """The outer boundary of a connected region: [n, 2] (row, col), not closed.

  Runs half way between the region's pixel centres and the outside ones.
  """
  padded = np.pad(region, 1).astype(np.float32)  # Closes contours at the border.
  contours = skimage.measure.find_contours(padded, 0.5, fully_connected=fully_connected)
  ring = max(contours, key=lambda c: abs(_area(c)))[:-1] - 1.0
  return _drop_collinear(ring)


def _area(ring: np.ndarray) -> float:
  y, x = ring[:, 0], ring[:, 1]
  return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _drop_collinear(ring: np.ndarray) -> np.ndarray:
  """Removes vertices on a straight line between their neighbours (exact: the
  coordinates are multiples of 1/2)."""
  before, after = ring - np.roll(ring, 1, 0), np.roll(ring, -1, 0) - ring
  turn = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
  keep = turn != 0
  return ring[keep] if keep.sum() >= 3 else ring


def _bridge(ring: np.ndarray, hole: np.ndarray) -> np.ndarray:
  """One ring that also excludes `hole`: outer ring, a zero-width cut to the
  hole, around the hole, and back along the cut (even-odd filling ignores the
  cut, whose two edges cancel)."""
  d = np.sum(np.square(ring[:, None, :] - hole[None, :, :]), axis=-1)
  i, j = np.unravel_index(np.argmin(d), d.shape)
  around = np.roll(hole, -j, axis=0)
  return np.concatenate([ring[:i + 1], around, around[:1], ring[i:]])


def mask_polygons(mask: np.ndarray) -> list[list[float]]:
  """Outlines of a binary mask as COCO polygons, one per 4-connected part.

  A part with holes (e.g. a superpixel around another one) is one polygon
  whose boundary goes around each hole through a zero-width cut, so the
  polygon covers exactly the part under the even-odd rule that COCO tools
  use. Boundaries run half way between the mask's pixel centres and the
  outside ones (marching squares at level 0.5), so rasterising by pixel
  centres gives back the mask.

  Args:
    mask: [H, W] bool.

  Returns:
    polygons `[[x0, y0, x1, y1, ...], ...]` (floats, COCO coordinates, at
    least 3 vertices each, the first vertex not repeated at the end).
  """
  parts, n = scipy.ndimage.label(np.asarray(mask, bool), _CROSS)
  polygons = []
  for k in range(1, n + 1):
    part = parts == k
    # Holes of a 4-connected part are 8-connected (the dual connectivity).
    filled = scipy.ndimage.binary_fill_holes(part, _SQUARE)
    ring = _outline(filled, 'low')
    holes, n_holes = scipy.ndimage.label(filled & ~part, _SQUARE)
    for h in range(1, n_holes + 1):
      hole = scipy.ndimage.binary_fill_holes(holes == h, _CROSS)
      ring = _bridge(ring, _outline(hole, 'high'))
    # (row, col) of pixel centres -> COCO (x, y).
    polygons.append([float(v) for v in (ring[:, ::-1] + 0.5).ravel()])
  return polygons


def bbox(mask: np.ndarray) -> list[int]:
  """COCO `[x, y, width, height]` of the mask's pixels ([0, 0, 0, 0] if empty)."""
  rows, cols = np.nonzero(mask)
  if not len(rows):
    return [0, 0, 0, 0]
  return [int(cols.min()), int(rows.min()), int(cols.max() - cols.min() + 1),
          int(rows.max() - rows.min() + 1)]


def coco_annotation(ann_id: int, image_id: int, mask: np.ndarray,
                    category_id: int = CATEGORY['id'], **attributes: Any) -> dict[str, Any]:
  """One COCO polygon annotation of a mask [H, W] bool (by default class-less:
  a chosen superpixel's)."""
  return {'id': ann_id, 'image_id': image_id, 'category_id': int(category_id),
          'segmentation': mask_polygons(mask), 'area': int(np.count_nonzero(mask)),
          'bbox': bbox(mask), 'iscrowd': 0, **attributes}


def categories(table: classes_lib.ClassTable) -> list[dict[str, Any]]:
  """COCO categories of a class table: id `class index + 1`, its name, colour,
  and 'thing' or 'stuff' as supercategory."""
  return [{'id': i + 1, 'name': c.name, 'supercategory': 'thing' if c.thing else 'stuff',
           'color': list(c.color)} for i, c in enumerate(table.classes)]


def region_category(table: classes_lib.ClassTable) -> dict[str, Any]:
  """The class-less superpixel category beside `categories(table)`."""
  return {**CATEGORY, 'id': table.num_classes + 1}


def label_annotations(label: np.ndarray, image_id: int, first_id: int,
                      table: classes_lib.ClassTable, **attributes: Any
                      ) -> list[dict[str, Any]]:
  """COCO annotations of a class-index map: one per 8-connected region of a
  thing class (its instances), one per stuff class present.

  Args:
    label: [H, W] uint8 class indices of `table`, 255 = none.
    image_id, first_id: the COCO image id; the id of the first annotation
      (the others follow).
  """
  instances = image_folder.derive_instances(np.asarray(label, np.uint8), table)
  out = []
  for value in np.unique(instances[instances > 0]):
    mask = instances == value
    out.append(coco_annotation(first_id + len(out), image_id, mask,
                               int(label[mask][0]) + 1, **attributes))
  return out


def coco_document(images: Sequence[dict[str, Any]], annotations: Sequence[dict[str, Any]],
                  description: str, categories: Sequence[dict[str, Any]] = (CATEGORY,)
                  ) -> dict[str, Any]:
  """A COCO instances document (by default with the single unlabelled category)."""
  return {
      'info': {'description': description,
               'date_created': datetime.datetime.now().isoformat(timespec='seconds')},
      'images': list(images),
      'annotations': list(annotations),
      'categories': list(categories),
  }


def id_mask(segments: np.ndarray, chosen: Sequence[int]) -> np.ndarray:
  """Pre-annotation mask: 0 where nothing is chosen, s + 1 on chosen superpixel s.

  Args:
    segments: [H, W] int superpixel ids 0..S-1.
    chosen: ids of the chosen superpixels.

  Returns:
    [H, W] uint8 (uint16 when some s + 1 exceeds 255).
  """
  chosen = np.asarray(chosen, np.int64)
  lookup = np.zeros(int(max(segments.max(), chosen.max(initial=0))) + 1, np.int64)
  lookup[chosen] = chosen + 1
  out = lookup[segments]
  return out.astype(np.uint8 if out.max(initial=0) < 256 else np.uint16)


def write_png(path: str, array: np.ndarray) -> None:
  """Writes [H, W] uint8/uint16 or [H, W, 3] uint8 as a PNG, atomically."""
  buffer = io.BytesIO()
  Image.fromarray(np.ascontiguousarray(array)).save(buffer, format='PNG')
  with files.atomic_open(path, 'wb') as f:
    f.write(buffer.getvalue())


def heatmap(image: np.ndarray, values: np.ndarray, *, cmap: str = 'inferno',
            vmax: float | None = None, gap: int = 4) -> np.ndarray:
  """The image and its uncertainty map coloured by a matplotlib colormap, side by side.

  Args:
    image: [H, W, 3] uint8.
    values: [H, W] float, >= 0.
    cmap: a matplotlib colormap name.
    vmax: the value shown in the colormap's top colour; None = the map's maximum
      (colours are then relative within the image).
    gap: white columns between the two.

  Returns:
    [H, 2W + gap, 3] uint8.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  values = np.nan_to_num(np.asarray(values, np.float32))
  top = float(values.max()) if vmax is None else float(vmax)
  scaled = np.clip(values / top, 0.0, 1.0) if top > 0 else np.zeros_like(values)
  colour = matplotlib.colormaps[cmap](scaled)[..., :3]
  colour = np.round(colour * 255).astype(np.uint8)
  spacer = np.full((image.shape[0], gap, 3), 255, np.uint8)
  return np.concatenate([np.asarray(image, np.uint8), spacer, colour], axis=1)
