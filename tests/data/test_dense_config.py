"""The `dense` configuration of synthetic_city: Cityscapes' instance density, bench's classes."""

import itertools

import numpy as np
import pytest

from segal_jax.data import _scenes
from segal_jax.data import labels
from segal_jax.data import synthetic_city
from segal_jax.reporting import geometry

KEPT = {'road', 'sidewalk', 'building', 'wall', 'fence', 'vegetation', 'terrain', 'sky',
        'person', 'car', 'truck', 'bus'}


def _render(k, knobs):
  with _scenes.knobs(**dict(knobs)):
    return _scenes.render_scene(synthetic_city.image_rng(0, 'train', k), 128, 256)


@pytest.fixture(scope='module')
def scenes():
  return [_render(k, synthetic_city.DENSE_KNOBS) for k in range(40)]


def test_dense_has_about_cityscapes_instance_density(scenes):
  counts = []
  for _, label, instance in scenes:
    ids = np.unique(np.where((instance > 0) & (label != labels.IGNORE), instance, 0))
    counts.append(int((ids > 0).sum()))
  # Cityscapes: 31.7 instances an image; bench (64x128): 13.
  assert 25 <= np.mean(counts) <= 36, np.mean(counts)
  bench = [_render(k, synthetic_city.BENCH_KNOBS) for k in range(40)]
  bench_things = np.mean([geometry.is_thing(geometry.instance_areas(i, l)[0]).sum()
                          for _, l, i in bench])
  dense_things = np.mean([geometry.is_thing(geometry.instance_areas(i, l)[0]).sum()
                          for _, l, i in scenes])
  assert dense_things > 2.5 * bench_things


def test_dense_keeps_the_bench_classes_with_smaller_objects(scenes):
  present = {labels.CLASS_NAMES[c] for _, label, _ in scenes for c in np.unique(label)
             if c != labels.IGNORE}
  assert present == KEPT
  shares = []
  for _, label, instance in scenes:
    ids, areas = geometry.instance_areas(instance, label)
    shares += (areas[geometry.is_thing(ids)] / (128 * 256)).tolist()
  assert np.median(shares) < 0.005  # bench's median thing covers 1.6% of its image


def test_builder_renders_the_dense_config(tmp_path):
  builder = synthetic_city.SyntheticCity(config='dense', data_dir=str(tmp_path))
  cfg = builder.builder_config
  assert (cfg.height, cfg.width, cfg.num_train, cfg.num_val) == (128, 256, 1000, 400)
  for key, example in itertools.islice(builder._generate_examples('train'), 2):
    image, label, instance = _render(int(key.rsplit('_', 1)[1]), cfg.knobs)
    np.testing.assert_array_equal(example['image'], image)
    np.testing.assert_array_equal(example['instance'], instance)
