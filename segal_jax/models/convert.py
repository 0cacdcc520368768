"""PyTorch DRN checkpoints -> Flax `DRNSeg` variables.

Three key layouts are found in the wild and accepted:

  classification  `layer0.0.weight`, ..., `fc.*`        (ImageNet DRN; `fc` dropped)
                  DRN-C: `conv1.*`, `bn1.*`, `layer1.*`, ...
  indexed         `base.0.0.weight`, ..., `seg.*`, `up.*` (segmentation; stages by index)
  named           `base.layer0.0.weight`, ..., `seg.*`    (segmentation; stages by name)

A leading `module.` (saved from `DataParallel`) is removed. `num_batches_tracked`
counters and the fixed upsampling kernel `up.weight` carry nothing Flax needs.
PyTorch is an optional dependency, imported only to read `.pth` files.
"""

from collections.abc import Mapping
import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from segal_jax.errors import UserError
from segal_jax.models import _blocks
from segal_jax.models import drn

# The DRN authors' ImageNet classification models (github.com/fyu/drn), by arch.
IMAGENET_URLS = {'drn_d_22': 'http://dl.yf.io/drn/drn_d_22-4bd2f8ea.pth'}

_LEAF = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias',
         'mean': 'running_mean', 'var': 'running_var'}
_BLOCK_PART = {'downsample_conv': 'downsample.0', 'downsample_bn': 'downsample.1'}


def _canonical_name(path: tuple[str, ...], kind: str) -> str:
  """Flax variable path (without collection) -> classification-layout torch name."""
  *modules, leaf = path
  leaf = _LEAF[leaf]
  if modules[0] == 'seg':
    return f'seg.{leaf}'
  stage = int(modules[0].split('_')[1])
  part, index = modules[1].rsplit('_', 1)  # conv_j, bn_j or block_j.
  if part == 'block':  # BlockStage: block_j / conv1 ...
    sub = _BLOCK_PART.get(modules[2], modules[2])
    return f'layer{stage}.{index}.{sub}.{leaf}'
  # ConvStage: conv_j / bn_j are entries 3j and 3j + 1 of an nn.Sequential.
  if stage == 0 and kind == 'C':
    return f'{"conv1" if part == "conv" else "bn1"}.{leaf}'
  return f'layer{stage}.{3 * int(index) + (part == "bn")}.{leaf}'


def _detect_layout(keys) -> str:
  if any(re.match(r'base\.\d+\.', k) for k in keys):
    return 'indexed'
  if any(k.startswith('base.') for k in keys):
    return 'named'
  return 'classification'


def _to_canonical(key: str, layout: str, kind: str) -> str:
  """A file key -> its classification-layout name ('seg.*', 'up.*' unchanged)."""
  if layout == 'classification' or not key.startswith('base.'):
    return key
  rest = key[len('base.'):]
  if layout == 'named':
    return rest
  index, _, tail = rest.partition('.')
  index = int(index)
  if kind == 'D':
    return f'layer{index}.{tail}'
  if index < 2:  # DRN-C's stem: conv1, bn1, relu, then layer1 ...
    return f'{("conv1", "bn1")[index]}.{tail}'
  return f'layer{index - 2}.{tail}'


def _from_canonical(name: str, layout: str, kind: str) -> str:
  """Inverse of `_to_canonical`, to name missing keys as the file would spell them."""
  if layout == 'classification' or name.startswith(('seg.', 'up.')):
    return name
  if layout == 'named':
    return f'base.{name}'
  head, _, tail = name.partition('.')
  if head in ('conv1', 'bn1'):
    return f'base.{("conv1", "bn1").index(head)}.{tail}'
  index = int(head[len('layer'):])
  return f'base.{index + (2 if kind == "C" else 0)}.{tail}'


def _ignored(name: str) -> bool:
  return (name.endswith('num_batches_tracked') or name.startswith('fc.')
          or name == 'up.weight')


def _to_flax(array: np.ndarray) -> np.ndarray:
  if array.ndim == 4:  # Conv OIHW -> HWIO.
    return np.transpose(array, (2, 3, 1, 0))
  return array


def expected_shapes(arch: str, num_classes: int, width_multiplier: float = 1.0):
  """{'params': ..., 'batch_stats': ...} of ShapeDtypeStructs for `DRNSeg`."""
  model = drn.DRNSeg(arch=arch, num_classes=num_classes,
                     width_multiplier=width_multiplier)
  x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  return jax.eval_shape(
      lambda x: model.init({'params': jax.random.key(0)}, x, train=False), x)


