"""A cycle's labelling request for people: what to label, with everything a tool imports.

When the annotator is people (`--al_annotator=human` or `label_studio`), a cycle ends by writing
`<run_dir>/requests/cycle_NN/`:

  README.txt           what to label, where to put the labels, what to run next
  request.json         the request, read back by the rerun (`label_returns`)
  to_label.csv         name,entropy_value of the chosen units, most uncertain first
  images/              copies of the images to label
  maps/<stem>.png      each image beside its uncertainty map
  predictions/<stem>.png  the model's predicted class indices (255 outside the
                       requested regions): what a tool shows as its suggestion
  coco.json            COCO (1.0): the model's predicted masks as suggestions (one
                       annotation per region of a thing class, per stuff class),
                       categories from classes.json
  label_studio.json    Label Studio tasks with the suggestions as predictions,
  label_studio.xml     and the labelling configuration (the classes and colours)
  cvat.xml             CVAT for images 1.1 annotations (the suggestions)
  superpixel requests:
  regions.json         COCO polygons of the requested regions (one category)
  masks/<stem>.png     0 outside the requested regions, s + 1 on superpixel s
  previous/<stem>.png  the image's labels before the request (kept on return)
  returned/            where COCO exports of the labels go

Suggestions and regions are at each image's own size. Labels come back as PNGs
in the folder's `labels/` or as COCO exports in `returned/`.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import os
import shutil
from typing import Any
from xml.etree import ElementTree

import jax
import numpy as np
from PIL import Image

from segal_jax.data import labels as labels_lib
from segal_jax import formats
from segal_jax.formats import annotation_files as annotations
from segal_jax.labelling import label_studio_results as results
from segal_jax.labelling import returns as label_returns
from segal_jax.reporting import figures
from segal_jax.scoring import uncertainty
from segal_jax.training import train

REQUESTS = 'requests'  # under a run directory
FILE = 'request.json'


class AwaitingLabels(Exception):
  """The run waits for people to label a request; `str()` says what to do."""


def request_dir(run_dir: str, cycle: int) -> str:
  return os.path.join(run_dir, REQUESTS, f'cycle_{cycle:02d}')


def image_file(folder: str, name: str) -> str:
  """The image file of image id `name` in an image folder (`images/<name>.<ext>`)."""
  stem = os.path.join(folder, 'images', name)
  for f in sorted(os.listdir(os.path.dirname(stem))):
    if os.path.splitext(f)[0] == os.path.basename(stem):
      return os.path.join(os.path.dirname(stem), f)
  raise FileNotFoundError(stem)


@functools.lru_cache(maxsize=8)
def _predictor(apply_fn):
  return jax.jit(functools.partial(train.predict, apply_fn=apply_fn))


def predict(apply_fn, variables, images: np.ndarray, mean, std) -> np.ndarray:
  """[n, H, W] uint8 class indices: the network's prediction (`train.predict`),
  one image at a time."""
  step = _predictor(apply_fn)
  mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
  return np.stack([np.asarray(step(variables, images[k:k + 1], mean=mean, std=std))[0]
                   for k in range(len(images))]).astype(np.uint8)


@dataclasses.dataclass
class _Writing:
  """What every image of one request is written with, and the documents it adds to."""
  out: str
  folder: str
  table: Any
  request: Any
  chosen: Any
  score: dict[str, float]
  items: list = dataclasses.field(default_factory=list)
  suggestions: list = dataclasses.field(default_factory=list)
  regions: list = dataclasses.field(default_factory=list)
  images: list = dataclasses.field(default_factory=list)


def write(run_dir: str, cycle: int, folder: str, table, request, chosen) -> dict[str, Any]:
  """Writes the request of `cycle` (see the module docstring); returns `request.json`.

  Args:
    folder: the image folder; table: its `data.classes.ClassTable`.
    request: the cycle's `selection.Request` (split, network, config, segments).
    chosen: its `selection.Selection` (image indices, or superpixel picks).
  """
  split, config = request.split, request.config
  out = request_dir(run_dir, cycle)
  _clear(out)
  indices = (np.asarray(chosen.chosen, np.int64) if chosen.picks is None
             else np.array(sorted(chosen.picks), np.int64))
  measure = request.strategy.measure
  measure = measure if measure in uncertainty.MEASURES else 'entropy'
  maps = figures.uncertainty_maps(request.apply_fn, request.variables, split.images[indices],
                                  indices, request.keys['score'], measure=measure,
                                  passes=config.mc_passes, mean=split.mean, std=split.std)
  predicted = predict(request.apply_fn, request.variables, np.asarray(split.images[indices]),
                      split.mean, split.std)
  w = _Writing(out, folder, table, request, chosen, _image_scores(chosen, config.al_unit))
  for k, i in enumerate(indices.tolist()):
    _write_item(w, k, i, maps[k], predicted[k])
  _write_documents(w, cycle)
  return _write_record(w, cycle, config.al_unit)


def _write_item(w: _Writing, k: int, i: int, heat: np.ndarray, predicted: np.ndarray) -> None:
  """Image `i` (the request's `k`th): its copy, heat map, masks and suggestions."""
  split, out = w.request.split, w.out
  name = split.ids[i]
  source = image_file(w.folder, name)
  stem = name.replace('/', '__')
  with Image.open(source) as im:
    size = (im.height, im.width)
  item = {'name': name, 'image': source, 'label': os.path.join(w.folder, 'labels', name + '.png'),
          'height': size[0], 'width': size[1], 'superpixels': None,
          'copy': os.path.join('images', stem + os.path.splitext(source)[1]),
          'prediction': os.path.join('predictions', stem + '.png'),
          'uncertainty': w.score.get(name, 0.0)}
  os.makedirs(os.path.join(out, 'images'), exist_ok=True)
  shutil.copy2(source, os.path.join(out, item['copy']))
  annotations.write_png(os.path.join(out, 'maps', stem + '.png'),
                        annotations.heatmap(np.asarray(split.images[i]), heat))
  guess = labels_lib.resize_nearest(predicted, size)
  if w.chosen.picks is not None:
    sps = sorted(w.chosen.picks[i])
    segments = labels_lib.resize_nearest(np.asarray(w.request.segments[i]), size)
    region = np.isin(segments, sps)
    item.update(superpixels=sps, mask=os.path.join('masks', stem + '.png'))
    annotations.write_png(os.path.join(out, item['mask']), annotations.id_mask(segments, sps))
    for s in sps:
      w.regions.append(annotations.coco_annotation(len(w.regions) + 1, k + 1, segments == s,
                                                   superpixel=s))
    if os.path.exists(item['label']):
      item['previous'] = os.path.join('previous', stem + '.png')
      os.makedirs(os.path.join(out, 'previous'), exist_ok=True)
      shutil.copy2(item['label'], os.path.join(out, item['previous']))
    # suggestions inside the requested regions only
    guess = np.where(region, guess, labels_lib.IGNORE).astype(np.uint8)
  annotations.write_png(os.path.join(out, item['prediction']), guess)
  w.suggestions += annotations.label_annotations(guess, k + 1, len(w.suggestions) + 1, w.table)
  w.images.append({'id': k + 1, 'file_name': item['copy'], 'height': size[0],
                   'width': size[1]})
  w.items.append(item)


def _write_documents(w: _Writing, cycle: int) -> None:
  """The request's COCO documents, tool imports and ranking CSV."""
  out = w.out
  coco = annotations.coco_document(w.images, w.suggestions,
                                   f'cycle {cycle}: the model\'s masks as suggestions',
                                   annotations.categories(w.table))
  formats.write_json(os.path.join(out, 'coco.json'), coco)
  if w.regions:
    formats.write_json(os.path.join(out, 'regions.json'), annotations.coco_document(
        w.images, w.regions, f'cycle {cycle}: the regions to label'))
  formats.write_json(os.path.join(out, 'label_studio.json'), label_studio_tasks(coco, out, cycle))
  _write_text(os.path.join(out, 'label_studio.xml'), results.labelling_config(w.table) + '\n')
  _write_text(os.path.join(out, 'cvat.xml'), cvat_xml(coco, w.table))
  formats.write_selection_csv(os.path.join(out, 'to_label.csv'), w.chosen.names,
                              w.chosen.scores)


def _write_record(w: _Writing, cycle: int, unit: str) -> dict[str, Any]:
  """`request.json` (what was asked, and the folder's labels then) and README.txt."""
  os.makedirs(os.path.join(w.out, label_returns.RETURNED), exist_ok=True)
  labeled = label_returns.label_names(w.folder)
  record = {'cycle': cycle, 'unit': unit, 'folder': w.folder,
            'requested_at': datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec='seconds'),
            'classes': w.table.to_json(), 'items': w.items, 'labeled': labeled,
            'label_files': {n: file_stamp(os.path.join(w.folder, 'labels', n + '.png'))
                            for n in labeled}}
  formats.write_json(os.path.join(w.out, FILE), record)
  _write_text(os.path.join(w.out, 'README.txt'), instructions(record, w.out))
  return record


