"""bf16 mixed precision around a backend's training step, where the framework has a path for it.

The protocol's dtypes are float32 and float64 (parity needs exact arithmetic); mixed
precision is a benchmark-only setting of fast mode. PyTorch's ``torch.autocast`` wraps
the unchanged training step: parameters, Adam state and the loss stay float32 while
convolutions run in bf16. The other backends build their step inside compiled functions
with no autocast hook (Keras mixed precision is a global policy set before the model is
built, JAX/Flax takes a module dtype, MXNet AMP rewrites the graph): none of that is in
their backends, so they have no bf16 path and their bf16 rows are skipped with that reason.
"""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

from .frameworks import is_gpu

MIXED_DTYPES = ("bf16-mixed",)


def mixed_precision(framework: str, device: str, dtype: str) -> tuple[Callable[[], ContextManager], str] | str:
    """(a context factory for the training step, a description), or the reason there is none."""
    if dtype not in MIXED_DTYPES:
        return contextlib.nullcontext, dtype
    if framework == "torch":
        import torch

        device_type = "cuda" if is_gpu(device) else "cpu"
        return (lambda: torch.autocast(device_type, dtype=torch.bfloat16),
                f"torch.autocast({device_type!r}, bfloat16): float32 params, Adam and loss; bf16 convs")
    return f"the {framework} backend has no bf16 mixed-precision path (only torch.autocast is wired)"