def variables_from_torch(state_dict: Mapping[str, Any], arch: str = 'drn_d_22',
                         num_classes: int | None = None, *,
                         width_multiplier: float = 1.0,
                         key: jax.Array | None = None) -> dict[str, Any]:
  """Converts a PyTorch DRN state dict into `DRNSeg` variables.

  Args:
    state_dict: parameter name -> array (NumPy, or anything `np.asarray` takes).
    arch: a key of `drn.ARCHS` the checkpoint was trained with.
    num_classes: classifier outputs. Inferred from `seg.weight` when present;
      for classification checkpoints (no `seg.*`) it defaults to 19 and the
      classifier is freshly initialised (He normal, zero bias) from `key`.
    width_multiplier: the `DRNSeg` width the checkpoint has.
    key: PRNG key for a fresh classifier; default `jax.random.key(0)`.

  Returns:
    {'params': ..., 'batch_stats': ...} float32 NumPy trees for
    `DRNSeg(arch=arch, num_classes=num_classes, width_multiplier=...)`.

  Raises:
    UserError: naming the key that is unknown, missing or of the wrong shape.
  """
  kind = drn.get_arch(arch).kind
  arrays, layout = _canonical_arrays(state_dict, kind)
  if 'seg.weight' in arrays:
    found = arrays['seg.weight'][1].shape[0]
    if num_classes is not None and num_classes != found:
      raise UserError(f'{arrays["seg.weight"][0]} has {found} classes, not {num_classes}',
                      f'pass num_classes={found} or leave it unset')
    num_classes = found
  elif num_classes is None:
    num_classes = 19
  fresh_head = 'seg.weight' not in arrays and 'seg.bias' not in arrays

  shapes = expected_shapes(arch, num_classes, width_multiplier)
  out = {}
  used = set()
  for collection in ('params', 'batch_stats'):  # Weights first: clearer errors.
    skip = (lambda name: name.startswith('seg.')) if fresh_head else (lambda name: False)
    out[collection] = _unflatten(_collection(shapes[collection], arrays, (arch, kind, layout),
                                             skip, used))
  unknown = [arrays[n][0] for n in arrays if n not in used]
  if unknown:
    raise UserError(f'unknown key {unknown[0]!r} in the checkpoint for {arch}'
                    + (f' ({len(unknown) - 1} more)' if len(unknown) > 1 else ''),
                    'check --arch matches the checkpoint')
  if fresh_head:
    head = _blocks.conv(num_classes, 1, use_bias=True).init(
        key if key is not None else jax.random.key(0),
        jnp.zeros((1, 1, 1, shapes['params']['seg']['kernel'].shape[2])))
    out['params']['seg'] = jax.tree.map(np.asarray, head['params'])
  return out


def _canonical_arrays(state_dict: Mapping[str, Any], kind: str):
  """({canonical name: (file key, float32 array)} of the keys that count, the
  checkpoint's layout); a `module.` prefix on every key (DataParallel) is dropped."""
  keys = list(state_dict)
  strip = 'module.' if keys and all(k.startswith('module.') for k in keys) else ''
  layout = _detect_layout([k[len(strip):] for k in keys])
  arrays = {}
  for k in keys:
    name = _to_canonical(k[len(strip):], layout, kind)
    if _ignored(name):
      continue
    arrays[name] = (k, np.asarray(state_dict[k], dtype=np.float32))
  return arrays, layout


def _collection(tree, arrays: dict, network: tuple, skip, used: set) -> dict:
  """{path: Flax array} of one collection's leaves (`tree`: expected shapes)
  from `arrays`, but those whose canonical name `skip` says; names taken go
  into `used`.

  Args:
    network: (arch, kind, layout), for the messages and names.

  Raises:
    UserError: a leaf the checkpoint lacks, or one of another shape.
  """
  arch, kind, layout = network
  flat = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    path = tuple(p.key for p in path)
    name = _canonical_name(path, kind)
    if skip(name):
      continue
    if name not in arrays:
      raise UserError(
          f'the checkpoint lacks {_from_canonical(name, layout, kind)!r} that {arch} needs',
          'check --arch (and the width) matches the checkpoint')
    file_key, array = arrays[name]
    value = _to_flax(array)
    if value.shape != leaf.shape:
      want = tuple(leaf.shape) if value.ndim != 4 else tuple(
          leaf.shape[i] for i in (3, 2, 0, 1))
      raise UserError(
          f'{file_key!r} has shape {tuple(array.shape)}, {arch} expects {want}',
          'check --arch (and the width) matches the checkpoint')
    used.add(name)
    flat[path] = value
  return flat


def _unflatten(flat: dict[tuple[str, ...], np.ndarray]) -> dict:
  tree: dict = {}
  for path, value in flat.items():
    node = tree
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = value
  return tree


def load_torch_file(path: str) -> dict[str, np.ndarray]:
  """Reads a `.pth` file (a state dict, or a dict holding one under 'state_dict')."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise UserError('reading PyTorch checkpoints needs PyTorch',
                    'install it with pip install "segal-jax[torch]"') from e
  if not os.path.isfile(path):
    raise UserError(f'no checkpoint file at {path}', 'pass an existing .pth file')
  try:
    obj = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f'cannot read {path} as a PyTorch checkpoint ({e})',
                    'pass a state dict saved with torch.save') from e
  if isinstance(obj, Mapping) and isinstance(obj.get('state_dict'), Mapping):
    obj = obj['state_dict']
  if not isinstance(obj, Mapping):
    raise UserError(f'{path} holds a {type(obj).__name__}, not a state dict',
                    'save model.state_dict() rather than the model')
  return {k: v.detach().cpu().float().numpy() for k, v in obj.items()
          if isinstance(v, torch.Tensor)}


def init_checkpoint_fix(arch: str, out: str) -> str:
  """How to make the ImageNet-initialised trunk `out` for `arch`: the two commands."""
  url = IMAGENET_URLS.get(arch)
  if url is None:
    return (f'convert an ImageNet checkpoint of {arch} with python -m launch.convert '
            f'--source=FILE.pth --arch={arch} --out={out}')
  return (f"download {url} (the DRN authors' ImageNet model), then run python -m "
          f'launch.convert --source={url.rsplit("/", 1)[1]} --arch={arch} --out={out}')
