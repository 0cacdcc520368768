"""Batch diversity of a cycle's units: k-center greedy and a per-image cap.

Uncertainty alone picks near-duplicates: the uncertain superpixels of one
image, or the same hard texture over and over. Two remedies, both on plain
arrays (`acquisition` applies them to a cycle's ranked units):

* `per_image_cap`: at most K units of one image, the best-ranked ones.
* `kcenter_greedy`: the greedy 2-approximation of the k-center problem
  (Gonzalez 1985; as core-set selection, Sener & Savarese ICLR 2018): each
  pick is the point farthest from every point picked so far (and from the
  given centres). It is jitted and streams the points in chunks: memory is
  the features [N, D] plus one [N] distance vector plus one chunk's
  [chunk, M] distances to the initial centres, never N x N or N x M; time is
  O(k N D).
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
  n, dim = points.shape
  blocks = -(-n // chunk)
  pad = blocks * chunk - n
  x = jnp.pad(points.astype(jnp.float32), ((0, pad), (0, 0))).reshape(blocks, chunk, dim)
  ok = jnp.pad(valid, (0, pad)).reshape(blocks, chunk)

  def initial(args):  # one chunk's distance to its nearest given centre
    xb, okb = args
    if centers.shape[0]:
      d = jnp.min(_sq_dist(xb, centers.astype(jnp.float32)), axis=1)
    else:
      d = jnp.full((chunk,), jnp.inf, jnp.float32)
    return jnp.where(okb, d, -jnp.inf)  # invalid points are never picked

  dist = jax.lax.map(initial, (x, ok))  # [blocks, chunk]

  def pick(i, carry):
    dist, picks = carry
    flat = jnp.argmax(dist.reshape(-1))  # first of equal distances: lowest index
    centre = x.reshape(-1, dim)[flat]
    new = jax.lax.map(lambda xb: jnp.sum(jnp.square(xb - centre), axis=-1), x)
    dist = jnp.minimum(dist, new)  # picked and invalid points stay at -inf
    dist = dist.reshape(-1).at[flat].set(-jnp.inf).reshape(blocks, chunk)
    return dist, picks.at[i].set(flat.astype(jnp.int32))

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
    chunk: points per block of the distance computation (memory, not result).

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
