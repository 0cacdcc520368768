"""Batch diversity of a cycle's units: k-center greedy and a per-image cap.

Uncertainty alone picks near-duplicates: the uncertain superpixels of one
image, or the same hard texture over and over. Two remedies, both on plain
arrays (`acquisition` applies them to a cycle's ranked units):

* `per_image_cap`: at most K units of one image, the best-ranked ones.
* `kcenter_greedy`: the greedy 2-approximation of the k-center problem
  (Gonzalez 1985; as core-set selection, Sener & Savarese ICLR 2018): each
  pick is the point farthest from every point picked so far (and from the
  given centres). It is jitted; memory is the features [N, D], one [N]
  distance vector (each pick updates it in one fused pass over the features)
  and one chunk's [chunk, M] distances to the M given centres, streamed
  chunk by chunk: never N x N, N x M or a second N x D; time O((k + M) N D).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def per_image_cap(images: np.ndarray, cap: int) -> np.ndarray:
  """[n] bool: keep a unit unless `cap` units of its image come before it.

  Args:
    images: [n] int image of each unit, in rank order (best first).
    cap: most units kept per image (0: no cap, all kept).
  """
  images = np.asarray(images)
  if cap <= 0 or not len(images):
    return np.ones(len(images), bool)
  order = np.argsort(images, kind='stable')  # rank order inside each image
  sorted_images = images[order]
  first = np.r_[0, np.flatnonzero(np.diff(sorted_images)) + 1]
  starts = np.repeat(first, np.diff(np.r_[first, len(images)]))
  seen = np.empty(len(images), np.int64)
  seen[order] = np.arange(len(images)) - starts  # units of the same image ranked before
  return seen < cap


def _sq_dist(x: jax.Array, c: jax.Array) -> jax.Array:
  """[n, D], [m, D] -> [n, m] squared Euclidean distances, as sum((x - c)^2)."""
  return jnp.sum(jnp.square(x[:, None, :] - c[None, :, :]), axis=-1)


@functools.partial(jax.jit, static_argnames=('k', 'chunk'))
def _kcenter(points: jax.Array, valid: jax.Array, centers: jax.Array, k: int,
             chunk: int) -> jax.Array:
  n = points.shape[0]
  x = points.astype(jnp.float32)
  if centers.shape[0]:
    c = centers.astype(jnp.float32)

    def block(b, dist):  # one chunk's distance to its nearest given centre
      start = jnp.minimum(b * chunk, n - chunk)  # the last block overlaps: same values
      d = jnp.min(_sq_dist(jax.lax.dynamic_slice_in_dim(x, start, chunk), c), axis=1)
      return jax.lax.dynamic_update_slice_in_dim(dist, d, start, 0)

    dist = jax.lax.fori_loop(0, -(-n // chunk), block, jnp.zeros((n,), jnp.float32))
  else:
    dist = jnp.full((n,), jnp.inf, jnp.float32)
  dist = jnp.where(valid, dist, -jnp.inf)  # invalid points are never picked

  def pick(i, carry):
    dist, picks = carry
    j = jnp.argmax(dist)  # first of equal distances: lowest index
    # One fused pass over the features: the [N] distances, no [N, D] temporary.
    new = jnp.sum(jnp.square(x - x[j]), axis=-1)
    dist = jnp.minimum(dist, new).at[j].set(-jnp.inf)  # picked, invalid stay at -inf
    return dist, picks.at[i].set(j.astype(jnp.int32))

  _, picks = jax.lax.fori_loop(0, k, pick, (dist, jnp.zeros((k,), jnp.int32)))
  return picks


def kcenter_greedy(points, k: int, *, valid=None, centers=None,
                   chunk: int = 4096) -> np.ndarray:
  """Greedy k-center: k indices, each the point farthest from those before.

  Without `centers` the first pick is the first valid point (callers order
  points by score, so the best-scored unit seeds the batch). Equal distances
  pick the lowest index, so the result is deterministic.

  Args:
    points: [N, D] float features.
    k: picks (at most the number of valid points).
    valid: [N] bool, points that may be picked (default: all).
    centers: [M, D] points already chosen (e.g. labeled units), or None.
    chunk: points per block of the distances to `centers` (memory, not result).

  Returns:
    [k] int64 indices into `points`, in pick order.
  """
  points = jnp.asarray(points, jnp.float32)
  n = points.shape[0]
  valid = jnp.ones((n,), bool) if valid is None else jnp.asarray(valid, bool)
  k = int(min(k, int(jnp.sum(valid))))
  if k <= 0:
    return np.zeros(0, np.int64)
  centers = (jnp.zeros((0, points.shape[1]), jnp.float32) if centers is None
             else jnp.asarray(centers, jnp.float32))
  chunk = int(max(1, min(chunk, n)))
  return np.asarray(_kcenter(points, valid, centers, k, chunk), np.int64)


def kcenter_bytes(n: int, dim: int, k: int, *, chunk: int = 4096,
                  centers: int = 0) -> dict[str, int]:
  """XLA's compiled memory of `kcenter_greedy` on [n, dim] points (nothing runs).

  Returns:
    {'argument', 'output', 'temp'}: bytes of the inputs, the picks and the
    scratch (the [n] distances, one chunk's block, the loop state).
  """
  chunk = int(max(1, min(chunk, n)))
  args = (jax.ShapeDtypeStruct((n, dim), jnp.float32), jax.ShapeDtypeStruct((n,), jnp.bool_),
          jax.ShapeDtypeStruct((centers, dim), jnp.float32))
  analysis = _kcenter.lower(*args, k=k, chunk=chunk).compile().memory_analysis()
  return {name: int(getattr(analysis, f'{name}_size_in_bytes'))
          for name in ('argument', 'output', 'temp')}
