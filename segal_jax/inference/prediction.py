"""`launch.predict`: a trained model's masks for a folder of new images.

What a team ships at the end. For every JPEG/PNG image directly in the folder
(`folder_scoring.list_images`), resized to the network size, the network's
most likely class at every pixel (BatchNorm statistics, no dropout), mapped
back to the image's own size (nearest), written under `out` as

  masks/<stem>.png      the class table's PNG values (uint8; what label files hold)
  overlays/<stem>.png   the image with the classes painted over it in the table's colours
  predictions.json      COCO: one polygon annotation per 8-connected region of a thing
                        class, one per stuff class present; the table's categories

Unreadable files are skipped with a warning, as in `launch.score`.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

from absl import logging
import jax
import numpy as np
from tqdm import auto as tqdm

from segal_jax.data import classes as classes_lib
from segal_jax.data import labels as labels_lib
from segal_jax.data import pipeline
from segal_jax.errors import UserError
from segal_jax import formats
from segal_jax.formats import annotation_files as annotations
from segal_jax.inference import folder_scoring
from segal_jax.training import train

OVERLAY_ALPHA = 0.5  # weight of the class colour in an overlay


@functools.lru_cache(maxsize=8)
def _jitted(apply_fn: Callable) -> Callable:
  return jax.jit(functools.partial(train.predict, apply_fn=apply_fn))


def overlay(image: np.ndarray, label: np.ndarray, table: classes_lib.ClassTable) -> np.ndarray:
  """[H, W, 3] uint8: the image with each class painted at `OVERLAY_ALPHA`
  (pixels of no class keep the image)."""
  colour = table.colorize(label).astype(np.float32)
  painted = label < table.num_classes
  blend = (1 - OVERLAY_ALPHA) * image + OVERLAY_ALPHA * colour
  return np.where(painted[..., None], np.round(blend), image).astype(np.uint8)


def _checked_table(meta: dict, size: tuple[int, int], batch_size: int
                   ) -> classes_lib.ClassTable:
  """The model's class table, once the model has one and `size`, `batch_size` are valid."""
  if meta.get('classes') is None:
    raise UserError(f'the model predicts {meta.get("num_classes")} classes with no names',
                    'pass --classes=FILE (a classes.json of that many classes)')
  table = classes_lib.from_json(meta['classes'])
  if len(size) != 2 or min(size) < 8 or any(s % 8 for s in size):
    raise UserError(f'the network size {size} is not two multiples of 8',
                    'use e.g. --resize=512x1024')
  if batch_size < 1:
    raise UserError(f'--batch_size={batch_size} must be at least 1', 'pass e.g. --batch_size=4')
  return table


def _write_prediction(images: str, out: str, stem: str, item, prediction: np.ndarray,
                      table: classes_lib.ClassTable, coco_images: list,
                      coco_annotations: list) -> None:
  """One image's mask (the table's PNG values) and overlay, at its own size; its
  COCO image and annotations are appended to `coco_images`, `coco_annotations`.

  Args:
    item: the loaded image (`folder_scoring.loader`: `name`, `original` size).
    prediction: [H, W] class ids at the network's size.
  """
  label = labels_lib.resize_nearest(prediction, item.original)
  image, _ = folder_scoring.read_image(os.path.join(images, item.name), item.original)
  annotations.write_png(os.path.join(out, 'masks', stem + '.png'), table.values()[label])
  annotations.write_png(os.path.join(out, 'overlays', stem + '.png'),
                        overlay(image, label, table))
  image_id = len(coco_images) + 1
  coco_images.append({'id': image_id, 'file_name': item.name, 'height': item.original[0],
                      'width': item.original[1]})
  coco_annotations += annotations.label_annotations(label, image_id, len(coco_annotations) + 1,
                                                    table)


def predict_folder(model: Any, variables: Any, meta: dict, images: str, out: str, *,
                   size: tuple[int, int], batch_size: int = 4, workers: int = 2,
                   progress: bool = True, log: Callable[[str], None] = print
                   ) -> dict[str, Any]:
  """Predicts every JPEG/PNG image directly in `images`; writes masks, overlays and COCO.

  Args:
    model: the network; variables: its {'params', 'batch_stats'}.
    meta: as `checkpoint.load_model` returns: `mean`, `std` and `classes` (the
      table's JSON; required).
    images: the folder; out: the output folder (created).
    size: (height, width) the network sees, multiples of 8.
    batch_size: images per forward pass.

  Returns:
    {'predicted': [names], 'unreadable': [(name, reason)]}.

  Raises:
    UserError: a model without a class table, a bad size, an empty folder, or
      no readable image.
  """
  table = _checked_table(meta, size, batch_size)
  names = folder_scoring.list_images(images)
  stems = folder_scoring.output_stems(names)
  step = _jitted(model.apply)
  mean, std = np.asarray(meta['mean'], np.float32), np.asarray(meta['std'], np.float32)
  config = folder_scoring.ScoreConfig(size=tuple(size), workers=workers)
  loaded = pipeline.prefetch_map(folder_scoring.loader(images, config), names,
                                 threads=workers, ahead=2 * batch_size)
  coco_images, coco_annotations, done, bad = [], [], [], []
  with tqdm.tqdm(total=len(names), desc='predict', unit='img', disable=not progress) as bar:
    for batch in folder_scoring.batches(loaded, batch_size, bad):
      pad = batch_size - len(batch)  # one compiled shape for every batch
      x = np.stack([b.image for b in batch] + [batch[0].image] * pad)
      pred = np.asarray(step(variables, x, mean=mean, std=std)).astype(np.uint8)
      for b, p in zip(batch, pred):
        _write_prediction(images, out, stems[b.name], b, p, table, coco_images,
                          coco_annotations)
        done.append(b.name)
      bar.update(len(batch))
    bar.update(len(names) - bar.n)
  if not done:
    raise UserError(f'none of the {len(names)} image files in {images} could be read '
                    f'(e.g. {bad[0][0]}: {bad[0][1]})', 'check that they are valid JPEG or PNG images')
  formats.write_json(os.path.join(out, 'predictions.json'), annotations.coco_document(
      coco_images, coco_annotations, f'predictions of {table.num_classes} classes',
      annotations.categories(table)))
  if bad:
    logging.warning('skipped %d unreadable file(s):\n%s', len(bad),
                    '\n'.join(f'  {name}: {reason}' for name, reason in bad))
  log(f'predicted {len(done)} image(s); wrote {out}/masks/, overlays/, predictions.json')
  return {'predicted': done, 'unreadable': bad}
