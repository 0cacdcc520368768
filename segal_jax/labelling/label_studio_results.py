"""Label Studio's labelling configuration and results, to and from label arrays.

A project's configuration shows the image with two tools over the class table's
classes, in its colours: `PolygonLabels` (from_name "label") and `BrushLabels`
(from_name "brush"). An annotation's result is a list of regions:

  {"type": "brushlabels", "from_name": "brush", "to_name": "image",
   "original_width": W, "original_height": H,
   "value": {"format": "rle", "rle": [...], "brushlabels": ["car"]}}
  {"type": "polygonlabels", "from_name": "label", "to_name": "image",
   "original_width": W, "original_height": H,
   "value": {"points": [[x%, y%], ...], "polygonlabels": ["road"]}}

Brush masks are decoded by `brush_rle`. Polygon points are in percent of the
image's width and height; pixel (row i, column j) covers the square
[j, j + 1) x [i, i + 1), and belongs to the polygon when its centre does
(skimage.draw.polygon). Regions are painted in the order of the result, so a
later region wins where two overlap; pixels no region covers are unlabeled
(the table's ignore value). The label array holds the class table's PNG values.
"""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree

import numpy as np
from skimage import draw

from segal_jax.data import labels
from segal_jax import errors
from segal_jax.labelling import brush_rle

POLYGON = 'label'  # from_name of the polygon tool
BRUSH = 'brush'  # from_name of the brush tool
IMAGE = 'image'  # to_name, and the task data key of the image's URL


def hex_color(color) -> str:
  return '#' + ''.join(f'{int(v):02x}' for v in color)


def labelling_config(table) -> str:
  """The configuration of a project labelling `table`'s classes: polygons and
  brushes, each class in its colour."""
  view = ElementTree.Element('View')
  ElementTree.SubElement(view, 'Image', name=IMAGE, value='$' + IMAGE, zoom='true')
  for tag, name in (('PolygonLabels', POLYGON), ('BrushLabels', BRUSH)):
    group = ElementTree.SubElement(view, tag, name=name, toName=IMAGE)
    for c in table.classes:
      ElementTree.SubElement(group, 'Label', value=c.name, background=hex_color(c.color))
  return ElementTree.tostring(view, encoding='unicode')


def brush_results(label: np.ndarray, table) -> list[dict[str, Any]]:
  """label: [H, W] class indices (`labels.IGNORE` unlabeled) -> one brush
  region per class present, as a prediction's or annotation's result."""
  label = np.asarray(label)
  height, width = label.shape
  out = []
  for k in np.unique(label).tolist():
    if k == labels.IGNORE:
      continue
    if not 0 <= k < table.num_classes:
      raise ValueError(f'class index {k} is outside the table of {table.num_classes} classes')
    out.append({'type': 'brushlabels', 'from_name': BRUSH, 'to_name': IMAGE,
                'original_width': width, 'original_height': height,
                'value': {'format': 'rle', 'rle': brush_rle.encode(label == k),
                          'brushlabels': [table.classes[k].name]}})
  return out


def polygon_mask(points, height: int, width: int) -> np.ndarray:
  """points: [[x%, y%], ...] in percent of the image -> [H, W] bool mask of the
  pixels whose centres lie inside."""
  pts = np.asarray(points, np.float64).reshape(-1, 2)
  # Pixel centres sit at (j + 0.5, i + 0.5); skimage tests integer points.
  cols = pts[:, 0] * width / 100.0 - 0.5
  rows = pts[:, 1] * height / 100.0 - 0.5
  mask = np.zeros((height, width), bool)
  rr, cc = draw.polygon(rows, cols, shape=(height, width))
  mask[rr, cc] = True
  return mask


def _region_mask(region: dict, height: int, width: int, where: str) -> tuple[np.ndarray, str]:
  """One result region -> (its mask, its class name)."""
  kind = region.get('type')
  value = region.get('value') or {}
  size = (region.get('original_height', height), region.get('original_width', width))
  if size != (height, width):
    raise errors.UserError(
        f'{where} was drawn on a {size[1]}x{size[0]} image, but the image is {width}x{height}',
        'relabel the task in Label Studio on the image it shows now')
  if kind == 'brushlabels':
    if value.get('format', 'rle') != 'rle' or 'rle' not in value:
      raise errors.UserError(f'{where} is a brush region without an RLE mask',
                             'redraw it with the brush in Label Studio')
    mask, names = brush_rle.decode(value['rle'], height, width), value.get('brushlabels')
  elif kind == 'polygonlabels':
    mask, names = polygon_mask(value.get('points', []), height, width), value.get('polygonlabels')
  else:
    raise errors.UserError(f'{where} is a {kind!r} region, not a brush or polygon',
                           'label with the brush or polygon tools of the project')
  if not isinstance(names, list) or len(names) != 1:
    raise errors.UserError(f'{where} has {len(names or [])} class names, not one',
                           'give every region exactly one class in Label Studio')
  return mask, names[0]


def label_of(result: list[dict], table, height: int, width: int,
             where: str = 'the annotation') -> np.ndarray:
  """An annotation's result -> [H, W] uint8 label in the table's PNG values,
  the ignore value where no region lies.

  Raises:
    UserError: naming the region and its problem (a class the table does not
      have, a region drawn on an image of another size, another tool).
  """
  value_of = {c.name: c.value for c in table.classes}
  out = np.full((height, width), table.ignore, np.uint8)
  for k, region in enumerate(result):
    kind = str(region.get('type', ''))
    if kind not in ('brushlabels', 'polygonlabels') and not kind.endswith('labels'):
      continue  # a comment, choice or rating: no pixels
    mask, name = _region_mask(region, height, width, f'{where}, region {k + 1}')
    if name not in value_of:
      raise errors.UserError(
          f'{where}, region {k + 1} has the class {name!r}, which the class table does not '
          f'have ({", ".join(value_of)})', 'relabel the region with one of these classes')
    out[mask] = value_of[name]
  return out
