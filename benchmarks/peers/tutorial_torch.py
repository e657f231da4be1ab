"""The PyTorch DCGAN tutorial (seed 000): its Generator, Discriminator and training loop.

Kept from the seed: the ``Generator`` / ``Discriminator`` classes (``nn.Sequential`` with
in-place ReLU/LeakyReLU, ``Sigmoid`` + ``BCELoss``), ``weights_init``, Adam(lr 2e-4, betas
(0.5, 0.999)), the loop body line for line (two ``backward`` calls for D, ``.item()`` for
D(x), D(G(z)) twice and both losses every iteration) and the device selection.
Changed: random tensors in [-1, 1] in a ``TensorDataset`` replace CelebA's ImageFolder
(no download, no JPEG decoding), so the DataLoader runs with ``num_workers=0``: the
tutorial's 2 workers exist to decode images and would only add inter-process copies here.
Left out: printing every 50 iterations, the fixed-noise grids every 500 and the plots.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.optim as optim
import torch.utils.data

from gansuite.common.spec import GANSpec

from ..frameworks import is_gpu
from . import Peer as BasePeer
from . import dataset_size, dcgan_sizes, restore_torch_defaults, torch_settings

real_label = 1.
fake_label = 0.
beta1 = 0.5


def weights_init(m):
    classname = m.__class__.__name__
    if classname.find('Conv') != -1:
        nn.init.normal_(m.weight.data, 0.0, 0.02)
    elif classname.find('BatchNorm') != -1:
        nn.init.normal_(m.weight.data, 1.0, 0.02)
        nn.init.constant_(m.bias.data, 0)


class Generator(nn.Module):
    def __init__(self, ngpu, nz, ngf, nc):  # the tutorial reads nz, ngf, nc as globals
        super(Generator, self).__init__()
        self.ngpu = ngpu
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            # state size. (ngf*8) x 4 x 4
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            # state size. (ngf*4) x 8 x 8
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            # state size. (ngf*2) x 16 x 16
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            # state size. (ngf) x 32 x 32
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh()
            # state size. (nc) x 64 x 64
        )

    def forward(self, input):
        return self.main(input)


class Discriminator(nn.Module):
    def __init__(self, ngpu, ndf, nc):
        super(Discriminator, self).__init__()
        self.ngpu = ngpu
        self.main = nn.Sequential(
            # input is (nc) x 64 x 64
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf) x 32 x 32
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf*2) x 16 x 16
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf*4) x 8 x 8
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf*8) x 4 x 4
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
            nn.Sigmoid()
        )

    def forward(self, input):
        return self.main(input)


class Peer(BasePeer):
    mode = "peer-tutorial"
    framework = "torch"
    seed_document = "seed 000: PyTorch DCGAN tutorial (CelebA 64x64)"
    g_forwards = 1
    BATCHES_PER_EPOCH = 8  # of random images; CelebA has 1583 at batch 128 (loader restarts are rarer)

    def __init__(self, spec: GANSpec, batch_size: int, device: str, seed: int) -> None:
        restore_torch_defaults()
        torch.manual_seed(seed)
        sizes = dcgan_sizes(spec)
        self.nz, self.batch_size = sizes["nz"], batch_size
        ngpu = 1 if is_gpu(device) else 0
        self.device = torch.device("cuda:0" if (torch.cuda.is_available() and ngpu > 0) else "cpu")
        n = dataset_size(batch_size, batch_size * self.BATCHES_PER_EPOCH)
        images = torch.rand(n, sizes["nc"], 64, 64) * 2 - 1  # in place of Normalize((0.5,)*3, (0.5,)*3) images
        self.dataloader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images), batch_size=batch_size,
                                                      shuffle=True, num_workers=0)
        self.netG = Generator(ngpu, sizes["nz"], sizes["ngf"], sizes["nc"]).to(self.device)
        self.netG.apply(weights_init)
        self.netD = Discriminator(ngpu, sizes["ndf"], sizes["nc"]).to(self.device)
        self.netD.apply(weights_init)
        self.criterion = nn.BCELoss()
        self.fixed_noise = torch.randn(batch_size, self.nz, 1, 1, device=self.device)
        lr = spec.train.optim_D.lr
        self.optimizerD = optim.Adam(self.netD.parameters(), lr=lr, betas=(beta1, 0.999))
        self.optimizerG = optim.Adam(self.netG.parameters(), lr=lr, betas=(beta1, 0.999))
        self.G_losses: list[float] = []
        self.D_losses: list[float] = []
        self._batches = iter(self.dataloader)

    def _next_batch(self):
        try:
            return next(self._batches)
        except StopIteration:  # the next epoch: a new pass over the shuffled loader
            self._batches = iter(self.dataloader)
            return next(self._batches)

    def train(self, n: int) -> None:
        netD, netG, criterion, device, nz = self.netD, self.netG, self.criterion, self.device, self.nz
        for _ in range(n):
            data = self._next_batch()
            ############################
            # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
            ###########################
            ## Train with all-real batch
            netD.zero_grad()
            real_cpu = data[0].to(device)
            b_size = real_cpu.size(0)
            label = torch.full((b_size,), real_label, dtype=torch.float, device=device)
            output = netD(real_cpu).view(-1)
            errD_real = criterion(output, label)
            errD_real.backward()
            D_x = output.mean().item()
            ## Train with all-fake batch
            noise = torch.randn(b_size, nz, 1, 1, device=device)
            fake = netG(noise)
            label.fill_(fake_label)
            output = netD(fake.detach()).view(-1)
            errD_fake = criterion(output, label)
            errD_fake.backward()
            D_G_z1 = output.mean().item()
            errD = errD_real + errD_fake
            self.optimizerD.step()
            ############################
            # (2) Update G network: maximize log(D(G(z)))
            ###########################
            netG.zero_grad()
            label.fill_(real_label)  # fake labels are real for generator cost
            output = netD(fake).view(-1)
            errG = criterion(output, label)
            errG.backward()
            D_G_z2 = output.mean().item()
            self.optimizerG.step()
            del D_x, D_G_z1, D_G_z2  # printed every 50 iterations in the tutorial
            self.G_losses.append(errG.item())
            self.D_losses.append(errD.item())

    def sample(self, n: int) -> None:
        for _ in range(n):  # the tutorial's progress grid: G(fixed_noise) to the host
            with torch.no_grad():
                self.netG(self.fixed_noise).detach().cpu()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__}

    def settings(self) -> dict[str, Any]:
        return {"seed_document": self.seed_document, "device": str(self.device),
                "data": f"random images in a TensorDataset, {len(self.dataloader)} batches per epoch, "
                        "DataLoader(shuffle=True, num_workers=0)", **torch_settings()}
