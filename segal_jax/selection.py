"""Selection strategies: score the candidate units, choose the next batch.

Each strategy is a small entry of `STRATEGIES`; the shared code here draws the
candidates, scores them in jitted batches (only per-image scores leave the
device) and picks the top units with deterministic tie-breaking.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import auto as tqdm

from segal_jax import parallel
from segal_jax import superpixels
from segal_jax import uncertainty
from segal_jax.data import augment


TRUE_LOSS = 'true_loss'
LOSS_PREDICTION = 'loss_prediction'


@dataclasses.dataclass(frozen=True)
class Strategy:
  """How a strategy scores a unit.

  measure: name of a per-pixel map in `uncertainty.MEASURES`, or None for
    random selection.
  full: label the whole pool at once (the full-data reference line; one cycle).
  """
  measure: str | None
  full: bool = False

  @property
  def mc(self) -> bool:
    """Whether scoring needs MC-dropout passes (else one deterministic pass)."""
    return self.measure in uncertainty.MEASURES and uncertainty.MEASURES[self.measure].needs_mc


STRATEGIES: dict[str, Strategy] = {
    'random': Strategy(measure=None),
    'full': Strategy(measure=None, full=True),
    # Single deterministic pass.
    'softmax_entropy': Strategy(measure='entropy'),
    'margin': Strategy(measure='margin'),
    'least_confidence': Strategy(measure='least_confidence'),
    # MC dropout.
    'mc_entropy': Strategy(measure='mc_mean_entropy'),
    'mc_variance': Strategy(measure='mc_variance'),
    'bald': Strategy(measure='bald'),
    # The oracle upper bound of the study: rank by the real loss against the
    # ground truth, which a real selector never has.
    'true_loss': Strategy(measure=TRUE_LOSS),
    # Learning loss (Yoo & Kweon 2019): rank by the loss the jointly trained
    # head predicts (`loss_prediction_train`); images only.
    'loss_prediction': Strategy(measure=LOSS_PREDICTION),
}

# Names of the uncertainty measures themselves, accepted wherever a scoring
# strategy is (e.g. `launch.score --strategy=mc_mean_entropy`).
SCORING_NAMES: dict[str, str] = {
    **{name: s.measure for name, s in STRATEGIES.items() if s.measure in uncertainty.MEASURES},
    **{m: m for m in uncertainty.MEASURES},
}


def get(name: str) -> Strategy:
  if name not in STRATEGIES:
    from segal_jax.errors import UserError  # pylint: disable=g-import-not-at-top
    raise UserError(f'unknown strategy {name!r}',
                    f'choose from {", ".join(sorted(STRATEGIES))}')
  return STRATEGIES[name]


def top_k(scores: np.ndarray, k: int, *, exclude: np.ndarray | None = None) -> np.ndarray:
  """Indices of the k highest scores, never an excluded one.

  Args:
    scores: [N] (or [N, S], flattened in row-major order) float scores.
    k: how many to return (fewer if fewer are eligible).
    exclude: bool mask like `scores`; True units are never returned
      (already labeled).

  Returns:
    [min(k, eligible)] int64 flat indices, highest score first; equal scores
    are broken by the lower index, so the result is deterministic.
  """
  flat = np.asarray(scores, np.float64).ravel()
  eligible = np.ones_like(flat, bool) if exclude is None else ~np.asarray(exclude, bool).ravel()
  idx = np.flatnonzero(eligible & ~np.isnan(flat))
  # lexsort sorts by the last key first: score descending, then index ascending.
  order = np.lexsort((idx, -flat[idx]))
  return idx[order[:k]]


def candidates(key: jax.Array, unlabeled: np.ndarray, count: int) -> np.ndarray:
  """A random subset (sorted) of `count` unlabeled indices; all if count >= len."""
  unlabeled = np.sort(np.asarray(unlabeled))
  if count <= 0 or count >= len(unlabeled):
    return unlabeled
  perm = np.asarray(jax.random.permutation(key, len(unlabeled)))
  return np.sort(unlabeled[perm[:count]])


def _true_loss_map(apply_fn, variables, x, labels):
  """[B, H, W] per-pixel cross-entropy of the deterministic prediction, 0 where
  the label is 255, and the [B, H, W] mask of labeled pixels."""
  logits = apply_fn(variables, x, train=False).astype(jnp.float32)
  logp = jax.nn.log_softmax(logits, axis=-1)
  valid = labels != 255
  safe = jnp.where(valid, labels, 0).astype(jnp.int32)
  ce = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
  return jnp.where(valid, ce, 0.0), valid


@functools.lru_cache(maxsize=16)
def _score_fn(apply_fn: Callable[..., Any], measure: str, passes: int, chunk: int | None,
              mean: tuple[float, ...], std: tuple[float, ...], mesh: jax.sharding.Mesh,
              num_segments: int = 0):
  """One jitted scorer per static configuration and mesh (never rebuilt in a loop).

  (variables, images [B, H, W, 3] uint8, ids [B] int32, key, extras) -> [B]
  float32 image scores, or [B, num_segments] superpixel mean scores when
  `num_segments` > 0 (the maps never leave the device). `extras` holds
  `segments` [B, H, W] int32 (superpixel scores) and `labels` [B, H, W] uint8
  (the `true_loss` oracle). `loss_prediction` scores an image by the predicted
  loss of a model with a loss-prediction head (image units only). Variables and key are replicated, the batch split
  over the mesh's `data` axis, the scores gathered (replicated) so every
  process gets all of them.
  """
  rep, split = parallel.replicated(mesh), parallel.batch_sharded(mesh)

  def score(variables, images, ids, key, extras):
    x = augment.normalize(augment.to_float(images), mean, std)
    if measure == LOSS_PREDICTION:
      if num_segments:
        raise ValueError('loss_prediction scores whole images, not superpixels')
      # The head's predicted loss of each image (a deterministic pass).
      return apply_fn(variables, x, train=False, predict_loss=True)[1].astype(jnp.float32)
    if measure == TRUE_LOSS:
      m, valid = _true_loss_map(apply_fn, variables, x, extras['labels'])
    else:
      m = uncertainty.mc_forward(apply_fn, variables, x, key, image_ids=ids, passes=passes,
                                 measures=(measure,), chunk_size=chunk)[measure]
      valid = None
    if num_segments:
      return superpixels.segment_means(m, extras['segments'], num_segments)[0]
    return uncertainty.image_scores(m, valid)

  return jax.jit(score, in_shardings=(rep, split, split, rep, split), out_shardings=rep)


def score_images(apply_fn, variables, images: np.ndarray, indices: np.ndarray, key: jax.Array, *,
                 strategy: Strategy, passes: int, chunk: int | None, mean, std,
                 batch_size: int, progress: bool = True,
                 mesh: jax.sharding.Mesh | None = None, segments=None,
                 num_segments: int = 0, labels=None) -> np.ndarray:
  """Per-image uncertainty scores of `images[indices]`, on every device of `mesh`.

  Dropout keys belong to images (`fold_in(fold_in(key, index), pass)`), so a
  score does not depend on the batch it was computed in nor on the number of
  devices. Each global batch of `batch_size` images is split over the devices;
  each process reads only its rows of it and receives every score, so all
  processes return the same array. The last batch is padded (repeating its
  last image) to a full one so the scorer compiles once.

  Args:
    batch_size: global batch size, a multiple of the mesh's device count.
    mesh: devices to score on (default: `parallel.default_mesh()`, all).
    segments: [N, H, W] int superpixels of `images`; with `num_segments` > 0
      the result is each superpixel's mean score instead of the image's.
    labels: [N, H, W] uint8 ground truth, for the `true_loss` strategy only.

  Returns:
    [len(indices)] float32 scores (higher = more uncertain), in `indices` order,
    or [len(indices), num_segments] superpixel means (0 for absent ids).
  """
  mesh = parallel.default_mesh() if mesh is None else mesh
  parallel.check_batch_size(batch_size, '--eval_batch_size', mesh.size)
  rows = parallel.local_rows(batch_size, mesh)
  fn = _score_fn(apply_fn, strategy.measure, passes, chunk or None, tuple(mean), tuple(std),
                 mesh, num_segments)
  variables, key = parallel.replicate((variables, key), mesh)
  out = np.zeros((len(indices), num_segments) if num_segments else len(indices), np.float32)
  bar = tqdm.tqdm(total=len(indices), desc='score pool', unit='img',
                  disable=not (progress and parallel.is_writer()), leave=False)
  for start in range(0, len(indices), batch_size):
    idx = indices[start:start + batch_size]
    pad = batch_size - len(idx)
    padded = np.concatenate([idx, np.repeat(idx[-1:], pad)]) if pad else idx
    local = np.asarray(padded[rows])
    extras = {}
    if num_segments:
      extras['segments'] = np.asarray(segments[local], np.int32)
    if strategy.measure == TRUE_LOSS:
      extras['labels'] = np.asarray(labels[local])
    batch = parallel.shard_batch((np.asarray(images[local]), local.astype(np.int32), extras),
                                 mesh, batch_size)
    s = parallel.fetch(fn(variables, batch[0], batch[1], key, batch[2]))
    out[start:start + len(idx)] = s[:len(idx)]
    bar.update(len(idx))
  bar.close()
  return out
