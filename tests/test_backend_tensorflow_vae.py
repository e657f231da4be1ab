"""Seed 002's VAE (section 8.1) in the TensorFlow / Keras backend (backends/tensorflow/vae.py),
through the contract every backend's VAE passes (tests/vae_contract.py), against the float64
oracle of common/vae.py.

Runs in the tensorflow env; tests/conftest.py collects it only in envs that declare tensorflow."""

from __future__ import annotations

from vae_contract import VAEContract


class TestTensorflowVAE(VAEContract):
    backend_name = "tensorflow"
