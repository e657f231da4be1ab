"""Canonical <-> PyTorch tensors: the one place where layouts are converted.

The canonical layout IS PyTorch's (Linear (out,in), Conv OIHW, ConvTranspose
(in,out,kh,kw), NCHW activations), so every conversion here is the identity
plus a dtype/device move. The functions and their parameters are the same in
every backend's ``layout.py`` (tests/test_backend_signatures.py), so the files
can be read side by side.
"""

from __future__ import annotations

import numpy as np
import torch

from gansuite.common.spec import Layer

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def param_to_framework(name: str, value: np.ndarray, layer: Layer, dtype: torch.dtype,
                       device: torch.device) -> torch.Tensor:
    """Canonical tensor -> PyTorch tensor (no transpose: same layout); a copy, never the caller's memory."""
    return torch.as_tensor(np.ascontiguousarray(value), dtype=dtype, device=device).clone()


def param_from_framework(name: str, value: torch.Tensor, layer: Layer) -> np.ndarray:
    """PyTorch tensor -> canonical numpy array (no transpose: same layout)."""
    return value.detach().cpu().numpy().copy()


def activations_to_framework(x: np.ndarray, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Canonical NCHW (or (N, F)) batch -> tensor. PyTorch is NCHW too."""
    return torch.as_tensor(np.ascontiguousarray(x), dtype=dtype, device=device)


def activations_from_framework(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy().astype(np.float64)


def labels_to_framework(labels: np.ndarray, device: torch.device) -> torch.Tensor:
    """Class labels -> int64 tensor: the index dtype ``nn.Embedding`` / ``F.embedding`` take."""
    return torch.as_tensor(np.ascontiguousarray(labels, dtype=np.int64), device=device)


def module_key(name: str, layer: Layer) -> str:
    """``"G.3.weight"`` -> the key in that net's ``nn.Sequential`` state_dict, ``"3.weight"``
    (PyTorch's BatchNorm names are the canonical ones: weight, bias, running_mean, running_var)."""
    return name.split(".", 1)[1]
