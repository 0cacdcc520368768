"""Segmentation networks: the DRN family, the loss-prediction head, weight conversion.

`convert` (PyTorch checkpoints) is imported on its own: `from segal_jax.models import convert`.
"""

from segal_jax.models.drn import ARCHS
from segal_jax.models.drn import DRN
from segal_jax.models.drn import DRNSeg
from segal_jax.models.drn import FEATURE_KEYS
from segal_jax.models.loss_prediction import LossPredictionHead

__all__ = ['ARCHS', 'DRN', 'DRNSeg', 'FEATURE_KEYS', 'LossPredictionHead']
