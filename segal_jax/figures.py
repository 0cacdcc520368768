"""Per-cycle pictures: what the selector saw and what it chose.

- `selection_figure`: for the top-ranked images of a cycle, the image, its
  per-pixel uncertainty map and its ground truth, one row each (the study's
  Fig. 1).
- `superpixel_figure`: images with the superpixels chosen in them tinted and
  outlined.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from skimage import segmentation

from segal_jax import annotations
from segal_jax import uncertainty
from segal_jax.data import augment
from segal_jax.data import labels as labels_lib


@functools.lru_cache(maxsize=8)
def _maps_fn(apply_fn: Callable[..., Any], measure: str, passes: int,
             mean: tuple[float, ...], std: tuple[float, ...]):
  def maps(variables, images, ids, key):
    x = augment.normalize(augment.to_float(images), mean, std)
    return uncertainty.mc_forward(apply_fn, variables, x, key, image_ids=ids, passes=passes,
                                  measures=(measure,))[measure]
  return jax.jit(maps)


def uncertainty_maps(apply_fn, variables, images: np.ndarray, ids: Sequence[int], key, *,
                     measure: str, passes: int, mean, std) -> np.ndarray:
  """[n, H, W] float32 maps of `images` [n, H, W, 3] uint8 (pool indices `ids`).

  Uses the same dropout keys as pool scoring, so a map is the one its score
  was the mean of.
  """
  fn = _maps_fn(apply_fn, measure, passes, tuple(mean), tuple(std))
  return np.asarray(fn(variables, jnp.asarray(images), jnp.asarray(ids, jnp.int32), key))


def _write(path: str, rows: list[np.ndarray]) -> None:
  gap = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
  stacked = [r for row in rows for r in (row, gap)][:-1]
  annotations.write_png(path, np.concatenate(stacked, axis=0))


def selection_figure(path: str, images: np.ndarray, maps: np.ndarray,
                     ground_truth: np.ndarray) -> None:
  """Rows of [image | uncertainty map | ground truth], written atomically as PNG.

  Args:
    images: [n, H, W, 3] uint8; maps: [n, H, W] float; ground_truth: [n, H, W] uint8.
  """
  vmax = float(np.max(maps)) if maps.size else None  # one colour scale for the figure
  rows = []
  for image, m, gt in zip(images, maps, ground_truth):
    left = annotations.heatmap(image, m, vmax=vmax)
    spacer = np.full((image.shape[0], 4, 3), 255, np.uint8)
    rows.append(np.concatenate([left, spacer, labels_lib.colorize(gt)], axis=1))
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

