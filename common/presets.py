"""The models the suite ships, each citing the seed document it reproduces.

Seeds live in ``../shared/seeds``: 001 is d2l 20.1 (Gaussian GAN), 000 the
PyTorch DCGAN tutorial, 003 DCGAN on (Fashion)MNIST, 004 MXNet's DCGAN.
"""

from __future__ import annotations

from typing import Callable

from .errors import SpecError
from .spec import (
    AdamSpec,
    BatchNorm,
    Conv2d,
    ConvTranspose2d,
    DataSpec,
    Dense,
    GANSpec,
    InitSpec,
    LeakyReLU,
    LossSpec,
    NetSpec,
    ReLU,
    Tanh,
    TrainSpec,
)


def gaussian() -> GANSpec:
    """d2l 20.1 (seed 001), PyTorch tab: the reference the other tabs are held to."""
    return GANSpec(
        name="gaussian",
        source="seed 001: Dive into Deep Learning 20.1, Generative Adversarial Networks (PyTorch tab)",
        generator=NetSpec((2,), (Dense(2, 2),)),
        discriminator=NetSpec((2,), (Dense(2, 5), Tanh(), Dense(5, 3), Tanh(), Dense(3, 1))),
        # nn.BCEWithLogitsLoss(reduction='sum'); loss_D = (real + fake) / 2.
        loss=LossSpec(reduction="sum", d_loss_scale=0.5),
        train=TrainSpec(
            batch_size=8,
            epochs=20,
            optim_G=AdamSpec(lr=0.005, beta1=0.9, beta2=0.999, eps=1e-8),
            optim_D=AdamSpec(lr=0.05, beta1=0.9, beta2=0.999, eps=1e-8),
        ),
        # d2l: `for w in net.parameters(): nn.init.normal_(w, 0, 0.02)` reaches biases too.
        init=InitSpec(weight_std=0.02, bias="normal"),
        data=DataSpec(kind="gaussian", n_examples=1000),
    )


def dcgan(nz: int = 100, ngf: int = 64, ndf: int = 64, nc: int = 3, *, name: str = "dcgan",
          source: str = "seed 000: PyTorch DCGAN tutorial (CelebA, 64x64)", epochs: int = 5,
          batch_size: int = 128, data: DataSpec | None = None) -> GANSpec:
    """The tutorial's 64x64 DCGAN (seed 000). BatchNorm: PyTorch defaults, eps 1e-5, momentum 0.1."""
    g = NetSpec(
        (nz, 1, 1),
        (
            ConvTranspose2d(nz, ngf * 8, 4, 1, 0), BatchNorm(ngf * 8), ReLU(),        # 4x4
            ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1), BatchNorm(ngf * 4), ReLU(),   # 8x8
            ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1), BatchNorm(ngf * 2), ReLU(),   # 16x16
            ConvTranspose2d(ngf * 2, ngf, 4, 2, 1), BatchNorm(ngf), ReLU(),           # 32x32
            ConvTranspose2d(ngf, nc, 4, 2, 1), Tanh(),                                # 64x64
        ),
    )
    d = NetSpec(
        (nc, 64, 64),
        (
            Conv2d(nc, ndf, 4, 2, 1), LeakyReLU(0.2),                                 # 32x32
            Conv2d(ndf, ndf * 2, 4, 2, 1), BatchNorm(ndf * 2), LeakyReLU(0.2),        # 16x16
            Conv2d(ndf * 2, ndf * 4, 4, 2, 1), BatchNorm(ndf * 4), LeakyReLU(0.2),    # 8x8
            Conv2d(ndf * 4, ndf * 8, 4, 2, 1), BatchNorm(ndf * 8), LeakyReLU(0.2),    # 4x4
            # The tutorial ends in nn.Sigmoid() + nn.BCELoss; the spec keeps the logit and
            # uses BCE-with-logits: equal unless |logit| > ~16, where BCELoss clamps log at -100.
            Conv2d(ndf * 8, 1, 4, 1, 0),                                              # 1x1 logit
        ),
    )
    return GANSpec(
        name=name,
        source=source,
        generator=g,
        discriminator=d,
        loss=LossSpec(reduction="mean", d_loss_scale=1.0),  # errD = errD_real + errD_fake
        train=TrainSpec(
            batch_size=batch_size,
            epochs=epochs,
            optim_G=AdamSpec(lr=2e-4, beta1=0.5, beta2=0.999, eps=1e-8),
            optim_D=AdamSpec(lr=2e-4, beta1=0.5, beta2=0.999, eps=1e-8),
        ),
        # weights_init: conv N(0, 0.02); BatchNorm gamma N(1, 0.02), beta 0. No conv biases.
        init=InitSpec(weight_std=0.02, bias="zero", bn_weight_mean=1.0, bn_weight_std=0.02),
        data=data or DataSpec(kind="shapes", n_examples=2048, image_size=64, channels=nc),
    )


def dcgan_mnist(ngf: int = 64, ndf: int = 64, name: str = "dcgan-mnist") -> GANSpec:
    """Seed 003: the same nets on 1-channel 28x28 images resized to 64x64, 10 epochs.

    Without ``--data`` it trains on grey procedural shapes (no download); give
    ``--data DIR`` holding MNIST/FashionMNIST IDX files to train on those.
    """
    return dcgan(ngf=ngf, ndf=ndf, nc=1, name=name, epochs=10,
                 source="seed 003: DCGAN on (Fashion)MNIST resized to 64x64",
                 data=DataSpec(kind="shapes", n_examples=2048, image_size=64, channels=1))


PRESETS: dict[str, Callable[[], GANSpec]] = {
    "gaussian": gaussian,
    "dcgan": dcgan,
    "dcgan-mnist": dcgan_mnist,
    # Same topology at 1/8 width for fast tests: every layer kind and shape rule
    # is exercised at a fraction of the cost.
    "dcgan-tiny": lambda: dcgan(nz=16, ngf=8, ndf=8, name="dcgan-tiny", batch_size=16,
                                source="seed 000 at ngf=ndf=8, nz=16 (test size)",
                                data=DataSpec(kind="shapes", n_examples=256, image_size=64, channels=3)),
    "dcgan-mnist-tiny": lambda: dcgan(nz=16, ngf=8, ndf=8, nc=1, name="dcgan-mnist-tiny", batch_size=16,
                                      source="seed 003 at ngf=ndf=8, nz=16 (test size)",
                                      data=DataSpec(kind="shapes", n_examples=256, image_size=64, channels=1)),
}


def preset(name: str) -> GANSpec:
    if name not in PRESETS:
        raise SpecError("model", f"unknown model {name!r}; allowed: {', '.join(PRESETS)}")
    return PRESETS[name]()
