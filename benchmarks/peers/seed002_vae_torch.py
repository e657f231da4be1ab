"""Seed 002 (a book chapter, PyTorch): its VAE (8.1), the class and the loop body as the chapter
writes them, driven from the suite's canonical start as a checked peer.

Kept from the seed: the ``VAE`` module (``fc1`` .. ``fc5``; ``encode``, ``reparameterize`` with
``eps = torch.randn_like(std)``, ``decode`` with ``F.sigmoid``, ``forward``), and the loop body
(:func:`seed_iteration`): ``x_reconst, mu, log_var = model(x)``,
``F.binary_cross_entropy(x_reconst, x, size_average=False)``, the KL line, ``loss = reconst_loss +
kl_div``, ``optimizer.zero_grad(); loss.backward(); optimizer.step()`` with
``torch.optim.Adam(model.parameters(), lr=learning_rate)``.

Replaced: PyTorch's default init by the canonical tensors (the preset draws them as PyTorch's
default), the MNIST DataLoader by the given batch (x already ``x.view(-1, image_size)``, in
[0, 1]), and ``torch.randn_like(std)`` by the given eps (:func:`given_eps`, which checks that the
seed asks for std's shape). Everything runs in the state's dtype, on the CPU unless the build
options ask for ``cuda`` (the seed's ``device``; the benchmark's GPU rows).

:class:`VaeSeedCode` is this code behind common/vae_backend.py's ``VAEProtocol``, so the
comparison runs it as it runs a backend (``seedtraj-002-vae-torch``), and tests hold it to the
oracle (tests/test_backend_torch_vae.py). :class:`Peer` is the same code as the benchmark's seed
loop (mode ``peer-seed002``): ``VaeSeedCode.train_step`` on the harness's pool of (x, eps).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from gansuite.common.params import AdamState, Params
from gansuite.common.protocol import BuildOptions
from gansuite.common.vae import SEED_002_NAMES, VAEStepOutput, VAESpec, check_vae_inputs, init_vae_params
from gansuite.common.vae_backend import VAEProtocol, check_latent

from ..frameworks import is_gpu
from ..workloads import make_vae_pool, spec_at_batch
from . import Peer as PeerBase
from . import restore_torch_defaults, torch_settings

PORT_DTYPES = {"float32": torch.float32, "float64": torch.float64}


# -- the seed's code (8.1.3, step 4), line for line ------------------------------------------


class VAE(nn.Module):
    def __init__(self, image_size=784, h_dim=400, z_dim=20):
        super(VAE, self).__init__()
        self.fc1 = nn.Linear(image_size, h_dim)
        self.fc2 = nn.Linear(h_dim, z_dim)
        self.fc3 = nn.Linear(h_dim, z_dim)
        self.fc4 = nn.Linear(z_dim, h_dim)
        self.fc5 = nn.Linear(h_dim, image_size)

    def encode(self, x):
        h = F.relu(self.fc1(x))
        return self.fc2(h), self.fc3(h)

    # 用mu,log_var生成一个潜在空间点z,mu,log_var为两个统计参数,我们假设
    # 这个假设分布能生成图像。
    def reparameterize(self, mu, log_var):
        std = torch.exp(log_var/2)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        h = F.relu(self.fc4(z))
        return F.sigmoid(self.fc5(h))

    def forward(self, x):
        mu, log_var = self.encode(x)
        z = self.reparameterize(mu, log_var)
        x_reconst = self.decode(z)
        return x_reconst, mu, log_var


def seed_iteration(model, optimizer, x):
    """The body of the seed's ``for i, (x, _) in enumerate(data_loader)`` (x already
    ``x.to(device).view(-1, image_size)``); the loss lines are 8.1.2's."""
    x_reconst, mu, log_var = model(x)
    with warnings.catch_warnings():  # size_average is deprecated (= reduction='sum'); kept as the seed
        warnings.simplefilter("ignore", UserWarning)
        reconst_loss = F.binary_cross_entropy(x_reconst, x, size_average=False)
    kl_div = - 0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp())
    loss = reconst_loss + kl_div
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return reconst_loss.item(), kl_div.item(), loss.item()


# -- the adapter -----------------------------------------------------------------------------


@contextlib.contextmanager
def given_eps(eps: torch.Tensor) -> Iterator[None]:
    """``torch.randn_like(std)`` returns ``eps`` (the suite's stream 9) for the duration."""
    original = torch.randn_like

    def randn_like(std, *args, **kwargs):
        if tuple(std.shape) != tuple(eps.shape) or std.dtype != eps.dtype:
            raise AssertionError(f"the seed asked for randn_like of {tuple(std.shape)} {std.dtype}, "
                                 f"the given eps is {tuple(eps.shape)} {eps.dtype}")
        return eps.clone()

    torch.randn_like = randn_like
    try:
        yield
    finally:
        torch.randn_like = original


@dataclass
class SeedVAEState:
    spec: VAESpec
    model: VAE
    optimizer: torch.optim.Adam
    dtype: torch.dtype
    device: torch.device = torch.device("cpu")


