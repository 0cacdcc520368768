"""Checkpoints: the one module that talks to Orbax.

Two kinds:

* A *model* (`save_model` / `load_model`): `{'params', 'batch_stats'}` of a
  `DRNSeg` as an Orbax standard checkpoint, with a small JSON `meta` (what is
  needed to rebuild the network and normalise images, and the class table it
  predicts) stored as the checkpoint's custom metadata, so both are committed
  together in one atomic step. `launch.convert` writes the same layout with a
  partial `meta`; `load_model` fills what is missing from its arguments, the
  variables' shapes and the Cityscapes defaults (a 19-class checkpoint without
  a table predicts Cityscapes' classes).
* A *run* (`RunCheckpointer`): the active-learning driver's training state
  (any pytree: params, batch_stats, opt_state, step, RNG keys) and its run
  state (a JSON-able dict) saved together, atomically, as one step of an
  Orbax `CheckpointManager`. What the run state holds, where a run keeps its
  checkpoints and how steps are numbered is `run_state`'s.
"""
from __future__ import annotations

import json
import os
from typing import Any

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from segal_jax.data import classes as classes_lib
from segal_jax.errors import UserError
from segal_jax import models
from segal_jax.models import drn

# Keys of `meta` that define the network, with DRNSeg's own defaults where a
# checkpoint (e.g. a converted one) does not say.
MODEL_KEYS = ('arch', 'num_classes', 'width_multiplier', 'dropout_placement',
              'dropout_rate', 'output_stride')
_DEFAULTS = {'dropout_placement': 'stages', 'dropout_rate': 0.5, 'output_stride': 8}
_COLLECTIONS = ('params', 'batch_stats')
_TRAIN, _AL = 'train_state', 'al_state'
_HINT = 'pass the directory written by launch.run or launch.convert'
CLASSIFIER = 'seg'  # the params of the class-dependent layer; the rest is the trunk


def _json_copy(obj: Any, what: str) -> Any:
  """A deep copy through JSON: fails early on anything JSON cannot hold."""
  try:
    return json.loads(json.dumps(obj, default=_jsonable))
  except (TypeError, ValueError) as e:
    raise TypeError(f'{what} must be JSON-serialisable: {e}') from e


def _jsonable(x: Any) -> Any:
  if isinstance(x, (tuple, set)):
    return list(x)
  if isinstance(x, (np.ndarray, np.generic)):
    return x.tolist()
  raise TypeError(f'{type(x).__name__} is not JSON-serialisable')


def meta_for(model: models.DRNSeg, *, mean, std,
             classes: classes_lib.ClassTable | None = None, **extra) -> dict[str, Any]:
  """The `meta` of `save_model` for `model`, the normalisation it was trained
  with and the class table it predicts."""
  meta = {k: getattr(model, k) for k in MODEL_KEYS}
  meta.update(mean=[float(v) for v in mean], std=[float(v) for v in std], **extra)
  if classes is not None:
    meta['classes'] = classes.to_json()
  return meta


def class_table(meta: dict) -> classes_lib.ClassTable | None:
  """The class table a model predicts: its meta's, Cityscapes' for a 19-class
  model without one, else None (unknown)."""
  if meta.get('classes') is not None:
    return classes_lib.from_json(meta['classes'], 'the checkpoint\'s class table')
  return classes_lib.CITYSCAPES if meta.get('num_classes') == 19 else None


def describe(table: classes_lib.ClassTable | None, num_classes: int | None = None) -> str:
  """'4 classes (soil, leaf, rust, mildew)', for messages."""
  if table is None:
    return f'{num_classes} unnamed classes'
  names = table.names[:6] + (('...',) if table.num_classes > 6 else ())
  return f'{table.num_classes} classes ({", ".join(names)})'


def same_classes(meta: dict, classes: classes_lib.ClassTable) -> bool:
  """Whether a model (its meta) predicts `classes`; a model without a table
  matches any table of its size."""
  table = class_table(meta)
  return (meta.get('num_classes') == classes.num_classes if table is None
          else table == classes)


def save_model(directory: str, variables: dict, meta: dict) -> None:
  """Writes a model for inference: the variables plus `meta`, in one atomic commit.

  Args:
    directory: a new (or empty) directory.
    variables: {'params': ..., 'batch_stats': ...} (other collections are dropped).
    meta: JSON-able; `arch`, `num_classes`, `width_multiplier`,
      `dropout_placement`, `dropout_rate`, `output_stride`, `mean`, `std` (see
      `meta_for`) and
      anything else worth keeping (e.g. `image_size`, the training data set).

  Raises:
    UserError: if `directory` exists and is not empty.
  """
  directory = os.path.abspath(directory)
  if os.path.isdir(directory) and os.listdir(directory):
    raise UserError(f'{directory} exists and is not empty', 'choose a new output directory')
  if os.path.exists(directory) and not os.path.isdir(directory):
    raise UserError(f'{directory} is a file', 'choose a new output directory')
  if os.path.isdir(directory):
    os.rmdir(directory)  # Orbax creates it when the checkpoint commits.
  meta = _json_copy(meta, 'meta')
  tree = {k: variables[k] for k in _COLLECTIONS if k in variables}
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(directory, tree, custom_metadata=meta)
  checkpointer.wait_until_finished()
  checkpointer.close()


