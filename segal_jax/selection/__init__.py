"""Selection: strategies and units in registries, budgets, rearranging a ranked list
(class balance, per-image cap, diversity).
"""

from segal_jax.selection import arrange
from segal_jax.selection.arrange import DIVERSITY
from segal_jax.selection import diversity
from segal_jax.selection.diversity import kcenter_greedy
from segal_jax.selection.diversity import per_image_cap
from segal_jax.selection import strategies
from segal_jax.selection.strategies import Request
from segal_jax.selection.strategies import select
from segal_jax.selection.strategies import Selection
from segal_jax.selection.strategies import STRATEGIES
from segal_jax.selection.strategies import Strategy
from segal_jax.selection.strategies import Unit
from segal_jax.selection.strategies import UNITS

__all__ = ['arrange', 'diversity', 'DIVERSITY', 'kcenter_greedy', 'per_image_cap', 'Request',
           'select', 'Selection', 'strategies', 'STRATEGIES', 'Strategy', 'Unit', 'UNITS']
