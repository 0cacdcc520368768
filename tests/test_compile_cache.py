"""JAX's persistent compilation cache for launch commands (--compile_cache)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_PROBE = """
import sys, jax, jax.numpy as jnp
from launch import _app
_app._use_compile_cache(sys.argv[1])
print(jax.config.jax_compilation_cache_dir or '')
f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())
f(jnp.ones((64, 64))).block_until_ready()
"""


def _probe(path):
  out = subprocess.run([sys.executable, '-c', _PROBE, path], cwd=ROOT, capture_output=True,
                       text=True, check=True)
  return out.stdout.strip()


def test_cache_directory_is_set_and_filled(tmp_path):
  cache = tmp_path / 'xla'
  assert _probe(str(cache)) == str(cache)
  # Every compiled program is kept, however quick its compilation.
  assert cache.is_dir() and any(cache.iterdir())
  assert _probe('') == ''


def _records(path):
  with open(path) as f:
    return [{k: v for k, v in json.loads(line).items() if 'seconds' not in k} for line in f]


@pytest.mark.slow
def test_a_rerun_from_the_cache_gives_the_same_records(tmp_path):
  cache = str(tmp_path / 'xla')
  for name in ('first', 'second'):
    subprocess.run([sys.executable, '-m', 'launch.run', '--flagfile=configs/synthetic/tiny.flags',
                    f'--workdir={tmp_path / name}', f'--compile_cache={cache}', '--noprogress'],
                   cwd=ROOT, check=True, capture_output=True)
  first, second = (_records(tmp_path / n / 'random' / 'seed_0' / 'metrics.jsonl')
                   for n in ('first', 'second'))
  assert first == second and len(first) > 1