def convert_torch(source: str, arch: str, out: str, num_classes: int | None = None,
                  width_multiplier: float = 1.0) -> str:
  """Reads a PyTorch DRN checkpoint `source` (.pth), converts it for `arch`
  (`models.convert`) and writes a model checkpoint to `out`.

  The checkpoint is `save_model`'s layout with the network's architecture,
  classes and width as its meta (dropout and normalisation are not in a
  PyTorch file; `load_model` supplies defaults).

  Returns:
    the absolute path of the new checkpoint directory.
  """
  from segal_jax.models import convert  # pylint: disable=g-import-not-at-top (torch)
  variables = convert.variables_from_torch(convert.load_torch_file(source), arch, num_classes,
                                           width_multiplier=width_multiplier)
  out = os.path.abspath(out)
  meta = {'arch': arch,
          'num_classes': int(variables['params']['seg']['kernel'].shape[-1]),
          'width_multiplier': float(width_multiplier),
          'source': os.path.basename(source)}
  save_model(out, variables, meta)
  return out


def _reason(e: Exception) -> str:
  """One short line for an Orbax/tensorstore error (their messages quote whole specs)."""
  first = str(e).splitlines()[0] if str(e) else ''
  return f'{type(e).__name__}: {first.split(" [tensorstore_spec=")[0][:200]}'


def _read(directory: str) -> tuple[dict, dict]:
  """(variables as NumPy trees, stored meta) of a model directory."""
  if not os.path.isdir(directory):
    raise UserError(f'no checkpoint at {directory}', _HINT)
  if not os.path.exists(os.path.join(directory, '_METADATA')):
    raise UserError(f'{directory} is not a model checkpoint (it has no _METADATA file)',
                    _HINT + ' (a model directory, not a run directory)')
  checkpointer = ocp.StandardCheckpointer()
  try:
    meta = checkpointer.metadata(directory).custom_metadata or {}
    variables = checkpointer.restore(directory)
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f'the checkpoint at {directory} is unreadable or incomplete '
                    f'({_reason(e)})',
                    'write it again (launch.convert, or rerun training)') from e
  if not isinstance(variables, dict) or 'params' not in variables:
    raise UserError(f'the checkpoint at {directory} holds no network parameters', _HINT)
  return variables, dict(meta)


def _shapes(tree) -> dict[str, tuple[int, ...]]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path): tuple(np.shape(leaf)) for path, leaf in flat}


def _expected(arch: str, num_classes: int, width: float) -> dict[str, tuple[int, ...]]:
  model = models.DRNSeg(arch=arch, num_classes=num_classes, width_multiplier=width)
  x = jax.ShapeDtypeStruct((1, 32, 32, 3), np.float32)
  tree = jax.eval_shape(
      lambda x: model.init({'params': jax.random.key(0)}, x, train=False), x)
  return _shapes({k: tree[k] for k in _COLLECTIONS})


def _mismatch(expected: dict, found: dict) -> str | None:
  """The first difference between two {path: shape} maps, in words, or None."""
  for path, shape in expected.items():
    if path not in found:
      return f'it lacks {path}'
    if found[path] != shape:
      return f'{path} has shape {found[path]}, expected {shape}'
  extra = [p for p in found if p not in expected]
  if extra:
    return f'it has {extra[0]} that the network does not'
  return None


def _infer_arch(found: dict, num_classes: int, width: float) -> str:
  fits = [a for a in sorted(drn.ARCHS)
          if _mismatch(_expected(a, num_classes, width), found) is None]
  if len(fits) == 1:
    return fits[0]
  raise UserError(
      'cannot tell the architecture of the checkpoint ('
      + (f'it fits {", ".join(fits)}' if fits else 'it fits no known DRN') + ')',
      'pass --arch (and --width_multiplier) the checkpoint was made with')


