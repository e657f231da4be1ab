"""Seed 003 (DCGAN on FashionMNIST, PyTorch): its Generator, Discriminator, init and training loop.

Kept from the seed: the ``Generator`` / ``Discriminator`` classes with their ``_block`` helpers
(nested ``nn.Sequential``; G's last ``ConvTranspose2d`` and D's first and last ``Conv2d`` keep
PyTorch's default ``bias=True``; D's last conv has stride 2; ``nn.Sigmoid`` at D's end),
``initialize_weights`` (Conv, ConvTranspose AND BatchNorm weights ~ N(0, 0.02)), ``nn.BCELoss()``,
``opt_gen`` / ``opt_disc`` (Adam, lr 2e-4, betas (0.5, 0.999)), and the loop body line for line
(:func:`training_iteration`): ``fake = gen(noise)`` first, then ``disc(real)``,
``disc(fake.detach())``, ``loss_disc = (loss_disc_real + loss_disc_fake) / 2``,
``disc.zero_grad(); loss_disc.backward(); opt_disc.step()``, then ``disc(fake)`` for
``loss_gen``, ``gen.zero_grad(); loss_gen.backward(); opt_gen.step()``; the noise is
``torch.randn(BATCH_SIZE, ...)``: 128 rows even when the last real batch is shorter.
The seed's sizes (Z_DIM 100, features 64, 1 channel) come from the spec, so the test-size
preset ``dcgan-mnist-tiny`` builds the same classes narrower.

``SeedPort`` (common/verify.py) runs that loop body once per ``train_step`` from the suite's
canonical start: the seed's own nets (cast to float64 for dtype="float64", on the CPU), loss and
optimisers. Replaced: ``initialize_weights`` and PyTorch's default bias init by the canonical
tensors (the ``dcgan-mnist`` preset draws them the same way), the FashionMNIST ``DataLoader`` by
the given batch, ``torch.randn(BATCH_SIZE, Z_DIM, 1, 1)`` by the given noise (which the suite draws
with ``train.batch_size`` rows: ``noise_batch="batch_size"``). Against the preset the arithmetic
differs only in D's ``nn.Sigmoid`` + ``nn.BCELoss`` (the preset keeps the logit and uses
BCE-with-logits): ~1e-16 per operation in float64. Measured, float64, 3 iterations at test size
(dcgan-mnist-tiny): losses 1.6e-16 and parameters 1.9e-15 apart from the torch backend's run of
the preset; vs the oracle 7.3e-13, as the backend itself. Full size (``gansuite verify --model
dcgan-mnist``, batch 8): forward 3.8e-14, one iteration losses 2.8e-16, parameters 4.0e-12 (the
backend: 3.7e-12; 10 iterations 8.9e-12): G.12.weight element 63 has gradient 5.8e-9, below
Adam's eps = 1e-8, where d(step)/dg = lr*eps/(|g|+eps)^2 = 8.0e3 turns a 3.0e-17 gradient
difference into 2.4e-13 of a tensor of scale 0.065 -- Adam's first-step amplification in any
float64 implementation, not the seed code.

``Peer`` is the seed's loop as a speed reference, on random images in place of FashionMNIST
(no download): ``gansuite.benchmarks.peers.MODULES`` does not list it yet, so the benchmark
harness does not pick it (seed_of() knows the d2l and tutorial shapes only).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
from torch.utils.data import DataLoader, TensorDataset

from gansuite.common.layout import layer_index
from gansuite.common.params import Params
from gansuite.common.spec import GANSpec

from ..frameworks import is_gpu
from . import dataset_size, restore_torch_defaults, torch_settings
from .tutorial_torch import TorchPeer, TorchPort

# 超参数 (the seed's hyperparameters)
LEARNING_RATE = 2e-4
BATCH_SIZE = 128
IMAGE_SIZE = 64
CHANNELS_IMG = 1
Z_DIM = 100
NUM_EPOCHS = 10


class Generator(nn.Module):
    def __init__(self, z_dim, channels_img, features_g):
        super(Generator, self).__init__()
        # 输入: N x z_dim x 1 x 1
        self.net = nn.Sequential(
            # _block(in_channels, out_channels, kernel_size, stride, padding)
            self._block(z_dim, features_g * 16, 4, 1, 0),  # N x f_g*16 x 4 x 4
            self._block(features_g * 16, features_g * 8, 4, 2, 1),  # N x f_g*8 x 8 x 8
            self._block(features_g * 8, features_g * 4, 4, 2, 1),  # N x f_g*4 x 16 x 16
            self._block(features_g * 4, features_g * 2, 4, 2, 1),  # N x f_g*2 x 32 x 32
            nn.ConvTranspose2d(features_g * 2, channels_img, kernel_size=4, stride=2, padding=1),  # N x c_img x 64 x 64
            nn.Tanh()  # 将输出归一化到 [-1, 1]
        )

    def _block(self, in_channels, out_channels, kernel_size, stride, padding):
        return nn.Sequential(
            nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride, padding, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )

    def forward(self, x):
        return self.net(x)


class Discriminator(nn.Module):
    def __init__(self, channels_img, features_d):
        super(Discriminator, self).__init__()
        # 输入: N x channels_img x 64 x 64
        self.net = nn.Sequential(
            nn.Conv2d(channels_img, features_d, kernel_size=4, stride=2, padding=1),  # 32x32
            nn.LeakyReLU(0.2),
            # _block(in_channels, out_channels, kernel_size, stride, padding)
            self._block(features_d, features_d * 2, 4, 2, 1),  # 16x16
            self._block(features_d * 2, features_d * 4, 4, 2, 1),  # 8x8
            self._block(features_d * 4, features_d * 8, 4, 2, 1),  # 4x4
            nn.Conv2d(features_d * 8, 1, kernel_size=4, stride=2, padding=0),  # 1x1
            nn.Sigmoid(),  # 输出一个概率值
        )

    def _block(self, in_channels, out_channels, kernel_size, stride, padding):
        return nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(0.2),
        )

    def forward(self, x):
        return self.net(x)


def initialize_weights(model):
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight.data, 0.0, 0.02)


def training_iteration(gen, disc, criterion, opt_gen, opt_disc, real, noise):
    """The seed's loop body, line for line (``real = real.to(device)`` and the noise draw are the
    caller's). Returns loss_disc, loss_gen (tensors)."""
    fake = gen(noise)
    # 训练判别器: max log(D(x)) + log(1 - D(G(z)))
    # 1. 使用真实图片进行训练
    disc_real = disc(real).reshape(-1)
    loss_disc_real = criterion(disc_real, torch.ones_like(disc_real))  # 标签为1
    # 2. 使用伪造图片进行训练
    disc_fake = disc(fake.detach()).reshape(-1)  # detach()防止梯度传回生成器
    loss_disc_fake = criterion(disc_fake, torch.zeros_like(disc_fake))  # 标签为0
    # 3. 组合损失并更新
    loss_disc = (loss_disc_real + loss_disc_fake) / 2
    disc.zero_grad()
    loss_disc.backward()
    opt_disc.step()
    # 训练生成器: min log(1 - D(G(z))) <-> max log(D(G(z)))
    output = disc(fake).reshape(-1)
    loss_gen = criterion(output, torch.ones_like(output))  # 让生成器生成的图片标签为1
    gen.zero_grad()
    loss_gen.backward()
    opt_gen.step()
    return loss_disc, loss_gen


