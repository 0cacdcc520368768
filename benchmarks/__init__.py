"""Hot paths of segal_jax measured beside reference algorithms (DESIGN §5).

Not library code: nothing in `segal_jax` imports it, and it uses only
segal_jax's public API. `hot_paths.run(size)` measures; `python -m
launch.benchmark` prints and saves the report.
"""
