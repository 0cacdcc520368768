"""People in the loop: requests to label, returns checked file by file, the session
between runs, and the tool connectors (files, Label Studio).
"""

from segal_jax.labelling import requests
from segal_jax.labelling.requests import AwaitingLabels
from segal_jax.labelling import returns
from segal_jax.labelling.returns import Answer
from segal_jax.labelling.returns import Outcome
from segal_jax.labelling.returns import Received
from segal_jax.labelling import sources
from segal_jax.labelling.sources import Files
from segal_jax.labelling.sources import LabelStudio

__all__ = ['Answer', 'AwaitingLabels', 'Files', 'LabelStudio', 'Outcome', 'Received',
           'requests', 'returns', 'sources']
