"""What people send back for a labelling request, checked file by file.

A request (`label_requests`) asks for whole images or for regions (chosen
superpixels) of images of an image folder. Labels come back either as PNGs
written into the folder's `labels/` (one per image, the class table's values,
the ignore value where nothing is labeled) or as COCO exports (polygons or
RLE, as annotation tools write them) dropped into the request's `returned/`
folder; COCO is decoded with pycocotools.

`check` reads everything and answers each problem in one line: a file that
cannot be read, of the wrong size, with a value or category the class table
does not know, labels of an image that was not requested (or of a renamed
one), a request left unanswered, a label of an earlier cycle that is gone. A
file with a problem is not used at all, and nothing is written: the caller
ingests the answers only when there is no problem and nothing is left
unanswered. An answer is taken in where it was asked for only (`taken`); what
it labels elsewhere is left out with a note, and images of earlier cycles in a
COCO export are skipped.

Label arrays here are in the PNG values of the table (what `labels/` holds).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import glob
import io
import os
import pwd
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from segal_jax.data import classes as classes_lib

RETURNED = 'returned'  # under a request folder: COCO exports


@dataclasses.dataclass(frozen=True)
class Answer:
  """One requested image's returned labels.

  label: [H, W] uint8 PNG values to keep (`taken`): what was labeled before,
  with the answer's labels where they were asked for.
  file: where they came from; kind: 'png' or 'coco'; who: the file's owner
  (or the COCO export's contributor); returned_at: the file's modification
  time (ISO 8601, UTC); pixels: pixels newly labeled (in the requested
  regions); cut: labeled pixels of the answer not taken in; seconds: how
  long the annotator labeled it, where the tool says (None: unknown).
  """
  name: str
  label: np.ndarray
  file: str
  kind: str
  who: str
  returned_at: str
  pixels: int
  cut: int = 0
  seconds: float | None = None


@dataclasses.dataclass(frozen=True)
class Received:
  """An image's labels as an annotation tool's API gave them, before the checks.

  label: [H, W] uint8 PNG values (the ignore value where nothing is drawn);
  where: what to call it in a message (the tool's task); kind: the tool.
  """
  name: str
  label: np.ndarray
  where: str
  kind: str
  who: str
  returned_at: str
  seconds: float | None = None


@dataclasses.dataclass
class Outcome:
  """What `check` found: answers by image name, problems, unanswered requests
  and notes (what was left out of an answer, and why; one line each)."""
  answers: dict[str, Answer] = dataclasses.field(default_factory=dict)
  problems: list[str] = dataclasses.field(default_factory=list)
  unanswered: list[str] = dataclasses.field(default_factory=list)
  notes: list[str] = dataclasses.field(default_factory=list)

  @property
  def complete(self) -> bool:
    return not self.problems and not self.unanswered


def mtime_iso(path: str) -> str:
  return datetime.datetime.fromtimestamp(os.stat(path).st_mtime, datetime.timezone.utc
                                         ).isoformat(timespec='seconds')


def owner(path: str) -> str:
  """The user name of the file's owner (its uid where it has none)."""
  try:
    return pwd.getpwuid(os.stat(path).st_uid).pw_name
  except KeyError:
    return str(os.stat(path).st_uid)


def label_names(folder: str) -> list[str]:
  """The sorted names of the images of an image folder with a label PNG in `labels/`."""
  root = os.path.join(folder, 'labels')
  out = []
  for d, _, files in os.walk(root):
    out += [os.path.splitext(os.path.relpath(os.path.join(d, f), root))[0].replace(os.sep, '/')
            for f in files if f.endswith('.png') and not f.startswith('.')]
  return sorted(out)


def read_label(path: str) -> np.ndarray:
  """[H, W] uint8 values of a single-channel 8-bit PNG (a palette PNG gives its indices).

  Raises:
    ValueError: not a readable single-channel 8-bit image.
  """
  try:
    with Image.open(path) as im:
      array = np.asarray(im)
  except Exception as e:  # pylint: disable=broad-except (PIL raises many kinds)
    raise ValueError(f'cannot be read ({type(e).__name__})') from e
  if array.ndim != 2 or array.dtype != np.uint8:
    raise ValueError(f'is a {array.dtype} image of shape {array.shape}, not single-channel '
                     '8-bit')
  return array


def region_mask(request_dir: str, item: dict[str, Any]) -> np.ndarray | None:
  """[H, W] bool: the requested region of a superpixel request (None: the whole image)."""
  if item.get('superpixels') is None:
    return None
  return read_label_any(os.path.join(request_dir, item['mask'])) > 0


def read_label_any(path: str) -> np.ndarray:
  with Image.open(path) as im:
    return np.asarray(im)


def _check_values(where: str, label: np.ndarray, item: dict[str, Any],
                  lookup: np.ndarray) -> str | None:
  if label.shape != (item['height'], item['width']):
    return (f'{where} is {label.shape[0]}x{label.shape[1]} but {item["name"]} is '
            f'{item["height"]}x{item["width"]}; not used: save it at the image\'s size')
  unknown = np.unique(label[lookup[label] < 0])
  if unknown.size:
    return (f'{where} holds values {unknown[:10].tolist()} that classes.json does not '
            'know; not used: use the values of classes.json (or its ignore value)')
  return None


def taken(label: np.ndarray, previous: np.ndarray | None, region: np.ndarray | None,
          ignore: int) -> tuple[np.ndarray, int, int]:
  """(labels kept, pixels newly labeled, labeled pixels cut) of an answer.

  The rule: an answer labels the pixels it was asked for, the requested
  regions (the whole image for an image request), where nothing was labeled
  before; every other pixel keeps the label it had (`previous`, or none).
  Earlier labels are changed by editing the label file after intake (a
  correction), never by an answer.
  """
  before = np.full(label.shape, ignore, np.uint8) if previous is None else previous
  if before.shape != label.shape:
    before = np.full(label.shape, ignore, np.uint8)
  wanted = before == ignore
  if region is not None:
    wanted &= region
  new = wanted & (label != ignore)
  kept = np.where(new, label, before).astype(np.uint8)
  return kept, int(np.count_nonzero(new)), int(np.count_nonzero((label != ignore) & (kept != label)))


def _match(file_name: str, names) -> str | None:
  """The image of `names` a COCO `file_name` stands for: the image's name or its
  request copy's (`a__b` for `a/b`), after any folder and any upload prefix a
  tool adds (`<hash>-<name>`)."""
  base = os.path.splitext(os.path.basename(file_name.replace('\\', '/')))[0]
  for name in names:
    keys = {name.rsplit('/', 1)[-1], name.replace('/', '__')}
    if base in keys or any(base.endswith('-' + k) for k in keys):
      return name
  return None


def _read_coco(path: str, request: dict, lookup_names: dict[str, int], values: np.ndarray,
               previous: dict[str, np.ndarray | None], request_dir: str
               ) -> tuple[dict[str, Answer], list[str], list[str]]:
  """(answers, problems, notes) of one COCO export; with any problem the
  answers are dropped. Images labeled in earlier cycles (a tool's project
  reused across cycles) are left out, with a note."""
  from pycocotools import coco as coco_lib  # pylint: disable=g-import-not-at-top
  where = os.path.relpath(path, request_dir)
  try:
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
      coco = coco_lib.COCO(path)
  except Exception as e:  # pylint: disable=broad-except (json, KeyError, ...)
    return {}, [f'{where} cannot be read as a COCO export ({type(e).__name__}: {e}); not used: '
                'export COCO again from the annotation tool'], []
  items = {item['name']: item for item in request['items']}
  ignore = request['classes']['ignore']
  who = str(coco.dataset.get('info', {}).get('contributor') or owner(path))
  problems, answers, earlier = [], {}, []
  categories = {}
  for cat in coco.loadCats(coco.getCatIds()):
    if cat.get('name') not in lookup_names:
      problems.append(f'{where}: category "{cat.get("name")}" is not in classes.json; '
                      'not used: name the categories as classes.json does')
    else:
      categories[cat['id']] = lookup_names[cat['name']]
  for image in coco.loadImgs(coco.getImgIds()):
    anns = coco.loadAnns(coco.getAnnIds(imgIds=image['id']))
    if not anns:
      continue  # a tool exports untouched images too
    name = _match(image.get('file_name', ''), items)
    if name is None and _match(image.get('file_name', ''), request['labeled']):
      earlier.append(image.get('file_name'))
      continue
    if name is None:
      problems.append(f'{where}: {image.get("file_name")} was not requested in cycle '
                      f'{request["cycle"]}; not used: export only the requested images')
      continue
    item = items[name]
    if (image.get('height'), image.get('width')) != (item['height'], item['width']):
      problems.append(f'{where}: {name} is {image.get("height")}x{image.get("width")} there '
                      f'but {item["height"]}x{item["width"]} in the folder; not used')
      continue
    label = np.full((item['height'], item['width']), ignore, np.uint8)
    try:
      for ann in anns:
        if ann['category_id'] in categories:
          label[coco.annToMask(ann) > 0] = values[categories[ann['category_id']]]
    except Exception as e:  # pylint: disable=broad-except (malformed segmentation)
      problems.append(f'{where}: an annotation of {name} cannot be decoded '
                      f'({type(e).__name__}); not used')
      continue
    kept, pixels, cut = taken(label, previous.get(name), region_mask(request_dir, item), ignore)
    answers[name] = Answer(name, kept, path, 'coco', who, mtime_iso(path), pixels, cut)
  notes = [f'{where}: {len(earlier)} image(s) labeled in earlier cycles left as they are '
           f'({", ".join(earlier[:3])}{", ..." if len(earlier) > 3 else ""})'] if earlier else []
  return ({} if problems else answers), problems, notes


def check(request: dict[str, Any], request_dir: str, folder: str,
          received: Sequence[Received] = (), waiting: dict[str, str] | None = None) -> Outcome:
  """Reads and checks what came back for `request` (see the module docstring).

  Args:
    request: the request (`label_requests.write`): `cycle`, `classes` (the
      table's JSON), `items` (`name`, `label` path, `height`, `width`,
      `superpixels` and `mask` for region requests, `previous`: the label
      file's bytes were saved there when the image was partly labeled),
      `labeled` (names labeled before the request); when the folder changed
      since, `withdrawn` (requested images that left it) and `left` (labeled
      ones that left it: their labels need not stay).
    request_dir: the request's folder (`returned/` for COCO exports).
    folder: the image folder (its `labels/`).
    received: labels an annotation tool's API gave (`Received`), checked
      and cut like the files (taken before the COCO exports and PNGs, which
      must agree with them).
    waiting: image name -> why it is unanswered, in the tool's words (the
      default line names the label file).
  """
  table = classes_lib.from_json(request['classes'])
  items = {item['name']: item for item in request['items']}
  c = _Checking(request, request_dir, folder, table, items, {
      name: (read_label_any(os.path.join(request_dir, item['previous']))
             if item.get('previous') else None) for name, item in items.items()})
  _take_received(c, received)
  _take_coco(c)
  _take_pngs(c)
  _mark_unanswered(c, waiting)
  _note_cuts(c.out)
  _check_folder(c)
  return c.out


@dataclasses.dataclass
class _Checking:
  """One request's check: what was asked, and the outcome so far."""
  request: dict[str, Any]
  request_dir: str
  folder: str
  table: Any
  items: dict[str, dict[str, Any]]
  previous: dict[str, np.ndarray | None]  # name -> its label file's bytes at request time
  out: Outcome = dataclasses.field(default_factory=lambda: Outcome())


def _take_received(c: _Checking, received: Sequence[Received]) -> None:
  """Labels an annotation tool's API gave, checked and cut like the files."""
  out, items, previous, request, request_dir, _ = (
      c.out, c.items, c.previous, c.request, c.request_dir, c.folder)
  lookup, ignore = c.table.lookup(), c.table.ignore
  for r in received:
    item = items.get(r.name)
    if item is None:
      out.problems.append(f'{r.where}: {r.name} was not requested in cycle {request["cycle"]}; '
                          'not used: answer only the requested images')
      continue
    problem = _check_values(r.where, r.label, item, lookup)
    if problem:
      out.problems.append(problem)
      continue
    kept, pixels, cut = taken(r.label, previous[r.name], region_mask(request_dir, item), ignore)
    out.answers[r.name] = Answer(r.name, kept, r.where, r.kind, r.who, r.returned_at, pixels, cut,
                                 r.seconds)


def _take_coco(c: _Checking) -> None:
  """COCO exports in `returned/`; one answering an image differently from the API is a problem."""
  out, _, previous, request, request_dir, _ = (
      c.out, c.items, c.previous, c.request, c.request_dir, c.folder)
  names = {cl.name: i for i, cl in enumerate(c.table.classes)}
  values = c.table.values()
  for path in sorted(glob.glob(os.path.join(request_dir, RETURNED, '*.json'))):
    answers, problems, notes = _read_coco(path, request, names, values, previous, request_dir)
    out.problems += problems
    out.notes += notes
    for name, answer in answers.items():
      if name in out.answers and not np.array_equal(out.answers[name].label, answer.label):
        out.problems.append(f'{name} is answered differently by {out.answers[name].file} and '
                            f'{path}; not used: keep one of them')
      out.answers[name] = answer


def _take_pngs(c: _Checking) -> None:
  """The folder's label PNGs of the requested images."""
  out, items, previous, _, request_dir, folder = (
      c.out, c.items, c.previous, c.request, c.request_dir, c.folder)
  lookup, ignore = c.table.lookup(), c.table.ignore
  for name, item in items.items():
    png = item['label']
    if not os.path.exists(png):
      continue
    where = os.path.relpath(png, folder)
    try:
      label = read_label(png)
    except ValueError as e:
      out.problems.append(f'{where} {e}; not used: save it as a single-channel 8-bit PNG')
      continue
    problem = _check_values(where, label, item, lookup)
    if problem:
      out.problems.append(problem)
      continue
    region = region_mask(request_dir, item)
    if previous[name] is not None and np.array_equal(label, previous[name]):
      continue  # the label of an earlier cycle, untouched so far
    kept, pixels, cut = taken(label, previous[name], region, ignore)
    answer = Answer(name, kept, png, 'png', owner(png), mtime_iso(png), pixels, cut)
    coco = out.answers.get(name)
    if coco is not None and not np.array_equal(coco.label, kept):
      other = coco.file if coco.kind != 'coco' else os.path.relpath(coco.file, request_dir)
      out.problems.append(f'{where} and {other} both answer {name}, differently; not used: '
                          'keep one of them')
    elif coco is None:
      out.answers[name] = answer


def _mark_unanswered(c: _Checking, waiting: dict[str, str] | None) -> None:
  out, items = c.out, c.items
  for name, item in items.items():
    answer = out.answers.get(name)
    if answer is None or answer.pixels == 0:
      out.answers.pop(name, None)
      what = 'its requested regions are' if item.get('superpixels') is not None else 'it is'
      out.unanswered.append((waiting or {}).get(name)
                            or f'{name}: {what} not labeled yet ({item["label"]})')


def _note_cuts(out: Outcome) -> None:
  for name, answer in sorted(out.answers.items()):
    if answer.cut:
      out.notes.append(f'{name}: {answer.cut} labeled pixel(s) outside the requested regions or '
                       'on pixels labeled before were not taken in (an answer adds labels '
                       'where they were asked for; edit the label file after intake to '
                       'correct earlier labels)')


def _check_folder(c: _Checking) -> None:
  """Labels nobody asked for, and earlier labels that are gone."""
  out, items, request, folder = c.out, c.items, c.request, c.folder
  requested, labeled = set(items), set(request['labeled'])
  withdrawn = request.get('withdrawn') or []
  renamed = (f'; {", ".join(withdrawn)} left the folder and a renamed image counts as a '
             'removed image plus a new one, so this does not answer its request: rename the '
             'image and its label back to answer it, or ' if withdrawn else '; ')
  for name in label_names(folder):
    if name not in requested and name not in labeled:
      out.problems.append(f'labels/{name}.png: {name} was not requested in cycle '
                          f'{request["cycle"]}{renamed}move it out of labels/ (only requested '
                          'images are taken in)')
  for name in sorted(labeled - requested - set(request.get('left') or [])):
    path = os.path.join(folder, 'labels', name + '.png')
    if not os.path.exists(path):
      out.problems.append(f'labels/{name}.png, labeled before cycle {request["cycle"]}, is gone; '
                          'restore it')
