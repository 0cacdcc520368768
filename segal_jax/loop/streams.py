"""The streams of a run's key: each a fixed fold of the seed, so that a resumed
run draws what an uninterrupted one does."""

import jax

# fold_in(seed_key, stream) keeps them apart.
STREAMS = {name: i for i, name in enumerate(
    ('init', 'initial_set', 'train', 'candidates', 'score', 'select'))}


def stream_key(seed: int, name: str, cycle: int) -> jax.Array:
  """The key of stream `name` (`STREAMS`) at `cycle` in the run of `seed`."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), STREAMS[name]), cycle)
