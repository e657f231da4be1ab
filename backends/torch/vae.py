"""PyTorch primitives of the VAE template (common/vae_backend.py), in the template's order.

The seed's own framework: its ``VAE`` module and loop body (seed 002, 8.1.3) are written here with
the spec's nets (``models.build_net``: ``nn.Sequential`` of nn.Linear / ReLU / Sigmoid), the seed's
``F.binary_cross_entropy(..., size_average=False)`` as ``reduction="sum"`` (the same op; the
argument is deprecated) and its KL line verbatim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from gansuite.common.protocol import BuildOptions
from gansuite.common.vae import VAE_NETS, VAESpec
from gansuite.common.vae_backend import VAEBackendState

from .backend import _compiles
from .models import build_net
from .train import make_adam


@dataclass
class TorchVAEState(VAEBackendState):
    nets: dict[str, nn.Module]  # E, mu, logvar, Dec
    opt: torch.optim.Optimizer  # one Adam over all four nets: the seed's Adam(model.parameters())
    run: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # compiled in fast mode


def _vae_forward(nets: dict[str, nn.Module], x: torch.Tensor,
                 eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The seed's ``forward``: encode, ``reparameterize`` with the given eps, decode."""
    h = nets["E"](x)
    mu, log_var = nets["mu"](h), nets["logvar"](h)
    std = torch.exp(log_var / 2)
    z = mu + eps * std
    return nets["Dec"](z), mu, log_var


def create_state(spec: VAESpec, options: BuildOptions, dtype: torch.dtype, device: torch.device) -> TorchVAEState:
    nets = {net: build_net(spec.net(net), net, dtype, options.mode).to(device) for net in VAE_NETS}
    params = [p for net in VAE_NETS for p in nets[net].parameters()]  # fc1..fc5, the seed's order
    opt = make_adam(spec.train.optim, params, options.mode)
    # Compiled as the GAN nets are (backend._compiles: on a GPU, or when extra={"compile": True}
    # asks; on a CPU eager beat torch.compile for the DCGAN). dynamic=False: one graph per batch
    # shape (the last short batch compiles once more).
    run = torch.compile(_vae_forward, dynamic=False) if _compiles(options, device) else _vae_forward
    return TorchVAEState(spec, options, dtype, device, nets, opt, run)


def _tensor(state: TorchVAEState, name: str) -> torch.Tensor:
    net, key = name.split(".", 1)  # "E.0.weight" -> net E, its nn.Sequential key "0.weight"
    return state.nets[net].state_dict(keep_vars=True)[key]


def write_tensor(state: TorchVAEState, name: str, value: torch.Tensor) -> None:
    with torch.no_grad():
        _tensor(state, name).copy_(value)


def read_tensor(state: TorchVAEState, name: str) -> torch.Tensor:
    return _tensor(state, name)


def _named_parameters(state: TorchVAEState) -> list[tuple[str, nn.Parameter]]:
    return [(f"{net}.{key}", p) for net in VAE_NETS for key, p in state.nets[net].named_parameters()]


def write_adam(state: TorchVAEState, step: int, m: dict[str, torch.Tensor], v: dict[str, torch.Tensor]) -> None:
    for name, p in _named_parameters(state):
        # PyTorch keeps `step` per parameter (a float tensor); the canonical state has one.
        state.opt.state[p] = {"step": torch.tensor(float(step), dtype=torch.float32),
                              "exp_avg": m[name], "exp_avg_sq": v[name]}


def read_adam(state: TorchVAEState) -> tuple[int, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    step, m, v = 0, {}, {}
    for name, p in _named_parameters(state):
        st = state.opt.state.get(p, {})  # PyTorch creates the moments lazily, at the first step
        step = int(st["step"].item()) if st else 0
        m[name] = st["exp_avg"] if st else torch.zeros_like(p)
        v[name] = st["exp_avg_sq"] if st else torch.zeros_like(p)
    return step, m, v


def forward(state: TorchVAEState, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return state.run(state.nets, x, eps)


def decode(state: TorchVAEState, z: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return state.nets["Dec"](z)


def train_iteration(state: TorchVAEState, x: torch.Tensor, eps: torch.Tensor,
                    with_grads: bool) -> tuple[dict[str, float], dict[str, torch.Tensor] | None]:
    x_reconst, mu, log_var = state.run(state.nets, x, eps)
    # The seed's size_average=False is reduction="sum"; F.binary_cross_entropy clamps each log at
    # -100 (the spec's definition) and its backward is (p - x) / max(p (1 - p), 1e-12).
    reconst_loss = F.binary_cross_entropy(x_reconst, x, reduction="sum")
    kl_div = -0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp())
    loss = reconst_loss + kl_div
    state.opt.zero_grad(set_to_none=True)
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in _named_parameters(state)} if with_grads else None
    state.opt.step()
    return {"reconstruction": reconst_loss.item(), "kl": kl_div.item(), "total": loss.item()}, grads
