"""d2l 20.1 (seed 001), PyTorch tab: the Gaussian GAN's training loop as the book writes it.

Kept from the seed: ``load_array`` (a shuffled ``DataLoader`` over a ``TensorDataset``),
``nn.Sequential`` nets, ``nn.init.normal_(w, 0, 0.02)`` on every parameter,
``BCEWithLogitsLoss(reduction='sum')``, ``torch.optim.Adam`` with the book's learning
rates, ``update_D`` / ``update_G`` verbatim (``update_G`` recomputes ``net_G(Z)``) and the
``Accumulator`` that turns each loss into a Python float every iteration.
Left out: the Animator and the per-epoch scatter plot. Changed only on a GPU (the book runs
this chapter on the CPU): nets, batches and noise are placed on the device.

``SeedPort`` (common/verify.py) runs the book's ``update_D`` / ``update_G`` (verbatim, above) once
per ``train_step`` from the suite's canonical start, with the book's losses, Adam and learning
rates (``lr_D, lr_G = 0.05, 0.005``). Replaced: the ``nn.init.normal_`` loop by the canonical
tensors (the ``gaussian`` preset draws them the same way: every weight and bias N(0, 0.02)),
``load_array``'s batches by the given batch, ``torch.normal(0, 1, size=(batch_size,
latent_dim))`` by the given noise. For dtype="float64" the book's code runs under
``torch.set_default_dtype(torch.float64)``, which is how its ``torch.ones((batch_size,))`` labels
(no dtype given) become float64: a float32 target would make ``BCEWithLogitsLoss`` return a
float32 loss. The preset is the same arithmetic except that ``update_G`` recomputes
``net_G(Z)`` (identical numbers: the generator has no BatchNorm and has not changed). Measured,
float64: bit-identical to the torch backend's run of the preset; vs the oracle (``gansuite verify
--model gaussian``) one iteration 2.2e-16, the full 2500 iterations 3.9e-13 (parameters) and
3.3e-13 (losses).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils import data

from gansuite.common.spec import GANSpec

from ..frameworks import is_gpu
from . import gaussian_examples, restore_torch_defaults, torch_settings
from .tutorial_torch import TorchPeer, TorchPort


lr_D, lr_G = 0.05, 0.005  # the book: lr_D, lr_G, latent_dim, num_epochs = 0.05, 0.005, 2, 20


def load_array(data_arrays, batch_size, is_train=True):  # d2l.load_array (torch)
    dataset = data.TensorDataset(*data_arrays)
    return data.DataLoader(dataset, batch_size, shuffle=is_train)


def update_D(X, Z, net_D, net_G, loss, trainer_D):
    """Update discriminator."""
    batch_size = X.shape[0]
    ones = torch.ones((batch_size,), device=X.device)
    zeros = torch.zeros((batch_size,), device=X.device)
    trainer_D.zero_grad()
    real_Y = net_D(X)
    fake_X = net_G(Z)
    # Do not need to compute gradient for `net_G`, detach it from
    # computing gradients.
    fake_Y = net_D(fake_X.detach())
    loss_D = (loss(real_Y, ones.reshape(real_Y.shape)) +
              loss(fake_Y, zeros.reshape(fake_Y.shape))) / 2
    loss_D.backward()
    trainer_D.step()
    return loss_D


def update_G(Z, net_D, net_G, loss, trainer_G):
    """Update generator."""
    batch_size = Z.shape[0]
    ones = torch.ones((batch_size,), device=Z.device)
    trainer_G.zero_grad()
    # We could reuse `fake_X` from `update_D` to save computation
    fake_X = net_G(Z)
    # Recomputing `fake_Y` is needed since `net_D` is changed
    fake_Y = net_D(fake_X)
    loss_G = loss(fake_Y, ones.reshape(fake_Y.shape))
    loss_G.backward()
    trainer_G.step()
    return loss_G


class Peer(TorchPeer):
    mode = "peer-d2l"
    framework = "torch"
    seed_document = "seed 001: d2l 20.1 Generative Adversarial Networks, PyTorch tab"
    g_forwards = 2

    def __init__(self, spec: GANSpec, batch_size: int, device: str, seed: int) -> None:
        restore_torch_defaults()
        torch.manual_seed(seed)
        self.device = torch.device("cuda" if is_gpu(device) else "cpu")
        self.batch_size = batch_size
        self.latent_dim = spec.latent_dim
        self.data_iter = load_array((torch.from_numpy(gaussian_examples(spec, batch_size, seed)),), batch_size)
        self.net_G = nn.Sequential(nn.Linear(2, 2)).to(self.device)
        self.net_D = nn.Sequential(
            nn.Linear(2, 5), nn.Tanh(),
            nn.Linear(5, 3), nn.Tanh(),
            nn.Linear(3, 1)).to(self.device)
        # train(): loss, init, trainers
        self.loss = nn.BCEWithLogitsLoss(reduction='sum')
        for w in self.net_D.parameters():
            nn.init.normal_(w, 0, 0.02)
        for w in self.net_G.parameters():
            nn.init.normal_(w, 0, 0.02)
        self.trainer_D = torch.optim.Adam(self.net_D.parameters(), lr=spec.train.optim_D.lr)
        self.trainer_G = torch.optim.Adam(self.net_G.parameters(), lr=spec.train.optim_G.lr)
        self.metric = [0.0, 0.0, 0.0]  # d2l.Accumulator(3): loss_D, loss_G, num_examples
        self._batches = iter(self.data_iter)

    def _next_batch(self) -> torch.Tensor:
        try:
            (X,) = next(self._batches)
        except StopIteration:  # next epoch: `for (X,) in data_iter` reshuffles
            self._batches = iter(self.data_iter)
            (X,) = next(self._batches)
        return X.to(self.device)

    def train(self, n: int) -> None:
        with warnings.catch_warnings():
            # The book's Accumulator calls float() on a loss that requires grad; torch warns once.
            warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True")
            self._train(n)

    def _train(self, n: int) -> None:
        for _ in range(n):
            X = self._next_batch()
            batch_size = X.shape[0]
            Z = torch.normal(0, 1, size=(batch_size, self.latent_dim), device=self.device)
            args = (update_D(X, Z, self.net_D, self.net_G, self.loss, self.trainer_D),
                    update_G(Z, self.net_D, self.net_G, self.loss, self.trainer_G),
                    batch_size)
            self.metric = [a + float(b) for a, b in zip(self.metric, args)]  # Accumulator.add

    def sample(self, n: int) -> None:
        for _ in range(n):  # the per-epoch visualisation's forward, at the benchmark's batch size
            Z = torch.normal(0, 1, size=(self.batch_size, self.latent_dim), device=self.device)
            self.net_G(Z).detach().cpu().numpy()

    def settings(self) -> dict[str, Any]:
        return {"seed_document": self.seed_document, "device": str(self.device),
                "data": "d2l.load_array: DataLoader(TensorDataset, shuffle=True), float32 from numpy",
                "device_port": "nets, batches and noise moved to the GPU (the book runs on CPU)"
                if self.device.type == "cuda" else "as the book (CPU)",
                **torch_settings()}


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


class SeedPort(TorchPort):
    """The book's nets, loss, trainers and update functions as a port of the ``gaussian`` preset."""

    def __init__(self, spec: GANSpec, params: dict, dtype: str) -> None:
        super().__init__(spec, params, dtype)
        with _default_dtype(self.dtype):
            self.net_G = nn.Sequential(nn.Linear(2, 2))
            self.net_D = nn.Sequential(
                nn.Linear(2, 5), nn.Tanh(),
                nn.Linear(5, 3), nn.Tanh(),
                nn.Linear(3, 1))
        self.nets = {"G": self.net_G, "D": self.net_D}
        # train(): loss, init (here: the canonical tensors), trainers
        self.loss = nn.BCEWithLogitsLoss(reduction='sum')
        self.load(params)
        self.trainer_D = torch.optim.Adam(self.net_D.parameters(), lr=lr_D)
        self.trainer_G = torch.optim.Adam(self.net_G.parameters(), lr=lr_G)

    def module_key(self, name: str) -> str:
        # The book's nn.Sequential children are the spec's layers one for one: "D.2.bias" -> "2.bias".
        return name.split(".", 1)[1]

    def train_step(self, real: np.ndarray, z: np.ndarray) -> dict[str, float]:
        X, Z = torch.as_tensor(np.asarray(real), dtype=self.dtype), torch.as_tensor(np.asarray(z), dtype=self.dtype)
        with _default_dtype(self.dtype):
            loss_D = update_D(X, Z, self.net_D, self.net_G, self.loss, self.trainer_D)
            loss_G = update_G(Z, self.net_D, self.net_G, self.loss, self.trainer_G)
        return {"loss_D": loss_D.item(), "loss_G": loss_G.item()}
