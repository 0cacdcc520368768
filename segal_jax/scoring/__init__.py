"""Scoring: uncertainty measures and MC-dropout passes, watershed superpixels and
their segment means, and the one cached, sharded scorer.

`uncertainty` and `superpixels` are importable on their own by other JAX code
(no flags, no training, no data sets): `from segal_jax.scoring import uncertainty`.
This package re-exports only them, so importing it stays light. `scorer`, which
takes the training losses, is imported on its own: `from segal_jax.scoring import scorer`.
"""

from segal_jax.scoring import superpixels
from segal_jax.scoring.superpixels import segment_means
from segal_jax.scoring.superpixels import SuperpixelCache
from segal_jax.scoring.superpixels import watershed
from segal_jax.scoring import uncertainty
from segal_jax.scoring.uncertainty import mc_forward
from segal_jax.scoring.uncertainty import McStats
from segal_jax.scoring.uncertainty import Measure
from segal_jax.scoring.uncertainty import MEASURES

__all__ = ['mc_forward', 'McStats', 'Measure', 'MEASURES', 'segment_means', 'SuperpixelCache',
           'superpixels', 'uncertainty', 'watershed']
