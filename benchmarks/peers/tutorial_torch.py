"""The PyTorch DCGAN tutorial (seed 000): its Generator, Discriminator and training loop.

Kept from the seed: the ``Generator`` / ``Discriminator`` classes (``nn.Sequential`` with
in-place ReLU/LeakyReLU, ``Sigmoid`` + ``BCELoss``), ``weights_init``, Adam(lr 2e-4, betas
(0.5, 0.999)), the loop body line for line (:func:`training_iteration`: two ``backward`` calls
for D, ``.item()`` for D(x), D(G(z)) twice and both losses every iteration) and the device
selection.
Changed: random tensors in [-1, 1] in a ``TensorDataset`` replace CelebA's ImageFolder
(no download, no JPEG decoding), so the DataLoader runs with ``num_workers=0``: the
tutorial's 2 workers exist to decode images and would only add inter-process copies here.
Left out: printing every 50 iterations, the fixed-noise grids every 500 and the plots.

``SeedPort`` (common/verify.py) drives the same loop body from the suite's canonical start:
the tutorial's own nets (cast to float64 for dtype="float64", on the CPU), ``nn.BCELoss``, its
Adam settings, one :func:`training_iteration` per ``train_step``. Replaced: ``weights_init``
by the canonical tensors (the preset draws them as ``weights_init`` does), the DataLoader by
the given batch, ``torch.randn(b_size, nz, 1, 1)`` by the given noise, and the labels'
``dtype=torch.float`` by the nets' dtype (``nn.BCELoss`` refuses a float32 target for a
float64 input). Against the preset (BCE-with-logits on D's logit) the arithmetic differs only
in the Sigmoid + BCELoss route (the log of a probability; the gradient ``-(1-p)`` or ``p``
formed through ``p(1-p)``): ~1e-16 per operation in float64. Measured, float64, 3 iterations:
losses 1.5e-16..4.4e-16 apart from the torch backend's run of the preset (dcgan-tiny),
parameters 3.3e-14 (Adam's first step ``lr*g/(|g|+eps)`` amplifies gradient roundoff where
|g| ~ eps); vs the oracle 4.6e-13, as the backend itself (4.9e-13). Full size (``gansuite
verify --model dcgan``, batch 8): forward 9.1e-15, one iteration losses 1.7e-15 and parameters
1.43e-12 (the backend: 1.44e-12): one element of D.8.weight whose gradient is -2.7e-8, near
eps = 1e-8, where Adam's d(step)/dg = lr*eps/(|g|+eps)^2 = 1.4e3 turns a 1e-16 gradient
difference into 1.46e-13 of a tensor of scale 0.10. The same in every float64 implementation:
not the seed code.

``TorchPort`` is the glue the torch seed ports share (d2l_torch, seed003_torch): canonical
tensors into and out of the seed's own modules by an explicit name map, and pure forwards.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
import torch.utils.data

from gansuite.common.layout import layer_index
from gansuite.common.params import Params, param_shapes
from gansuite.common.spec import GANSpec

from ..frameworks import is_gpu
from . import Peer as BasePeer
from . import dataset_size, dcgan_sizes, restore_torch_defaults, torch_settings

real_label = 1.
fake_label = 0.
# Learning rate for optimizers
lr = 0.0002
# Beta1 hyperparam for Adam optimizers
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


def training_iteration(netD, netG, criterion, optimizerD, optimizerG, data, device,
                       noise_for: Callable[[int], torch.Tensor], label_dtype: torch.dtype = torch.float):
    """The tutorial's loop body, line for line. ``noise_for(b_size)`` is its
    ``torch.randn(b_size, nz, 1, 1, device=device)``, ``label_dtype`` its ``dtype=torch.float``.
    Returns errD, errG (tensors) and the three printed means D(x), D(G(z)) before and after."""
    ############################
    # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
    ###########################
    ## Train with all-real batch
    netD.zero_grad()
    real_cpu = data[0].to(device)
    b_size = real_cpu.size(0)
    label = torch.full((b_size,), real_label, dtype=label_dtype, device=device)
    output = netD(real_cpu).view(-1)
    errD_real = criterion(output, label)
    errD_real.backward()
    D_x = output.mean().item()
    ## Train with all-fake batch
    noise = noise_for(b_size)
    fake = netG(noise)
    label.fill_(fake_label)
    output = netD(fake.detach()).view(-1)
    errD_fake = criterion(output, label)
    errD_fake.backward()
    D_G_z1 = output.mean().item()
    errD = errD_real + errD_fake
    optimizerD.step()
    ############################
    # (2) Update G network: maximize log(D(G(z)))
    ###########################
    netG.zero_grad()
    label.fill_(real_label)  # fake labels are real for generator cost
    output = netD(fake).view(-1)
    errG = criterion(output, label)
    errG.backward()
    D_G_z2 = output.mean().item()
    optimizerG.step()
    return errD, errG, D_x, D_G_z1, D_G_z2


class TorchPeer(BasePeer):
    """What every PyTorch seed loop's benchmark peer shares: its device barrier and versions."""

    device: torch.device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__}


