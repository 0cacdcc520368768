"""Predicts masks for a folder of new images with a trained model.

  python -m launch.predict --checkpoint=DIR --images=DIR --out=DIR [--classes=FILE]

Writes masks/*.png (label PNGs in the class table's values), overlays/*.png (the
classes painted over each image) and predictions.json (COCO polygons); see
`segal_jax.inference.prediction`. --checkpoint is a model directory from training
(`<run>/models/cycle_NN`); its class table travels with it. --classes names the
classes of a model that does not carry a table, and must match one that does.
"""

from absl import flags

from launch import _app
from segal_jax.data import classes
from segal_jax.inference import folder_scoring
from segal_jax.inference import prediction
from segal_jax.state import checkpoint

_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'Model checkpoint directory.')
_IMAGES = flags.DEFINE_string('images', None, 'Folder of JPEG/PNG images.')
_OUT = flags.DEFINE_string('out', None, 'Output folder (created if missing).')
_CLASSES = flags.DEFINE_string('classes', None,
                               "classes.json of the model's classes (default: the "
                               "checkpoint's table).")
_RESIZE = flags.DEFINE_string(
    'resize', None,
    'HxW the network sees (multiples of 8); every image is resized to it and its mask '
    "back. Default: the checkpoint's training image size if it records one, else 512x1024.")
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 4, 'Images per forward pass.')
_WORKERS = flags.DEFINE_integer('workers', 2, 'Threads reading images ahead.')
_PROGRESS = flags.DEFINE_bool('progress', True, 'Show a progress bar.')

flags.mark_flags_as_required(['checkpoint', 'images', 'out'])


def main(argv):
  del argv
  folder_scoring.list_images(_IMAGES.value)  # An empty folder fails before the model loads.
  table = classes.load(_CLASSES.value) if _CLASSES.value else None
  model, variables, meta = checkpoint.load_model(_CHECKPOINT.value, classes=table)
  size = (folder_scoring.parse_size(_RESIZE.value) if _RESIZE.value
          else tuple(meta.get('image_size') or folder_scoring.ScoreConfig.size))
  prediction.predict_folder(model, variables, meta, _IMAGES.value, _OUT.value, size=size,
                            batch_size=_BATCH_SIZE.value, workers=_WORKERS.value,
                            progress=_PROGRESS.value)


if __name__ == '__main__':
  _app.run(main)
