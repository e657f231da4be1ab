"""Canonical <-> TensorFlow/Keras tensors: the one place where layouts are converted.

The canonical layout is PyTorch's; Keras differs in three ways, all handled here:

* Dense kernels are ``(in, out)``: the canonical ``(out, in)`` transposed.
* Conv2D kernels are HWIO and Conv2DTranspose kernels ``(kh, kw, out, in)``; the
  canonical Conv is OIHW and ConvTranspose ``(in, out, kh, kw)``. Both become
  Keras's layout with the SAME permutation ``transpose(2, 3, 1, 0)`` (the first
  two axes swap places and move last), so rank alone decides the conversion.
  No kernel flip: ``tf.nn.conv2d_transpose`` is the scatter definition the
  oracle uses (it is the gradient of conv2d), as PyTorch's is.
* Activations are channels_last (NHWC); TF's CPU Conv2D kernels are NHWC-only,
  so NCHW batches are transposed at the boundary, never inside a network.

PyTorch's symmetric conv padding ``p`` has no Keras argument (Keras takes only
'same' / 'valid'): ``conv_padding`` / ``conv_transpose_padding`` say when one of
the two strings is exactly ``p`` and otherwise ask for an explicit pad or crop.

The function names match the other backends' ``layout.py`` so the files can be
read side by side.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from gansuite.common.spec import BatchNorm, Conv2d, ConvTranspose2d

TF_DTYPES = {"float32": tf.float32, "float64": tf.float64}

# canonical tensor name -> Keras weight attribute. BatchNormalization calls its
# affine parameters gamma/beta and its buffers moving_mean/moving_variance.
_KERAS_ATTR = {"weight": "kernel", "bias": "bias"}
_KERAS_BN_ATTR = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
                  "running_var": "moving_variance"}


def _to_keras(value: np.ndarray) -> np.ndarray:
    if value.ndim == 2:  # Dense: (out, in) -> (in, out)
        return value.T
    if value.ndim == 4:  # Conv OIHW -> HWIO; ConvTranspose (in,out,kh,kw) -> (kh,kw,out,in)
        return value.transpose(2, 3, 1, 0)
    return value  # biases, BN vectors


def _from_keras(value: np.ndarray) -> np.ndarray:
    if value.ndim == 2:
        return value.T
    if value.ndim == 4:  # inverse of transpose(2, 3, 1, 0)
        return value.transpose(3, 2, 0, 1)
    return value


def param_to_framework(name: str, value: np.ndarray, dtype: tf.dtypes.DType) -> tf.Tensor:
    """Canonical tensor -> Keras layout, as a tensor of ``dtype`` (to ``assign`` to a variable)."""
    return tf.constant(np.ascontiguousarray(_to_keras(np.asarray(value))), dtype=dtype)


def param_from_framework(name: str, value: tf.Tensor | tf.Variable) -> np.ndarray:
    """Keras tensor/variable -> canonical numpy array (dtype kept)."""
    arr = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
    return np.ascontiguousarray(_from_keras(arr)).copy()


def activations_to_framework(x: np.ndarray, dtype: tf.dtypes.DType) -> tf.Tensor:
    """Canonical NCHW (or (N, F)) batch -> NHWC (or (N, F)) tensor."""
    x = np.asarray(x)
    if x.ndim == 4:
        x = x.transpose(0, 2, 3, 1)
    return tf.constant(np.ascontiguousarray(x), dtype=dtype)


def activations_from_framework(x: tf.Tensor) -> np.ndarray:
    """NHWC (or (N, F)) tensor -> canonical NCHW float64 array."""
    arr = np.asarray(x.numpy(), dtype=np.float64)
    if arr.ndim == 4:
        arr = arr.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(arr)


def keras_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A per-example canonical shape ``(C, H, W)`` -> Keras ``(H, W, C)``; ``(F,)`` unchanged."""
    return (shape[1], shape[2], shape[0]) if len(shape) == 3 else tuple(shape)


def keras_key(canonical_name: str, layer: object) -> tuple[str, str]:
    """``"G.3.weight"`` -> (Keras layer name ``"G.3"``, attribute ``"kernel"`` / ``"gamma"`` ...)."""
    net, index, tensor = canonical_name.split(".")
    attrs = _KERAS_BN_ATTR if isinstance(layer, BatchNorm) else _KERAS_ATTR
    return f"{net}.{index}", attrs[tensor]


def conv_padding(layer: Conv2d, size: int) -> tuple[str, int]:
    """PyTorch ``p`` -> (Keras padding, explicit zero padding per side still needed).

    TF 'same' pads ``max((ceil(n/s)-1)*s + k - n, 0)`` in total, the smaller half
    first; PyTorch pads ``p`` on both sides. Two paddings give identical results
    when the first window starts at the same offset (``before == p``) and the
    output sizes agree (zeros beyond the input are zeros in both). 'valid' is p=0.
    """
    k, s, p = layer.kernel, layer.stride, layer.padding
    out_torch = (size + 2 * p - k) // s + 1
    if p == 0:
        return "valid", 0
    out_same = -(-size // s)
    before_same = max((out_same - 1) * s + k - size, 0) // 2
    if out_same == out_torch and before_same == p:
        return "same", 0  # the DCGAN case: k4 s2 p1 on even sizes
    return "valid", p


def conv_transpose_padding(layer: ConvTranspose2d) -> tuple[str, tuple[int, int]]:
    """PyTorch ``p`` -> (Keras padding, explicit crop (before, after) still needed).

    PyTorch crops ``p`` from each side of the full transposed conv, length
    ``(n-1)*s + k``. Keras 'same' outputs ``n*s`` and crops ``max(k-s, 0)//2``
    first (TF derives it from the forward conv): equal to PyTorch iff ``k - s == 2p``
    (k4 s2 p1). Keras 'valid' outputs ``(n-1)*s + max(k, s)``, uncropped: equal iff
    ``p == 0`` and ``k >= s`` (k4 s1 p0). Otherwise 'valid' and crop explicitly.
    Neither depends on the input size ``n``.
    """
    k, s, p = layer.kernel, layer.stride, layer.padding
    if k - s == 2 * p:
        return "same", (0, 0)
    extra = max(k, s) - k  # rows Keras 'valid' appends beyond the full conv when k < s
    if p == 0 and extra == 0:
        return "valid", (0, 0)
    return "valid", (p, p + extra)
