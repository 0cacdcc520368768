"""Training and evaluation: pure jitted steps and the host loops that run them.

The train step takes its loss function as an argument (`losses.LossFn`, as
scenic's trainers do), so a strategy that trains differently brings a loss, not
a branch here. Each step is jitted once per mesh and static configuration (loss
function, crop size, scale range, flip; the model's apply function and number of
classes for evaluation), with its shardings, so a second `fit`/`evaluate` with a
fresh state of the same model and optimizer reuses the compiled step instead of
tracing again. To make that hold across active-learning cycles, the state's
`apply_fn` compares equal for equal model configurations, `optim.make_optimizer`
returns the same transformation object for equal arguments, and loss functions
compare by value.

Randomness is explicit: the epoch permutation and every step's augmentation and
dropout are derived from one key with `fold_in`, so `fit` is deterministic.

`fit` and `evaluate` run data-parallel over a `parallel` mesh (default: every
device of every process): the state is replicated, each global batch is split
along `data` and each process reads only its own rows of it. The steps are the
same pure functions jitted with those shardings, so BatchNorm statistics and the
loss are over the global batch and the result equals a one-device run up to
float rounding.
"""

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from flax.training import train_state

from segal_jax.data import augment
from segal_jax.data import labels as labels_lib
from segal_jax.data import pipeline
from segal_jax import errors
from segal_jax import parallel
from segal_jax.training import losses
from segal_jax.training import metrics
from segal_jax.training import optim

Batch = dict[str, Any]
Source = Callable[[np.ndarray], Batch]


class TrainState(train_state.TrainState):
  """Flax train state plus BatchNorm running statistics."""
  batch_stats: Any


@dataclasses.dataclass(frozen=True)
class ModelApply:
  """`model.apply` that compares and hashes by the model's configuration.

  A bound method compares by object identity, so two equal models would give two
  jit cache entries; this wrapper lets every equal model share one.
  """
  model: nn.Module

  def __call__(self, variables, *args, **kwargs):
    return self.model.apply(variables, *args, **kwargs)


@dataclasses.dataclass(frozen=True)
class InputSpec:
  """How a training image reaches the network: augmented, then normalised.

  mean, std: [3] normalisation in [0, 1] units; crop: (h, w) training crop;
  scale_range: (low, high) random scale; flip: random horizontal flip (see
  `augment.augment`). Fields are stored as plain tuples, so equal specs are
  equal and hash alike; crop, scale_range and flip select the compiled step.
  """
  mean: tuple[float, ...]
  std: tuple[float, ...]
  crop: tuple[int, ...]
  scale_range: tuple[float, ...] = (0.5, 2.0)
  flip: bool = True

  def __post_init__(self):
    for name, kind in (('mean', float), ('std', float), ('crop', int), ('scale_range', float)):
      object.__setattr__(self, name, tuple(kind(v) for v in np.ravel(getattr(self, name))))
    object.__setattr__(self, 'flip', bool(self.flip))

  def step(self, mesh: jax.sharding.Mesh, loss_fn: losses.LossFn) -> Callable:
    """The jitted train step of these inputs (`jitted_train_step`)."""
    return jitted_train_step(mesh, loss_fn, self.crop, self.scale_range, self.flip)

  def normalisation(self) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) as [3] float32 arrays, the step's arguments."""
    return np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)


@functools.lru_cache(maxsize=16)
def _jitted_init(model: nn.Module) -> Callable:
  # One compiled initialiser per model configuration (modules hash by value).
  return jax.jit(functools.partial(model.init, train=False))