def _image_scores(chosen, unit: str) -> dict[str, float]:
  """Image name -> its selection score: the image's (image unit) or its
  best chosen superpixel's (rows `name/superpixel`)."""
  out = {}
  for row, value in zip(chosen.names, np.asarray(chosen.scores, np.float64).tolist()):
    name = row if unit == 'image' else row.rsplit('/', 1)[0]
    out[name] = max(out.get(name, -np.inf), float(value))
  return out


def file_stamp(path: str) -> list[int]:
  """[size, modification time in ns] of a file: what says it was rewritten."""
  st = os.stat(path)
  return [st.st_size, st.st_mtime_ns]


def _clear(out: str) -> None:
  """Empties the folder of an interrupted attempt of the same request, except
  `returned/`: what people put there is theirs."""
  if not os.path.isdir(out):
    return
  for entry in os.listdir(out):
    if entry != label_returns.RETURNED:
      path = os.path.join(out, entry)
      if os.path.isdir(path):
        shutil.rmtree(path)
      else:
        os.remove(path)


def _write_text(path: str, text: str) -> None:
  with formats.atomic_open(path) as f:
    f.write(text)


def _polygons_of(ann: dict) -> list[list[float]]:
  return [p for p in ann['segmentation'] if len(p) >= 6]


def label_studio_tasks(coco: dict, out: str, cycle: int) -> list[dict[str, Any]]:
  """Label Studio tasks (one per image, served as local files) with the
  suggestions as `polygonlabels` predictions in percent of the image size."""
  names = {c['id']: c['name'] for c in coco['categories']}
  tasks = []
  for image in coco['images']:
    w, h = image['width'], image['height']
    result = []
    for ann in (a for a in coco['annotations'] if a['image_id'] == image['id']):
      for poly in _polygons_of(ann):
        points = [[100.0 * x / w, 100.0 * y / h] for x, y in zip(poly[::2], poly[1::2])]
        result.append({'from_name': 'label', 'to_name': 'image', 'type': 'polygonlabels',
                       'original_width': w, 'original_height': h,
                       'value': {'points': points, 'polygonlabels': [names[ann['category_id']]]}})
    path = os.path.abspath(os.path.join(out, image['file_name']))
    tasks.append({'data': {'image': '/data/local-files/?d=' + path.lstrip('/')},
                  'predictions': [{'model_version': f'cycle_{cycle:02d}', 'result': result}]})
  return tasks


