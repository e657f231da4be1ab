"""Seed 002's VAE (section 8.1) in the MXNet Gluon backend (backends/mxnet/vae.py) through the
contract every backend's VAE passes (tests/vae_contract.py): forward, losses, gradients and Adam
against the float64 oracle of common/vae.py, in parity and fast (hybridized) mode.

Runs in the mxnet env; tests/conftest.py collects it only in envs that declare mxnet."""

from __future__ import annotations

from vae_contract import VAEContract


class TestMxnetVAE(VAEContract):
    backend_name = "mxnet"