def seed_sizes(spec: GANSpec) -> dict[str, int]:
    """``Generator(Z_DIM, CHANNELS_IMG, features_g)``, ``Discriminator(CHANNELS_IMG, features_d)``
    arguments of a seed-003-shaped spec (64, 1, 64 and Z_DIM 100 for ``dcgan-mnist``)."""
    return {"z_dim": spec.generator.input_shape[0], "channels_img": spec.discriminator.input_shape[0],
            "features_g": spec.generator.layers[0].out_channels // 16,
            "features_d": spec.discriminator.layers[0].out_channels}


#: Spec layer index -> the seed's module path (``_block``s are nested nn.Sequential of
#: ConvTranspose/Conv, BatchNorm2d, ReLU/LeakyReLU). Only layers with tensors are listed.
G_MODULES = {
    0: "net.0.0", 1: "net.0.1",      # _block(z_dim, features_g * 16, 4, 1, 0): ConvTranspose2d, BatchNorm2d
    3: "net.1.0", 4: "net.1.1",      # _block(features_g * 16, features_g * 8, 4, 2, 1)
    6: "net.2.0", 7: "net.2.1",      # _block(features_g * 8, features_g * 4, 4, 2, 1)
    9: "net.3.0", 10: "net.3.1",     # _block(features_g * 4, features_g * 2, 4, 2, 1)
    12: "net.4",                     # nn.ConvTranspose2d(features_g * 2, channels_img, ...), bias=True
}
D_MODULES = {
    0: "net.0",                      # nn.Conv2d(channels_img, features_d, ...), bias=True
    2: "net.2.0", 3: "net.2.1",      # _block(features_d, features_d * 2, 4, 2, 1): Conv2d, BatchNorm2d
    5: "net.3.0", 6: "net.3.1",      # _block(features_d * 2, features_d * 4, 4, 2, 1)
    8: "net.4.0", 9: "net.4.1",      # _block(features_d * 4, features_d * 8, 4, 2, 1)
    11: "net.5",                     # nn.Conv2d(features_d * 8, 1, 4, 2, 0), bias=True; net.6 is nn.Sigmoid
}


