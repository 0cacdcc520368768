"""Every training and scoring loss, and the loss functions the train step takes.

Labels come in two forms, told apart by their rank:

* class ids: [..., ] int, one class per pixel, `labels.IGNORE` (255) where unlabeled;
* a partial-label mask: [..., C] bool, the classes a pixel may have (an
  annotator who says "one of these"); a pixel with no allowed class is
  unlabeled. A mask with one allowed class per pixel is the same label as its
  class id, and `pixel_loss` gives exactly the same loss for both.

A train-step loss function (`LossFn`, as scenic's trainers take one) maps
(apply_fn, params, batch_stats, images, labels, dropout_key, controls) to
(loss, (BatchNorm updates, metrics)); `controls` is a small replicated array
the loss reads per epoch (the loss-prediction schedule), empty for the plain
segmentation loss. A new strategy adds a loss here, not a branch in the step.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from segal_jax.data import labels as labels_lib

LossFn = Callable[..., tuple[jax.Array, tuple[dict, dict]]]


def pixel_cross_entropy(logits: jax.Array, labels: jax.Array
                        ) -> tuple[jax.Array, jax.Array]:
  """Per-pixel cross-entropy and the mask of labeled pixels.

  Args:
    logits: [..., C] float.
    labels: [...] int class ids (`labels.IGNORE` = unlabeled), or a partial-label
      mask [..., C] bool of allowed classes; the loss is then
      -log(sum of the allowed classes' probabilities).

  Returns:
    ([...] float32, 0 on unlabeled pixels; [...] bool, True where labeled).
  """
  logits = logits.astype(jnp.float32)
  if labels.ndim == logits.ndim:  # partial-label mask
    allowed = labels.astype(bool)
    valid = jnp.any(allowed, axis=-1)
    # logsumexp over one allowed class is that logit exactly: a one-class mask
    # gives the integer-label loss to the bit.
    per_pixel = (jax.nn.logsumexp(logits, axis=-1)
                 - jax.nn.logsumexp(logits, axis=-1, where=allowed))
    return jnp.where(valid, per_pixel, 0.0), valid
  labels = labels.astype(jnp.int32)
  valid = labels != labels_lib.IGNORE
  per_pixel = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(valid, labels, 0))
  return jnp.where(valid, per_pixel, 0.0), valid


def masked_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Cross-entropy averaged over labeled pixels only.

  Args:
    logits: [..., C] float.
    labels: [...] int class ids or `labels.IGNORE`, or a [..., C] bool partial-label mask.

  Returns:
    [] float32; 0 (not NaN) when no pixel is labeled.
  """
  per_pixel, valid = pixel_cross_entropy(logits, labels)
  return per_pixel.sum() / jnp.maximum(valid.sum(), 1)


def per_image_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean cross-entropy over each image's labeled pixels.

  Args:
    logits: [B, H, W, C] float.
    labels: [B, H, W] int class ids or `labels.IGNORE` (or a [B, H, W, C] bool mask).

  Returns:
    [B] float32; 0 for an image without a labeled pixel.
  """
  per_pixel, valid = pixel_cross_entropy(logits, labels)
  return per_pixel.sum(axis=(1, 2)) / jnp.maximum(valid.sum(axis=(1, 2)), 1)


def balanced_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Cross-entropy over labeled pixels, each weighted by 1/sqrt(f_c), f_c the
  share of the batch's labeled pixels in its class c; the weighted mean.

  With 98% background, a class on 0.1% of the pixels weighs 31 times a
  background pixel, so a few thin objects are not drowned (plain
  cross-entropy then learns to predict the background everywhere). The
  weights come from the labels only, so they carry no gradient.

  Args:
    logits: [..., C] float.
    labels: [...] int class ids or `labels.IGNORE` (a [..., C] partial-label
      mask has no single class a pixel: `masked_cross_entropy` is returned).

  Returns:
    [] float32; 0 (not NaN) when no pixel is labeled.
  """
  if labels.ndim == logits.ndim:
    return masked_cross_entropy(logits, labels)
  per_pixel, valid = pixel_cross_entropy(logits, labels)
  classes = jnp.where(valid, labels.astype(jnp.int32), 0)
  counts = jnp.zeros(logits.shape[-1], jnp.float32).at[classes].add(valid.astype(jnp.float32))
  share = counts / jnp.maximum(valid.sum(), 1)
  weight = jnp.where(valid, jax.lax.rsqrt(jnp.maximum(share[classes], 1e-12)), 0.0)
  return (weight * per_pixel).sum() / jnp.maximum(weight.sum(), 1e-12)


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


def segmentation_loss(apply_fn, params, batch_stats, images: jax.Array, labels: jax.Array,
                      dropout_key: jax.Array, controls: jax.Array | None = None
                      ) -> tuple[jax.Array, tuple[dict, dict]]:
  """The plain training loss: `masked_cross_entropy` of the model's logits.

  Args:
    apply_fn: the model's apply (`models` signature: returns (logits, extras)).
    images: [B, H, W, 3] float32 normalised; labels: [B, H, W] int or [B, H, W, C] bool.
    controls: unused.

  Returns:
    (loss, (BatchNorm updates, {})).
  """
  del controls
  logits, updates = _train_logits(apply_fn, params, batch_stats, images, dropout_key)
  return masked_cross_entropy(logits, labels), (updates, {})


def balanced_segmentation_loss(apply_fn, params, batch_stats, images: jax.Array,
                               labels: jax.Array, dropout_key: jax.Array,
                               controls: jax.Array | None = None
                               ) -> tuple[jax.Array, tuple[dict, dict]]:
  """`segmentation_loss` with `balanced_cross_entropy` (--train_class_balance)."""
  del controls
  logits, updates = _train_logits(apply_fn, params, batch_stats, images, dropout_key)
  return balanced_cross_entropy(logits, labels), (updates, {})


def _train_logits(apply_fn, params, batch_stats, images, dropout_key):
  """(logits, BatchNorm updates) of the network in training mode."""
  (logits, _), updates = apply_fn(
      {'params': params, 'batch_stats': batch_stats}, images, train=True,
      rngs={'dropout': dropout_key}, mutable=['batch_stats'])
  return logits, updates


@dataclasses.dataclass(frozen=True)
class JointLoss:
  """Cross-entropy + weight x margin ranking loss (learning loss, Yoo & Kweon 2019).

  A `LossFn` for a model with a loss-prediction head (`models.DRNSegWithLossHead`),
  with its schedule (flags `lp_*`): during the first `warmup_epochs` the
  ranking loss is off; from `detach_epoch` on its gradient no longer reaches
  the network's features (only the head learns from it). Compares by value,
  so equal settings share one compiled step; the per-epoch weight and detach
  reach the step as `controls`, so every epoch runs the same compiled step.

  weight: lambda, the ranking loss's weight in the total loss.
  margin: the ranking loss's margin (static in the jitted step).
  warmup_epochs: epochs without ranking loss at the start of each cycle.
  detach_epoch: from this epoch on the features are detached from the head.
  The defaults are the study's code's: lambda 1, 2 warm-up epochs, detach at
  epoch 150 of 250.
  """
  weight: float = 1.0
  margin: float = 1.0
  warmup_epochs: int = 2
  detach_epoch: int = 150

  @classmethod
  def from_config(cls, config) -> 'JointLoss':
    """The joint loss an `ExperimentConfig`'s `lp_*` fields describe."""
    return cls(weight=float(config.lp_weight), margin=float(config.lp_margin),
               warmup_epochs=int(config.lp_warmup_epochs),
               detach_epoch=int(config.lp_detach_epoch))

  def controls(self, epoch: int) -> np.ndarray:
    """[2] float32 (ranking-loss weight, detach) for `epoch` (counted from 0)."""
    weight = self.weight if epoch >= self.warmup_epochs else 0.0
    detach = 1.0 if epoch >= self.detach_epoch else 0.0
    return np.array([weight, detach], np.float32)

  def __call__(self, apply_fn, params, batch_stats, images: jax.Array, labels: jax.Array,
               dropout_key: jax.Array, controls: jax.Array
               ) -> tuple[jax.Array, tuple[dict, Any]]:
    """controls: [2] float32 (ranking-loss weight, detach) of this epoch.

    Returns:
      (total loss, (BatchNorm updates, {'ce', 'rank_loss'})).
    """
    (logits, extras), updates = apply_fn(
        {'params': params, 'batch_stats': batch_stats}, images, train=True,
        rngs={'dropout': dropout_key}, mutable=['batch_stats'], predict_loss=True,
        detach=controls[1])
    ce = masked_cross_entropy(logits, labels)
    rank = margin_ranking_loss(extras['loss'], per_image_loss(logits, labels), self.margin)
    return ce + controls[0] * rank, (updates, {'ce': ce, 'rank_loss': rank})
