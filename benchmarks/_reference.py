"""Host-side reference algorithms that `benchmarks.hot_paths` measures against.

Each function is a faithful NumPy / SciPy / scikit-image formulation of how
the original study's code computes the same quantity, written here so the
benchmark can run it beside this product on identical inputs:

* `mc_variance_scores`: D separate full forward passes of the network, each
  copied to the host, softmax with `scipy.special.softmax`, the D x B x H x W x C
  stack reduced with `np.var` over passes and a mean over classes and pixels.
* `segment_means`: `skimage.measure.regionprops(segments + 1,
  intensity_image=map)` per image, reading every region's `intensity_mean`
  (called `mean_intensity` in older scikit-image).
* `partial_label`: `np.vectorize` over pixels: a pixel keeps its label if its
  instance is among those touched by the chosen superpixels, else 255.

* `kcenter_greedy`: greedy k-center (core-set selection) in plain NumPy: the
  N-vector of distances to the nearest pick, updated with each new pick by a
  full `np.sum((x - c) ** 2, axis=1)` in float64.
* `select_units`: a cycle's superpixel selection on the host: class weights
  from `np.bincount`, `np.argsort` ranking, a per-image cap with a Python
  counter, then `kcenter_greedy`.

They are deliberately not optimised; the point is to measure the reference's
formulation, not the fastest possible NumPy.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np
import scipy.special
import skimage.measure

from segal_jax.data import labels


def make_forward(model: Any) -> Callable[..., jax.Array]:
  """The reference's single stochastic forward pass, jitted.

  Args:
    model: a `DRNSeg`.

  Returns:
    `forward(variables, images [B, H, W, 3], key) -> logits [B, H, W, C]`, the
    full network (trunk and tail, upsampled) with dropout on (`mc=True`).
  """
  def forward(variables, images, key):
    return model.apply(variables, images, train=False, mc=True,
                       rngs={'dropout': key})[0]
  return jax.jit(forward)


def mc_variance_scores(forward: Callable[..., jax.Array], variables: Any,
                       images: Any, keys: Sequence[jax.Array]) -> np.ndarray:
  """MC-dropout variance per image, the reference way.

  Args:
    forward: from `make_forward`.
    variables: the model's variables.
    images: [B, H, W, 3] float32 normalised images.
    keys: D dropout keys, one per pass (the whole batch shares a pass's mask
      stream, as one stochastic forward of a batch does).

  Returns:
    [B] float32: mean over pixels of the mean over classes of the variance
    over passes of the softmax probabilities.
  """
  passes = []
  for key in keys:
    logits = np.asarray(forward(variables, images, key))  # device -> host copy
    passes.append(scipy.special.softmax(logits, axis=-1))
  probs = np.stack(passes)  # [D, B, H, W, C] on the host
  return mc_variance_from_probs(probs)


def mc_variance_from_probs(probs: np.ndarray) -> np.ndarray:
  """[D, B, H, W, C] probabilities -> [B] mean over pixels and classes of var over D."""
  variance = np.var(probs, axis=0)  # [B, H, W, C]
  return variance.mean(axis=-1).mean(axis=(1, 2))


def host_probs_bytes(passes: int, batch: int, height: int, width: int,
                     classes: int, itemsize: int = 4) -> int:
  """Bytes of the reference's D x B x H x W x C float32 probability stack."""
  return passes * batch * height * width * classes * itemsize


def segment_means(maps: np.ndarray, segments: np.ndarray) -> list[np.ndarray]:
  """Per-superpixel means with `regionprops`, one image at a time.

  Args:
    maps: [N, H, W] float per-pixel scores.
    segments: [N, H, W] int superpixel ids 0..S_i-1.

  Returns:
    N arrays: [S_i] float means of the regions present, in label order.
  """
  out = []
  for score, seg in zip(maps, segments):
    props = skimage.measure.regionprops(seg + 1, intensity_image=score)
    out.append(np.array([p.intensity_mean for p in props]))
  return out


def partial_label(label: np.ndarray, instance: np.ndarray, segments: np.ndarray,
                  chosen: Sequence[int], membership: str = 'set') -> np.ndarray:
  """Partial label from chosen superpixels, pixel by pixel with `np.vectorize`.

  Args:
    label: [H, W] uint8 train ids.
    instance: [H, W] int instance ids (0 = no instance).
    segments: [H, W] int superpixel ids.
    chosen: the chosen superpixel ids.
    membership: how the touched instance ids are held for the per-pixel test:
      'set' (a Python set, about 70 ns a pixel) or 'array' (a NumPy array,
      `id in array` costs microseconds a pixel; this variant matches the
      4.7 s per 1024x2048 image quoted for the original code in DESIGN §5).

  Returns:
    [H, W] uint8: the label on every pixel of an instance that overlaps a chosen
    superpixel, 255 elsewhere.
  """
  touched = set(np.unique(instance[np.isin(segments, chosen)]).tolist()) - {0}
  if membership == 'array':
    touched = np.array(sorted(touched), np.int64)
  elif membership != 'set':
    raise ValueError(f"membership must be 'set' or 'array', got {membership!r}")
  keep = np.vectorize(lambda inst, lab: lab if inst in touched else labels.IGNORE,
                      otypes=[np.uint8])
  return keep(instance, label)


def kcenter_greedy(points: np.ndarray, k: int) -> np.ndarray:
  """[k] indices: the first point, then each time the point farthest from the picks.

  Args:
    points: [N, D] features.
    k: picks (at most N).

  Returns:
    [k] int64 indices in pick order; equal distances pick the lowest index.
  """
  x = np.asarray(points, np.float64)
  k = min(k, len(x))
  dist = np.full(len(x), np.inf)
  picks = []
  for _ in range(k):
    i = int(np.argmax(dist))
    picks.append(i)
    dist = np.minimum(dist, np.sum((x - x[i]) ** 2, axis=1))
    dist[i] = -np.inf
  return np.array(picks, np.int64)


def select_units(scores: np.ndarray, classes: np.ndarray, images: np.ndarray,
                 features: np.ndarray, counts: np.ndarray, budget: int, cap: int,
                 factor: float) -> np.ndarray:
  """A cycle's superpixel selection, the host way.

  Args:
    scores: [N] unit scores; classes: [N] dominant predicted class of each;
    images: [N] image of each; features: [N, D] pooled features.
    counts: [C] labeled pixels of each class.
    budget: units to pick; cap: most units per image; factor: candidates per pick.

  Returns:
    [budget] unit indices in k-center pick order.
  """
  counts = np.asarray(counts, np.float64)
  weights = np.exp(-counts / max(counts.sum(), 1.0))
  weighted = scores * weights[classes]
  ranked = np.argsort(-weighted, kind='stable')
  taken: dict[int, int] = {}
  kept = []
  for u in ranked:
    n = taken.get(int(images[u]), 0)
    if n < cap:
      taken[int(images[u])] = n + 1
      kept.append(u)
  pool = np.array(kept[:int(np.ceil(factor * budget))], np.int64)
  return pool[kcenter_greedy(features[pool], budget)]