def load_model(directory: str, *, arch: str | None = None,
               classes: classes_lib.ClassTable | None = None,
               **overrides) -> tuple[models.DRNSeg, dict, dict]:
  """Loads a model written by `save_model` or by `launch.convert`.

  What defines the network comes from, in order: the keyword arguments (None
  means "not given"), the checkpoint's `meta`, the variables themselves
  (`num_classes` and `width_multiplier` from the classifier's shape, `arch`
  from the one architecture whose variables fit), and finally DRNSeg's
  defaults (`dropout_placement='stages'`, `dropout_rate=0.5`,
  `output_stride=8`). `mean`/`std`
  default to Cityscapes' (converted checkpoints are Cityscapes models).

  Args:
    directory: the checkpoint directory.
    arch: a key of `models.ARCHS`.
    classes: the class table the model must predict (the data's); None: any.
    **overrides: any of `num_classes`, `width_multiplier`, `dropout_placement`,
      `dropout_rate`, `output_stride`, `mean`, `std`.

  Returns:
    (model, variables {'params', 'batch_stats'} as device arrays, meta with
    every key of `MODEL_KEYS` plus `mean`, `std` and `classes` (the table's
    JSON, or None when unknown: see `class_table`)).

  Raises:
    UserError: a missing, corrupt or incomplete directory, variables that do
      not fit the requested network (naming the first mismatch), or a model
      of other classes than `classes`.
  """
  unknown = set(overrides) - set(MODEL_KEYS) - {'mean', 'std'}
  if unknown:
    raise TypeError(f'unknown load_model arguments {sorted(unknown)}')
  directory = os.path.abspath(directory)
  variables, stored = _read(directory)
  found = _shapes({k: variables[k] for k in _COLLECTIONS if k in variables})
  meta = _resolved_meta(directory, variables, stored, {'arch': arch, **overrides}, found)
  _check_fits(directory, meta, stored, found, classes)
  table = class_table(meta) or classes
  meta['classes'] = None if table is None else table.to_json()
  model = models.DRNSeg(**{k: meta[k] for k in MODEL_KEYS})
  variables = jax.device_put({k: variables[k] for k in _COLLECTIONS if k in variables})
  return model, variables, meta


def _resolved_meta(directory: str, variables: dict, stored: dict, given: dict,
                   found: dict) -> dict:
  """What defines the network, in `load_model`'s order: `given` (None: not
  given), the stored meta, the variables' shapes, then the defaults."""
  meta = dict(stored)
  meta.update({k: v for k, v in given.items() if v is not None})
  seg = variables['params'].get('seg', {}).get('kernel')
  if 'num_classes' not in meta and seg is not None:
    meta['num_classes'] = int(seg.shape[-1])
  if 'width_multiplier' not in meta and seg is not None:
    meta['width_multiplier'] = round(seg.shape[-2] / drn.CHANNELS[-1], 4)
  if 'num_classes' not in meta or 'width_multiplier' not in meta:
    raise UserError(f'the checkpoint at {directory} has no classifier to read its size from',
                    'pass --num_classes and --width_multiplier')
  if meta.get('arch') is None:
    meta['arch'] = _infer_arch(found, meta['num_classes'], meta['width_multiplier'])
  for k, v in _DEFAULTS.items():
    meta.setdefault(k, v)
  if 'mean' not in meta or 'std' not in meta:
    from segal_jax.data import cityscapes  # pylint: disable=g-import-not-at-top
    meta.setdefault('mean', list(cityscapes.MEAN))
    meta.setdefault('std', list(cityscapes.STD))
  return meta


def _check_fits(directory: str, meta: dict, stored: dict, found: dict,
                classes: classes_lib.ClassTable | None) -> None:
  """Raises `UserError` unless the variables (`found`: their shapes) fit the
  network `meta` describes and, when given, predict `classes`."""
  drn.get_arch(meta['arch'])  # UserError for an unknown name.
  if meta['dropout_placement'] not in drn.DROPOUT_AFTER:
    raise UserError(f'unknown dropout placement {meta["dropout_placement"]!r}',
                    f'choose one of {", ".join(drn.DROPOUT_AFTER)}')
  drn.check_output_stride(meta['output_stride'])
  problem = _mismatch(_expected(meta['arch'], meta['num_classes'], meta['width_multiplier']),
                      found)
  if problem:
    saved = stored.get('arch')
    saved = f' (it was saved for {saved})' if saved not in (None, meta['arch']) else ''
    raise UserError(
        f'the checkpoint at {directory} does not fit {meta["arch"]} with width '
        f'{meta["width_multiplier"]} and {meta["num_classes"]} classes: {problem}{saved}',
        'pass the --arch and --width_multiplier the checkpoint was made with')
  if classes is not None and not same_classes(meta, classes):
    raise UserError(f'the checkpoint at {directory} predicts '
                    f'{describe(class_table(meta), meta["num_classes"])} but the data has '
                    f'{describe(classes)}',
                    'use a checkpoint trained on these classes (or --init_checkpoint, '
                    'which keeps only the trunk of another model)')