class VaeSeedCode(VAEProtocol):
    """The seed's VAE and loop behind the VAE protocol (canonical names: common/vae.SEED_002_NAMES)."""

    name = "seed 002 VAE (PyTorch)"

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__, "numpy": np.__version__}

    def build(self, spec: VAESpec, params: Params, opt: AdamState | None, options: BuildOptions) -> SeedVAEState:
        dtype = PORT_DTYPES[options.dtype]
        device = torch.device("cuda" if is_gpu(options.device) else "cpu")
        model = VAE(image_size=spec.features, h_dim=spec.hidden, z_dim=spec.latent).to(device, dtype)
        model.load_state_dict({SEED_002_NAMES[k]: torch.as_tensor(np.asarray(v), dtype=dtype)
                               for k, v in params.items()})
        optimizer = torch.optim.Adam(model.parameters(), lr=spec.train.optim.lr)
        if opt is not None and opt.step > 0:
            named = dict(model.named_parameters())
            for name, key in SEED_002_NAMES.items():
                optimizer.state[named[key]] = {
                    "step": torch.tensor(float(opt.step)),
                    "exp_avg": torch.as_tensor(opt.m[name], dtype=dtype, device=device).clone(),
                    "exp_avg_sq": torch.as_tensor(opt.v[name], dtype=dtype, device=device).clone()}
        return SeedVAEState(spec, model, optimizer, dtype, device)

    def _t(self, state: SeedVAEState, a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a), dtype=state.dtype, device=state.device)

    def forward(self, state: SeedVAEState, x: np.ndarray, eps: np.ndarray) -> dict[str, np.ndarray]:
        x, eps = check_vae_inputs(state.spec, x, eps)
        with torch.no_grad(), given_eps(self._t(state, eps)):
            outs = state.model(self._t(state, x))
        return {k: v.cpu().numpy().astype(np.float64) for k, v in zip(("x_reconst", "mu", "log_var"), outs)}

    def decode(self, state: SeedVAEState, z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return state.model.decode(self._t(state, check_latent(state.spec, z))).cpu().numpy().astype(np.float64)

    def train_step(self, state: SeedVAEState, x: np.ndarray, eps: np.ndarray, with_grads: bool = False) -> VAEStepOutput:
        x, eps = check_vae_inputs(state.spec, x, eps)
        with given_eps(self._t(state, eps)):
            losses = seed_iteration(state.model, state.optimizer, self._t(state, x))
        named = dict(state.model.named_parameters())
        grads = ({k: named[key].grad.cpu().numpy().copy() for k, key in SEED_002_NAMES.items()} if with_grads else None)
        return VAEStepOutput(*losses, grads=grads)

    def export_params(self, state: SeedVAEState) -> tuple[Params, AdamState]:
        named = dict(state.model.named_parameters())
        params = {k: named[key].detach().cpu().numpy().copy() for k, key in SEED_002_NAMES.items()}
        st = {k: state.optimizer.state.get(named[key], {}) for k, key in SEED_002_NAMES.items()}
        step = max((int(s["step"]) for s in st.values() if s), default=0)
        zeros = {k: np.zeros_like(v) for k, v in params.items()}
        return params, AdamState(step, {k: s["exp_avg"].cpu().numpy().copy() if s else zeros[k] for k, s in st.items()},
                                 {k: s["exp_avg_sq"].cpu().numpy().copy() if s else zeros[k] for k, s in st.items()})


# -- the benchmark's seed loop ----------------------------------------------------------------


class Peer(PeerBase):
    """Seed 002's VAE loop as a speed reference: :class:`VaeSeedCode` (the chapter's ``VAE`` and
    :func:`seed_iteration`, three ``.item()`` reads each) built from the canonical start in float32,
    stepped on the same pool of (x, eps) as the VAE's backend rows (common/vae.py ``vae_batch``).

    The seed iterates an MNIST ``DataLoader`` and draws ``torch.randn_like(std)``; ``VaeSeedCode``
    takes both as given (no loader of its own), so, unlike the GAN peers, this times no data
    loading and no noise draw: the eps comes from the pool through :func:`given_eps`, the x through
    the same host checks and copies as a backend's ``train_step``."""

    mode = "peer-seed002"
    framework = "torch"
    seed_document = "seed 002, 8.1: the VAE (fc1..fc5) and its loop body"
    includes = ("VaeSeedCode.train_step on the harness's pool (the seed's loop body: forward, BCE sum + KL, "
                "zero_grad, backward, Adam step, three .item() reads); no data loader, eps given")
    sampling_what = ("the seed's sampled grid: model.decode(torch.randn(batch_size, z_dim)) to the host, "
                     "under torch.no_grad()")

    def __init__(self, spec: VAESpec, batch_size: int, device: str, seed: int) -> None:
        restore_torch_defaults()  # a seed script runs in a fresh process
        torch.manual_seed(seed)
        self.spec = spec_at_batch(spec, batch_size)
        self.pool = make_vae_pool(self.spec, seed, "float32")
        self.code = VaeSeedCode()
        self.state = self.code.build(self.spec, init_vae_params(self.spec, seed, "float32"), None,
                                     BuildOptions(dtype="float32", device=device, mode="parity", seed=seed))
        self.batch_size, self.i = batch_size, 0

    def train(self, n: int) -> None:
        for _ in range(n):
            k = self.i % len(self.pool)
            self.code.train_step(self.state, self.pool.real[k], self.pool.z[k])
            self.i += 1

    def sample(self, n: int) -> None:
        model, z_dim = self.state.model, self.spec.latent
        for _ in range(n):
            with torch.no_grad():
                model.decode(torch.randn(self.batch_size, z_dim, device=self.state.device)).cpu()

    def sync(self) -> None:
        if self.state.device.type == "cuda":
            torch.cuda.synchronize(self.state.device)

    def versions(self) -> dict[str, str]:
        return self.code.versions()

    def settings(self) -> dict[str, Any]:
        return {"seed_document": self.seed_document, "device": str(self.state.device),
                "data": f"the harness's pool: {len(self.pool)} batches of (x, eps) from common/vae.py vae_batch",
                **torch_settings()}
