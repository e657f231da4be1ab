"""PyTorch primitives of the backend template (common/protocol.py), in the template's order."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from gansuite.common.errors import GanSuiteError
from gansuite.common.layout import layer_of, net_of
from gansuite.common.protocol import Backend, BackendState, BuildOptions, device_unavailable, mixed_precision
from gansuite.common.registry import loaded_allocator
from gansuite.common.spec import GANSpec

from . import layout
from .models import build_net
from .train import _multi_step_refusal, _train_epoch, make_adam


def _compiles(options: BuildOptions, device: torch.device) -> bool:
    """torch.compile in fast mode on a GPU, or wherever ``extra={"compile": True}`` asks for it."""
    return options.mode == "fast" and bool(options.extra.get("compile", device.type == "cuda"))


@dataclass
class TorchState(BackendState):
    G: nn.Module
    D: nn.Module
    opt_G: torch.optim.Adam
    opt_D: torch.optim.Adam
    G_run: Any  # the callable used for training (compiled in fast mode)
    D_run: Any
    rng: torch.Generator  # device RNG for fast-mode noise
    epoch_fn: Any = None  # train_epoch's compiled scan, built at its first call
    flat: Any = None  # train_epoch's flat (params, exp_avg, exp_avg_sq) vectors, whose views the tensors are


class TorchBackend(Backend):
    name = "torch"
    packages = ("torch", "numpy")

    def framework_device(self, kind: str) -> torch.device:
        if kind == "cuda" and not torch.cuda.is_available():
            raise device_unavailable("torch", kind, ["cpu"])
        return torch.device(kind)

    def configure(self, device: torch.device, options: BuildOptions) -> None:
        # bf16 mixed precision is fast mode's, float32 only: one line for anything else. It is no
        # process-wide flag: models._autocast enters torch.autocast around each pass's forwards.
        mixed_precision(options)
        # CPU: oneDNN convolutions stay on (PyTorch's default) in both modes. They round differently
        # from the native kernels (forward ~1e-6 of scale, within tolerance), and on full-size DCGAN at
        # batch 8 that once moved one LeakyReLU input across 0 and a D gradient by 1.9e-2: a kink flip,
        # which the one-step check recognises (common/kinks.py), not a oneDNN defect. Turning oneDNN
        # off made parity convolutions ~3x slower for nothing. Process-wide flag, recorded in settings().
        torch.backends.mkldnn.enabled = True
        if device.type == "cuda":
            # cuDNN convolutions default to TF32 on Ampere+ (matmul does not): parity needs true fp32.
            # Fast mode allows TF32 in both; the choice is recorded in settings().
            fast = options.mode == "fast"
            torch.backends.cuda.matmul.allow_tf32 = fast
            torch.backends.cudnn.allow_tf32 = fast
            torch.backends.cudnn.benchmark = fast
            torch.backends.cudnn.deterministic = not fast

    def create_state(self, spec: GANSpec, options: BuildOptions, dtype: torch.dtype,
                     device: torch.device) -> TorchState:
        G = build_net(spec.generator, "G", dtype, options.mode).to(device)
        D = build_net(spec.discriminator, "D", dtype, options.mode).to(device)
        opt_G = make_adam(spec.train.optim_G, G.parameters(), options.mode)
        opt_D = make_adam(spec.train.optim_D, D.parameters(), options.mode)
        # Fast mode compiles on a GPU only: on a CPU nothing beat eager (measured: full-size DCGAN,
        # batch 64, float32, 2-core Zen 4, torch 2.13: eager 59.5 img/s, eager channels_last 53.9,
        # torch.compile 52.3, compile + channels_last 55.7; the 2026-11-23 sweep had compile at 0.72x
        # eager at batch 1 and 0.94x at 64). So fast mode on a CPU is eager with fused Adam and
        # device noise. dynamic=False: one graph per input shape. Inductor's automatic dynamic
        # shapes (after a recompile) failed here with "Cannot convert expression to float" (torch 2.13, CPU).
        compiled = _compiles(options, device)
        G_run, D_run = (torch.compile(G, dynamic=False), torch.compile(D, dynamic=False)) if compiled else (G, D)
        rng = torch.Generator(device=device)
        rng.manual_seed(options.seed)
        return TorchState(spec, options, dtype, device, G, D, opt_G, opt_D, G_run, D_run, rng)

    def write_tensor(self, state: TorchState, name: str, value: torch.Tensor) -> None:
        with torch.no_grad():
            self.read_tensor(state, name).copy_(value)

    def read_tensor(self, state: TorchState, name: str) -> torch.Tensor:
        net = state.G if net_of(name) == "G" else state.D
        return net.state_dict(keep_vars=True)[layout.module_key(name, layer_of(state.spec, name))]

    def write_adam(self, state: TorchState, net: str, step: int, m: dict[str, torch.Tensor],
                   v: dict[str, torch.Tensor]) -> None:
        opt, module = (state.opt_G, state.G) if net == "G" else (state.opt_D, state.D)
        for key, p in module.named_parameters():
            # PyTorch keeps `step` per parameter (a float tensor); the canonical state has one per net.
            opt.state[p] = {"step": torch.tensor(float(step), dtype=torch.float32),
                            "exp_avg": m[f"{net}.{key}"], "exp_avg_sq": v[f"{net}.{key}"]}

    def read_adam(self, state: TorchState, net: str) -> tuple[int, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        opt, module = (state.opt_G, state.G) if net == "G" else (state.opt_D, state.D)
        step, m, v = 0, {}, {}
        for key, p in module.named_parameters():
            st = opt.state.get(p, {})  # PyTorch creates the moments lazily, at the first step
            step = int(st["step"].item()) if st else 0
            m[f"{net}.{key}"] = st["exp_avg"] if st else torch.zeros_like(p)
            v[f"{net}.{key}"] = st["exp_avg_sq"] if st else torch.zeros_like(p)
        return step, m, v

    def device_noise(self, state: TorchState, batch_size: int) -> torch.Tensor:
        return torch.randn((batch_size, *state.spec.latent_shape), generator=state.rng, device=state.device,
                           dtype=state.dtype)

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
            "compiled": _compiles(state.options, state.device),
            "mixed_precision": state.options.extra.get("mixed_precision"),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "malloc": loaded_allocator(),  # TCMalloc in the benchmarks' fast processes, where installed
        }

    def sync(self, state: TorchState) -> None:
        if state.device.type == "cuda":
            torch.cuda.synchronize(state.device)

    def train_epoch(self, state: TorchState, reals: np.ndarray, zs: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """``len(reals)`` iterations as ONE call of a compiled scan (torch.compile over
        ``torch._higher_order_ops.scan``; JAX's is a ``lax.scan``), for nets of dense layers and
        activations in fast mode (:meth:`train_epoch_refusal`).

        ``reals``: ``(n, B, *example_shape)`` canonical. ``zs``: ``(n, B, *latent_shape)`` host
        noise, or None to draw it from the device RNG in one call (the same numbers as n
        consecutive ``device_noise`` calls when each holds a multiple of 16 values: torch's CPU
        normal kernel fills blocks of 16). Returns each scalar per iteration.
        """
        self.configure(state.device, state.options)
        refusal = _multi_step_refusal(state.spec, state.options)
        if refusal is not None:
            raise GanSuiteError(refusal)
        reals_t = _stack(state, reals)
        if zs is None:
            rows = state.spec.train.noise_rows(reals_t.shape[1])
            zs_t = torch.randn((reals_t.shape[0], rows, *state.spec.latent_shape), generator=state.rng,
                               device=state.device, dtype=state.dtype)
        else:
            zs_t = _stack(state, zs)
        return _train_epoch(state, reals_t, zs_t)

    def train_epoch_refusal(self, spec: GANSpec, options: BuildOptions) -> str | None:
        """Why :meth:`train_epoch` cannot run ``spec`` under ``options`` (one line), or None."""
        return _multi_step_refusal(spec, options)


def _stack(state: TorchState, stack: np.ndarray) -> torch.Tensor:
    """``(n, B, ...)`` canonical -> ``(n, B, ...)`` in this backend's layout (PyTorch's is the canonical one)."""
    stack = np.asarray(stack)
    flat = layout.activations_to_framework(stack.reshape(-1, *stack.shape[2:]), state.dtype, state.device)
    return flat.reshape(stack.shape[0], stack.shape[1], *flat.shape[1:])