def cvat_xml(coco: dict, table) -> str:
  """The suggestions as CVAT for images 1.1 annotations (polygons)."""
  root = ElementTree.Element('annotations')
  ElementTree.SubElement(root, 'version').text = '1.1'
  labels = ElementTree.SubElement(ElementTree.SubElement(
      ElementTree.SubElement(root, 'meta'), 'task'), 'labels')
  for c in table.classes:
    label = ElementTree.SubElement(labels, 'label')
    ElementTree.SubElement(label, 'name').text = c.name
    ElementTree.SubElement(label, 'color').text = results.hex_color(c.color)
    ElementTree.SubElement(label, 'type').text = 'polygon'
  names = {c['id']: c['name'] for c in coco['categories']}
  for image in coco['images']:
    node = ElementTree.SubElement(root, 'image', id=str(image['id'] - 1),
                                  name=os.path.basename(image['file_name']),
                                  width=str(image['width']), height=str(image['height']))
    for ann in (a for a in coco['annotations'] if a['image_id'] == image['id']):
      for poly in _polygons_of(ann):
        points = ';'.join(f'{x:.2f},{y:.2f}' for x, y in zip(poly[::2], poly[1::2]))
        ElementTree.SubElement(node, 'polygon', label=names[ann['category_id']],
                               source='auto', occluded='0', points=points, z_order='0')
  return ElementTree.tostring(root, encoding='unicode') + '\n'


def instructions(record: dict[str, Any], out: str) -> str:
  """What to label, where the labels go, and what to run then."""
  folder, ignore = record['folder'], record['classes']['ignore']
  regions = record['unit'] == 'superpixel'
  lines = [f'cycle {record["cycle"]} asks for {len(record["items"])} image(s) to be labeled'
           + (' in the regions of masks/ (nonzero pixels)' if regions else '') + ':']
  lines += [f'  {item["image"]} -> {item["label"]}' for item in record['items']]
  lines += [
      f'Save each label as a single-channel PNG of the values of {folder}/classes.json '
      f'({ignore} where unlabeled' + (', e.g. outside the regions' if regions else '') + ') '
      'at the path after the arrow,',
      f'or export COCO from your tool into {os.path.join(out, "returned")}/ (any name .json).',
      f'Imports in {out}: label_studio.json with label_studio.xml (Label Studio), cvat.xml '
      '(CVAT for images 1.1) or coco.json (COCO 1.0: CVAT and others), images/, maps/ '
      '(uncertainty), to_label.csv.',
      'Then rerun the same command.']
  return '\n'.join(lines) + '\n'
