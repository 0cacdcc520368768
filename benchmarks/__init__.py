"""Measurements of segal-jax beside its peers (not library code)."""
