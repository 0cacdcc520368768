"""The folder I/O of `launch.score`: score a folder of unlabeled images, streaming.

The production path of the product: `launch.score` loads a model and calls
`score_folder`, which reads the folder in batches, scores them with the one
scorer of the active-learning loop (`scoring`, on every device), keeps only
the per-image (and per-superpixel) scores, writes each uncertainty map as it
goes, and at the end writes the ranking and, in superpixel mode, the
pre-annotations.

Images of any size are resized (bilinear, aspect ratio not kept) to one
network size, `ScoreConfig.size`; scores, maps and superpixels are computed at
that size, and pre-annotations (COCO polygons, id masks) are mapped back to
each image's own size. Dropout keys belong to file names
(`image_id(name)`), so an image's scores do not depend on the other files in
the folder or on the batch size.

Output layout (under `out`):

  ranking.csv             name,entropy_value: the SuperAnnotate upload format,
                          most uncertain first (top `budget` in image mode)
  scores.csv              name,width,height and every measure, per image
  maps/<stem>.png         the image (at network size) and its uncertainty map
  superpixel mode:
  superpixels.csv         rank,name,superpixel,score,pixels of the chosen ones
  annotations.json        COCO: one polygon per chosen superpixel, in the
                          unlabelled category (listed after the model's
                          classes when its checkpoint names them)
  masks/<stem>.png        per image with a chosen superpixel: 0 = not chosen,
                          s + 1 on chosen superpixel s (uint8, uint16 if needed)
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import os
import zlib
from typing import Any, Callable, Iterator

from absl import logging
import jax
import numpy as np
from PIL import Image
from PIL import ImageOps
from tqdm import auto as tqdm

from segal_jax.data import classes as classes_lib
from segal_jax.data import labels as labels_lib
from segal_jax.data import pipeline
from segal_jax.errors import UserError
from segal_jax import formats
from segal_jax.formats import annotation_files as annotations
from segal_jax import parallel
from segal_jax.scoring import scorer as scoring
from segal_jax.scoring import superpixels
from segal_jax.scoring import uncertainty
from segal_jax.selection import strategies as selection

EXTENSIONS = ('.jpg', '.jpeg', '.png')
# Strategy names of the active-learning driver that name a measure differently.
UNITS = ('image', 'superpixel')


@dataclasses.dataclass(frozen=True)
class ScoreConfig:
  """How a folder is scored.

  Attributes:
    strategy: a key of `selection.SCORING_NAMES` (a measure of
      `uncertainty.MEASURES` or a driver strategy that scores with one).
    unit: 'image' (rank images) or 'superpixel' (choose superpixels).
    budget: images in ranking.csv (image mode; 0 = all) or superpixels chosen
      over the whole folder (superpixel mode; must be positive).
    size: (height, width) the network sees, multiples of 8.
    mc_passes: dropout passes D of the MC measures.
    mc_chunk: passes materialised at once (0 = all D).
    batch_size: images per device in a batch (a batch spans every device).
    n_segments, compactness: watershed superpixel parameters.
    seed: the dropout key is `jax.random.key(seed)`.
    write_maps: write maps/<stem>.png.
    colormap: matplotlib colormap of the maps.
    workers: threads that read (and segment) images ahead of the network.
    progress: show progress bars.
  """
  strategy: str = 'mc_variance'
  unit: str = 'image'
  budget: int = 0
  size: tuple[int, int] = (512, 1024)
  mc_passes: int = 10
  mc_chunk: int = 0
  batch_size: int = 4
  n_segments: int = 100
  compactness: float = 0.001
  seed: int = 0
  write_maps: bool = True
  colormap: str = 'inferno'
  workers: int = 2
  progress: bool = True


def parse_size(text: str) -> tuple[int, int]:
  """'512x1024' (a --resize flag) -> (512, 1024)."""
  try:
    h, w = (int(v) for v in text.lower().split('x'))
  except ValueError:
    raise UserError(f'--resize={text} is not HEIGHTxWIDTH',
                    'write e.g. --resize=512x1024') from None
  return h, w


def measure_of(strategy: str) -> str:
  if strategy not in selection.SCORING_NAMES:
    raise UserError(f'unknown strategy {strategy!r}',
                    'choose one of ' + ', '.join(sorted(selection.SCORING_NAMES)))
  return selection.SCORING_NAMES[strategy]


def validate(config: ScoreConfig, model: Any) -> None:
  """Checks the configuration against the model before any image is read."""
  measure = measure_of(config.strategy)
  if config.unit not in UNITS:
    raise UserError(f'--unit={config.unit} is not known', 'choose image or superpixel')
  if config.budget < 0 or (config.unit == 'superpixel' and config.budget < 1):
    raise UserError(f'--budget={config.budget} is not valid for --unit={config.unit}',
                    'give the number of superpixels to choose, e.g. --budget=500'
                    if config.unit == 'superpixel' else 'use 0 (rank all) or a positive number')
  if len(config.size) != 2 or min(config.size) < 8 or any(s % 8 for s in config.size):
    raise UserError(f'the network size {config.size} is not two multiples of 8',
                    'use e.g. --resize=512x1024')
  for name in ('mc_passes', 'batch_size', 'n_segments', 'workers'):
    if getattr(config, name) < 1:
      raise UserError(f'--{name}={getattr(config, name)} must be at least 1',
                      f'set --{name} to a positive number')
  if uncertainty.MEASURES[measure].needs_mc and not _has_dropout(model):
    raise UserError(f'strategy {config.strategy} needs MC dropout but the network has none',
                    'pass --dropout_placement=stages or head and --dropout_rate > 0, '
                    'or use --strategy=entropy')


def _has_dropout(model: Any) -> bool:
  return model.dropout_placement != 'none' and model.dropout_rate > 0


def list_images(folder: str) -> list[str]:
  """Sorted names of the JPEG/PNG files directly in `folder` (hidden files skipped)."""
  if not os.path.isdir(folder):
    raise UserError(f'no folder at {folder}', 'point --images at a folder of JPEG/PNG images')
  names = sorted(n for n in os.listdir(folder)
                 if n.lower().endswith(EXTENSIONS) and not n.startswith('.')
                 and os.path.isfile(os.path.join(folder, n)))
  if not names:
    raise UserError(f'{folder} holds no .jpg, .jpeg or .png files',
                    'point --images at a folder of JPEG/PNG images')
  return names


def image_id(name: str) -> int:
  """The id a file's dropout keys fold in: a hash of its name, stable across runs."""
  return zlib.crc32(name.encode('utf-8')) & 0x7FFFFFFF


