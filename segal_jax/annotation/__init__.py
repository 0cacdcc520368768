"""Who labels what the selector chose, and what it costs: the `Annotator` protocol
and its registry, the simulated protocols (the study's instance overlap, region
protocols), the click-cost model and annotator noise.
"""

from segal_jax.annotation import annotators
from segal_jax.annotation.annotators import Annotator
from segal_jax.annotation.annotators import ANNOTATORS
from segal_jax.annotation.annotators import InstanceOverlap
from segal_jax.annotation.annotators import People
from segal_jax.annotation.annotators import WholeTouched
from segal_jax.annotation import noise
from segal_jax.annotation.noise import Noise
from segal_jax.annotation import oracle
from segal_jax.annotation.oracle import COST_RULES
from segal_jax.annotation import regions
from segal_jax.annotation.regions import DominantLabel
from segal_jax.annotation.regions import MultiClass
from segal_jax.annotation.regions import Points

__all__ = ['Annotator', 'annotators', 'ANNOTATORS', 'COST_RULES', 'DominantLabel',
           'InstanceOverlap', 'MultiClass', 'noise', 'Noise', 'oracle', 'People', 'Points',
           'regions', 'WholeTouched']
