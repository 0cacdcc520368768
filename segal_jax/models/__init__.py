"""Segmentation networks: the DRN family, the loss-prediction model, weight conversion.

Every network is called as `model(x, train=..., mc=...)` and returns
`(logits, extras)` (a dict of intermediates, e.g. features or a predicted loss).

`convert` (PyTorch checkpoints) is imported on its own: `from segal_jax.models import convert`.
"""

from segal_jax.models._blocks import upsample_bilinear_x8
from segal_jax.models.drn import ARCHS
from segal_jax.models.drn import DRN
from segal_jax.models.drn import DRNSeg
from segal_jax.models.drn import FEATURE_KEYS
from segal_jax.models.loss_prediction import DRNSegWithLossHead
from segal_jax.models.loss_prediction import HEAD as LOSS_HEAD
from segal_jax.models.loss_prediction import LossPredictionHead
from segal_jax.models.loss_prediction import segmentation_variables

__all__ = ['ARCHS', 'DRN', 'DRNSeg', 'DRNSegWithLossHead', 'FEATURE_KEYS', 'LOSS_HEAD',
           'LossPredictionHead', 'segmentation_variables', 'upsample_bilinear_x8']
