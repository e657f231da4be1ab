"""Layout rules shared by the backends: numpy only, written once.

The canonical layout is PyTorch's (common/params.py). Each ``backends/<fw>/layout.py``
keeps only the framework calls and uses these rules for the arithmetic:

=====================  ==============================  =====================================
canonical              channels-last frameworks        rule here
                       (Keras, Flax)
=====================  ==============================  =====================================
Dense (out, in)        kernel (in, out)                :func:`kernel_to_channels_last`
Conv2d OIHW            kernel HWIO                     the same permutation (2, 3, 1, 0)
ConvTranspose2d        kernel (kh, kw, out, in)        the same permutation; no flip: both
(in, out, kh, kw)                                      take it as the gradient of a conv
NCHW activations       NHWC                            :func:`nchw_to_nhwc`
latent (nz, 1, 1)      (1, 1, nz)                      :func:`channels_last_shape`
=====================  ==============================  =====================================

Padding rules: PyTorch's symmetric ``p`` against a framework that pads the stride-dilated
input of a transposed conv (:func:`conv_transpose_input_padding`, lax / Flax), or that only
knows 'same' / 'valid' (:func:`same_or_valid_conv`, :func:`same_or_valid_conv_transpose`,
Keras).
"""

from __future__ import annotations

import numpy as np

from .spec import Conv2d, ConvTranspose2d, Dense, GANSpec, Layer

# OIHW -> HWIO for Conv2d, and (in, out, kh, kw) -> (kh, kw, out, in) for ConvTranspose2d: the same
# permutation (the first two axes swap places and move last).
TO_HWIO = (2, 3, 1, 0)
FROM_HWIO = (3, 2, 0, 1)  # its inverse


def net_of(name: str) -> str:
    """``"D.3.weight"`` -> ``"D"``, the net a canonical tensor belongs to."""
    return name.split(".", 1)[0]


def layer_index(name: str) -> int:
    """``"D.3.weight"`` -> 3, the index of the tensor's layer in its net's spec."""
    return int(name.split(".")[1])


def layer_of(spec: GANSpec, name: str) -> Layer:
    """The spec layer that canonical tensor ``name`` belongs to."""
    net = spec.generator if net_of(name) == "G" else spec.discriminator
    return net.layers[layer_index(name)]


def kernel_to_channels_last(name: str, value: np.ndarray, layer: Layer) -> np.ndarray:
    """Canonical weight -> the channels-last frameworks' kernel (Dense transposed, convs HWIO)."""
    if name.endswith(".weight") and isinstance(layer, Dense):
        return value.T  # (out, in) -> (in, out)
    if name.endswith(".weight") and isinstance(layer, (Conv2d, ConvTranspose2d)):
        return value.transpose(TO_HWIO)
    return value  # biases and BatchNorm vectors


def kernel_from_channels_last(name: str, value: np.ndarray, layer: Layer) -> np.ndarray:
    """The inverse of :func:`kernel_to_channels_last` (a bit-exact round trip)."""
    if name.endswith(".weight") and isinstance(layer, Dense):
        return value.T
    if name.endswith(".weight") and isinstance(layer, (Conv2d, ConvTranspose2d)):
        return value.transpose(FROM_HWIO)
    return value


def conv_transpose_flipped(weight: np.ndarray) -> np.ndarray:
    """PyTorch's ``(in, out, kh, kw)`` transposed-conv weight as the ``(kh, kw, in, out)`` kernel
    of the equivalent forward conv over the dilated input: spatially flipped, channels kept. What a
    framework without a kernel-transpose switch (Flax's ``transpose_kernel=False``) expects."""
    return np.flip(weight, (2, 3)).transpose(2, 3, 0, 1)


def nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
    """A canonical batch (NCHW, or (N, F) unchanged) in channels-last order."""
    return x.transpose(0, 2, 3, 1) if x.ndim == 4 else x


def nhwc_to_nchw(x: np.ndarray) -> np.ndarray:
    return x.transpose(0, 3, 1, 2) if x.ndim == 4 else x


def channels_last_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A per-example canonical shape ``(C, H, W)`` -> ``(H, W, C)``; ``(F,)`` unchanged."""
    return (shape[1], shape[2], shape[0]) if len(shape) == 3 else tuple(shape)


def conv_transpose_input_padding(layer: ConvTranspose2d) -> int:
    """Pads per side of the stride-dilated input (``lax.conv_transpose``) equal to PyTorch's crop ``p``.

    PyTorch's ``p`` crops p pixels off each side of the full transposed conv; padding the dilated
    input by ``k - 1 - p`` per side gives the same output (k4 s2 p1 -> 2; k4 s1 p0 -> 3)."""
    return layer.kernel - 1 - layer.padding


def same_or_valid_conv(layer: Conv2d, size: int) -> tuple[str, int]:
    """PyTorch ``p`` -> ('same' | 'valid', explicit zero padding per side still needed).

    'same' pads ``max((ceil(n/s)-1)*s + k - n, 0)`` in total, the smaller half first; PyTorch
    pads ``p`` on both sides. The two agree when the first window starts at the same offset
    (``before == p``) and the output sizes agree (zeros beyond the input are zeros in both).
    'valid' is p = 0.
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


def same_or_valid_conv_transpose(layer: ConvTranspose2d) -> tuple[str, tuple[int, int]]:
    """PyTorch ``p`` -> ('same' | 'valid', explicit crop (before, after) still needed).

    PyTorch crops ``p`` from each side of the full transposed conv, length ``(n-1)*s + k``.
    'same' outputs ``n*s`` and crops ``max(k-s, 0)//2`` first (derived from the forward conv):
    equal to PyTorch iff ``k - s == 2p`` (k4 s2 p1). 'valid' outputs ``(n-1)*s + max(k, s)``,
    uncropped: equal iff ``p == 0`` and ``k >= s`` (k4 s1 p0). Otherwise 'valid' and crop
    explicitly. Neither depends on the input size ``n``.
    """
    k, s, p = layer.kernel, layer.stride, layer.padding
    if k - s == 2 * p:
        return "same", (0, 0)
    extra = max(k, s) - k  # rows 'valid' appends beyond the full conv when k < s
    if p == 0 and extra == 0:
        return "valid", (0, 0)
    return "valid", (p, p + extra)
