"""Loss-prediction head (Yoo & Kweon, "Learning Loss for Active Learning", CVPR 2019).

A small module that reads intermediate features of the segmentation network and
predicts the network's loss on each image; the images with the highest predicted
loss are selected for annotation. `DRNSegWithLossHead` is a `DRNSeg` carrying
one: its variables are DRNSeg's plus `params['loss_head']`, so everything that
handles a DRNSeg (evaluation, checkpoints of the segmentation part) handles it.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from segal_jax.models import drn


class LossPredictionHead(nn.Module):
  """Per level: global average pool -> Dense(hidden) -> ReLU; concat; Dense(1).

  Attributes:
    hidden: width of each level's projection.
    keys: which feature levels to read, in order (default: the ten levels
      `DRNSeg` returns in `extras['features']`).
  """
  hidden: int = 256
  keys: Sequence[str] = drn.FEATURE_KEYS

  @nn.compact
  def __call__(self, features: Mapping[str, jax.Array]) -> jax.Array:
    """features: {key: [B, h, w, C]} -> predicted loss [B] float32."""
    missing = [k for k in self.keys if k not in features]
    if missing:
      raise KeyError(f'loss-prediction head needs feature levels {missing}')
    projected = []
    for key in self.keys:
      pooled = jnp.mean(features[key].astype(jnp.float32), axis=(1, 2))  # [B, C]
      projected.append(nn.relu(nn.Dense(self.hidden, name=f'fc_{key}')(pooled)))
    return nn.Dense(1, name='out')(jnp.concatenate(projected, axis=-1))[:, 0]


HEAD = 'loss_head'


class DRNSegWithLossHead(drn.DRNSeg):
  """`DRNSeg` plus a loss-prediction head over its `FEATURE_KEYS` levels.

  Attributes (besides DRNSeg's):
    hidden: width of each level's projection in the head.
  """
  hidden: int = 256

  def setup(self):
    super().setup()
    self.loss_head = LossPredictionHead(hidden=self.hidden)

  def __call__(self, x: jax.Array, *, train: bool, mc: bool = False,
               detach: Any = 0.0, predict_loss: bool = True
               ) -> tuple[jax.Array, dict[str, Any]]:
    """As `DRNSeg`, with `extras['loss']`: [B] float32 predicted loss of each image.

    Args:
      detach: 1 stops the head's gradient from reaching the features, 0 lets
        it through ([] float, may be traced; the forward value is the same).
      predict_loss: False leaves the head out (`extras` as DRNSeg's); the
        logits are the same either way.
    """
    logits, extras = super().__call__(x, train=train, mc=mc)
    if not (predict_loss or self.is_initializing()):
      return logits, extras
    detach = jnp.asarray(detach, jnp.float32)
    # f + d * (sg(f) - f): the value is f; the gradient is scaled by (1 - d).
    features = {k: f + (detach * (jax.lax.stop_gradient(f) - f)).astype(f.dtype)
                for k, f in extras['features'].items()}
    return logits, {**extras, 'loss': self.loss_head(features)}


def segmentation_variables(variables: dict) -> dict:
  """The variables without the head's: a plain `DRNSeg`'s (unchanged otherwise)."""
  params = variables.get('params', {})
  if HEAD not in params:
    return variables
  return {**variables, 'params': {k: v for k, v in params.items() if k != HEAD}}