def output_stems(names: list[str]) -> dict[str, str]:
  """name -> stem of its output PNGs: the name without extension, or the whole
  name where two files share a stem (a.jpg and a.png)."""
  stems = collections.Counter(os.path.splitext(n)[0] for n in names)
  return {n: os.path.splitext(n)[0] if stems[os.path.splitext(n)[0]] == 1 else n
          for n in names}


def read_image(path: str, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
  """(image [H, W, 3] uint8 at the network size, original (height, width)).

  EXIF orientation is applied first (the image as viewers show it).
  """
  with Image.open(path) as im:
    im = ImageOps.exif_transpose(im).convert('RGB')
    original = (im.height, im.width)
    if original != tuple(size):
      im = im.resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(im, np.uint8), original


@dataclasses.dataclass
class _Loaded:
  name: str
  image: np.ndarray | None = None
  original: tuple[int, int] | None = None
  segments: np.ndarray | None = None
  error: str | None = None


def loader(folder: str, config: ScoreConfig) -> Callable[[str], _Loaded]:
  """name -> the image at `config.size` (and its superpixels in superpixel mode), or
  the reason it could not be read."""
  def load(name: str) -> _Loaded:
    try:
      image, original = read_image(os.path.join(folder, name), config.size)
    except Exception as e:  # pylint: disable=broad-except
      return _Loaded(name, error=f'{type(e).__name__}: {e}')
    segments = None
    if config.unit == 'superpixel':
      segments = superpixels.watershed(image, n_segments=config.n_segments,
                                       compactness=config.compactness)
    return _Loaded(name, image, original, segments)
  return load


def batches(loaded: Iterator[_Loaded], size: int, bad: list) -> Iterator[list[_Loaded]]:
  """Readable items in lists of `size` (the last shorter); unreadable ones go to `bad`."""
  batch = []
  for item in loaded:
    if item.error is not None:
      bad.append((item.name, item.error))
      continue
    batch.append(item)
    if len(batch) == size:
      yield batch
      batch = []
  if batch:
    yield batch


def score_folder(model: Any, variables: Any, meta: dict, images: str, out: str,
                 config: ScoreConfig, *, log: Callable[[str], None] = print) -> dict[str, Any]:
  """Scores every JPEG/PNG image directly in `images`; writes the outputs to `out`.

  Args:
    model: the network (`DRNSeg`: `trunk`/`tail` methods).
    variables: its {'params', 'batch_stats'}.
    meta: at least `mean` and `std` (as `checkpoint.load_model` returns).
    images: the folder.
    out: output folder (created; files of the same names are replaced).
    config: see `ScoreConfig`.
    log: where the summary lines go.

  Returns:
    {'scored': number of images, 'unreadable': [(name, reason)], 'ranking':
    [names, most uncertain first], 'chosen': [(name, superpixel)] in
    superpixel mode}.

  Raises:
    UserError: bad configuration, an empty folder, or no readable image.
  """
  validate(config, model)
  measure = measure_of(config.strategy)
  names = list_images(images)
  measures = tuple(m for m in uncertainty.MEASURES
                   if _has_dropout(model) or not uncertainty.MEASURES[m].needs_mc)
  batch_size, score = _batch_scorer(model, variables, meta, config, measures)
  stems = output_stems(names)
  os.makedirs(out, exist_ok=True)
  rows, bad, segment_scores = [], [], []
  loaded = pipeline.prefetch_map(loader(images, config), names, threads=config.workers,
                                 ahead=2 * batch_size)
  with tqdm.tqdm(total=len(names), desc='score images', unit='img',
                 disable=not config.progress) as bar:
    for batch in batches(loaded, batch_size, bad):
      scored = score(batch)
      if config.unit == 'superpixel':
        segment_scores += _segment_scores(batch, scored)
      rows += [(b.name, b.original, {m: float(scored[m][i]) for m in measures})
               for i, b in enumerate(batch)]
      if config.write_maps:
        _write_maps(os.path.join(out, 'maps'), stems, batch, scored['map'], config.colormap)
      bar.update(len(batch))
    bar.update(len(names) - bar.n)
  if not rows:
    raise UserError(f'none of the {len(names)} image files in {images} could be read '
                    f'(e.g. {bad[0][0]}: {bad[0][1]})',
                    'check that they are valid JPEG or PNG images')
  ranking = _write_ranking(out, rows, measure, measures, config)
  result = {'scored': len(rows), 'unreadable': bad, 'ranking': ranking}
  log(f'scored {len(rows)} image(s) by {measure}; wrote {out}/ranking.csv, scores.csv'
      + (', maps/' if config.write_maps else ''))
  if config.unit == 'superpixel':
    result['chosen'] = _superpixel_outputs(images, out, config, rows, segment_scores, stems,
                                           log, meta.get('classes'))
  if bad:
    logging.warning('skipped %d unreadable file(s):\n%s', len(bad),
                    '\n'.join(f'  {name}: {reason}' for name, reason in bad))
  return result


def _batch_scorer(model, variables, meta: dict, config: ScoreConfig, measures):
  """(global batch size, score): `score(batch)` runs the one scorer on a list of
  loaded images (their superpixels in superpixel mode) over every device."""
  mesh = parallel.default_mesh()
  batch_size = config.batch_size * mesh.size
  settings = scoring.Settings(measure_of(config.strategy), passes=config.mc_passes,
                              chunk=config.mc_chunk, mean=tuple(meta['mean']),
                              std=tuple(meta['std']), also=measures, keep_map=True)
  variables, key = parallel.replicate((variables, jax.random.key(config.seed)), mesh)

  def score(batch: list[_Loaded]) -> dict[str, np.ndarray]:
    extras, batch_settings = {}, settings
    if config.unit == 'superpixel':
      extras['segments'] = np.stack([b.segments for b in batch]).astype(np.int32)
      # Rounded up, so one compiled scorer serves most batches.
      num = -(-max(config.n_segments, int(extras['segments'].max()) + 1) // 32) * 32
      batch_settings = dataclasses.replace(settings, num_segments=num)
    return scoring.score_batch(
        model.apply, variables, batch_settings, np.stack([b.image for b in batch]),
        np.array([image_id(b.name) for b in batch], np.int32), key, batch_size=batch_size,
        mesh=mesh, extras=extras)

  return batch_size, score


def _write_maps(directory: str, stems: dict[str, str], batch: list[_Loaded], maps,
                colormap: str) -> None:
  """Each image's uncertainty map ([H, W] of `maps`) over it as a PNG heat map."""
  for b, heat in zip(batch, maps):
    annotations.write_png(os.path.join(directory, stems[b.name] + '.png'),
                          annotations.heatmap(b.image, heat, cmap=colormap))


def _segment_scores(batch: list[_Loaded], scored: dict) -> list[np.ndarray]:
  """[S_i] mean score of each superpixel of each image (NaN: no pixel)."""
  out = []
  for i, b in enumerate(batch):
    s = int(b.segments.max()) + 1
    counts, means = scored['segment_counts'][i, :s], scored['segment_means'][i, :s]
    out.append(np.where(counts > 0, means, np.nan))
  return out


def _write_ranking(out: str, rows, measure: str, measures, config: ScoreConfig) -> list[str]:
  """Writes ranking.csv (by `measure`, the budget's top in image mode) and
  scores.csv (every measure); returns the ranked names."""
  values = np.array([r[2][measure] for r in rows])
  k = config.budget if config.unit == 'image' and config.budget else len(rows)
  order = selection.top_k(values, k)
  ranking = [rows[i][0] for i in order]
  formats.write_selection_csv(os.path.join(out, 'ranking.csv'), ranking, values[order])
  _write_scores(os.path.join(out, 'scores.csv'), rows, measures)
  return ranking


def _write_scores(path: str, rows, measures) -> None:
  with formats.atomic_open(path) as f:
    w = csv.writer(f)
    w.writerow(['name', 'width', 'height', *measures])
    for name, (height, width), scores in rows:
      w.writerow([name, width, height, *(f'{scores[m]:.6g}' for m in measures)])


def _superpixel_outputs(images, out, config, rows, segment_scores, stems, log, classes=None):
  """Chooses the top superpixels of the folder; writes COCO, id masks and a CSV.

  `classes`: the model's class table (JSON) or None; its classes are the COCO
  categories an annotator picks from for each region."""
  if classes is None:
    categories = [annotations.CATEGORY]
  else:
    table = classes_lib.from_json(classes)
    categories = annotations.categories(table) + [annotations.region_category(table)]
  table, chosen = _top_superpixels(segment_scores, config.budget)
  by_image = collections.defaultdict(list)
  for rank, (row, seg) in enumerate(chosen):
    by_image[row].append((rank, seg))

  coco_images = [{'id': i + 1, 'file_name': name, 'height': h, 'width': w}
                 for i, (name, (h, w), _) in enumerate(rows)]
  coco_annotations, csv_rows = [], []
  load = loader(images, dataclasses.replace(config, unit='superpixel'))
  todo = sorted(by_image)
  items = pipeline.prefetch_map(load, [rows[r][0] for r in todo], threads=config.workers,
                                ahead=2 * config.workers)
  for row, item in tqdm.tqdm(zip(todo, items), total=len(todo), desc='pre-annotations',
                             unit='img', disable=not config.progress):
    name, original = rows[row][0], rows[row][1]
    if item.error is not None:  # Changed on disk since it was scored.
      raise UserError(f'{name} could not be read again ({item.error})',
                      'keep the folder unchanged while it is scored')
    segments = labels_lib.resize_nearest(item.segments, original)
    picks = [(rank, seg) for rank, seg in by_image[row] if np.any(segments == seg)]
    if len(picks) < len(by_image[row]):  # Thinner than a pixel of the original.
      logging.warning('%s: %d chosen superpixel(s) vanish at its own size; left out',
                      name, len(by_image[row]) - len(picks))
    annotations.write_png(os.path.join(out, 'masks', stems[name] + '.png'),
                          annotations.id_mask(segments, [s for _, s in picks]))
    for rank, seg in picks:
      mask = segments == seg
      score = float(table[row, seg])
      coco_annotations.append(annotations.coco_annotation(
          rank + 1, row + 1, mask, categories[-1]['id'], score=score, superpixel=seg,
          rank=rank + 1))
      csv_rows.append((rank + 1, name, seg, score, int(mask.sum())))
  coco_annotations.sort(key=lambda a: a['id'])
  csv_rows.sort()
  measure = measure_of(config.strategy)
  formats.write_json(os.path.join(out, 'annotations.json'), annotations.coco_document(
      coco_images, coco_annotations,
      f'the {len(chosen)} superpixels of highest mean {measure} (unlabelled pre-annotations)',
      categories))
  _write_superpixels_csv(os.path.join(out, 'superpixels.csv'), csv_rows)
  log(f'chose {len(chosen)} superpixel(s) in {len(todo)} image(s); wrote annotations.json, '
      'superpixels.csv, masks/')
  return [(rows[r][0], s) for r, s in chosen]


def _top_superpixels(segment_scores: list[np.ndarray], budget: int):
  """([images, S] scores, NaN-padded; the `budget` best (row, superpixel), best first)."""
  width = max(len(s) for s in segment_scores)
  table = np.full((len(segment_scores), width), np.nan, np.float32)
  for i, s in enumerate(segment_scores):
    table[i, :len(s)] = s
  flat = selection.top_k(table, budget)
  return table, [divmod(int(f), width) for f in flat]


def _write_superpixels_csv(path: str, csv_rows) -> None:
  """superpixels.csv: rank, name, superpixel, score, pixels (rows in rank order)."""
  with formats.atomic_open(path) as f:
    w = csv.writer(f)
    w.writerow(['rank', 'name', 'superpixel', 'score', 'pixels'])
    for r in csv_rows:
      w.writerow([r[0], r[1], r[2], f'{r[3]:.6g}', r[4]])
