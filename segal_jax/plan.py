"""A run's plan, checked and priced before anything is built or trained (`--dry_run`).

`cycles` is pure: from the configuration and the pool's size it says, for each
cycle of each strategy, how many images train for how many steps
(`loop.train_schedule`), how many units and images are scored with how many
passes (`selection.candidate_count`), and how many units are bought.
`step_cost` asks XLA's cost analysis for the one compiled training step
(`train.jitted_train_step`, compiled for abstract shapes) and times it on this
machine on a blank batch; `describe` puts them together after `check_data` has
found the data set, built or as source files.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import zipfile

import jax
import jax.numpy as jnp

from segal_jax.config import ExperimentConfig
from segal_jax import data
from segal_jax.data import cityscapes
from segal_jax.data import image_folder
from segal_jax.data import labels
from segal_jax.data import synthetic_city
from segal_jax.errors import UserError
from segal_jax.labelling import folder_changes
from segal_jax.labelling import session as human
from segal_jax import loop
from segal_jax import parallel
from segal_jax.selection import strategies as selection
from segal_jax.training import optim
from segal_jax.training import train


@dataclasses.dataclass(frozen=True)
class CyclePlan:
  """One cycle of one strategy.

  labeled_images: images training sees (superpixel units: at most, as if
    every superpixel bought so far lay in another image; cost budgets: about,
    `al_budget` units a cycle).
  scored_units / scored_images: what selection after this cycle scores
    (superpixel units: at most, every superpixel of every open image).
  passes: forward passes per scored image (MC passes, 1, or 0 for random).
  buy: units bought after this cycle (cost budgets: the cost to spend).
  """
  cycle: int
  labeled_images: int
  epochs: int
  train_steps: int
  scored_units: int
  scored_images: int
  passes: int
  buy: int


def cycles(config: ExperimentConfig, strategy_name: str, pool_size: int,
           initial: int | None = None) -> list[CyclePlan]:
  """The plan of one strategy (every seed runs the same plan), from `initial`
  labeled images (default `--al_initial`; people's runs: the labels there are)."""
  initial = config.al_initial if initial is None else initial
  strategy = selection.get(strategy_name)
  if strategy.full:
    epochs, steps = loop.train_schedule(config, pool_size)
    return [CyclePlan(0, pool_size, epochs, steps, 0, 0, 0, 0)]
  passes = 0 if strategy.measure is None else (config.mc_passes if strategy.mc else 1)
  cost_mode = bool(config.al_budget_cost)
  superpixel = config.al_unit == 'superpixel'
  out = []
  for cycle in range(config.al_cycles):
    # A cost budget is priced from labels the plan does not read: al_budget
    # then stands for the units it buys (the flagfiles set it to about that).
    bought = min(cycle, config.al_label_cycles or cycle) * config.al_budget
    labeled = min(pool_size, initial + bought)
    epochs, steps = loop.train_schedule(config, labeled, config.warm_start and cycle > 0)
    last = cycle + 1 == config.al_cycles or not loop.buys(config, cycle)
    if superpixel:
      open_images = pool_size - initial
      needed = math.ceil(config.al_budget / config.sp_segments)
      images = _subset(open_images, config.sp_candidate_factor, needed)
      units = images * config.sp_segments
    else:
      open_images = pool_size - labeled
      images = _subset(open_images, config.al_candidate_factor, config.al_budget)
      units = images
    if last:
      units = images = 0
    buy = 0 if last else (config.al_budget_cost or config.al_budget)
    scored = passes > 0
    out.append(CyclePlan(cycle, labeled, epochs, steps, units if scored else 0,
                         images if scored else 0, passes if scored and images else 0, buy))
  return out


def _subset(open_images: int, factor: float, needed: int) -> int:
  """Images scored: all open ones (factor 0) or factor x needed of them."""
  count = selection.candidate_count(factor, max(1, needed))
  return max(0, open_images if count == 0 else min(open_images, count))


def step_cost(config: ExperimentConfig, num_classes: int, strategy_name: str, *,
              timed: bool = True, repeats: int = 3) -> tuple[float, float]:
  """(FLOPs, seconds) of one training step: XLA's cost analysis of the compiled
  step (`train.jitted_train_step` with the strategy's loss, compiled for
  abstract shapes of the state and a [train_batch_size] batch of `train_crop`
  crops), and (`timed`) that step run on this machine on a real state and a blank
  batch, once to warm up, then timed over `repeats` steps (NaN if not timed)."""
  compiled, model, tx = _compiled_step(config, num_classes, strategy_name)
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax: one dict per device program
    analysis = analysis[0] if analysis else {}
  flops = float((analysis or {}).get('flops', float('nan')))
  if not timed:
    return flops, float('nan')
  mesh = parallel.default_mesh()
  h, w = config.train_crop
  state = jax.device_put(train.create_train_state(model, jax.random.key(0),
                                                  image_shape=(h, w, 3), tx=tx),
                         parallel.replicated(mesh))
  b = config.train_batch_size
  batch = jax.device_put({'image': jnp.zeros((b, h, w, 3), jnp.uint8),
                          'label': jnp.zeros((b, h, w), jnp.uint8)}, parallel.batch_sharded(mesh))
  args = (jax.random.key(0), jnp.zeros(3), jnp.ones(3),
          jnp.asarray(train.loss_controls(selection.get(strategy_name).training_loss(config),
                                          0)))
  args = jax.device_put(args, parallel.replicated(mesh))
  state, metrics = compiled(state, batch, *args)  # the state's buffers are donated
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(repeats):
    state, metrics = compiled(state, batch, *args)
  jax.block_until_ready(metrics)
  return flops, (time.perf_counter() - start) / repeats


def _compiled_step(config: ExperimentConfig, num_classes: int, strategy_name: str):
  """(the compiled train step for abstract shapes, the model, the optimizer)."""
  model = loop.build_model(config, num_classes, strategy_name)
  loss_fn = selection.get(strategy_name).training_loss(config)
  h, w = config.train_crop
  tx = optim.make_optimizer(optimizer=config.train_optimizer, lr=config.train_lr,
                            momentum=config.train_momentum,
                            weight_decay=config.train_weight_decay,
                            schedule=config.train_schedule, total_steps=1000, step_every=400)
  state = jax.eval_shape(lambda k: train.create_train_state(model, k, image_shape=(h, w, 3),
                                                            tx=tx), jax.random.key(0))
  b = config.train_batch_size
  batch = {'image': jax.ShapeDtypeStruct((b, h, w, 3), jnp.uint8),
           'label': jax.ShapeDtypeStruct((b, h, w), jnp.uint8)}
  step = train.jitted_train_step(parallel.default_mesh(), loss_fn, (h, w),
                                 (config.train_scale_min, config.train_scale_max), True)
  vec = jax.ShapeDtypeStruct((3,), jnp.float32)
  controls = jax.ShapeDtypeStruct(train.loss_controls(loss_fn, 0).shape, jnp.float32)
  compiled = step.lower(state, batch, jax.eval_shape(lambda: jax.random.key(0)), vec, vec,
                        controls).compile()
  return compiled, model, tx


def duration(seconds: float) -> str:
  """'40 s', '12 min', '3.5 h': a duration as a person reads it."""
  if seconds < 90:
    return f'{seconds:.0f} s'
  if seconds < 5400:
    return f'{seconds / 60:.0f} min'
  return f'{seconds / 3600:.1f} h'


def check_data(config: ExperimentConfig) -> tuple[str, int]:
  """(where the data set is, its training pool size), building nothing.

  Raises:
    UserError: the data set is neither built nor has its source files in place.
  """
  data_dir = config.data_dir or None
  if config.dataset == 'cityscapes':
    b = cityscapes.builder(data_dir=data_dir, config=config.dataset_config or None)
    if b.is_prepared():
      return f'built at {b.data_path}', b.info.splits['train'].num_examples
    manual = os.path.join(b.data_dir_root, 'downloads', 'manual')
    images_zip, _ = cityscapes.check_manual_dir(manual)
    with zipfile.ZipFile(images_zip) as z:
      n = sum(1 for name in z.namelist()
              if name.startswith('leftImg8bit/train/') and name.endswith('_leftImg8bit.png'))
    return f'not built yet; its source zips are in {manual}', n
  if config.dataset == 'synthetic_city':
    names = {c.name: c for c in synthetic_city.SyntheticCity.BUILDER_CONFIGS}
    if config.dataset_config not in names:
      raise UserError(f'synthetic_city has no config {config.dataset_config!r}',
                      f'use one of {", ".join(names)}')
    return 'generated on first use', names[config.dataset_config].num_train
  if config.dataset.startswith(data.IMAGE_FOLDER_PREFIX):
    path = config.dataset[len(data.IMAGE_FOLDER_PREFIX):]
    options = image_folder.parse_options(config.dataset_config or None)
    splits = image_folder.find_splits(path, options.get('val_fraction', 0.2),
                                      options.get('seed', 0),
                                      options.get('allow_unlabeled', False)
                                      or human.enabled(config))
    return f'files in {path} (built on first use)', len(splits['train'])
  raise UserError(f'unknown dataset {config.dataset!r}',
                  f'choose one of {", ".join(sorted(data.DATASETS))} or image_folder:PATH')


def describe(config: ExperimentConfig, *, flops: bool = True, timed: bool = True) -> str:
  """The plan as text: the data, then per strategy every cycle, then the FLOPs;
  with `timed`, each cycle's training time on this machine (`step_cost`)."""
  where, pool = check_data(config)
  # People's runs start from what is labeled, not from --al_initial.
  selection.check_config(config, pool_size=None if human.enabled(config) else pool)
  initial = None
  if human.enabled(config):
    pool, initial = _people_start(config)
  lines = [f'data: {config.dataset}/{config.dataset_config}: {where}; pool of {pool} images',
           f'init: {config.init_checkpoint or "random initialisation"}',
           f'seeds: {",".join(map(str, config.al_seeds))}; unit: {config.al_unit}; '
           f'budget: {_budget(config)} per cycle; protocol: {config.al_protocol}; '
           f'cost rule: {config.al_cost_rule}; order: {config.al_rank}'
           + ('; the study\'s selection exactly' if config.al_study_exact else '')
           + ('; people label between runs (cycle 0 trains on the images labeled now, '
              'not --al_initial)' if human.enabled(config) else '')]
  total_flops = 0.0
  for name in config.al_strategies:
    plan = cycles(config, name, pool, initial)
    step_flops, seconds = (step_cost(config, _num_classes(config), name, timed=timed)
                           if flops else (float('nan'), float('nan')))
    steps = sum(c.train_steps for c in plan)
    total_flops += steps * step_flops * len(config.al_seeds)
    lines.append(f'strategy {name} (per seed):')
    for c in plan:
      bound = ('at most ' if config.al_unit == 'superpixel' else
               'about ' if config.al_budget_cost else '') if c.cycle else ''
      line = (f'  cycle {c.cycle}: train on {bound}{c.labeled_images} images, '
              f'{c.epochs} epochs, {c.train_steps} steps'
              + (f' (about {duration(c.train_steps * seconds)})' if seconds == seconds else ''))
      if c.buy and c.passes:
        up_to = 'up to ' if config.al_unit == 'superpixel' else ''
        line += (f'; score {up_to}{c.scored_units} units in {up_to}{c.scored_images} images '
                 f'x {c.passes} passes; buy {c.buy} {_unit_word(config)}')
      elif c.buy:
        line += f'; buy {c.buy} {_unit_word(config)} at random (nothing scored)'

      lines.append(line)
    lines.append(f'  {steps} training steps x {step_flops:.3g} FLOPs a step '
                 f'= {steps * step_flops:.3g} FLOPs'
                 + (f'; {seconds:.3g} s a step measured here: about '
                    f'{duration(steps * seconds)} of training a seed' if seconds == seconds
                    else ''))
  lines.append(f'total training: {total_flops:.3g} FLOPs over {len(config.al_strategies)} '
               f'strategies x {len(config.al_seeds)} seeds (scoring and evaluation not counted)')
  return '\n'.join(lines)


SLOW_FIRST_CYCLE = 3600  # seconds: past this a run says so before it starts


def first_cycle_note(config: ExperimentConfig) -> str:
  """One line before a run starts: how long the first strategy's first cycle
  trains on this machine (measured, `step_cost`), with a pointer to the CPU
  recipe when that is hours on a CPU; empty when the folder is missing (the
  run then says so in its own words)."""
  if not os.path.isdir(config.dataset[len(data.IMAGE_FOLDER_PREFIX):]):
    return ''
  _, pool = check_data(config)
  name = config.al_strategies[0]
  _, steps = (loop.train_schedule(config, _people_start(config)[1]) if human.enabled(config)
              else (0, cycles(config, name, pool)[0].train_steps))
  _, seconds = step_cost(config, _num_classes(config), name)
  line = (f'{name} cycle 0: {steps} training steps, about {duration(steps * seconds)} on this '
          f'machine ({jax.default_backend()}, {seconds:.3g} s a step)')
  if steps * seconds > SLOW_FIRST_CYCLE and jax.default_backend() == 'cpu':
    line += ('. That is over an hour on a CPU: configs/folder_cpu.flags trains a network sized for '
             'one (--flagfile=configs/folder_cpu.flags before your own flags)')
  return line


def _people_start(config: ExperimentConfig) -> tuple[int, int]:
  """(pool images, labeled ones among them) of a people run's folder as it is
  now: without a val/ folder, `human.HOLDOUT` of the labeled images are held
  out to validate and leave both."""
  folder = config.dataset[len(data.IMAGE_FOLDER_PREFIX):]
  names = folder_changes.pool_images(folder, [])
  labeled = sum(os.path.exists(folder_changes.label_file(folder, n)) for n in names)
  held = 0 if folder_changes.has_val_folder(folder) else min(
      labeled, human.held_out_count(labeled))
  return len(names) - held, max(1, labeled - held)


def _num_classes(config: ExperimentConfig) -> int:
  """The classes of the data set: an image folder's class table, else Cityscapes' 19."""
  if not config.dataset.startswith(data.IMAGE_FOLDER_PREFIX):
    return labels.NUM_CLASSES
  options = image_folder.parse_options(config.dataset_config or None)
  table = image_folder.class_table(config.dataset[len(data.IMAGE_FOLDER_PREFIX):],
                                   options.get('classes'))
  return labels.NUM_CLASSES if table is None else table.num_classes


def _budget(config: ExperimentConfig) -> str:
  if config.al_budget_cost:
    return f'{config.al_budget_cost} cost'
  return f'{config.al_budget} {config.al_unit}s'


def _unit_word(config: ExperimentConfig) -> str:
  if config.al_budget_cost:
    return f'cost ({config.al_unit}s while they fit)'
  return f'{config.al_unit}s'

