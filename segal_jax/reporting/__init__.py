"""What an experiment reports: the comparison of its lines (statistics, endpoint
tests), tables and plots, per-cycle figures, superpixel geometry.
"""

from segal_jax.reporting import comparison
from segal_jax.reporting.comparison import full_reference
from segal_jax.reporting.comparison import parse_reference
from segal_jax.reporting.comparison import runs_by_strategy
from segal_jax.reporting.comparison import summary
from segal_jax.reporting import plots
from segal_jax.reporting.plots import plot_curves
from segal_jax.reporting.plots import plot_per_class
from segal_jax.reporting import tables
from segal_jax.reporting.tables import format_labelling
from segal_jax.reporting.tables import format_summary
from segal_jax.reporting.tables import format_table

__all__ = ['comparison', 'format_labelling', 'format_summary', 'format_table',
           'full_reference', 'parse_reference', 'plot_curves', 'plot_per_class', 'plots',
           'runs_by_strategy', 'summary', 'tables']
