"""What changed in people's image folder since their run was saved.

Between runs a team adds images, removes or renames them, and edits labels.
The run state keeps the pool by image name (`pool.PoolLabels.to_json(names)`),
and each change is followed, in one line each:

- images added join the unlabeled pool;
- images removed leave the pool; their labelling records stay, and a pending
  request for one is withdrawn when the request is taken in (`human.take_in`),
  so an image renamed back in the meantime still answers it (a renamed image
  is a removed image plus a new one);
- a label file edited after intake is a correction: it is trained on from then
  on and recorded with who and when (`RunState.corrections`);
- a run state of the earlier layout, keyed by positions in the folder's
  listing, is migrated to names once when the folder still matches it, and
  refused naming what differs when it does not.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from typing import Any, Callable

from segal_jax.data import image_folder
from segal_jax.errors import UserError
from segal_jax.labelling import requests as label_requests
from segal_jax.labelling import returns as label_returns
from segal_jax.state import pool as pool_lib

Log = Callable[[str], None]


def has_val_folder(folder: str) -> bool:
  """Whether the folder fixes its validation images (images/val or validation)."""
  return any(os.path.isdir(os.path.join(folder, 'images', v)) for v in ('val', 'validation'))


def _splits(folder: str, options: dict[str, Any] | None = None):
  options = options or {}
  return image_folder.find_splits(folder, options.get('val_fraction', 0.2),
                                  options.get('seed', 0), allow_unlabeled=True)


def pool_images(folder: str, held: list[str]) -> list[str]:
  """The sorted names of the pool's images: images/train's with a val/ folder,
  else every image but the held-out validation ones (`held`)."""
  splits = _splits(folder)
  pairs = splits['train'] if has_val_folder(folder) else splits['train'] + splits['validation']
  return sorted(p.image_id for p in pairs if p.image_id not in set(held))


def label_file(folder: str, name: str) -> str:
  return os.path.join(folder, 'labels', name + '.png')


def _legacy_order(folder: str, options: dict[str, Any], held: list[str]) -> list[str]:
  """The pool's names in the order of the earlier layout: the data set's
  train then validation split (seeded by `options`), less the held-out images."""
  splits = _splits(folder, options)
  pairs = splits['train'] if has_val_folder(folder) else splits['train'] + splits['validation']
  return [p.image_id for p in pairs if p.image_id not in set(held)]


def _legacy_mismatch(state, order: list[str], folder: str, held: list[str]) -> str | None:
  """What in the folder no longer matches a state keyed by position, or None."""
  raw = state.pool
  positions = [int(i) for i in raw['full']] + [int(k) for f in ('annotated', 'chosen')
                                              for k in raw.get(f, {})]
  pending = (state.pending or {}).get('items', [])
  positions += [int(item['index']) for item in pending]
  if positions and max(positions) >= len(order):
    return f'the pool has {len(order)} images, fewer than the state counts'
  for item in pending:
    if order[int(item['index'])] != item['name']:
      return (f'position {item["index"]}, requested as {item["name"]}, is now '
              f'{order[int(item["index"])]}')
  labeled = {order[i] for i in positions[:len(positions) - len(pending)]}
  files = set(label_returns.label_names(folder))
  for name in sorted(labeled - files):
    return f'{name}, labeled in the run, has no label file'
  for name in sorted(files - labeled - set(held) - {item['name'] for item in pending}):
    return f'labels/{name}.png belongs to no image the run labeled'
  return None


def migrate(state, folder: str, options: dict[str, Any], held: list[str], run_dir: str,
            log: Log) -> bool:
  """Keys a run state of the earlier layout by image name, once; True if it did.

  Raises:
    UserError: the folder changed since that state was saved, so its positions
      cannot be matched to images (naming the first difference).
  """
  if pool_lib.by_name(state.pool):
    return False
  order = _legacy_order(folder, options, held)
  problem = _legacy_mismatch(state, order, folder, held)
  if problem:
    raise UserError(f'the run state in {run_dir} keeps images by their position in the folder '
                    f'listing, and the folder changed since it was saved ({problem}), so its '
                    'labels cannot be matched to images',
                    'restore the folder as it was when that run last ran and rerun to migrate '
                    'the state once, or start the run again with a new --workdir')
  state.pool = pool_lib.PoolLabels.from_json(state.pool).to_json(order)
  if state.pending is not None:
    state.pending = dict(state.pending, items=[
        {k: v for k, v in item.items() if k != 'index'} for item in state.pending['items']])
  state.images = sorted(order)
  log(f'migrated the run state in {run_dir} from positions in the folder listing to image '
      'names (once)')
  return True


def _few(names: list[str]) -> str:
  return ', '.join(names[:3]) + (', ...' if len(names) > 3 else '')


def follow(state, images: list[str], log: Log) -> bool:
  """Brings the pool of a state keyed by name to the folder's `images`: new
  names join unlabeled, removed ones leave (one line each); True if anything
  changed."""
  before = set(state.images if state.images is not None else images)
  added, removed = sorted(set(images) - before), sorted(before - set(images))
  if added:
    log(f'folder: {len(added)} new image(s) joined the unlabeled pool ({_few(added)})')
  if removed:
    labeled = sorted(set(removed) & set(pool_lib.labeled_names(state.pool)))
    log(f'folder: {len(removed)} image(s) left the folder and the pool ({_few(removed)}), '
        f'{len(labeled)} of them labeled; their labelling records stay')
    state.pool = pool_lib.PoolLabels.from_json(state.pool, images).to_json(images)
  changed = state.images != list(images)
  state.images = list(images)
  return changed


def digest(path: str) -> dict[str, Any]:
  """The label file's pixels (sha256 of the decoded array) with its size and
  time (`label_requests.file_stamp`), which say when to read the pixels again."""
  label = label_returns.read_label_any(path)
  sha = hashlib.sha256(repr(label.shape).encode() + label.tobytes()).hexdigest()
  return {'sha256': sha, 'stamp': label_requests.file_stamp(path)}


def corrections(state, folder: str, names: list[str], log: Log) -> int:
  """Finds the label files of `names` edited since they were taken in: each
  is recorded as a correction (who, when, which file) and said in one line.
  A name seen for the first time (labeled before the run started) counts as
  edited when its file changed since the pending request listed it. The
  state remembers every file as it is now; the number of corrections found is
  returned."""
  found = 0
  listed = (state.pending or {}).get('label_files', {})
  for name in sorted(names):
    path = label_file(folder, name)
    if not os.path.exists(path):
      continue  # a missing label is a problem `label_returns.check` names
    stored = state.label_digests.get(name)
    stamp = label_requests.file_stamp(path)
    if stored and stored['stamp'] == stamp:
      continue
    now = digest(path)
    edited = (now['sha256'] != stored['sha256'] if stored
              else name in listed and listed[name] != stamp)
    if edited:
      who, when = label_returns.owner(path), label_returns.mtime_iso(path)
      state.corrections.append({
          'name': name, 'file': path, 'who': who, 'edited_at': when, 'cycle': state.next_cycle,
          'found_at': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')})
      log(f'correction: labels/{name}.png was edited after it was taken in ({who}, {when}); '
          'it is trained on as edited and recorded as a correction')
      found += 1
    state.label_digests[name] = now
  return found