class Peer(TorchPeer):
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
        nz, device = self.nz, self.device
        for _ in range(n):
            data = self._next_batch()
            errD, errG, _, _, _ = training_iteration(  # D(x), D(G(z)): printed every 50 iterations
                self.netD, self.netG, self.criterion, self.optimizerD, self.optimizerG, data, device,
                lambda b_size: torch.randn(b_size, nz, 1, 1, device=device))
            self.G_losses.append(errG.item())
            self.D_losses.append(errD.item())

    def sample(self, n: int) -> None:
        for _ in range(n):  # the tutorial's progress grid: G(fixed_noise) to the host
            with torch.no_grad():
                self.netG(self.fixed_noise).detach().cpu()

    def settings(self) -> dict[str, Any]:
        return {"seed_document": self.seed_document, "device": str(self.device),
                "data": f"random images in a TensorDataset, {len(self.dataloader)} batches per epoch, "
                        "DataLoader(shuffle=True, num_workers=0)", **torch_settings()}


PORT_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class TorchPort:
    """What the torch seed ports share: the seed's nets (``self.nets``: "G"/"D" -> module) filled
    from the canonical tensors and read back through ``module_key(name)`` (the seed's state_dict
    key of a canonical tensor), and pure forwards. The canonical layout is PyTorch's: no transposes."""

    outputs = "logits"  # "probabilities" where D ends in nn.Sigmoid

    def __init__(self, spec: GANSpec, params: Params, dtype: str) -> None:
        restore_torch_defaults()  # a seed script runs in a fresh process
        self.spec, self.dtype = spec, PORT_DTYPES[dtype]
        self.nets: dict[str, nn.Module] = {}

    def module_key(self, name: str) -> str:
        raise NotImplementedError

    def _tensor(self, name: str) -> torch.Tensor:
        return self.nets[name.split(".", 1)[0]].state_dict(keep_vars=True)[self.module_key(name)]

    def load(self, params: Params) -> None:
        """Cast the seed's nets to the port's dtype, then every canonical tensor into them."""
        for net in self.nets.values():
            net.to(self.dtype)
        with torch.no_grad():
            for name in param_shapes(self.spec):
                self._tensor(name).copy_(torch.as_tensor(np.asarray(params[name]), dtype=self.dtype))

    def _pure(self, net: str, x: np.ndarray) -> np.ndarray:
        """A forward as the seed samples (train mode: BatchNorm on batch statistics), with the
        running statistics it advances put back, so that it changes no state."""
        module = self.nets[net]
        saved = {k: v.clone() for k, v in module.named_buffers()}
        with torch.no_grad():
            out = module(torch.as_tensor(np.asarray(x), dtype=self.dtype))
            for k, v in module.named_buffers():
                v.copy_(saved[k])
        return out.numpy().astype(np.float64)

    def generate(self, z: np.ndarray) -> np.ndarray:
        return self._pure("G", z)

    def discriminate(self, x: np.ndarray) -> np.ndarray:
        return self._pure("D", x).reshape(len(x))

    def export_params(self) -> Params:
        return {name: self._tensor(name).detach().numpy().astype(np.float64) for name in param_shapes(self.spec)}

    @staticmethod
    def versions() -> dict[str, str]:
        return {"torch": torch.__version__}


class SeedPort(TorchPort):
    """The tutorial's nets and loop body as a port of the ``dcgan`` preset (see the module docstring)."""

    outputs = "probabilities"  # netD ends in nn.Sigmoid()

    def __init__(self, spec: GANSpec, params: Params, dtype: str) -> None:
        super().__init__(spec, params, dtype)
        sizes = dcgan_sizes(spec)
        self.nz, self.device = sizes["nz"], torch.device("cpu")
        self.netG = Generator(0, sizes["nz"], sizes["ngf"], sizes["nc"]).to(self.device)
        self.netD = Discriminator(0, sizes["ndf"], sizes["nc"]).to(self.device)
        self.nets = {"G": self.netG, "D": self.netD}
        self.load(params)  # in place of netG.apply(weights_init), netD.apply(weights_init)
        self.criterion = nn.BCELoss()
        self.optimizerD = optim.Adam(self.netD.parameters(), lr=lr, betas=(beta1, 0.999))
        self.optimizerG = optim.Adam(self.netG.parameters(), lr=lr, betas=(beta1, 0.999))

    def module_key(self, name: str) -> str:
        # Spec layer i is the tutorial's ``main[i]`` in both nets (D's nn.Sigmoid is main[12], past
        # the spec's last layer): "G.3.weight" -> "main.3.weight".
        return f"main.{layer_index(name)}.{name.rsplit('.', 1)[1]}"

    def train_step(self, real: np.ndarray, z: np.ndarray) -> dict[str, float]:
        noise = torch.as_tensor(np.asarray(z), dtype=self.dtype)
        data = [torch.as_tensor(np.asarray(real), dtype=self.dtype)]  # a DataLoader batch is a list
        errD, errG, _, _, _ = training_iteration(self.netD, self.netG, self.criterion, self.optimizerD,
                                                 self.optimizerG, data, self.device, lambda b_size: noise,
                                                 label_dtype=self.dtype)
        return {"loss_D": errD.item(), "loss_G": errG.item()}
