"""Measurements of segal-jax beside reference algorithms and its PyTorch peer (DESIGN §5).

Not library code: nothing in `segal_jax` imports it, and it uses only
segal_jax's public API. `hot_paths.run(size)` measures the hot paths beside
reference algorithms, `torch_peer` and `side_by_side` beside the study's
PyTorch pipeline; `python -m launch.benchmark` prints and saves the report.
"""
