"""pool: the labeled state, saved by position or by image name."""

import pytest

from segal_jax.state import pool as pool_lib


def test_a_pool_by_name_follows_its_images_to_new_positions():
  pool = pool_lib.PoolLabels(full=[2, 0], annotated={1: [7]}, chosen={1: [3, 4]}, paid={1: [7]})
  raw = pool.to_json(['b', 'd', 'f'])
  assert raw == {'by': 'name', 'full': ['b', 'f'], 'annotated': {'d': [7]},
                 'chosen': {'d': [3, 4]}, 'paid': {'d': [7]}}
  # Images added before, among and after the others; b removed.
  back = pool_lib.PoolLabels.from_json(raw, ['a', 'c', 'd', 'e', 'f', 'g'])
  assert back == pool_lib.PoolLabels(full=[4], annotated={2: [7]}, chosen={2: [3, 4]},
                                     paid={2: [7]})
  assert pool_lib.labeled_names(raw) == ['b', 'd', 'f']
  with pytest.raises(ValueError):
    pool_lib.PoolLabels.from_json(raw)


def test_a_pool_by_position_reads_as_before():
  raw = {'full': [3, 1], 'annotated': {'2': [5]}, 'chosen': {'2': [0]}}
  pool = pool_lib.PoolLabels.from_json(raw)
  assert pool == pool_lib.PoolLabels(full=[3, 1], annotated={2: [5]}, chosen={2: [0]})
  assert not pool_lib.by_name(raw) and pool.to_json()['full'] == [3, 1]
