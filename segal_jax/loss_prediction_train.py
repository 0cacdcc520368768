"""The `loss_prediction` strategy: train a loss-prediction head with the network.

Learning Loss for Active Learning (Yoo & Kweon, CVPR 2019). The head
(`models.LossPredictionHead`) reads the network's intermediate features and
predicts each image's loss. It is trained jointly with the segmentation
network: the loss is cross-entropy + `weight` x a margin ranking loss between
the predicted and the true per-image losses of image pairs. During the first
`warmup_epochs` the ranking loss is off; from `detach_epoch` on, its gradient
no longer reaches the network's features (only the head learns from it).
Selection then ranks unlabeled images by their predicted loss.

`DRNSegWithLossHead` is a `DRNSeg` with one more submodule, `loss_head`, so its
variables are DRNSeg's plus `params['loss_head']` and everything that handles
a DRNSeg (evaluation, checkpoints of the segmentation part) handles it too.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from segal_jax import models

HEAD = 'loss_head'


class DRNSegWithLossHead(models.DRNSeg):
  """`DRNSeg` plus a loss-prediction head over its `FEATURE_KEYS` levels.

  Attributes (besides DRNSeg's):
    hidden: width of each level's projection in the head.
  """
  hidden: int = 256

  def setup(self):
    super().setup()
    self.loss_head = models.LossPredictionHead(hidden=self.hidden)

  def __call__(self, x: jax.Array, *, train: bool, mc: bool = False,
               return_features: bool = False, predict_loss: bool = False,
               detach: Any = 0.0):
    """x: [B, H, W, 3] float32 -> logits [B, H, W, C] float32, as `DRNSeg`.

    Args:
      predict_loss: also return the predicted loss: `(logits, loss [B] float32)`.
      detach: 1 stops the head's gradient from reaching the features, 0 lets
        it through ([] float, may be traced; the forward value is the same).
      return_features: as `DRNSeg` (ignored with `predict_loss`).
    """
    if not (predict_loss or self.is_initializing()):
      return super().__call__(x, train=train, mc=mc, return_features=return_features)
    logits, features = super().__call__(x, train=train, mc=mc, return_features=True)
    detach = jnp.asarray(detach, jnp.float32)
    # f + d * (sg(f) - f): the value is f; the gradient is scaled by (1 - d).
    features = {k: f + (detach * (jax.lax.stop_gradient(f) - f)).astype(f.dtype)
                for k, f in features.items()}
    predicted = self.loss_head(features)
    if not predict_loss:  # `init` called as for logits: the head's params exist too
      return super().__call__(x, train=train, mc=mc, return_features=return_features)
    return logits, predicted


def segmentation_variables(variables: dict) -> dict:
  """The variables without the head's: a plain `DRNSeg`'s (unchanged otherwise)."""
  params = variables.get('params', {})
  if HEAD not in params:
    return variables
  return {**variables, 'params': {k: v for k, v in params.items() if k != HEAD}}


@dataclasses.dataclass(frozen=True)
class Schedule:
  """How the head is trained (flags `lp_*`).

  weight: lambda, the ranking loss's weight in the total loss.
  margin: the ranking loss's margin (static in the jitted step).
  warmup_epochs: epochs without ranking loss at the start of each cycle.
  detach_epoch: from this epoch on the features are detached from the head.
  """
  weight: float = 0.01
  margin: float = 1.0
  warmup_epochs: int = 1
  detach_epoch: int = 120

  def controls(self, epoch: int) -> np.ndarray:
    """[2] float32 (ranking-loss weight, detach) for `epoch` (counted from 0)."""
    weight = self.weight if epoch >= self.warmup_epochs else 0.0
    detach = 1.0 if epoch >= self.detach_epoch else 0.0
    return np.array([weight, detach], np.float32)


def schedule_from_config(config) -> Schedule:
  return Schedule(weight=float(config.lp_weight), margin=float(config.lp_margin),
                  warmup_epochs=int(config.lp_warmup_epochs),
                  detach_epoch=int(config.lp_detach_epoch))


def per_image_loss(logits: jax.Array, labels: jax.Array, ignore_index: int = 255) -> jax.Array:
  """Mean cross-entropy over each image's labeled pixels.

  Args:
    logits: [B, H, W, C] float.
    labels: [B, H, W] int, class ids or `ignore_index`.

  Returns:
    [B] float32; 0 for an image without a labeled pixel.
  """
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  valid = labels != ignore_index
  safe = jnp.where(valid, labels, 0).astype(jnp.int32)
  ce = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
  total = jnp.sum(jnp.where(valid, ce, 0.0), axis=(1, 2))
  count = jnp.sum(valid, axis=(1, 2))
  return total / jnp.maximum(count, 1)


def margin_ranking_loss(predicted: jax.Array, true: jax.Array, margin: float) -> jax.Array:
  """Ranking loss of the predicted losses against the true ones, over pairs.

  Image i is paired with image B/2 + i (i < B/2; with an odd B the last image
  is left out). target = sign(true_i - true_j) (no gradient); the loss is
  mean over pairs of max(0, -target * (predicted_i - predicted_j) + margin).

  Args:
    predicted: [B] float predicted losses.
    true: [B] float true losses.
    margin: the margin.

  Returns:
    [] float32; 0 when B < 2.
  """
  half = predicted.shape[0] // 2
  if half == 0:
    return jnp.float32(0.0)
  predicted = predicted.astype(jnp.float32)
  true = jax.lax.stop_gradient(true.astype(jnp.float32))
  target = jnp.sign(true[:half] - true[half:2 * half])
  diff = predicted[:half] - predicted[half:2 * half]
  return jnp.mean(jnp.maximum(0.0, -target * diff + margin))


def joint_loss(apply_fn, params, batch_stats, images: jax.Array, labels: jax.Array,
               dropout_key: jax.Array, controls: jax.Array, *, margin: float,
               cross_entropy) -> tuple[jax.Array, tuple[dict, dict]]:
  """Cross-entropy + weight x margin ranking loss of one training batch.

  Args:
    apply_fn: a `DRNSegWithLossHead`'s apply.
    images: [B, H, W, 3] float32 normalised; labels: [B, H, W] int.
    controls: [2] float32 (ranking-loss weight, detach), see `Schedule.controls`.
    cross_entropy: (logits, labels) -> [] the segmentation loss.

  Returns:
    (total loss, (BatchNorm updates, {'ce', 'rank_loss'})).
  """
  (logits, predicted), updates = apply_fn(
      {'params': params, 'batch_stats': batch_stats}, images, train=True,
      rngs={'dropout': dropout_key}, mutable=['batch_stats'], predict_loss=True,
      detach=controls[1])
  ce = cross_entropy(logits, labels)
  rank = margin_ranking_loss(predicted, per_image_loss(logits, labels), margin)
  return ce + controls[0] * rank, (updates, {'ce': ce, 'rank_loss': rank})


def ranking_accuracy(predicted: np.ndarray, true: np.ndarray) -> float:
  """Fraction of image pairs whose predicted-loss order matches the true order.

  Over all pairs i < j with different true losses; a tie in the prediction
  counts as wrong. NaN when there is no such pair.

  Args:
    predicted, true: [N] float.
  """
  predicted = np.asarray(predicted, np.float64)
  true = np.asarray(true, np.float64)
  i, j = np.triu_indices(len(true), k=1)
  t = np.sign(true[i] - true[j])
  keep = t != 0
  if not keep.any():
    return float('nan')
  return float(np.mean(np.sign(predicted[i] - predicted[j])[keep] == t[keep]))


def validation_ranking_accuracy(apply_fn, variables, split, *, batch_size: int,
                                progress: bool = False, mesh=None) -> float:
  """`ranking_accuracy` of the head over a labeled split (e.g. the validation set).

  Predicted losses come from a deterministic pass (`train=False`), true losses
  are each image's mean cross-entropy over its labeled pixels; images without
  a labeled pixel are left out. Both are computed by `selection.score_images`,
  so they shard and batch like pool scoring.

  Args:
    apply_fn, variables: a `DRNSegWithLossHead`'s apply and variables.
    split: has `images` [N, H, W, 3] uint8, `labels` [N, H, W] uint8, `mean`, `std`.
  """
  from segal_jax import selection  # pylint: disable=g-import-not-at-top
  indices = np.arange(len(split.images))
  key = jax.random.key(0)  # unused: both passes are deterministic
  common = dict(passes=1, chunk=None, mean=split.mean, std=split.std,
                batch_size=batch_size, progress=progress, mesh=mesh)
  predicted = selection.score_images(apply_fn, variables, split.images, indices, key,
                                     strategy=selection.get(selection.LOSS_PREDICTION),
                                     **common)
  true = selection.score_images(apply_fn, variables, split.images, indices, key,
                                strategy=selection.get(selection.TRUE_LOSS),
                                labels=split.labels, **common)
  labeled = np.asarray([np.any(np.asarray(split.labels[i]) != 255) for i in indices])
  return ranking_accuracy(predicted[labeled], true[labeled])
