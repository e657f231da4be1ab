"""bf16 mixed precision around a backend's training step, where the framework has a path for it.

The protocol's dtypes are float32 and float64 (parity needs exact arithmetic); mixed
precision is a benchmark-only setting of fast mode. PyTorch's ``torch.autocast`` wraps
the unchanged training step: parameters, Adam state and the loss stay float32 while
convolutions run in bf16. TensorFlow's GANs take Keras's ``mixed_bfloat16`` dtype policy on the
layers that multiply, and JAX's GANs Flax's module ``dtype=bfloat16`` with ``param_dtype=float32``
on the same layers, each set at build (:func:`build_extra`: ``BuildOptions.extra``, the one value
common/protocol.py's ``MIXED_BF16``): the same split (float32 variables, Adam and loss; bf16
matmuls and convolutions). MXNet's path (AMP on the traced graph, set the same way) is not passed
by this harness yet, so its bf16 rows are skipped with that reason, as are the VAE's outside PyTorch.

Seed 002's VAE runs under the same autocast on a CPU (its Linear layers in bf16; over its first 10
full-size iterations the total loss stayed within 1e-4, relative, of float32's: PyTorch 2.13, CPU).
On CUDA, autocast refuses the seed's loss outright: ``F.binary_cross_entropy`` on probabilities
raises in an autocast region ("unsafe to autocast"; PyTorch's op reference), so that row is
skipped, not failed.

The context is entered around each step (benchmarks/workloads.py TrainSteps): autocast caches
its bf16 copies of the weights until the outermost region exits, so a region around a timed
block of steps would run every step after the first on stale weights (before this was found,
the VAE's loss did not fall under one region spanning 3 steps).
"""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

from gansuite.common.protocol import MIXED_BF16

from .frameworks import is_gpu

MIXED_DTYPES = ("bf16-mixed",)
#: Model families (benchmarks/families.py) whose training step torch.autocast refuses on CUDA: why.
CUDA_AUTOCAST_REFUSES = {
    "vae": "torch.autocast on CUDA refuses the VAE's loss (F.binary_cross_entropy on probabilities is "
           "'unsafe to autocast'), so the VAE has no bf16 path on a GPU",
}


def mixed_precision(framework: str, device: str, dtype: str,
                    family: str = "gan") -> tuple[Callable[[], ContextManager], str] | str:
    """(a context factory for the training step, a description), or the reason there is none."""
    if dtype not in MIXED_DTYPES:
        return contextlib.nullcontext, dtype
    if framework == "torch":
        import torch

        device_type = "cuda" if is_gpu(device) else "cpu"
        if device_type == "cuda" and family in CUDA_AUTOCAST_REFUSES:
            return CUDA_AUTOCAST_REFUSES[family]
        return (lambda: torch.autocast(device_type, dtype=torch.bfloat16),
                f"torch.autocast({device_type!r}, bfloat16) around each step: float32 params, Adam and loss; "
                "bf16 convs and matmuls")
    if framework == "tensorflow" and family == "gan":
        return (contextlib.nullcontext,
                "Keras dtype policy 'mixed_bfloat16' on Dense/Conv2D/Conv2DTranspose (float32 variables, bf16 "
                "compute), every other layer, the loss and Adam float32 (backends/tensorflow/models.py)")
    if framework == "jax" and family == "gan":
        return (contextlib.nullcontext,
                "Flax dtype=bfloat16, param_dtype=float32 on Dense/Conv/ConvTranspose (float32 variables, bf16 "
                "compute, each output cast to float32), every other layer, the loss and Adam float32 "
                "(backends/jax/models.py)")
    return (f"the {framework} backend has no bf16 mixed-precision path for the {family} family "
            "(torch.autocast; TensorFlow's and JAX's GANs take it at build)")


#: Frameworks whose bf16 path is set on the layers at build (BuildOptions.extra), where
#: torch.autocast wraps the unchanged step.
BUILD_TIME_MIXED = ("tensorflow", "jax")


def build_extra(framework: str, dtype: str) -> dict[str, str]:
    """What the backend's build needs for ``dtype``: Keras's policy (TensorFlow) and Flax's module
    dtype (JAX) are set on the layers at build (BuildOptions.extra)."""
    if dtype in MIXED_DTYPES and framework in BUILD_TIME_MIXED:
        return {"mixed_precision": MIXED_BF16}
    return {}
