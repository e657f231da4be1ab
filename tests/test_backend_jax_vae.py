"""Seed 002's VAE (section 8.1) on the JAX backend (backends/jax/vae.py: Flax nets, one optax Adam,
jitted steps) through the contract every backend passes, against the float64 oracle of
common/vae.py. Runs in the jax env; tests/conftest.py collects it only in envs that declare jax."""

from __future__ import annotations

from vae_contract import VAEContract


class TestJaxVAE(VAEContract):
    backend_name = "jax"
