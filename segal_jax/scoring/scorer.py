"""The one scorer: images -> per-image or per-superpixel scores, on every device.

Every caller scores through here: the active-learning loop (candidates of the
pool), `launch.score` (a folder, `folder_scoring`), the per-cycle figures (maps
of the top images) and the benchmark. `Settings` is the static part; `jitted`
builds one compiled function per (apply function, settings, mesh) and caches
it, so a cycle, a folder or a benchmark run never recompiles for the same
model. Inside, images are normalised, the network runs (MC-dropout passes via
`uncertainty.mc_forward`, or one deterministic pass) and the maps are reduced
on the device; only scores (and maps when asked for) come back.

Dropout keys belong to images (`fold_in(fold_in(key, image id), pass)`), so
a score depends neither on its batch nor on the number of devices.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import auto as tqdm

from segal_jax.data import augment
from segal_jax import parallel
from segal_jax.scoring import superpixels
from segal_jax.scoring import uncertainty
from segal_jax.training import losses

# Scores that are not uncertainty measures: the oracle's real loss against the
# ground truth, and a loss-prediction head's predicted loss (image units only).
TRUE_LOSS = 'true_loss'
LOSS_PREDICTION = 'loss_prediction'


@dataclasses.dataclass(frozen=True)
class Settings:
  """The static part of scoring (hashable: one compiled scorer per value).

  measure: the score: a key of `uncertainty.MEASURES`, `TRUE_LOSS` (needs
    labels) or `LOSS_PREDICTION` (needs a model with a loss-prediction head).
  passes, chunk: MC-dropout passes and how many run at once (None: all).
  mean, std: [3] normalisation in [0, 1] units.
  also: uncertainty measures whose image scores come back too (with
    superpixel means as well).
  num_segments: > 0: superpixel means of `measure` (ids 0..num_segments-1)
    instead of image scores.
  keep_map: also return `measure`'s [B, H, W] map.
  logit_resolution: reduce the MC passes at 1/8 resolution (see `mc_forward`).
  unit_classes: also return each superpixel's dominant predicted class
    ('segment_classes' [B, S] int32, -1 for empty superpixels) from one
    deterministic pass (with `num_segments`).
  unit_features: > 0: also return each superpixel's mean of the last stage's
    features under a random projection to this many dimensions
    ('segment_features' [B, S, unit_features] float32; `unit_outputs`).
  prediction: also return the deterministic pass's [B, H, W] uint8 classes
    (the expected annotation cost of a unit comes from them).
  """
  measure: str
  passes: int = 1
  chunk: int | None = None
  mean: tuple[float, ...] = (0.0, 0.0, 0.0)
  std: tuple[float, ...] = (1.0, 1.0, 1.0)
  also: tuple[str, ...] = ()
  num_segments: int = 0
  keep_map: bool = False
  logit_resolution: bool = False
  unit_classes: bool = False
  unit_features: int = 0
  prediction: bool = False

  def __post_init__(self):
    # Canonical values, so equal settings hash equal however they were given.
    object.__setattr__(self, 'chunk', self.chunk or None)
    object.__setattr__(self, 'mean', tuple(float(v) for v in self.mean))
    object.__setattr__(self, 'std', tuple(float(v) for v in self.std))
    object.__setattr__(self, 'also', tuple(self.also))


def _score(apply_fn: Callable[..., Any], s: Settings, variables, images, ids, key,
           extras) -> dict[str, jax.Array]:
  """The traced body: uint8 images [B, H, W, 3] -> {name: [B, ...]} on the device."""
  x = augment.normalize(augment.to_float(images), s.mean, s.std)
  if s.measure == LOSS_PREDICTION:
    if s.num_segments or s.keep_map:
      raise ValueError('loss_prediction scores whole images, not superpixels or maps')
    return {'scores': apply_fn(variables, x, train=False)[1]['loss'].astype(jnp.float32)}
  if s.measure == TRUE_LOSS:
    logits, _ = apply_fn(variables, x, train=False)
    primary, valid = losses.pixel_cross_entropy(logits, extras['labels'])
    maps = {}
  else:
    measures = tuple(dict.fromkeys((s.measure, *s.also)))
    maps = uncertainty.mc_forward(apply_fn, variables, x, key, image_ids=ids, passes=s.passes,
                                  measures=measures, chunk_size=s.chunk,
                                  logit_resolution=s.logit_resolution)
    primary, valid = maps[s.measure], None
  out = {}
  if s.num_segments:
    segments = extras['segments']
    if valid is not None:  # the true loss: a superpixel's mean over its labeled pixels only
      segments = jnp.where(valid, segments, -1)
    out['segment_means'], out['segment_counts'] = superpixels.segment_means(
        primary, segments, s.num_segments)
  else:
    out['scores'] = uncertainty.image_scores(primary, valid)
  if s.unit_classes or s.unit_features:
    out.update(unit_outputs(apply_fn, variables, x, key, extras['segments'], s))
  out.update({m: uncertainty.image_scores(maps[m]) for m in s.also})
  if s.keep_map:
    out['map'] = primary
  if s.prediction:
    out['prediction'] = jnp.argmax(apply_fn(variables, x, train=False)[0], -1).astype(jnp.uint8)
  return out


# Folded into the scoring key to draw the feature projection (one per key, so
# every batch of a call projects alike).
_PROJECTION_SALT = 0x70726f6a


def unit_outputs(apply_fn: Callable[..., Any], variables, x: jax.Array, key: jax.Array,
                 segments: jax.Array, s: Settings) -> dict[str, jax.Array]:
  """Per-superpixel predicted class and pooled features, from one deterministic pass.

  The dominant class is the most frequent per-pixel argmax inside the
  superpixel (lowest class on ties). Features: the network's last stage
  `extras['features']['stage_8']` [B, h, w, F], projected by a Gaussian
  matrix [F, D] / sqrt(D) drawn from `fold_in(key, _PROJECTION_SALT)`
  (Johnson-Lindenstrauss: distances kept up to a small factor), repeated to
  the image's resolution (nearest) and averaged inside each superpixel; the
  projection comes first, so nothing of size H x W x F exists.

  Args:
    x: [B, H, W, 3] normalised images; segments: [B, H, W] int ids.

  Returns:
    {'segment_classes': [B, S] int32 (-1: empty superpixel)} and/or
    {'segment_features': [B, S, D] float32}.
  """
  logits, extras = apply_fn(variables, x, train=False)
  batch, height, width, classes = logits.shape
  columns = [jax.nn.one_hot(jnp.argmax(logits, axis=-1), classes, dtype=jnp.float32)]
  dim = s.unit_features
  if dim:
    feats = extras['features']['stage_8'].astype(jnp.float32)
    proj = jax.random.normal(jax.random.fold_in(key, _PROJECTION_SALT),
                             (feats.shape[-1], dim), jnp.float32) / jnp.sqrt(float(dim))
    low = feats @ proj
    up = jax.image.resize(low, (batch, height, width, dim), 'nearest')
    columns.append(up)
  sums = superpixels.segment_sums(jnp.concatenate(columns, axis=-1), segments, s.num_segments)
  hist = sums[..., :classes]
  count = hist.sum(-1)
  out = {}
  if s.unit_classes:
    out['segment_classes'] = jnp.where(count > 0, jnp.argmax(hist, -1), -1).astype(jnp.int32)
  if dim:
    out['segment_features'] = sums[..., classes:] / jnp.maximum(count, 1.0)[..., None]
  return out


@functools.lru_cache(maxsize=32)
def jitted(apply_fn: Callable[..., Any], settings: Settings,
           mesh: jax.sharding.Mesh) -> Callable:
  """The compiled scorer: (variables, images [B, H, W, 3] uint8, ids [B] int32,
  key, extras) -> {name: [B, ...]}.

  `extras` holds `labels` [B, H, W] (TRUE_LOSS) and `segments` [B, H, W] int32
  (superpixel means). Variables and key are replicated, the batch split over
  the mesh's `data` axis, the outputs gathered (replicated) so every process
  gets all of them. Outputs: 'scores' [B] (or 'segment_means' and
  'segment_counts' [B, num_segments]), each of `also` [B], 'map' [B, H, W],
  'segment_classes' and 'segment_features' (`unit_outputs`), 'prediction' [B, H, W].
  """
  rep, split = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  return jax.jit(functools.partial(_score, apply_fn, settings),
                 in_shardings=(rep, split, split, rep, split), out_shardings=rep)


def score_batch(apply_fn, variables, settings: Settings, images: np.ndarray, ids: np.ndarray,
                key: jax.Array, *, batch_size: int, mesh: jax.sharding.Mesh,
                extras: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
  """Scores one global batch of `batch_size` images; this process holds its rows.

  This process's rows (`parallel.local_rows`; in one process the whole batch)
  are padded to their full count by repeating the last image, so the scorer
  compiles once; the caller drops the padding from the result.

  Args:
    variables, key: replicated over `mesh` (`parallel.replicate`).
    images: [b, H, W, 3] uint8; ids: [b] int, the images' dropout ids.
    extras: [b, ...] arrays (see `jitted`).

  Returns:
    {name: NumPy [batch_size, ...]}, the whole global batch on every process.
  """
  rows = parallel.local_rows(batch_size, mesh)
  fn = jitted(apply_fn, settings, mesh)
  local = jax.tree.map(lambda a: parallel.pad_rows(np.asarray(a), rows.stop - rows.start),
                       (images, np.asarray(ids, np.int32), extras or {}))
  batch = parallel.shard_batch(local, mesh, batch_size)
  out = fn(variables, *batch[:2], key, batch[2])
  return {k: parallel.fetch(v) for k, v in out.items()}


@dataclasses.dataclass(frozen=True)
class Batches:
  """How `score_images` walks its images; none of it changes a score.

  size: global batch size, a multiple of the mesh's device count.
  mesh: devices to score on (default: `parallel.default_mesh()`, all).
  progress: show a tqdm bar labelled `desc` (on the writing process).
  """
  size: int
  mesh: jax.sharding.Mesh | None = None
  progress: bool = True
  desc: str = 'score pool'


def score_images(apply_fn, variables, images, indices: np.ndarray, key: jax.Array, *,
                 settings: Settings, batches: Batches, segments=None, labels=None,
                 ids: np.ndarray | None = None) -> dict[str, np.ndarray]:
  """Scores `images[indices]` in global batches on every device (`batches`).

  Each process reads only its rows of every batch and receives every score,
  so all processes return the same arrays. The last batch is padded (its last
  image repeated) so the scorer compiles once.

  Args:
    images: [N, H, W, 3] uint8, indexable by arrays of indices.
    indices: [n] which images to score.
    segments: [N, H, W] int superpixels (with `settings.num_segments`).
    labels: [N, H, W] uint8 ground truth (for `TRUE_LOSS`).
    ids: [n] the images' dropout ids (default: `indices`, their pool indices).

  Returns:
    {name: [len(indices), ...]} in `indices` order (see `jitted`).
  """
  mesh = parallel.default_mesh() if batches.mesh is None else batches.mesh
  batch_size = batches.size
  parallel.check_batch_size(batch_size, '--eval_batch_size', mesh.size)
  rows = parallel.local_rows(batch_size, mesh)
  variables, key = parallel.replicate((variables, key), mesh)
  indices = np.asarray(indices)
  ids = indices if ids is None else np.asarray(ids)
  parts = []
  bar = tqdm.tqdm(total=len(indices), desc=batches.desc, unit='img',
                  disable=not (batches.progress and parallel.is_writer()), leave=False)
  for start in range(0, len(indices), batch_size):
    idx = indices[start:start + batch_size]
    local = parallel.pad_rows(idx, batch_size)[rows]
    local_ids = parallel.pad_rows(ids[start:start + batch_size], batch_size)[rows]
    extras = {}
    if settings.num_segments:
      extras['segments'] = np.asarray(segments[local], np.int32)
    if settings.measure == TRUE_LOSS:
      extras['labels'] = np.asarray(labels[local])
    out = score_batch(apply_fn, variables, settings, np.asarray(images[local]), local_ids, key,
                      batch_size=batch_size, mesh=mesh, extras=extras)
    parts.append({k: v[:len(idx)] for k, v in out.items()})
    bar.update(len(idx))
  bar.close()
  if not parts:
    return {}
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
