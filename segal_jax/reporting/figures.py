"""Per-cycle pictures: what the selector saw and what it chose.

- `selection_figure`: for the top-ranked images of a cycle, the image, its
  per-pixel uncertainty map and its ground truth, one row each (the study's
  Fig. 1).
- `superpixel_figure`: images with the superpixels chosen in them tinted and
  outlined.
"""

from __future__ import annotations

import os
from typing import Sequence

import jax
import numpy as np
from skimage import segmentation

from segal_jax.data import classes as classes_lib
from segal_jax.formats import annotation_files as annotations
from segal_jax import parallel
from segal_jax.scoring import scorer as scoring
from segal_jax.scoring import uncertainty


def uncertainty_maps(apply_fn, variables, images: np.ndarray, ids: Sequence[int], key, *,
                     measure: str, passes: int, mean, std) -> np.ndarray:
  """[n, H, W] float32 maps of `images` [n, H, W, 3] uint8 (pool indices `ids`).

  Computed by the one scorer, in one batch, with the same dropout keys as pool
  scoring, so a map is the one its score was the mean of.
  """
  settings = scoring.Settings(measure, passes=passes, mean=tuple(mean), std=tuple(std),
                              keep_map=True)
  # This process's devices only: figures are drawn by the writing process alone,
  # so the scorer must not wait for the others.
  mesh = parallel.make_mesh(jax.local_devices())
  n = len(ids)
  if not n:
    return np.zeros((0, *np.shape(images)[1:3]), np.float32)
  one_batch = scoring.Batches(mesh.size * -(-n // mesh.size), mesh, False, 'maps')
  return scoring.score_images(apply_fn, variables, np.asarray(images), np.arange(n), key,
                              settings=settings, batches=one_batch, ids=np.asarray(ids))['map']


def cycle_figures(directory: str, cycle: int, request, chosen) -> None:
  """The top-ranked images of a cycle's selection as PNGs: their uncertainty
  maps (`cycleNN_uncertainty.png`) and, for superpixels, the chosen ones
  (`cycleNN_superpixels.png`).

  Args:
    request: the cycle's `selection.Request`; chosen: its `selection.Selection`.
  """
  config, split = request.config, request.split
  top = np.asarray(chosen.top_images, np.int64)[:config.out_figures]
  if not config.out_figures or len(top) == 0:
    return
  top = np.sort(top)
  measure = request.strategy.measure
  if measure in uncertainty.MEASURES:
    maps = uncertainty_maps(request.apply_fn, request.variables, split.images[top], top,
                            request.keys['score'], measure=measure, passes=config.mc_passes,
                            mean=split.mean, std=split.std)
    selection_figure(os.path.join(directory, f'cycle{cycle:02d}_uncertainty.png'),
                     split.images[top], maps, split.labels[top], split.classes)
  if chosen.picks is not None:
    superpixel_figure(os.path.join(directory, f'cycle{cycle:02d}_superpixels.png'),
                      split.images[top], request.segments[top],
                      [chosen.picks[int(i)] for i in top])


def _write(path: str, rows: list[np.ndarray]) -> None:
  gap = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
  stacked = [r for row in rows for r in (row, gap)][:-1]
  annotations.write_png(path, np.concatenate(stacked, axis=0))


def selection_figure(path: str, images: np.ndarray, maps: np.ndarray,
                     ground_truth: np.ndarray,
                     table: classes_lib.ClassTable = classes_lib.CITYSCAPES) -> None:
  """Rows of [image | uncertainty map | ground truth], written atomically as PNG.

  Args:
    images: [n, H, W, 3] uint8; maps: [n, H, W] float; ground_truth: [n, H, W]
      uint8 class indices of `table`, painted in its colours (ignore: black).
  """
  vmax = float(np.max(maps)) if maps.size else None  # one colour scale for the figure
  rows = []
  for image, m, gt in zip(images, maps, ground_truth):
    left = annotations.heatmap(image, m, vmax=vmax)
    spacer = np.full((image.shape[0], 4, 3), 255, np.uint8)
    rows.append(np.concatenate([left, spacer, table.colorize(gt)], axis=1))
  if rows:
    _write(path, rows)


def superpixel_figure(path: str, images: np.ndarray, segments: np.ndarray,
                      chosen: Sequence[Sequence[int]]) -> None:
  """Rows of [image with chosen superpixels tinted and outlined], as PNG.

  Args:
    images: [n, H, W, 3] uint8; segments: [n, H, W] int; chosen: per image the
      chosen superpixel ids.
  """
  rows = []
  for image, seg, sps in zip(images, segments, chosen):
    picked = np.isin(seg, np.asarray(sps, seg.dtype))
    tinted = np.where(picked[..., None], 0.55 * image + 0.45 * np.array([255, 220, 0]),
                      0.6 * image).astype(np.float64) / 255.0
    outlined = segmentation.mark_boundaries(tinted, np.where(picked, seg + 1, 0),
                                            color=(1.0, 0.85, 0.0))
    rows.append(np.round(outlined * 255).astype(np.uint8))
  if rows:
    _write(path, rows)