def create_train_state(model: nn.Module, key: jax.Array, *,
                       image_shape: Sequence[int],
                       tx: optax.GradientTransformation) -> TrainState:
  """Initialises the model's variables and the optimizer state.

  Args:
    model: Linen module called as `model(x, train=..., mc=...)`.
    key: PRNG key for the initial parameters.
    image_shape: (H, W, 3) of one input image.
    tx: optimizer from `optim.make_optimizer` (or any optax transformation).
  """
  params_key, dropout_key = jax.random.split(key)
  x = jnp.zeros((1, *image_shape), jnp.float32)
  variables = _jitted_init(model)({'params': params_key, 'dropout': dropout_key}, x)
  return state_from_variables(model, variables, tx)


def state_from_variables(model: nn.Module, variables: dict,
                         tx: optax.GradientTransformation) -> TrainState:
  """A TrainState of `model` holding `variables` ({'params', 'batch_stats'},
  e.g. a saved model's) and a fresh optimizer state, at step 0."""
  return TrainState.create(apply_fn=ModelApply(model), params=variables['params'],
                           batch_stats=variables.get('batch_stats', {}), tx=tx)


def _train_step(state: TrainState, batch: Batch, key: jax.Array, controls: jax.Array, *,
                loss_fn: losses.LossFn, mean, std, crop: tuple[int, int],
                scale_range: tuple[float, float], flip: bool
                ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One SGD step on an augmented batch (pure; the input state is donated).

  Args:
    state: current TrainState.
    batch: {'image': [B, H, W, 3] uint8, 'label': [B, H, W] uint8 class ids or
      [B, H, W, C] bool partial-label masks}.
    key: PRNG key of this step; image i is augmented with
      fold_in(split(key)[0], i), dropout uses split(key)[1].
    controls: [k] float32 the loss reads this epoch (empty for most losses).
    loss_fn: the loss (static), see `losses.LossFn`.
    mean, std, crop, scale_range, flip: as in `InputSpec` (all but mean and std static).

  Returns:
    (new state, {'loss': [] float32 total, 'lr': [] float32 rate used for this
    step, and whatever metrics the loss adds}).
  """
  aug_key, dropout_key = jax.random.split(key)
  keys = jax.vmap(lambda i: jax.random.fold_in(aug_key, i))(
      jnp.arange(batch['image'].shape[0]))
  aug = functools.partial(augment.augment, crop=crop, scale_range=scale_range,
                          flip=flip, fill=mean)
  images, labels = jax.vmap(aug)(keys, batch['image'], batch['label'])
  images = augment.normalize(images, mean, std)
  loss = lambda params: loss_fn(state.apply_fn, params, state.batch_stats, images, labels,
                                dropout_key, controls)
  (value, (updates, extra)), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads,
                                batch_stats=updates.get('batch_stats', state.batch_stats))
  return state, {'loss': value, 'lr': optim.current_lr(state.opt_state), **extra}


@functools.lru_cache(maxsize=32)
def jitted_train_step(mesh: jax.sharding.Mesh, loss_fn: losses.LossFn,
                      crop: tuple[int, int], scale_range: tuple[float, float],
                      flip: bool) -> Callable:
  """The one jitted train step: (state, batch, step_key, mean, std, controls) ->
  (state, metrics) over `mesh`.

  The state, `step_key`, `mean`, `std` and `controls` are replicated and the
  batch split along `data`. The step's key is fold_in(step_key, state.step),
  derived on the device so no key crosses from the host each step. `fit`
  and `train_step` run it; `plan` asks XLA for its cost.
  """
  rep, split = parallel.replicated(mesh), parallel.batch_sharded(mesh)

  def step(state, batch, step_key, mean, std, controls):
    key = jax.random.fold_in(step_key, state.step)
    return _train_step(state, batch, key, controls, loss_fn=loss_fn, mean=mean, std=std,
                       crop=crop, scale_range=scale_range, flip=flip)

  return jax.jit(step, in_shardings=(rep, split, rep, rep, rep, rep),
                 out_shardings=(rep, rep), donate_argnums=(0,))


def _one_device() -> jax.sharding.Mesh:
  return parallel.make_mesh(jax.local_devices()[:1])


def loss_controls(loss_fn, epoch: int) -> np.ndarray:
  """The loss's controls for `epoch` (`loss_fn.controls(epoch)`), else none."""
  controls = getattr(loss_fn, 'controls', None)
  return np.asarray([] if controls is None else controls(epoch), np.float32)


def _step_and_args(state, batch, step_key, inputs, loss_fn, controls, mesh):
  step = inputs.step(_one_device() if mesh is None else mesh, loss_fn)
  controls = loss_controls(loss_fn, 0) if controls is None else controls
  return step, (state, batch, step_key, *map(jnp.asarray, inputs.normalisation()),
                jnp.asarray(controls, jnp.float32))


def train_step(state: TrainState, batch: Batch, step_key: jax.Array, *, inputs: InputSpec,
               loss_fn: losses.LossFn = losses.segmentation_loss, controls=None,
               mesh: jax.sharding.Mesh | None = None
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One step of the same compiled function `fit` runs (the state is donated).

  The step's key is fold_in(step_key, state.step). `controls` defaults to
  `loss_fn.controls(0)` (none for the plain loss); `mesh` to one device.
  `train_step.lower(...)`, with the same arguments, lowers that function
  without running it (for cost analysis and HLO text).
  """
  step, args = _step_and_args(state, batch, step_key, inputs, loss_fn, controls, mesh)
  return step(*args)


def _lower_train_step(state, batch, step_key, *, inputs, loss_fn=losses.segmentation_loss,
                      controls=None, mesh=None) -> jax.stages.Lowered:
  step, args = _step_and_args(state, batch, step_key, inputs, loss_fn, controls, mesh)
  return step.lower(*args)


train_step.lower = _lower_train_step


def _eval_step(variables, batch: Batch, *, apply_fn: Callable, mean, std,
               num_classes: int) -> jax.Array:
  """Confusion matrix of one batch of full images (BatchNorm statistics, no dropout).

  Args:
    variables: {'params': ..., 'batch_stats': ...}.
    batch: {'image': [B, H, W, 3] uint8, 'label': [B, H, W] uint8}; padding
      images carry label `labels.IGNORE` everywhere and are not counted.
    apply_fn: the model's apply (static; `TrainState.apply_fn`).
    mean, std: [3] normalisation in [0, 1] units.
    num_classes: C (static).

  Returns:
    [C, C] int32 confusion (rows ground truth, columns prediction).
  """
  return metrics.confusion_matrix(predict(variables, batch['image'], apply_fn=apply_fn,
                                          mean=mean, std=std), batch['label'], num_classes)


def predict(variables, images: jax.Array, *, apply_fn: Callable, mean, std) -> jax.Array:
  """[B, H, W] int32 predicted class indices of images [B, H, W, 3] uint8
  (BatchNorm statistics, no dropout)."""
  logits, _ = apply_fn(variables, augment.normalize(augment.to_float(images), mean, std),
                       train=False, mc=False)
  return jnp.argmax(logits, axis=-1)


@functools.lru_cache(maxsize=32)
def _jitted_eval_step(mesh: jax.sharding.Mesh, apply_fn: Callable,
                      num_classes: int) -> Callable:
  """The one jitted eval step: (variables, batch, mean, std) -> replicated [C, C]."""
  rep, split = parallel.replicated(mesh), parallel.batch_sharded(mesh)

  def step(variables, batch, mean, std):
    return _eval_step(variables, batch, apply_fn=apply_fn, mean=mean, std=std,
                      num_classes=num_classes)

  return jax.jit(step, in_shardings=(rep, split, rep, rep), out_shardings=rep)


def eval_step(variables, batch: Batch, *, apply_fn: Callable, mean, std, num_classes: int,
              mesh: jax.sharding.Mesh | None = None) -> jax.Array:
  """One batch's confusion matrix by the compiled step `evaluate` runs (one device)."""
  step = _jitted_eval_step(_one_device() if mesh is None else mesh, apply_fn, num_classes)
  return step(variables, batch, jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32))


def _epoch_batches(indices: np.ndarray, batch_size: int, key: jax.Array,
                   weights: np.ndarray | None = None) -> np.ndarray:
  """[steps, batch_size] indices of one epoch: a permutation, tiled if too short;
  with unequal `weights` ([N] >= 0), N draws with replacement in proportion to them."""
  if weights is None or np.ptp(weights) == 0:
    perm = indices[np.asarray(jax.random.permutation(key, len(indices)))]
  else:
    p = np.asarray(weights, np.float64) / np.sum(weights)
    perm = indices[np.asarray(jax.random.choice(key, len(indices), (len(indices),), p=p))]
  if len(perm) < batch_size:
    return np.resize(perm, (1, batch_size))  # repeats images; shapes stay static
  steps = len(perm) // batch_size
  return perm[:steps * batch_size].reshape(steps, batch_size)


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule:
  """Which images the steps of `fit` train on, in which order.

  epochs: passes over the labeled images.
  batch_size: global batch size, a multiple of the mesh's device count.
  start_epoch: resume at this epoch; the state given to `fit` must then be
    the state saved after epoch `start_epoch - 1` (its step selects the step
    keys, so the result equals an uninterrupted run).
  weights: [N] how often each labeled image is drawn, relative (e.g. its
    labeled pixels): an epoch is then N draws with replacement; None or equal
    weights: each image once an epoch.
  """
  epochs: int
  batch_size: int
  start_epoch: int = 0
  weights: np.ndarray | None = None

  def steps_per_epoch(self, n: int) -> int:
    """Steps of one epoch over `n` images (the remainder is dropped; at least one)."""
    return max(1, n // self.batch_size)

  def batches(self, indices: np.ndarray, key: jax.Array) -> np.ndarray:
    """[steps, batch_size] indices of every epoch from `start_epoch` on, in
    order; epoch e is drawn with fold_in(key, e) (`_epoch_batches`)."""
    epochs = [_epoch_batches(indices, self.batch_size, jax.random.fold_in(key, epoch),
                             self.weights) for epoch in range(self.start_epoch, self.epochs)]
    return np.concatenate(epochs) if epochs else np.zeros((0, self.batch_size), np.int64)


@dataclasses.dataclass(frozen=True)
class Runtime:
  """How `fit` runs on this host; none of it changes the trained parameters.

  progress: show a tqdm bar with the running loss (on process 0).
  desc: bar label.
  on_epoch_end: called with (epoch, state) after every epoch, e.g. to save
    a checkpoint; it may raise to stop training.
  mesh: devices to train on (default: `parallel.default_mesh()`, all).
  prefetch: batches read (and sent to the devices) ahead of the step that
    trains on them, on background threads (`data.pipeline`) and across epoch
    boundaries; 0 reads each batch when it is needed. The batches and their
    order are the same either way; with read-ahead the source is called from
    reader threads and must be safe to call concurrently.
  """
  progress: bool = True
  desc: str = 'train'
  on_epoch_end: Callable[[int, TrainState], None] | None = None
  mesh: jax.sharding.Mesh | None = None
  prefetch: int = 2


def fit(state: TrainState, source: Source, indices, *, schedule: Schedule, key: jax.Array,
        inputs: InputSpec, loss_fn: losses.LossFn | None = None,
        runtime: Runtime = Runtime()) -> tuple[TrainState, dict]:
  """Trains for `schedule.epochs` passes over the images `indices` of `source`.

  Each epoch visits a permutation drawn from fold_in(fold_in(key, 0), epoch) in
  len(indices) // batch_size steps (the remainder is dropped; with fewer images
  than `batch_size`, one step on the images repeated). Step t (counted from the
  state's step) uses the key fold_in(fold_in(key, 1), t). The same inputs give
  identical parameters, the same up to float rounding on any number of devices.

  Args:
    state: initial TrainState; left intact (fit trains a copy, so the same
      initial state can start every cycle). Every process passes the same one.
    source: get_batch(indices [b] int) -> {'image': [b, H, W, 3] uint8,
      'label': [b, H, W] uint8} as host arrays. Each process asks only for its
      rows of every global batch.
    indices: [N] int, the labeled images (the same on every process).
    schedule: epochs, batch size, resumption and draw weights.
    key: PRNG key of the whole run.
    inputs: augmentation and normalisation of the training images.
    loss_fn: the training loss (default `losses.segmentation_loss`); if it has
      a `controls(epoch)` method, each epoch's step receives its result
      (`losses.JointLoss`: the loss-prediction head's warm-up and detaching).
    runtime: progress bar, epoch hook, devices and read-ahead.

  Returns:
    (trained state, replicated over the mesh; {'loss': [...] mean loss per
    epoch run, 'lr': [...] last rate}).

  Raises:
    UserError: no images to train on, a batch size that does not split over
      the devices, or the loss became NaN/Inf (names epoch and step).
    Whatever `source` raises, as it raised it.
  """
  indices = np.asarray(indices, dtype=np.int64).reshape(-1)
  mesh = _checked_mesh(indices, schedule, runtime)
  loss_fn = loss_fn or losses.segmentation_loss
  step_fn = inputs.step(mesh, loss_fn)
  mean, std = parallel.replicate(inputs.normalisation(), mesh)
  step_key = parallel.replicate(jax.random.fold_in(key, 1), mesh)
  first_step = int(parallel.fetch(state.step))
  state = parallel.replicate(state, mesh, copy=True)  # the step donates its input buffers
  steps = schedule.steps_per_epoch(len(indices))
  bar = tqdm.tqdm(total=(schedule.epochs - schedule.start_epoch) * steps, desc=runtime.desc,
                  disable=not (runtime.progress and parallel.is_writer()), leave=False,
                  dynamic_ncols=True)
  stream = _stream(source, schedule.batches(indices, jax.random.fold_in(key, 0)), mesh,
                   runtime.prefetch)
  history = {'loss': [], 'lr': []}
  with bar, contextlib.closing(stream):
    for n, epoch in enumerate(range(schedule.start_epoch, schedule.epochs)):
      controls = parallel.replicate(loss_controls(loss_fn, epoch), mesh)
      step = functools.partial(_step_with, step_fn, step_key, mean, std, controls)
      state, loss, lr = _epoch(state, stream, step, (epoch, first_step + n * steps, steps), bar)
      history['loss'].append(loss)
      history['lr'].append(lr)
      if runtime.on_epoch_end is not None:
        runtime.on_epoch_end(epoch, state)
  return state, history


def _checked_mesh(indices: np.ndarray, schedule: Schedule, runtime: Runtime):
  """The mesh `fit` trains on, once there are images and the batch splits over it."""
  if len(indices) == 0:
    raise errors.UserError('there are no labeled images to train on',
                           'label at least one image before training')
  mesh = parallel.default_mesh() if runtime.mesh is None else runtime.mesh
  parallel.check_batch_size(schedule.batch_size, '--train_batch_size', mesh.size)
  return mesh


def _stream(source: Source, batches: np.ndarray, mesh, prefetch: int):
  """The global batches of `batches` ([steps, batch_size] indices, the whole
  schedule up front so reading runs ahead across epoch boundaries), each
  process reading its rows, placed on `mesh`."""
  batch_size = batches.shape[1]
  return pipeline.batches(source, batches, rows=parallel.local_rows(batch_size, mesh),
                          prefetch=prefetch,
                          place=lambda b: parallel.shard_batch(b, mesh, batch_size))


def _step_with(step_fn, step_key, mean, std, controls, state, batch):
  return step_fn(state, batch, step_key, mean, std, controls)


def _epoch(state, stream, step, where: tuple[int, int, int], bar):
  """Runs one epoch (`where`: epoch, its first global step, steps); returns
  (state, mean loss, the last step's rate)."""
  epoch, first, steps = where
  epoch_losses, pending = [], None
  for global_step in range(first, first + steps):
    state, step_metrics = step(state, next(stream))
    # Read the previous step's loss while this one runs: keeps one step in flight.
    if pending is not None:
      epoch_losses.append(_step_loss(bar, epoch, *pending))
    pending = (global_step, step_metrics)
  epoch_losses.append(_step_loss(bar, epoch, *pending))
  return state, float(np.mean(epoch_losses)), float(parallel.fetch(pending[1]['lr']))


def _step_loss(bar, epoch: int, step: int, step_metrics) -> float:
  """A finished step's loss, shown on the bar; a NaN/Inf loss ends training."""
  loss = float(parallel.fetch(step_metrics['loss']))
  if not np.isfinite(loss):
    bar.close()
    raise errors.UserError(
        f'the training loss became {loss} at epoch {epoch}, step {step}',
        'lower the learning rate or check the labels and normalisation')
  bar.set_postfix(epoch=epoch, loss=f'{loss:.4f}')
  bar.update()
  return loss


def evaluate(state: TrainState, source: Source, n: int, *, batch_size: int, mean, std,
             num_classes: int, progress: bool = True, desc: str = 'eval',
             mesh: jax.sharding.Mesh | None = None) -> dict:
  """mIoU, per-class IoU and pixel accuracy over images 0..n-1 of `source`.

  Full images, BatchNorm running statistics, dropout off. The last batch is
  padded to `batch_size` with images whose labels are all 255, so every image
  counts once and the step compiles once. Each process reads only its rows of
  every global batch (a process whose rows are all padding asks `source` for
  an empty array of indices); the confusion matrix is summed over all.

  Args:
    batch_size: global batch size, a multiple of the mesh's device count.
    mesh: devices to run on (default: `parallel.default_mesh()`, all).

  Returns:
    {'miou': float, 'per_class_iou': [C] list (NaN where a class is absent from
    both ground truth and prediction), 'pixel_acc': float, 'confusion': [C, C]
    int64 list of lists}, the same on every process.
  """
  if n < 1:
    raise errors.UserError('there are no images to evaluate', 'pass n >= 1')
  mesh = parallel.default_mesh() if mesh is None else mesh
  parallel.check_batch_size(batch_size, '--eval_batch_size', mesh.size)
  rows = parallel.local_rows(batch_size, mesh)
  step_fn = _jitted_eval_step(mesh, state.apply_fn, num_classes)
  variables = parallel.replicate({'params': state.params, 'batch_stats': state.batch_stats},
                                 mesh)
  mean, std = parallel.replicate((np.asarray(mean, np.float32),
                                  np.asarray(std, np.float32)), mesh)
  confs = []
  for start in tqdm.trange(0, n, batch_size, desc=desc,
                           disable=not (progress and parallel.is_writer()),
                           leave=False, dynamic_ncols=True):
    # This process's rows of the global batch, of which the first `real` exist.
    local = np.arange(start, start + batch_size)[rows]
    real = int(np.sum(local < n))
    batch = source(local[:real])
    image, label = np.asarray(batch['image']), np.asarray(batch['label'])
    image = parallel.pad_rows(image, len(local), fill=0)
    label = parallel.pad_rows(label, len(local), fill=labels_lib.IGNORE)
    batch = parallel.shard_batch({'image': image, 'label': label}, mesh, batch_size)
    confs.append(step_fn(variables, batch, mean, std))
  conf = np.sum(np.stack([parallel.fetch(c) for c in confs]).astype(np.int64), axis=0)
  miou, per_class = metrics.iou_from_confusion(conf)
  return {'miou': miou, 'per_class_iou': per_class.tolist(),
          'pixel_acc': metrics.pixel_accuracy(conf), 'confusion': conf.tolist()}
