"""The experiment configuration: one frozen dataclass, validated up front.

`launch/` builds it from flags (each field is one flag of the same name, its
help text is the field's `help` metadata); library code receives it and never
reads flags. `validate` checks ranges and combinations before any expensive
work, raising `UserError` with the fix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from segal_jax.errors import UserError


def _f(default: Any, help: str, **kw):  # pylint: disable=redefined-builtin
  return dataclasses.field(default=default, metadata={'help': help, **kw})


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """Everything that defines an experiment (and a few things that do not)."""

  # Data.
  dataset: str = _f('synthetic_city', 'Data set name: synthetic_city.')
  dataset_config: str = _f('small', 'Builder config of the data set (synthetic_city: tiny, small, default, bench).')
  data_dir: str = _f('', 'tensorflow-datasets data directory (empty: the tfds default).', defining=False)

  # Model.
  arch: str = _f('drn_d_22', 'Network architecture.')
  width_multiplier: float = _f(1.0, 'Scales every channel width of the network (0.25 for CPU runs).')
  dropout_placement: str = _f('stages', "Where dropout sits: 'stages' (after stages 3-6), 'head', 'none'.")
  dropout_rate: float = _f(0.5, 'Dropout rate.')
  output_stride: int = _f(8, 'Output stride of the network: 8 (the published DRN), 4 (stage 4 '
                          'keeps 1/4 resolution, later dilations doubled: thin or small '
                          'objects, about 4x the compute of stages 4-8) or 2 (stage 3 '
                          'too: strokes a few pixels wide, about 4x again).', omit_default=True)
  compute_dtype: str = _f('float32', "Activation dtype: 'float32' or 'bfloat16' (params stay float32).")
  init_checkpoint: str = _f('', 'Start every cycle from this model (launch.convert or launch.run '
                            'output) instead of a random initialisation.')

  # Training (each cycle).
  train_epochs: int = _f(250, 'Epochs over the labeled set per cycle.')
  train_sampling: str = _f('images', "How training draws its images: 'images' (each labeled "
                           "image once an epoch) or 'labeled_pixels' (with replacement, in "
                           'proportion to its labeled share, an image labeled whole 1, so that '
                           'many partly labeled images do not dilute the steps).',
                           omit_default=True)
  train_min_steps: int = _f(0, 'Train at least this many steps per cycle (small labeled sets).')
  train_length: str = _f('images', "What an epoch counts: 'images' (every labeled image once, "
                         "the study) or 'cost' (every fully labeled image once, and the partly "
                         "labeled ones as many images of mean cost as their annotation cost "
                         "buys: superpixels train as long as whole images of the same cost).",
                         omit_default=True)
  train_batch_size: int = _f(8, 'Global training batch size.')
  train_optimizer: str = _f('sgd', "'sgd' (momentum, L2 weight decay: the study) or 'adamw' "
                            '(Adam with decoupled weight decay, faster from scratch on small '
                            'folders; use a learning rate near 0.001).', omit_default=True)
  train_lr: float = _f(0.01, 'Base learning rate of the optimizer.')
  train_momentum: float = _f(0.9, "SGD momentum (adamw: Adam's b1).")
  train_weight_decay: float = _f(1e-4, 'L2 weight decay.')
  train_schedule: str = _f('step', "Learning-rate schedule: 'step', 'poly' or 'constant'.")
  train_step_fraction: float = _f(0.4, "For 'step': multiply the lr by 0.1 after each such fraction of the steps.")
  train_crop: tuple[int, ...] = _f((128, 256), 'Training crop height,width.')
  train_scale_min: float = _f(0.5, 'Smallest random scale of training augmentation.')
  train_scale_max: float = _f(2.0, 'Largest random scale of training augmentation.')
  train_class_balance: bool = _f(False, 'Weight each labeled pixel\'s loss by 1/sqrt of its '
                                 'class\'s share of the batch\'s labeled pixels, so rare and '
                                 'small classes are not drowned by the background.',
                                 omit_default=True)
  stop_holdout: float = _f(0.0, 'Hold out this fraction of the labeled images and stop a '
                           "cycle's training when their loss stops improving, keeping the best "
                           'model (0: off); train_epochs/train_min_steps then cap the length.')
  stop_patience: int = _f(5, 'Held-out evaluations without improvement that stop training.')
  stop_min_delta: float = _f(0.01, 'Relative drop of the held-out loss that counts as improvement.')
  stop_every_steps: int = _f(100, 'Evaluate the held-out loss about every this many steps '
                             '(whole epochs, at least one).')
  warm_start: bool = _f(False, 'Start each cycle from the previous cycle\'s model instead of the '
                        'initial variables, training warm_start_fraction of the epochs.')
  warm_start_fraction: float = _f(0.3, 'Fraction of the epochs a warm-started cycle trains.')
  eval_batch_size: int = _f(16, 'Batch size for evaluation and pool scoring.')

  # Active learning.
  al_strategies: tuple[str, ...] = _f(('random', 'mc_variance'), 'Selection strategies to compare.')
  al_seeds: tuple[int, ...] = _f((0,), 'Seeds; each seed gives every strategy the same initial set.')
  al_unit: str = _f('image', "What is annotated: 'image' (whole images) or 'superpixel'.",
                    after_first=True)
  al_initial: int = _f(150, 'Images labeled at random before the first cycle.')
  al_budget: int = _f(150, 'Units (images or superpixels) selected per cycle (with '
                      '--al_budget_cost: about the units the cost buys, for the --dry_run '
                      'plan, and the picks of --al_diversity).', after_first=True)
  al_budget_cost: int = _f(0, 'If > 0, select per cycle units whose annotation cost '
                           '(--al_cost_rule) fits in this instead of al_budget units (compares '
                           'units at equal cost).', after_first=True)
  al_cycles: int = _f(10, 'Training cycles (the first trains on the initial set).',
                      after_first=True)
  al_label_cycles: int = _f(0, 'Buy labels after only the first N cycles, then train the '
                            'remaining cycles on what is labeled (0: buy after every cycle). '
                            'The labels-versus-compute control: the same training with no new '
                            'labels.', omit_default=True, after_first=True)
  al_candidate_factor: float = _f(3.0, 'Image units: score a random subset of this many x budget '
                                  'unlabeled images (the study: 3; 0: all of them).',
                                  after_first=True)
  al_protocol: str = _f('instance_overlap', "How the simulated annotator labels a unit and what it "
                        "charges (docs/protocols.md): 'instance_overlap' (the study's), "
                        "'image_polygons' (whole images, polygon clicks), 'dominant_label', "
                        "'multi_class' or 'points' (superpixels, clicks); 'whole_touched' "
                        "(superpixels ranked, their images labeled whole: a control).",
                        omit_default=True,
                        after_first=True)
  al_cost_rule: str = _f('study', "What a unit's annotation costs under --al_protocol="
                         "instance_overlap: 'study' (every distinct id of the instance map, void "
                         "included, as the study counts), 'instances' (only the instances "
                         "labeled) or 'clicks' (their polygon clicks). An image pays for every id "
                         "it holds, a superpixel for every id it newly touches; the labels are "
                         "the same. The other protocols always charge clicks.", after_first=True)
  al_rank: str = _f('score', "How units are ordered before a budget buys them: 'score', or "
                    "'score_per_click' (score / the clicks the protocol would charge if the "
                    "model's own predicted segmentation of the unit were the truth).",
                    omit_default=True, after_first=True)
  noise_flip: float = _f(0.0, 'Annotator noise: probability that a label decision (a region\'s '
                         'class, a point\'s class) gets another class, uniformly drawn.',
                         omit_default=True)
  noise_erode: int = _f(0, 'Annotator noise: pixels left unlabeled on each side of every '
                        'ground-truth boundary.', omit_default=True)
  al_annotator: str = _f('simulated', "Who labels the chosen units: 'simulated' (from the "
                         "data's labels, by --al_protocol), 'human' (people label an "
                         'image_folder between runs: each cycle writes a request and exits; '
                         "rerun once the labels are in) or 'label_studio' (the same, with the "
                         'request sent to a Label Studio server as tasks and the answers taken '
                         'from it; its API token in the environment variable '
                         'LABEL_STUDIO_TOKEN).', omit_default=True)
  label_studio_url: str = _f('http://127.0.0.1:8080', 'With --al_annotator=label_studio: '
                             'the address of the Label Studio server.', defining=False)
  label_studio_project: str = _f('', 'With --al_annotator=label_studio: the title of the run\'s '
                                 'Label Studio project, created if there is none (empty: made '
                                 'from the work directory, strategy and seed).', defining=False)
  al_shared_dir: str = _f('', "Where each seed's first cycle is trained once and kept for every "
                         'strategy (empty: WORKDIR/shared). Point flagfiles that differ only '
                         'in what they buy after it (unit, protocol, budget, ordering) at one '
                         'directory to share it between them.', defining=False)
  al_study_exact: bool = _f(False, "The study's selection exactly, where segal-jax improves on it: "
                            'superpixels that can add no label (all void or already labeled) '
                            'stay eligible and chosen ones can be chosen again, and a cost '
                            'budget buys the unit that crosses it (by default a unit that does '
                            'not fit is skipped and the cost never exceeds the budget).',
                            after_first=True)
  # Acquisition steps between ranking and buying (superpixel units; `acquisition`).
  al_class_balance: bool = _f(False, 'Superpixel units: weight each score by exp(-f), f the share '
                              "of the unit's dominant predicted class among the labeled pixels "
                              '(class-balanced acquisition, Cai et al. CVPR 2021).',
                              omit_default=True, after_first=True)
  al_per_image_cap: int = _f(0, 'Superpixel units: choose at most this many superpixels of one '
                             'image per cycle, the best-ranked (0: no cap).', omit_default=True,
                             after_first=True)
  al_diversity: str = _f('none', "Superpixel units: 'none', or 'kcenter' (k-center greedy on "
                         'pooled, projected network features picks al_budget of the '
                         'al_diversity_factor x al_budget best-ranked units).', omit_default=True,
                         after_first=True)
  al_diversity_factor: float = _f(4.0, 'Candidate oversampling of --al_diversity: the best this '
                                  'many x al_budget units are its candidates.', omit_default=True,
                                  after_first=True)
  al_feature_dim: int = _f(32, 'Dimensions of the random projection of the features that '
                           '--al_diversity compares.', omit_default=True, after_first=True)
  al_diversity_chunk: int = _f(4096, 'Units per block of the k-center distance computation '
                               '(bounds memory; the picks do not depend on it).', defining=False)

  # Superpixels (al_unit=superpixel).
  sp_segments: int = _f(100, 'Watershed markers (superpixels) per image.', after_first=True)
  sp_compactness: float = _f(0.001, 'Watershed compactness.', after_first=True)
  sp_candidate_factor: float = _f(0.0, 'Superpixel units: 0 (the study) ranks the superpixels '
                                  'of every unlabeled image each cycle; > 0 scores only a random '
                                  'subset of this many x the images the budget needs (very large '
                                  'pools).', after_first=True)
  sp_workers: int = _f(0, 'Worker processes computing superpixels (0: one per core).',
                       defining=False)

  # Loss prediction (strategy loss_prediction).
  lp_weight: float = _f(1.0, 'Weight (lambda) of the loss-prediction ranking loss in the training '
                        'loss (the study: 1).')
  lp_margin: float = _f(1.0, 'Margin of the loss-prediction ranking loss.')
  lp_warmup_epochs: int = _f(2, 'Epochs at the start of each cycle without the ranking loss '
                             '(the study: 2).')
  lp_detach_epoch: int = _f(150, 'From this epoch on the features are detached from the '
                            'loss-prediction head (its loss no longer trains the network; '
                            'the study: 150 of 250).')

  # MC dropout.
  mc_passes: int = _f(10, 'MC-dropout forward passes per image.', after_first=True)
  mc_chunk: int = _f(0, 'Process the MC passes in chunks of this size (0: all at once).',
                     after_first=True)

  # Outputs and bookkeeping (not experiment-defining).
  progress: bool = _f(True, 'Show progress bars.', defining=False)
  out_figures: int = _f(4, 'Draw the uncertainty maps of this many top-ranked images per cycle.',
                        defining=False)
  ckpt_every_epochs: int = _f(10, 'Save the training state every N epochs (0: only when stopped).',
                              defining=False)

  def defining_dict(self) -> dict[str, Any]:
    """The fields that define the results (a resumed run must match them)."""
    # Fields added later (`omit_default`) enter only when set, so the runs made
    # before them keep their fingerprint and resume.
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
            if f.metadata.get('defining', True) and f.name not in ('al_strategies', 'al_seeds')
            and not (f.metadata.get('omit_default') and getattr(self, f.name) == f.default)}

  def fingerprint(self) -> str:
    return _digest(self.defining_dict())

  def first_cycle_fingerprint(self, *extra: str) -> str:
    """What the first cycle's model depends on: the defining fields but those
    (`after_first`) that only steer what is bought after it, so flagfiles
    that differ in unit, protocol or selection share one first cycle. `extra`
    adds what the caller knows changes it too (e.g. the labels' form)."""
    fields = {f.name for f in dataclasses.fields(self) if f.metadata.get('after_first')}
    return _digest({'fields': {k: v for k, v in self.defining_dict().items()
                               if k not in fields}, 'extra': list(extra)})

  def to_json(self) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _digest(blob: dict[str, Any]) -> str:
  return hashlib.sha256(json.dumps(blob, sort_keys=True, default=list).encode()).hexdigest()[:16]


_CHOICES = {
    'dropout_placement': ('stages', 'head', 'none'),
    'compute_dtype': ('float32', 'bfloat16'),
    'train_schedule': ('step', 'poly', 'constant'),
    'train_optimizer': ('sgd', 'adamw'),
    'al_unit': ('image', 'superpixel'),
    'train_length': ('images', 'cost'),
    'train_sampling': ('images', 'labeled_pixels'),
    'al_cost_rule': ('study', 'instances', 'clicks'),  # oracle.COST_RULES
    'al_rank': ('score', 'score_per_click'),
    'al_diversity': ('none', 'kcenter'),  # acquisition.DIVERSITY
    'al_annotator': ('simulated', 'human', 'label_studio'),  # annotators.PEOPLE: People
}


def validate(config: ExperimentConfig) -> None:
  """Checks ranges and combinations of the fields themselves, before any work.

  Checks that need other modules live beside them (the strategies and the
  pool size in `selection.check_config`); `experiment.validate` runs them all.

  Raises:
    UserError: naming the first problem found and its fix.
  """
  _check_counts(config)
  _check_training(config)
  _check_selection(config)


def _check_counts(config: ExperimentConfig) -> None:
  """Names that must be known, lists that must not be empty, counts in range."""
  for name, choices in _CHOICES.items():
    if getattr(config, name) not in choices:
      raise UserError(f'--{name}={getattr(config, name)} is not known',
                      f'choose one of {", ".join(choices)}')
  if not config.al_strategies:
    raise UserError('--al_strategies is empty', 'name at least one strategy')
  if not config.al_seeds:
    raise UserError('--al_seeds is empty', 'name at least one seed, e.g. --al_seeds=0')
  positive = ('train_batch_size', 'eval_batch_size', 'al_initial', 'al_cycles', 'mc_passes',
              'sp_segments', 'al_feature_dim', 'al_diversity_chunk')
  for name in positive:
    if getattr(config, name) < 1:
      raise UserError(f'--{name}={getattr(config, name)} must be at least 1',
                      f'set --{name} to a positive number')
  for name in ('train_epochs', 'train_min_steps', 'al_budget', 'al_budget_cost', 'al_label_cycles',
               'mc_chunk',
               'ckpt_every_epochs', 'lp_weight', 'lp_margin', 'lp_warmup_epochs',
               'lp_detach_epoch',
               'sp_workers', 'out_figures', 'al_per_image_cap'):
    if getattr(config, name) < 0:
      raise UserError(f'--{name}={getattr(config, name)} is negative', f'set --{name} >= 0')
  if config.train_epochs == 0 and config.train_min_steps == 0:
    raise UserError('--train_epochs and --train_min_steps are both 0, so nothing would train',
                    'set --train_epochs (e.g. 250) or --train_min_steps')


def _check_training(config: ExperimentConfig) -> None:
  """The network's and each cycle's training: rates, crops, early stopping."""
  if config.train_lr <= 0:
    raise UserError(f'--train_lr={config.train_lr} must be positive', 'set e.g. --train_lr=0.01')
  if config.width_multiplier <= 0:
    raise UserError(f'--width_multiplier={config.width_multiplier} must be positive',
                    'use e.g. 1.0 (full) or 0.25 (CPU)')
  if config.output_stride not in (8, 4, 2):  # drn.OUTPUT_STRIDES
    raise UserError(f'--output_stride={config.output_stride} is not supported',
                    'use 8 (the default), or 4 or 2 (for thin or small objects)')
  if not 0.0 <= config.dropout_rate < 1.0:
    raise UserError(f'--dropout_rate={config.dropout_rate} is outside [0, 1)',
                    'use e.g. --dropout_rate=0.5')
  if len(config.train_crop) != 2 or min(config.train_crop) < 8:
    raise UserError(f'--train_crop={",".join(map(str, config.train_crop))} is not a '
                    'height,width pair of at least 8 pixels', 'use e.g. --train_crop=128,256')
  if not 0 < config.train_scale_min <= config.train_scale_max:
    raise UserError('--train_scale_min must be positive and at most --train_scale_max',
                    'use e.g. 0.5 and 2.0')
  if not 0 <= config.stop_holdout < 1:
    raise UserError(f'--stop_holdout={config.stop_holdout} is outside [0, 1)',
                    'use 0 (off) or e.g. 0.1')
  if config.stop_patience < 1 or config.stop_every_steps < 1:
    raise UserError('--stop_patience and --stop_every_steps must be at least 1',
                    'use e.g. --stop_patience=5 --stop_every_steps=100')
  if not 0 <= config.stop_min_delta < 1:
    raise UserError(f'--stop_min_delta={config.stop_min_delta} is outside [0, 1)',
                    'use e.g. 0.01')
  if not 0 < config.warm_start_fraction <= 1:
    raise UserError(f'--warm_start_fraction={config.warm_start_fraction} is outside (0, 1]',
                    'use e.g. 0.3')


def _check_selection(config: ExperimentConfig) -> None:
  """The annotator's noise, candidates and the acquisition steps."""
  if not 0 <= config.noise_flip <= 1:
    raise UserError(f'--noise_flip={config.noise_flip} is outside [0, 1]', 'use e.g. 0.05')
  if config.noise_erode < 0:
    raise UserError(f'--noise_erode={config.noise_erode} is negative', 'use 0 (off) or e.g. 2')
  if config.al_candidate_factor < 0:
    raise UserError('--al_candidate_factor is negative', 'use 0 (whole pool) or e.g. 3')
  if config.sp_candidate_factor < 0:
    raise UserError('--sp_candidate_factor is negative', 'use 0 (whole pool) or e.g. 3')
  acquisition = config.al_class_balance or config.al_per_image_cap or config.al_diversity != 'none'
  if acquisition and config.al_unit != 'superpixel':
    raise UserError('--al_class_balance, --al_per_image_cap and --al_diversity rank superpixels, '
                    'not whole images', 'set --al_unit=superpixel or turn them off')
  if config.al_diversity != 'none':
    if config.al_diversity_factor < 1:
      raise UserError(f'--al_diversity_factor={config.al_diversity_factor} is below 1, so '
                      'there would be fewer candidates than picks', 'use e.g. 4')
    if config.al_budget < 1:
      raise UserError('--al_diversity picks --al_budget units a cycle but --al_budget is 0',
                      'set --al_budget (with --al_budget_cost: the units it is expected to buy)')
