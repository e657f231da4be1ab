"""bf16 mixed precision around a backend's training step, where the framework has a path for it.

The protocol's dtypes are float32 and float64 (parity needs exact arithmetic); mixed
precision is a benchmark-only setting of fast mode. PyTorch's ``torch.autocast`` wraps
the unchanged training step: parameters, Adam state and the loss stay float32 while
convolutions run in bf16. The other backends build their step inside compiled functions
with no autocast hook (Keras mixed precision is a global policy set before the model is
built, JAX/Flax takes a module dtype, MXNet AMP rewrites the graph): none of that is in
their backends, so they have no bf16 path and their bf16 rows are skipped with that reason.

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
    return f"the {framework} backend has no bf16 mixed-precision path (only torch.autocast is wired)"
