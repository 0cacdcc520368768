"""The click-cost model of annotation: polygon vertices, region by region.

A person who draws a region with a polygon tool clicks once per vertex. The
region's outline (every connected component's boundary, and the boundary of
every hole in it) is traced at full label resolution
(`skimage.measure.find_contours` at level 0.5 around the region's pixels) and
simplified with `skimage.measure.approximate_polygon` at `TOLERANCE` pixels;
its clicks are the simplified polygons' vertices. Cai et al. (CVPR 2021) count
the cost of polygon annotation the same way, from the vertices of each
connected component's polygon (third_party/annotation_costs.md). A pixel-exact
square costs 4 clicks, an L-shape 6, a triangle 3 (tests/test_clicks.py); an
outline costs at least `MIN_VERTICES`.

Region protocols charge clicks too (`protocols`): one per superpixel
(dominant label), one per class present (multi-class label), one per point.
`expected_*` estimate a unit's clicks from the model's own predicted
segmentation (its predicted regions are the connected components of the
predicted class map), never from the hidden labels, for ranking by score per
expected click.
"""

from __future__ import annotations

import numpy as np
from skimage import measure

# Douglas-Peucker tolerance in pixels at full label resolution: a staircase of
# single-pixel steps is one straight edge, a real corner stays a vertex.
TOLERANCE = 1.0
# A polygon has at least 3 vertices: slivers about a pixel wide, whose outline
# the tolerance would flatten, still cost 3 clicks.
MIN_VERTICES = 3


def polygon_clicks(mask: np.ndarray, tolerance: float = TOLERANCE) -> int:
  """Polygon vertices needed to draw `mask` (every component and every hole).

  Args:
    mask: [h, w] bool, the region.
    tolerance: simplification tolerance in pixels.

  Returns:
    The clicks: sum over the closed outlines of the simplified polygon's vertices.
  """
  padded = np.pad(np.asarray(mask, np.uint8), 1)  # closed outlines at the image edge too
  # approximate_polygon keeps the closing point (first == last): one vertex less.
  return sum(max(MIN_VERTICES, len(measure.approximate_polygon(c, tolerance)) - 1)
             for c in measure.find_contours(padded, 0.5))


def region_clicks(ids: np.ndarray, tolerance: float = TOLERANCE) -> dict[int, int]:
  """Clicks of every region of an id map: {id: polygon clicks} for ids > 0.

  Args:
    ids: [H, W] int region ids (0: no region, e.g. void).
  """
  ids = np.asarray(ids)
  if ids.max(initial=0) <= 0:
    return {}
  return {int(r.label): polygon_clicks(r.image, tolerance)
          for r in measure.regionprops(np.where(ids > 0, ids, 0).astype(np.int64))}


def predicted_regions(prediction: np.ndarray) -> np.ndarray:
  """[H, W] int64 ids (from 1) of the connected regions of one predicted class each."""
  # background=-1: every class, 0 included, forms regions.
  return measure.label(np.asarray(prediction).astype(np.int64), background=-1, connectivity=1)


def expected_image_clicks(prediction: np.ndarray) -> float:
  """Polygon clicks of a whole image's predicted regions. prediction: [H, W] int classes."""
  return float(sum(region_clicks(predicted_regions(prediction)).values()))


def expected_overlap_clicks(prediction: np.ndarray, segments: np.ndarray,
                            num_segments: int) -> np.ndarray:
  """[num_segments] float: per superpixel, the polygon clicks of the predicted
  regions it touches (what the instance-overlap protocol would have drawn if
  the prediction were the truth)."""
  regions = predicted_regions(prediction)
  table = region_clicks(regions)
  price = np.zeros(int(regions.max()) + 1)
  price[list(table)] = list(table.values())
  pairs = np.unique(np.asarray(segments, np.int64).ravel() * price.size + regions.ravel())
  seg, region = np.divmod(pairs, price.size)
  return np.bincount(seg, price[region], minlength=num_segments)[:num_segments]


def expected_class_clicks(prediction: np.ndarray, segments: np.ndarray,
                          num_segments: int) -> np.ndarray:
  """[num_segments] float: per superpixel, the number of predicted classes in it."""
  prediction = np.asarray(prediction, np.int64)
  span = int(prediction.max(initial=0)) + 1
  pairs = np.unique(np.asarray(segments, np.int64).ravel() * span + prediction.ravel())
  return np.bincount(pairs // span, minlength=num_segments)[:num_segments].astype(np.float64)
