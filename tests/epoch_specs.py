"""Specs for the multi-step primitives' tests (``train_epoch`` of MXNet and PyTorch, which
differentiate dense nets layer by layer or lay their activations out in their own way)."""

from __future__ import annotations

import dataclasses

from gansuite.common.presets import preset
from gansuite.common.spec import Dense, Flatten, GANSpec, LeakyReLU, NetSpec, ReLU, Reshape, Sigmoid, Tanh


def every_layer_spec() -> GANSpec:
    """The Gaussian GAN with nets that use every layer a dense multi-step primitive takes: ReLU, a
    bias-free Dense, Reshape and Flatten (G), LeakyReLU and a Sigmoid inside D; the mean reduction
    with a D loss scale and PyTorch's Adam form."""
    base = preset("gaussian")
    return dataclasses.replace(
        base, name="gaussian-every-layer",
        generator=NetSpec((2,), (Dense(2, 6), ReLU(), Dense(6, 4, bias=False), Reshape((2, 2)), Flatten(),
                                 Tanh(), Dense(4, 2))),
        discriminator=NetSpec((2,), (Dense(2, 5), LeakyReLU(0.2), Dense(5, 3), Sigmoid(), Dense(3, 1))),
        loss=dataclasses.replace(base.loss, reduction="mean", d_loss_scale=0.5))
