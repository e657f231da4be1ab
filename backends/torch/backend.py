"""PyTorch implementation of the backend protocol (common/protocol.py)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from gansuite.common.errors import GanSuiteError
from gansuite.common.params import AdamState, OptState, Params, param_shapes
from gansuite.common.protocol import Backend, BuildOptions, StepOutput
from gansuite.common.spec import GANSpec

from .layout import (TORCH_DTYPES, activations_from_framework, activations_to_framework, module_key,
                     param_from_framework, param_to_framework)
from .models import build_net
from .train import make_adam, train_iteration


@dataclass
class TorchState:
    spec: GANSpec
    options: BuildOptions
    dtype: torch.dtype
    device: torch.device
    G: nn.Module
    D: nn.Module
    opt_G: torch.optim.Adam
    opt_D: torch.optim.Adam
    G_run: Any  # the callable used for training (compiled in fast mode)
    D_run: Any
    rng: torch.Generator


def _configure_numerics(device: torch.device, mode: str) -> None:
    # CPU: oneDNN convolutions stay on (PyTorch's default) in both modes. They round differently
    # from the native kernels (forward ~1e-6 of scale, within tolerance), and on full-size DCGAN at
    # batch 8 that once moved one LeakyReLU input across 0 and a D gradient by 1.9e-2: a kink flip,
    # which the one-step check now recognises (common/kinks.py), not a oneDNN defect. Turning oneDNN
    # off made parity convolutions ~3x slower for nothing. Process-wide flag, recorded in settings().
    torch.backends.mkldnn.enabled = True
    if device.type == "cuda":
        # cuDNN convolutions default to TF32 on Ampere+ (matmul does not): parity needs true fp32.
        # Fast mode allows TF32 in both; the choice is recorded in settings().
        tf32 = mode == "fast"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = mode == "fast"
        torch.backends.cudnn.deterministic = mode == "parity"


@contextlib.contextmanager
def _frozen_running_stats(net: nn.Module) -> Iterator[None]:
    """A train-mode forward in PyTorch updates BN running stats even under no_grad: undo that."""
    saved = {k: v.clone() for k, v in net.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for k, v in net.named_buffers():
                v.copy_(saved[k])


class TorchBackend(Backend):
    name = "torch"

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__, "numpy": np.__version__}

    def build(self, spec: GANSpec, params: Params, opt_state: OptState | None, options: BuildOptions) -> TorchState:
        device = torch.device("cuda" if options.device in ("cuda", "gpu") else options.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise GanSuiteError("device: 'cuda' asked for but torch sees no CUDA device; allowed here: cpu")
        _configure_numerics(device, options.mode)
        dtype = TORCH_DTYPES[options.dtype]
        G, D = build_net(spec.generator).to(device, dtype), build_net(spec.discriminator).to(device, dtype)
        for net_name, net in (("G", G), ("D", D)):
            state = {module_key(k): param_to_framework(k, v, dtype, device)
                     for k, v in params.items() if k.startswith(net_name + ".")}
            # num_batches_tracked only matters for momentum=None (cumulative average), never used here.
            missing, unexpected = net.load_state_dict(state, strict=False)
            if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
                raise GanSuiteError(f"params: do not match the spec (missing {missing}, unexpected {unexpected})")
            net.train()  # BatchNorm in train mode throughout, as the tutorial (never .eval()).
        fast = options.mode == "fast"
        fused = fast and dtype == torch.float32
        opt_G, opt_D = make_adam(G, spec.train.optim_G, fused), make_adam(D, spec.train.optim_D, fused)
        if opt_state is not None:
            _load_adam(opt_G, G, "G", opt_state.G, dtype, device)
            _load_adam(opt_D, D, "D", opt_state.D, dtype, device)
        # dynamic=False: one graph per input shape. Inductor's automatic dynamic shapes (after a
        # recompile) failed here with "Cannot convert expression to float" (torch 2.13, CPU).
        G_run, D_run = (torch.compile(G, dynamic=False), torch.compile(D, dynamic=False)) if fast else (G, D)
        rng = torch.Generator(device=device)
        rng.manual_seed(options.seed)
        return TorchState(spec, options, dtype, device, G, D, opt_G, opt_D, G_run, D_run, rng)

    def generate(self, state: TorchState, z: np.ndarray, bn: str = "batch") -> np.ndarray:
        return self._forward(state, state.G, z, bn)

    def discriminate(self, state: TorchState, x: np.ndarray, bn: str = "batch") -> np.ndarray:
        out = self._forward(state, state.D, x, bn)
        return out.reshape(out.shape[0])

    def train_step(self, state: TorchState, real: np.ndarray, z: np.ndarray | None, with_grads: bool = False) -> StepOutput:
        scalars, grads = self._step(state, real, z, with_grads)
        out = StepOutput(**{k: float(v) for k, v in scalars.items()})
        if grads is not None:
            out.grads = {k: param_from_framework(k, v) for k, v in grads.items()}
        return out

    def export_params(self, state: TorchState) -> tuple[Params, OptState]:
        params: Params = {}
        for name in param_shapes(state.spec):
            net = state.G if name.startswith("G.") else state.D
            params[name] = param_from_framework(name, net.state_dict()[module_key(name)])
        return params, OptState(_export_adam(state.opt_G, state.G, "G"), _export_adam(state.opt_D, state.D, "D"))

    def settings(self, state: TorchState) -> dict[str, Any]:
        return {
            "mode": state.options.mode,
            "dtype": state.options.dtype,
            "device": str(state.device),
            "device_name": torch.cuda.get_device_name(state.device) if state.device.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(),
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "mkldnn": torch.backends.mkldnn.enabled,
            "compiled": state.options.mode == "fast",
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        }

    def sync(self, state: TorchState) -> None:
        if state.device.type == "cuda":
            torch.cuda.synchronize(state.device)

    # -- helpers (not part of the protocol) ------------------------------------

    def _step(self, state: TorchState, real: np.ndarray, z: np.ndarray | None, with_grads: bool):
        real_t = activations_to_framework(real, state.dtype, state.device)
        if z is None:  # fast mode: noise from the device RNG, no host round trip
            z_t = torch.randn((real_t.shape[0], *state.spec.latent_shape), generator=state.rng,
                              device=state.device, dtype=state.dtype)
        else:
            z_t = activations_to_framework(z, state.dtype, state.device)
        return train_iteration(state.G_run, state.D_run, state.opt_G, state.opt_D, real_t, z_t,
                               state.spec.loss, with_grads)

    def _forward(self, state: TorchState, net: nn.Module, x: np.ndarray, bn: str) -> np.ndarray:
        x_t = activations_to_framework(x, state.dtype, state.device)
        with torch.no_grad(), _frozen_running_stats(net):
            net.train(bn == "batch")
            try:
                y = net(x_t)
            finally:
                net.train()
        return activations_from_framework(y)


def _load_adam(opt: torch.optim.Adam, net: nn.Module, prefix: str, adam: AdamState,
               dtype: torch.dtype, device: torch.device) -> None:
    if adam.step == 0:
        return  # PyTorch initialises moments lazily at the first step: zeros, as the canonical state.
    for k, p in net.named_parameters():
        name = f"{prefix}.{k}"
        opt.state[p] = {
            # PyTorch keeps `step` per parameter (a float tensor); the canonical state has one per net.
            "step": torch.tensor(float(adam.step), dtype=torch.float32),
            "exp_avg": param_to_framework(name, adam.m[name], dtype, device),
            "exp_avg_sq": param_to_framework(name, adam.v[name], dtype, device),
        }


def _export_adam(opt: torch.optim.Adam, net: nn.Module, prefix: str) -> AdamState:
    adam = AdamState()
    for k, p in net.named_parameters():
        name, st = f"{prefix}.{k}", opt.state.get(p, {})
        if st:
            adam.step = int(st["step"].item())
            adam.m[name] = param_from_framework(name, st["exp_avg"])
            adam.v[name] = param_from_framework(name, st["exp_avg_sq"])
        else:
            adam.m[name] = np.zeros(tuple(p.shape), dtype=param_from_framework(name, p).dtype)
            adam.v[name] = np.zeros_like(adam.m[name])
    return adam