class SeedPort(TorchPort):
    """Seed 003's nets, loss, optimisers and loop body as a port of ``dcgan-mnist`` (module docstring)."""

    outputs = "probabilities"  # disc ends in nn.Sigmoid()

    def __init__(self, spec: GANSpec, params: Params, dtype: str) -> None:
        super().__init__(spec, params, dtype)
        sizes = seed_sizes(spec)
        self.gen = Generator(sizes["z_dim"], sizes["channels_img"], sizes["features_g"])
        self.disc = Discriminator(sizes["channels_img"], sizes["features_d"])
        self.nets = {"G": self.gen, "D": self.disc}
        self.load(params)  # in place of initialize_weights(gen), initialize_weights(disc)
        self.opt_gen = optim.Adam(self.gen.parameters(), lr=LEARNING_RATE, betas=(0.5, 0.999))
        self.opt_disc = optim.Adam(self.disc.parameters(), lr=LEARNING_RATE, betas=(0.5, 0.999))
        self.criterion = nn.BCELoss()
        self.gen.train()
        self.disc.train()

    def module_key(self, name: str) -> str:
        modules = G_MODULES if name.startswith("G.") else D_MODULES
        return f"{modules[layer_index(name)]}.{name.rsplit('.', 1)[1]}"

    def train_step(self, real: np.ndarray, z: np.ndarray) -> dict[str, float]:
        noise = torch.as_tensor(np.asarray(z), dtype=self.dtype)
        real_t = torch.as_tensor(np.asarray(real), dtype=self.dtype)
        loss_disc, loss_gen = training_iteration(self.gen, self.disc, self.criterion, self.opt_gen, self.opt_disc,
                                                 real_t, noise)
        return {"loss_D": loss_disc.item(), "loss_G": loss_gen.item()}  # D_losses.append(loss_disc.item())


class Peer(TorchPeer):
    mode = "peer-seed003"
    framework = "torch"
    seed_document = "seed 003: DCGAN on FashionMNIST (PyTorch)"
    g_forwards = 1
    BATCHES_PER_EPOCH = 8  # of random images; FashionMNIST has 469 at batch 128

    def __init__(self, spec: GANSpec, batch_size: int, device: str, seed: int) -> None:
        restore_torch_defaults()
        torch.manual_seed(seed)
        self.device = torch.device("cuda" if is_gpu(device) and torch.cuda.is_available() else "cpu")
        sizes = seed_sizes(spec)
        self.z_dim, self.batch_size = sizes["z_dim"], batch_size
        n = dataset_size(batch_size, batch_size * self.BATCHES_PER_EPOCH)
        size = spec.discriminator.input_shape[1]
        images = torch.rand(n, sizes["channels_img"], size, size) * 2 - 1  # Normalize([0.5], [0.5]) range
        self.loader = DataLoader(TensorDataset(images, torch.zeros(n)), batch_size=batch_size, shuffle=True)
        self.gen = Generator(sizes["z_dim"], sizes["channels_img"], sizes["features_g"]).to(self.device)
        self.disc = Discriminator(sizes["channels_img"], sizes["features_d"]).to(self.device)
        initialize_weights(self.gen)
        initialize_weights(self.disc)
        self.opt_gen = optim.Adam(self.gen.parameters(), lr=LEARNING_RATE, betas=(0.5, 0.999))
        self.opt_disc = optim.Adam(self.disc.parameters(), lr=LEARNING_RATE, betas=(0.5, 0.999))
        self.criterion = nn.BCELoss()
        self.fixed_noise = torch.randn(64, self.z_dim, 1, 1).to(self.device)
        self.gen.train()
        self.disc.train()
        self.G_losses: list[float] = []
        self.D_losses: list[float] = []
        self._batches = iter(self.loader)

    def _next_batch(self) -> torch.Tensor:
        try:
            real, _ = next(self._batches)
        except StopIteration:  # the next epoch
            self._batches = iter(self.loader)
            real, _ = next(self._batches)
        return real

    def train(self, n: int) -> None:
        for _ in range(n):
            real = self._next_batch().to(self.device)
            noise = torch.randn(self.batch_size, self.z_dim, 1, 1).to(self.device)  # BATCH_SIZE rows
            loss_disc, loss_gen = training_iteration(self.gen, self.disc, self.criterion, self.opt_gen,
                                                     self.opt_disc, real, noise)
            self.D_losses.append(loss_disc.item())
            self.G_losses.append(loss_gen.item())

    def sample(self, n: int) -> None:
        for _ in range(n):  # the per-epoch grid: gen(fixed_noise) to the host
            with torch.no_grad():
                self.gen(self.fixed_noise).detach().cpu()

    def settings(self) -> dict[str, Any]:
        return {"seed_document": self.seed_document, "device": str(self.device),
                "data": f"random images in a TensorDataset, {len(self.loader)} batches per epoch, "
                        "DataLoader(shuffle=True)", **torch_settings()}
