"""Canonical <-> JAX/Flax tensors: the one place where layouts are converted.

The canonical layout is PyTorch's; Flax differs in every weight and in the
activation layout, so unlike backends/torch/layout.py nothing here is the
identity. The function names match the other backends' ``layout.py`` so the
files can be read side by side.

=================  ========================  ===================================
canonical          Flax (linen)              conversion
=================  ========================  ===================================
Dense (out, in)    ``kernel`` (in, out)      ``W.T``
Conv2d OIHW        ``kernel`` HWIO           ``W.transpose(2, 3, 1, 0)``
ConvTranspose2d    ``kernel`` (kh, kw,       ``W.transpose(2, 3, 1, 0)`` with
(in, out, kh, kw)  out, in)                  ``transpose_kernel=True`` (models.py)
BN weight / bias   ``scale`` / ``bias``      identity
BN running stats   ``batch_stats`` mean/var  identity (var stays UNBIASED: models.py)
NCHW activations   NHWC                      ``x.transpose(0, 2, 3, 1)``
=================  ========================  ===================================

Adam moments are elementwise, so they use the parameter conversion unchanged.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gansuite.common.spec import BatchNorm, Conv2d, ConvTranspose2d, Dense, Layer

JAX_DTYPES = {"float32": jnp.float32, "float64": jnp.float64}

# OIHW -> HWIO for Conv2d, and (in, out, kh, kw) -> (kh, kw, out, in) for ConvTranspose2d: the same
# permutation. With transpose_kernel=True Flax flips the spatial axes and swaps the two channel
# axes itself (jax.lax.conv_transpose), i.e. it expects a forward-conv kernel of the conv whose
# gradient the transposed conv is -- exactly what PyTorch stores. The alternative (the default
# transpose_kernel=False) needs flip(W, (2, 3)).transpose(2, 3, 0, 1) here instead.
_TO_HWIO = (2, 3, 1, 0)
_FROM_HWIO = (3, 2, 0, 1)  # the inverse permutation


def module_key(canonical_name: str, layer: Layer) -> tuple[str, str, str]:
    """``"G.3.weight"`` -> ``(collection, module, variable)`` in that net's Flax variables.

    Layer i of the spec is the submodule named ``str(i)`` (models.Net), as in torch's
    ``nn.Sequential``; Flax calls the weights ``kernel`` / ``scale`` and keeps BatchNorm's
    running statistics in the separate ``batch_stats`` collection.
    """
    _, index, tensor = canonical_name.split(".")
    if isinstance(layer, BatchNorm):
        return {
            "weight": ("params", index, "scale"),
            "bias": ("params", index, "bias"),
            "running_mean": ("batch_stats", index, "mean"),
            "running_var": ("batch_stats", index, "var"),
        }[tensor]
    return ("params", index, "kernel" if tensor == "weight" else "bias")


def param_to_framework(name: str, value: np.ndarray, layer: Layer, dtype: Any, device: jax.Device) -> jax.Array:
    """Canonical tensor -> Flax array (transposed per the table above), on ``device``."""
    value = np.asarray(value)
    if name.endswith(".weight") and isinstance(layer, Dense):
        value = value.T  # (out, in) -> (in, out)
    elif name.endswith(".weight") and isinstance(layer, (Conv2d, ConvTranspose2d)):
        value = value.transpose(_TO_HWIO)
    # np.array (a copy, C-contiguous) so no device buffer aliases the caller's numpy array.
    return jax.device_put(np.array(value, dtype=dtype), device)


def param_from_framework(name: str, value: jax.Array, layer: Layer) -> np.ndarray:
    """Flax array -> canonical numpy array (the inverse transpose; bit-exact round trip)."""
    out = np.asarray(jax.device_get(value))
    if name.endswith(".weight") and isinstance(layer, Dense):
        out = out.T
    elif name.endswith(".weight") and isinstance(layer, (Conv2d, ConvTranspose2d)):
        out = out.transpose(_FROM_HWIO)
    return np.ascontiguousarray(out).copy()


def activations_to_framework(x: np.ndarray, dtype: Any, device: jax.Device) -> jax.Array:
    """Canonical NCHW (or (N, F)) batch -> NHWC (or (N, F)): Flax convolutions are channels-last."""
    x = np.asarray(x)
    if x.ndim == 4:
        x = x.transpose(0, 2, 3, 1)
    return jax.device_put(np.ascontiguousarray(x, dtype=dtype), device)


def activations_from_framework(x: jax.Array) -> np.ndarray:
    """NHWC (or (N, F)) -> canonical NCHW (or (N, F)) float64."""
    out = np.asarray(jax.device_get(x))
    if out.ndim == 4:
        out = out.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(out, dtype=np.float64)


def latent_shape_to_framework(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Per-example canonical shape -> Flax's, e.g. (nz, 1, 1) -> (1, 1, nz), for device-side noise."""
    return (*shape[1:], shape[0]) if len(shape) == 3 else tuple(shape)
