"""Training: pure jitted train and eval steps that take their loss, the host loops
that run them, the optimizer, every loss, the metrics, early stopping.
"""

from segal_jax.training import losses
from segal_jax.training.losses import JointLoss
from segal_jax.training import metrics
from segal_jax.training.metrics import confusion_matrix
from segal_jax.training.metrics import iou_from_confusion
from segal_jax.training import optim
from segal_jax.training.optim import make_optimizer
from segal_jax.training import stopping
from segal_jax.training.stopping import Converged
from segal_jax.training.stopping import Tracker
from segal_jax.training import train
from segal_jax.training.train import evaluate
from segal_jax.training.train import fit
from segal_jax.training.train import InputSpec
from segal_jax.training.train import ModelApply
from segal_jax.training.train import Runtime
from segal_jax.training.train import Schedule
from segal_jax.training.train import TrainState

__all__ = ['confusion_matrix', 'Converged', 'evaluate', 'fit', 'InputSpec',
           'iou_from_confusion', 'JointLoss', 'losses', 'make_optimizer', 'metrics',
           'ModelApply', 'optim', 'Runtime', 'Schedule', 'stopping', 'Tracker', 'train',
           'TrainState']
