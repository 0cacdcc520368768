"""Loss-prediction head (Yoo & Kweon, "Learning Loss for Active Learning", CVPR 2019).

A small module that reads intermediate features of the segmentation network and
predicts the network's loss on each image; the images with the highest predicted
loss are selected for annotation.
"""

from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from segal_jax.models import drn


class LossPredictionHead(nn.Module):
  """Per level: global average pool -> Dense(hidden) -> ReLU; concat; Dense(1).

  Attributes:
    hidden: width of each level's projection.
    keys: which feature levels to read, in order (default: the ten levels
      `DRNSeg(..., return_features=True)` returns).
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
