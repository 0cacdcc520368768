"""How much of a folder's labels a network of a given output stride can draw.

  python scripts/stride_ceiling.py workdir/folders/marks_full       # strides 8, 4, 2

It ends with the `--output_stride` that can draw the labels: the largest at
which every class keeps at least half of its IoU. A finer stride than the
recipe's costs about 4x a step for each halving and needs more steps to learn
(docs/results/folders.md).

DRNSeg predicts at 1/s of the image and draws its logits up with a fixed
bilinear x s upsampler. This takes the validation labels, averages their
one-hot maps over s x s cells (the best a cell's prediction can hold without
knowing where in the cell each pixel lies), draws them up with the network's
own upsampler and scores the argmax against the labels: the mIoU of a
network that is right about every cell's class mix. It is not a bound, since
a network may put sharper logits in a cell than the mix, but a class whose
strokes are narrower than a cell loses most of its pixels to the ground here,
and no training fixes that. Each stride is scored twice: as is, and with each
class's map first divided by the square root of its pixel share, a rough
picture of what `--train_class_balance` trades (thin classes win more of their
cells, the ground and the wider classes lose some).
"""

import argparse
import glob
import json
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from segal_jax.models import _blocks  # pylint: disable=wrong-import-position
from segal_jax.models import drn  # pylint: disable=wrong-import-position
from segal_jax.training import metrics  # pylint: disable=wrong-import-position


def ceiling(labels: np.ndarray, num_classes: int, stride: int, ignore: int,
            balance: bool = False) -> tuple[float, np.ndarray]:
  """(mIoU, per-class IoU) of upsampled cell means of `labels` [N, H, W]."""
  n, h, w = labels.shape
  if h % stride or w % stride:
    raise SystemExit(f'error: images of {h}x{w} do not divide into cells of {stride}; '
                     'use a stride that divides both sides')
  onehot = (labels[..., None] == np.arange(num_classes)).astype(np.float32)
  cells = onehot.reshape(n, h // stride, stride, w // stride, stride, num_classes).mean((2, 4))
  if balance:
    share = onehot.reshape(-1, num_classes).mean(0)
    cells = cells / np.sqrt(np.maximum(share, 1e-12))
  if stride > 1:
    cells = np.asarray(_blocks.upsample_bilinear(cells, stride))
  conf = metrics.confusion_matrix(cells.argmax(-1), labels, num_classes, ignore)
  return metrics.iou_from_confusion(conf)


def recommend(per_class: dict[int, np.ndarray], keep: float = 0.5) -> int | None:
  """The largest stride at which every class present keeps at least `keep`
  IoU in `per_class` ({stride: per-class IoU without weighting}), or None."""
  fits = [s for s, iou in per_class.items() if np.nanmin(iou) >= keep]
  return max(fits) if fits else None


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('folder', help='an image folder with classes.json and labels/val')
  parser.add_argument('--strides', default='8,4,2')
  args = parser.parse_args()
  table_file = os.path.join(args.folder, 'classes.json')
  files = sorted(glob.glob(os.path.join(args.folder, 'labels', 'val', '*.png')))
  if not os.path.exists(table_file) or not files:
    raise SystemExit(f'error: {args.folder} has no classes.json or no labels/val/*.png; '
                     'pass a folder made like scripts/make_folder.py makes them')
  with open(table_file) as f:
    table = json.load(f)
  names = [c['name'] for c in table['classes']]
  labels = np.stack([np.asarray(Image.open(p)) for p in files]).astype(np.int32)
  print(f'{args.folder}: {len(files)} validation labels of {labels.shape[1]}x{labels.shape[2]}')
  print('stride  loss weighting  mIoU   per class')
  plain = {}
  for stride in (int(s) for s in args.strides.split(',')):
    for balance in (False, True):
      miou, per_class = ceiling(labels, len(names), stride, table.get('ignore', 255), balance)
      classes = ' '.join(f'{n} {v:.2f}' for n, v in zip(names, per_class))
      print(f'{stride:6d}  {"1/sqrt(share)" if balance else "none":14s}  {miou:.3f}  {classes}')
      if not balance and stride in drn.OUTPUT_STRIDES:
        plain[stride] = per_class
  best = recommend(plain)
  if best is None:
    print(f'no output stride in {sorted(plain)} keeps half of every class: objects this '
          'thin need larger images (--dataset_config=image_size=HxW)')
  else:
    print(f'--output_stride={best}: the largest that keeps half of every class')


if __name__ == '__main__':
  main()
