"""bf16 mixed precision for a benchmark row: how each backend and model family gets it, in one record.

The protocol's dtypes are float32 and float64 (parity needs exact arithmetic); mixed precision is a
fast-mode setting. Every GAN backend takes it at build, as ``BuildOptions.extra={"mixed_precision":
MIXED_BF16}`` (common/protocol.py), each with its framework's own mechanism, the same split
(float32 variables, Adam, BatchNorm and loss; bf16 matmuls and convolutions):

* PyTorch: ``torch.autocast(device, bfloat16)`` entered by the backend around each pass's forwards,
  never across an optimiser step (backends/torch/models.py);
* TensorFlow: Keras's ``mixed_bfloat16`` dtype policy on Dense/Conv2D/Conv2DTranspose;
* JAX: Flax's module ``dtype=bfloat16``, ``param_dtype=float32`` on Dense/Conv/ConvTranspose;
* MXNet: AMP's graph pass (``amp.convert_symbol``, bfloat16) on each net's traced graph; oneDNN only
  (MXNet's native CPU kernels have no bf16), and its transposed convolutions stay float32 as on AMP's
  own list (oneDNN's bf16 Deconvolution crashes on a cast weight's gradient: backends/mxnet/models.py).

Seed 002's VAE has a path on PyTorch only, where the benchmark enters ``torch.autocast`` around each
step (the VAE's build takes no options): on a CPU its Linear layers run in bf16 (over its first 10
full-size iterations the total loss stayed within 1e-4, relative, of float32's: PyTorch 2.13); on
CUDA autocast refuses the seed's ``F.binary_cross_entropy`` on probabilities ("unsafe to autocast"),
so that row is skipped, not failed. The region is entered around each step
(benchmarks/workloads.py TrainSteps): autocast caches its bf16 copies of the weights until the
outermost region exits, so a region around a timed block of steps would run every step after the
first on stale weights (before this was found, the VAE's loss did not fall under one region
spanning 3 steps).
"""

from __future__ import annotations

import contextlib
import importlib.util
from dataclasses import dataclass, field
from typing import Callable, ContextManager

from gansuite.common.protocol import MIXED_BF16

from .frameworks import is_gpu

MIXED_DTYPES = ("bf16-mixed",)
#: Model families (benchmarks/families.py) whose training step torch.autocast refuses on CUDA: why.
CUDA_AUTOCAST_REFUSES = {
    "vae": "torch.autocast on CUDA refuses the VAE's loss (F.binary_cross_entropy on probabilities is "
           "'unsafe to autocast'), so the VAE has no bf16 path on a GPU",
}
#: How each framework's GAN backend computes bf16-mixed (what a row's settings record).
GAN_PATHS = {
    "torch": "torch.autocast(bfloat16) around each pass's forwards, entered by the backend (float32 params, "
             "Adam, BatchNorm buffers and loss; bf16 convs and matmuls)",
    "tensorflow": "Keras dtype policy 'mixed_bfloat16' on Dense/Conv2D/Conv2DTranspose (float32 variables, bf16 "
                  "compute), every other layer, the loss and Adam float32",
    "jax": "Flax dtype=bfloat16, param_dtype=float32 on Dense/Conv/ConvTranspose (each output cast to float32), "
           "every other layer, the loss and Adam float32",
    "mxnet": "MXNet AMP (amp.convert_symbol, bfloat16) on the traced graphs: Convolution/FullyConnected in bf16 "
             "(oneDNN), Deconvolution float32 as on AMP's list, everything else float32",
}


@dataclass(frozen=True)
class MixedPath:
    """How a row computes: a context around each training step, what the build takes, and in words."""

    context: Callable[[], ContextManager] = contextlib.nullcontext
    extra: dict[str, str] = field(default_factory=dict)
    description: str = ""
    #: How the row's sampling (``generate``) computes.
    sampling: str = ""


def mixed_precision(framework: str, device: str, dtype: str, family: str = "gan") -> MixedPath | str:
    """The row's path for ``dtype``, or the one-line reason there is none."""
    if dtype not in MIXED_DTYPES:
        return MixedPath(description=dtype)
    if family == "gan" and framework in GAN_PATHS:
        if framework == "mxnet" and not is_gpu(device) and (reason := _mxnet_cpu_bf16_reason()) is not None:
            return reason
        return MixedPath(extra={"mixed_precision": MIXED_BF16}, description=GAN_PATHS[framework],
                         sampling="; the nets' bf16 layers, set at build")
    if family == "vae" and framework == "torch":
        import torch

        device_type = "cuda" if is_gpu(device) else "cpu"
        if device_type == "cuda":
            return CUDA_AUTOCAST_REFUSES[family]
        return MixedPath(context=lambda: torch.autocast(device_type, dtype=torch.bfloat16),
                         description=f"torch.autocast({device_type!r}, bfloat16) around each step: float32 params, "
                                     "Adam and loss; bf16 matmuls",
                         sampling="; float32, outside autocast")
    return (f"the {framework} backend has no bf16 mixed-precision path for the {family} family "
            "(every GAN backend takes it at build; the VAE only under PyTorch's autocast)")


def _mxnet_cpu_bf16_reason() -> str | None:
    """Why this CPU cannot run MXNet's bf16 rows (oneDNN has no bf16 kernels without AVX-512: the
    backend's probe, backends/mxnet/__init__.onednn_bf16_error), or None. With oneDNN off the build
    refuses with its own line, so that case is left to it, as is an env without MXNet (no row runs)."""
    if importlib.util.find_spec("mxnet") is None:
        return None
    from gansuite.backends.mxnet import onednn_bf16_refusal, onednn_enabled

    return onednn_bf16_refusal() if onednn_enabled() else None
