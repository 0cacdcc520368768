"""Scores a folder of unlabeled images with a trained model.

  python -m launch.score --checkpoint=DIR --images=DIR --out=DIR \
      [--strategy=mc_variance] [--unit=image|superpixel] [--budget=N]

Writes ranking.csv (SuperAnnotate's name,entropy_value upload format), scores.csv,
maps/*.png and, with --unit=superpixel, annotations.json (COCO polygons),
superpixels.csv and masks/*.png; see `segal_jax.inference.folder_scoring` for the layout.
--checkpoint is a model directory from training or from `launch.convert`
(for a converted one without metadata, also pass --arch).
"""

from absl import flags

from launch import _app
from segal_jax.data import classes
from segal_jax.inference import folder_scoring
from segal_jax.state import checkpoint

_D = folder_scoring.ScoreConfig()
_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'Model checkpoint directory.')
_IMAGES = flags.DEFINE_string('images', None, 'Folder of JPEG/PNG images to score.')
_OUT = flags.DEFINE_string('out', None, 'Output folder (created if missing).')
_STRATEGY = flags.DEFINE_string(
    'strategy', _D.strategy,
    'Uncertainty measure: mc_variance, mc_mean_entropy (alias mc_entropy), bald, '
    'entropy (alias softmax_entropy), margin or least_confidence.')
_UNIT = flags.DEFINE_enum('unit', _D.unit, folder_scoring.UNITS, 'Rank images, or choose superpixels.')
_BUDGET = flags.DEFINE_integer(
    'budget', _D.budget,
    'image: rows of ranking.csv (0 = every image); superpixel: superpixels to choose '
    'over the whole folder.')
_RESIZE = flags.DEFINE_string(
    'resize', None,
    'HxW the network sees (multiples of 8); every image is resized to it. Default: the '
    "checkpoint's training image size if it records one, else 512x1024.")
_MC_PASSES = flags.DEFINE_integer('mc_passes', _D.mc_passes, 'MC-dropout passes.')
_MC_CHUNK = flags.DEFINE_integer('mc_chunk', _D.mc_chunk,
                                 'Run the passes in chunks of this many (0: all at once).')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', _D.batch_size,
                                   'Images per device in a batch (a batch spans every device).')
_N_SEGMENTS = flags.DEFINE_integer('n_segments', _D.n_segments, 'Watershed superpixels per image.')
_COMPACTNESS = flags.DEFINE_float('compactness', _D.compactness, 'Watershed compactness.')
_SEED = flags.DEFINE_integer('seed', _D.seed, 'Seed of the dropout keys.')
_MAPS = flags.DEFINE_bool('maps', _D.write_maps, 'Write maps/*.png.')
_COLORMAP = flags.DEFINE_string('colormap', _D.colormap, 'Matplotlib colormap of the maps.')
_WORKERS = flags.DEFINE_integer('workers', _D.workers, 'Threads reading images ahead.')
_PROGRESS = flags.DEFINE_bool('progress', _D.progress, 'Show progress bars.')
# For checkpoints that do not record their network (launch.convert output).
_ARCH = flags.DEFINE_string('arch', None, 'DRN architecture (default: from the checkpoint).')
_NUM_CLASSES = flags.DEFINE_integer('num_classes', None, 'Classes (default: from the checkpoint).')
_CLASSES = flags.DEFINE_string('classes', None,
                               "classes.json naming the model's classes (COCO categories of "
                               "the pre-annotations); must match a checkpoint's own table.")
_WIDTH = flags.DEFINE_float('width_multiplier', None, 'Width (default: from the checkpoint).')
_DROPOUT_PLACEMENT = flags.DEFINE_enum(
    'dropout_placement', None, ['stages', 'head', 'none'],
    'Where dropout acts (default: from the checkpoint, else stages).')
_DROPOUT_RATE = flags.DEFINE_float('dropout_rate', None,
                                   'Dropout rate (default: from the checkpoint, else 0.5).')

flags.mark_flags_as_required(['checkpoint', 'images', 'out'])


def main(argv):
  del argv
  folder_scoring.list_images(_IMAGES.value)  # An empty folder fails before the model loads.
  model, variables, meta = checkpoint.load_model(
      _CHECKPOINT.value, arch=_ARCH.value, num_classes=_NUM_CLASSES.value,
      width_multiplier=_WIDTH.value, dropout_placement=_DROPOUT_PLACEMENT.value,
      dropout_rate=_DROPOUT_RATE.value,
      classes=classes.load(_CLASSES.value) if _CLASSES.value else None)
  if _RESIZE.value:
    size = folder_scoring.parse_size(_RESIZE.value)
  else:
    size = tuple(meta.get('image_size') or folder_scoring.ScoreConfig.size)
  config = folder_scoring.ScoreConfig(
      strategy=_STRATEGY.value, unit=_UNIT.value, budget=_BUDGET.value, size=size,
      mc_passes=_MC_PASSES.value, mc_chunk=_MC_CHUNK.value, batch_size=_BATCH_SIZE.value,
      n_segments=_N_SEGMENTS.value, compactness=_COMPACTNESS.value, seed=_SEED.value,
      write_maps=_MAPS.value, colormap=_COLORMAP.value, workers=_WORKERS.value,
      progress=_PROGRESS.value)
  print(f'{meta["arch"]} (width {meta["width_multiplier"]}, {meta["num_classes"]} classes, '
        f'dropout {meta["dropout_placement"]} {meta["dropout_rate"]}); images resized to '
        f'{size[0]}x{size[1]}')
  folder_scoring.score_folder(model, variables, meta, _IMAGES.value, _OUT.value, config)


if __name__ == '__main__':
  _app.run(main)
