"""The `bench` configuration of synthetic_city: scene knobs, classes and object sizes."""

import itertools

import numpy as np
import pytest

from segal_jax.data import _scenes
from segal_jax.data import labels
from segal_jax.data import synthetic_city

TRAIN = {name: i for i, name in enumerate(labels.CLASS_NAMES)}
REMOVED = ('pole', 'traffic light', 'traffic sign', 'rider', 'motorcycle', 'bicycle', 'train')
KEPT = ('road', 'sidewalk', 'building', 'wall', 'fence', 'vegetation', 'terrain', 'sky',
        'person', 'car', 'truck', 'bus')


def _render(k, bench):
  knobs = dict(synthetic_city.BENCH_KNOBS) if bench else {}
  with _scenes.knobs(**knobs):
    return _scenes.render_scene(synthetic_city.image_rng(0, 'train', k), 64, 128)


@pytest.fixture(scope='module')
def pair():
  """120 scenes from the same generators, with and without the bench knobs."""
  stack = lambda bench: tuple(np.stack(p) for p in zip(*(_render(k, bench) for k in range(120))))
  return stack(True), stack(False)


def test_knobs_apply_inside_the_block_only():
  before = _scenes.MEAN_POLES
  with _scenes.knobs(MEAN_POLES=0.0, P_BUS=1.0):
    assert (_scenes.MEAN_POLES, _scenes.P_BUS) == (0.0, 1.0)
  assert _scenes.MEAN_POLES == before and _scenes.P_BUS == 0.08
  with pytest.raises(KeyError, match='NOT_A_KNOB'):
    with _scenes.knobs(NOT_A_KNOB=1):
      pass


def test_bench_rendering_is_deterministic():
  for x, y in zip(_render(7, True), _render(7, True)):
    np.testing.assert_array_equal(x, y)


def test_builder_renders_with_the_bench_knobs(tmp_path):
  builder = synthetic_city.SyntheticCity(config='bench', data_dir=str(tmp_path))
  cfg = builder.builder_config
  assert (cfg.height, cfg.width, cfg.num_train, cfg.num_val) == (64, 128, 1000, 400)
  for key, example in itertools.islice(builder._generate_examples('validation'), 2):
    k = int(key.rsplit('_', 1)[1])
    with _scenes.knobs(**dict(cfg.knobs)):
      image, label, _ = _scenes.render_scene(synthetic_city.image_rng(0, 'validation', k), 64, 128)
    np.testing.assert_array_equal(example['image'], image)
    np.testing.assert_array_equal(example['label'], label)


def test_bench_has_twelve_classes_without_the_thin_ones(pair):
  (_, bench, _), _ = pair
  present = {labels.CLASS_NAMES[c] for c in np.unique(bench) if c != 255}
  assert present == set(KEPT)
  images_with = lambda name: (bench == TRAIN[name]).any(axis=(1, 2)).mean()
  assert min(images_with(n) for n in ('road', 'building', 'car')) > 0.95
  assert 0.15 < images_with('truck') < 0.5 and 0.08 < images_with('bus') < 0.4


def _instance_heights(instances, label_id):
  heights = []
  for inst in instances:
    for i in np.unique(inst[inst // 1000 == label_id]):
      ys = np.nonzero(inst == i)[0]
      heights.append(ys.max() - ys.min() + 1)
  return np.array(heights)


def test_bench_objects_are_larger(pair):
  (_, _, bench), (_, _, default) = pair
  for label_id, name in ((24, 'person'), (26, 'car')):
    b, d = _instance_heights(bench, label_id), _instance_heights(default, label_id)
    # Without far objects the median instance is taller than one output stride (8 px).
    assert np.median(b) >= 8 and np.median(b) > 1.5 * np.median(d), name
