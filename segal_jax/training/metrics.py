"""Segmentation metrics from a confusion matrix: mIoU, per-class IoU, pixel accuracy;
and the ranking accuracy of predicted losses.

The confusion matrix is built on the device (jittable) and reduced to scores on the
host. Rows are ground-truth classes, columns are predictions; pixels whose label is
the ignore index (255) are not counted.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from segal_jax.data import labels as labels_lib


def confusion_matrix(pred: jax.Array, label: jax.Array, num_classes: int,
                     ignore_index: int = labels_lib.IGNORE) -> jax.Array:
  """Counts (ground truth, prediction) pairs over the labeled pixels.

  Args:
    pred: [...] int, predicted class ids in [0, num_classes).
    label: [...] int, same shape, ground-truth class ids or `ignore_index`.
    num_classes: C, number of classes (static).
    ignore_index: label value of unlabeled pixels.

  Returns:
    [C, C] int32; entry [g, p] counts pixels labeled g and predicted p. Labels
    outside [0, C) (including `ignore_index`) are not counted.
  """
  pred = jnp.asarray(pred).astype(jnp.int32).reshape(-1)
  label = jnp.asarray(label).astype(jnp.int32).reshape(-1)
  valid = (label != ignore_index) & (label >= 0) & (label < num_classes)
  valid &= (pred >= 0) & (pred < num_classes)
  index = jnp.where(valid, label * num_classes + pred, 0)
  counts = jax.ops.segment_sum(valid.astype(jnp.int32), index,
                               num_segments=num_classes * num_classes)
  return counts.reshape(num_classes, num_classes)


def iou_from_confusion(conf) -> tuple[float, np.ndarray]:
  """Per-class intersection over union and its mean.

  IoU_c = conf[c, c] / (sum_g conf[c, :] + sum_p conf[:, c] - conf[c, c]).
  A class absent from both the ground truth and the prediction has no union: its
  IoU is NaN and it is left out of the mean. A class that is predicted but never
  in the ground truth (or the reverse) has IoU 0 and counts in the mean.

  Args:
    conf: [C, C] confusion counts (rows ground truth, columns prediction).

  Returns:
    (miou, per_class): miou a float (NaN if no class has a union), per_class
    [C] float64 with NaN for absent classes.
  """
  conf = np.asarray(conf, dtype=np.float64)
  tp = np.diag(conf)
  union = conf.sum(axis=1) + conf.sum(axis=0) - tp
  per_class = np.full(conf.shape[0], np.nan)
  present = union > 0
  per_class[present] = tp[present] / union[present]
  if not present.any():
    return float('nan'), per_class
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', RuntimeWarning)
    miou = float(np.nanmean(per_class))
  return miou, per_class


def pixel_accuracy(conf) -> float:
  """Fraction of labeled pixels predicted correctly (NaN if none is labeled).

  Args:
    conf: [C, C] confusion counts.
  """
  conf = np.asarray(conf, dtype=np.float64)
  total = conf.sum()
  if total == 0:
    return float('nan')
  return float(np.trace(conf) / total)


# The study's validation ranking accuracy of its loss-prediction head, to read
# each cycle's own beside.
STUDY_RANKING_ACCURACY = 0.76


def ranking_accuracy(predicted: np.ndarray, true: np.ndarray) -> float:
  """Fraction of image pairs whose predicted-loss order matches the true order.

  Over all pairs i < j with different true losses; a tie in the prediction
  counts as wrong. NaN when there is no such pair.

  Args:
    predicted, true: [N] float.
  """
  predicted = np.asarray(predicted, np.float64)
  true = np.asarray(true, np.float64)
  i, j = np.triu_indices(len(true), k=1)
  t = np.sign(true[i] - true[j])
  keep = t != 0
  if not keep.any():
    return float('nan')
  return float(np.mean(np.sign(predicted[i] - predicted[j])[keep] == t[keep]))
