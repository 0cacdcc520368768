"""segal-jax: active learning for semantic segmentation in functional JAX/Flax."""

__version__ = "0.1.0"