def load_trunk(directory: str, classes: classes_lib.ClassTable, **network
               ) -> tuple[dict, str | None]:
  """The variables of `--init_checkpoint` for a network predicting `classes`.

  A model of the same classes gives all its variables; one of other classes
  (an ImageNet trunk, Cityscapes weights for another task) gives its trunk
  only, without the classifier (`CLASSIFIER`), which then starts fresh.

  `network`: `arch`, `width_multiplier`, ... as for `load_model` (not
  `num_classes`). Returns (variables, None or one line saying the classifier
  starts fresh).
  """
  _, variables, meta = load_model(directory, **network)
  if same_classes(meta, classes):
    return variables, None
  params = {k: v for k, v in variables['params'].items() if k != CLASSIFIER}
  return ({**variables, 'params': params},
          f'{directory} predicts {describe(class_table(meta), meta["num_classes"])}, '
          f'the data {describe(classes)}: keeping its trunk, starting a fresh classifier')


class RunCheckpointer:
  """Training state + active-learning state of one run, saved together.

  Each step is one Orbax `CheckpointManager` step holding `train_state`
  (`StandardSave`) and `al_state` (`JsonSave`); Orbax commits the step
  atomically (a temporary directory renamed into place), so a crash leaves
  either the whole step or none of it. Saves run in the background; `wait`
  blocks until they are on disk.
  """

  def __init__(self, directory: str, *, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=(_TRAIN, _AL))

  def save(self, step: int, train_state: Any | None, al_state: dict, *,
           force: bool = False) -> None:
    """Saves both states (the al_state alone if `train_state` is None) as `step`.

    Steps at or after `step` already on disk (left by a run that is now being
    redone from an earlier point) are deleted first, so the latest step is
    always the newest state.

    Args:
      step: a non-negative integer, increasing within a run.
      train_state: any pytree of arrays (typed PRNG keys included).
      al_state: JSON-able dict (copied now, so later changes do not leak in).
      force: save even if Orbax's save policy would skip this step.
    """
    al_state = _json_copy(al_state, 'al_state')
    self._manager.wait_until_finished()
    self._manager.reload()
    for stale in sorted(self._manager.all_steps()):
      if stale >= step:
        self._manager.delete(stale)
    items = {_AL: ocp.args.JsonSave(al_state)}
    if train_state is not None:
      items[_TRAIN] = ocp.args.StandardSave(train_state)
    self._manager.save(int(step), force=force, args=ocp.args.Composite(**items))

  def restore_latest(self, train_state_template: Any) -> tuple[int, Any, dict] | None:
    """(step, train_state, al_state) of the newest readable step; None if none is saved.

    A step saved without a train state gives None for it.

    A step that cannot be restored (a corrupt or missing file) is skipped with
    a warning and the one before it is tried.

    Args:
      train_state_template: a pytree like the saved train state (arrays or
        `jax.ShapeDtypeStruct`s); restored arrays take its structure, dtypes
        and shardings.

    Raises:
      UserError: if steps exist but none of them can be restored.
    """
    self._manager.wait_until_finished()
    self._manager.reload()
    steps = sorted(self._manager.all_steps(), reverse=True)
    errors = []
    for step in steps:
      try:
        items = {_AL: ocp.args.JsonRestore()}
        has_train = os.path.isdir(os.path.join(self.directory, str(step), _TRAIN))
        if has_train:
          items[_TRAIN] = ocp.args.StandardRestore(train_state_template)
        out = self._manager.restore(step, args=ocp.args.Composite(**items))
        return step, out[_TRAIN] if has_train else None, dict(out[_AL])
      except Exception as e:  # pylint: disable=broad-except
        reason = _reason(e)
        logging.warning('checkpoint step %d in %s cannot be restored (%s); '
                        'falling back to the previous step', step, self.directory, reason)
        errors.append(f'step {step}: {reason}')
    if not steps:
      return None
    raise UserError(f'no checkpoint in {self.directory} can be restored ({"; ".join(errors)})',
                    'delete that directory to start the run again, or rerun with the '
                    'flags it was started with')

  def latest_al_state(self) -> tuple[int, dict] | None:
    """(step, al_state) of the newest step whose al_state reads; None if none does."""
    self._manager.wait_until_finished()
    self._manager.reload()
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        out = self._manager.restore(step, args=ocp.args.Composite(**{_AL: ocp.args.JsonRestore()}))
        return step, dict(out[_AL])
      except Exception as e:  # pylint: disable=broad-except
        logging.warning('the run state of checkpoint step %d in %s cannot be read (%s); '
                        'falling back to the previous step', step, self.directory, _reason(e))
    return None

  def all_steps(self) -> list[int]:
    self._manager.reload()
    return sorted(self._manager.all_steps())

  def wait(self) -> None:
    """Blocks until background saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> 'RunCheckpointer':
    return self

  def __exit__(self, *exc) -> None:
    self.close()
