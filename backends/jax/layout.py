"""Canonical <-> JAX/Flax tensors: the one place where layouts are converted.

The canonical layout is PyTorch's; Flax differs in every weight and in the
activation layout, so unlike backends/torch/layout.py nothing here is the
identity. The arithmetic of each conversion is common/layout.py's (shared with
Keras, also channels-last); only the JAX calls are here. The functions and their
parameters are the same in every backend's ``layout.py``
(tests/test_backend_signatures.py), so the files can be read side by side.

=================  ========================  ===================================
canonical          Flax (linen)              conversion
=================  ========================  ===================================
Dense (out, in)    ``kernel`` (in, out)      ``W.T``
Conv2d OIHW        ``kernel`` HWIO           ``W.transpose(2, 3, 1, 0)``
ConvTranspose2d    ``kernel`` (kh, kw,       ``W.transpose(2, 3, 1, 0)`` with
(in, out, kh, kw)  out, in)                  ``transpose_kernel=True`` (models.py)
BN weight / bias   ``scale`` / ``bias``      identity
BN running stats   ``batch_stats`` mean/var  identity (var stays UNBIASED: models.py)
EmbedConcat        ``nn.Embed`` table        identity (both (num_classes, dim))
(classes, dim)     ``embedding``
NCHW activations   NHWC                      ``x.transpose(0, 2, 3, 1)``
labels int64       int32                     :func:`labels_to_framework`
=================  ========================  ===================================

Adam moments are elementwise, so they use the parameter conversion unchanged.

ConvTranspose2d: with transpose_kernel=True Flax flips the spatial axes and swaps the two channel
axes itself (jax.lax.conv_transpose), i.e. it expects a forward-conv kernel of the conv whose
gradient the transposed conv is -- exactly what PyTorch stores, so the Conv2d permutation fits it
too. The alternative (the default transpose_kernel=False) would need
``common.layout.conv_transpose_flipped`` here instead.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gansuite.common.layout import (kernel_from_channels_last, kernel_to_channels_last, layer_index, nchw_to_nhwc,
                                    nhwc_to_nchw)
from gansuite.common.spec import BatchNorm, EmbedConcat, Layer

DTYPES = {"float32": jnp.float32, "float64": jnp.float64}


def param_to_framework(name: str, value: np.ndarray, layer: Layer, dtype: Any, device: jax.Device) -> jax.Array:
    """Canonical tensor -> Flax array (transposed per the table above), on ``device``."""
    value = kernel_to_channels_last(name, np.asarray(value), layer)
    # np.array (a copy, C-contiguous) so no device buffer aliases the caller's numpy array.
    return jax.device_put(np.array(value, dtype=dtype), device)


def param_from_framework(name: str, value: jax.Array, layer: Layer) -> np.ndarray:
    """Flax array -> canonical numpy array (the inverse transpose; bit-exact round trip)."""
    out = kernel_from_channels_last(name, np.asarray(jax.device_get(value)), layer)
    return np.ascontiguousarray(out).copy()


def activations_to_framework(x: np.ndarray, dtype: Any, device: jax.Device) -> jax.Array:
    """Canonical NCHW (or (N, F)) batch -> NHWC (or (N, F)): Flax convolutions are channels-last."""
    return jax.device_put(np.ascontiguousarray(nchw_to_nhwc(np.asarray(x)), dtype=dtype), device)


def activations_from_framework(x: jax.Array) -> np.ndarray:
    """NHWC (or (N, F)) -> canonical NCHW (or (N, F)) float64."""
    return np.ascontiguousarray(nhwc_to_nchw(np.asarray(jax.device_get(x))), dtype=np.float64)


def labels_to_framework(labels: np.ndarray, device: jax.Device) -> jax.Array:
    """Class labels -> int32 array: nn.Embed's lookup (``jnp.take``) takes any integer dtype and
    refuses floats. int32 is JAX's own index dtype (the default without x64; with x64 on, which this
    backend needs, an untyped integer array would be int64), so it is set explicitly: one dtype, one
    compiled signature, whatever integer type the caller had. Class ids fit it."""
    return jax.device_put(np.ascontiguousarray(labels, dtype=np.int32), device)


def module_key(name: str, layer: Layer) -> tuple[str, str, str]:
    """``"G.3.weight"`` -> ``(collection, module, variable)`` in that net's Flax variables.

    Layer i of the spec is the submodule named ``str(i)`` (models.Net), as in torch's
    ``nn.Sequential``; Flax calls the weights ``kernel`` / ``scale`` (an embedding's table
    ``embedding``) and keeps BatchNorm's running statistics in the separate ``batch_stats`` collection.
    """
    index, tensor = str(layer_index(name)), name.rsplit(".", 1)[1]
    if isinstance(layer, EmbedConcat):
        return ("params", index, "embedding")  # nn.Embed's one variable (canonical "weight")
    if isinstance(layer, BatchNorm):
        return {
            "weight": ("params", index, "scale"),
            "bias": ("params", index, "bias"),
            "running_mean": ("batch_stats", index, "mean"),
            "running_var": ("batch_stats", index, "var"),
        }[tensor]
    return ("params", index, "kernel" if tensor == "weight" else "bias")
