"""Float64 NumPy layers with hand-written backward passes: the oracle's arithmetic.

Written from the definitions, not from any framework:

* conv2d:  ``y[n,o,i,j] = sum_{c,a,b} x_pad[n,c,i*s+a,j*s+b] w[o,c,a,b] + bias[o]``
* conv_transpose2d (scatter definition, weight ``(in, out, k, k)``):
  ``full[n,o,i*s+a,j*s+b] += x[n,c,i,j] w[c,o,a,b]``, then crop ``p`` per side
* batch norm (train): normalise with the biased batch variance; the running
  variance is updated with the unbiased one (PyTorch semantics).

Every backward is checked against central finite differences in the tests.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .spec import BatchNorm, Conv2d, ConvTranspose2d, Dense, EmbedConcat, LeakyReLU, ReLU, Sigmoid, Tanh

Cache = dict[str, Any]


def _windows(x: np.ndarray, k: int, s: int) -> np.ndarray:
    """``(N, C, H, W)`` -> ``(N, C, Ho, Wo, k, k)`` strided view (no copy)."""
    return sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s]


# -- dense -------------------------------------------------------------------


def dense_forward(layer: Dense, p: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, Cache]:
    y = x @ p["weight"].T
    if layer.bias:
        y = y + p["bias"]
    return y, {"x": x}


def dense_backward(layer: Dense, p, cache: Cache, dy: np.ndarray):
    grads = {"weight": dy.T @ cache["x"]}
    if layer.bias:
        grads["bias"] = dy.sum(axis=0)
    return dy @ p["weight"], grads


# -- conv2d ------------------------------------------------------------------


def conv2d_forward(layer: Conv2d, p, x: np.ndarray):
    k, s, pad = layer.kernel, layer.stride, layer.padding
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = _windows(xp, k, s)
    y = np.tensordot(win, p["weight"], axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2)
    if layer.bias:
        y = y + p["bias"][None, :, None, None]
    return np.ascontiguousarray(y), {"xp_shape": xp.shape, "win": win}


def conv2d_backward(layer: Conv2d, p, cache: Cache, dy: np.ndarray):
    k, s, pad = layer.kernel, layer.stride, layer.padding
    w = p["weight"]
    grads = {"weight": np.tensordot(dy, cache["win"], axes=([0, 2, 3], [0, 2, 3]))}
    if layer.bias:
        grads["bias"] = dy.sum(axis=(0, 2, 3))
    n, _, ho, wo = dy.shape
    dxp = np.zeros(cache["xp_shape"])
    for a in range(k):
        for b in range(k):
            # contribution of kernel tap (a, b): dy[n,o,i,j] * w[o,c,a,b] -> x_pad[n,c,i*s+a,j*s+b]
            # (tensordot runs on BLAS; the equivalent np.einsum loops in C and was 100x slower)
            dxp[:, :, a : a + s * ho : s, b : b + s * wo : s] += np.tensordot(dy, w[:, :, a, b], axes=([1], [0])).transpose(0, 3, 1, 2)
    h, wd = dxp.shape[2] - 2 * pad, dxp.shape[3] - 2 * pad
    return dxp[:, :, pad : pad + h, pad : pad + wd], grads


# -- conv transpose 2d ---------------------------------------------------------


def conv_transpose2d_forward(layer: ConvTranspose2d, p, x: np.ndarray):
    k, s, pad = layer.kernel, layer.stride, layer.padding
    w = p["weight"]  # (in, out, k, k)
    n, _, h, wd = x.shape
    hf, wf = (h - 1) * s + k, (wd - 1) * s + k
    full = np.zeros((n, layer.out_channels, hf, wf))
    for a in range(k):
        for b in range(k):
            full[:, :, a : a + s * h : s, b : b + s * wd : s] += np.tensordot(x, w[:, :, a, b], axes=([1], [0])).transpose(0, 3, 1, 2)
    y = full[:, :, pad : hf - pad, pad : wf - pad]
    if layer.bias:
        y = y + p["bias"][None, :, None, None]
    return np.ascontiguousarray(y), {"x": x, "full_shape": full.shape}


def conv_transpose2d_backward(layer: ConvTranspose2d, p, cache: Cache, dy: np.ndarray):
    k, s, pad = layer.kernel, layer.stride, layer.padding
    x = cache["x"]
    dfull = np.pad(dy, ((0, 0), (0, 0), (pad, pad), (pad, pad)))  # the cropped border had zero gradient
    win = _windows(dfull, k, s)  # (N, out, H, W, k, k): the taps each input pixel scattered to
    dx = np.tensordot(win, p["weight"], axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2)
    grads = {"weight": np.tensordot(x, win, axes=([0, 2, 3], [0, 2, 3]))}
    if layer.bias:
        grads["bias"] = dy.sum(axis=(0, 2, 3))
    return np.ascontiguousarray(dx), grads


# -- batch norm --------------------------------------------------------------


def _bn_axes(x: np.ndarray) -> tuple[int, ...]:
    return (0,) if x.ndim == 2 else (0, 2, 3)


def _bshape(x: np.ndarray) -> tuple[int, ...]:
    return (1, -1) if x.ndim == 2 else (1, -1, 1, 1)


def batch_norm_forward(layer: BatchNorm, p, x: np.ndarray, *, use_batch_stats: bool = True):
    axes, bs = _bn_axes(x), _bshape(x)
    if use_batch_stats:
        mean = x.mean(axis=axes)
        var = ((x - mean.reshape(bs)) ** 2).mean(axis=axes)  # biased: used to normalise
    else:
        mean, var = p["running_mean"], p["running_var"]
    inv_std = 1.0 / np.sqrt(var + layer.eps)
    xhat = (x - mean.reshape(bs)) * inv_std.reshape(bs)
    y = xhat * _gamma(layer, p).reshape(bs) + p["bias"].reshape(bs)
    count = x.size // x.shape[1]
    return y, {"xhat": xhat, "inv_std": inv_std, "mean": mean, "var": var, "count": count}


def _gamma(layer: BatchNorm, p) -> np.ndarray:
    """The scale: the ``weight`` tensor, or the constant 1 with ``fix_gamma`` (MXNet)."""
    return np.ones_like(p["bias"]) if layer.fix_gamma else p["weight"]


def batch_norm_running_update(layer: BatchNorm, p, cache: Cache) -> dict[str, np.ndarray]:
    """``running = (1-m) running + m stat``; the variance UNBIASED (PyTorch) or biased (MXNet)."""
    m, n = layer.momentum, cache["count"]
    var = cache["var"] * n / max(n - 1, 1) if layer.running_var == "unbiased" else cache["var"]
    return {
        "running_mean": (1 - m) * p["running_mean"] + m * cache["mean"],
        "running_var": (1 - m) * p["running_var"] + m * var,
    }


def batch_norm_backward(layer: BatchNorm, p, cache: Cache, dy: np.ndarray):
    axes, bs = _bn_axes(dy), _bshape(dy)
    xhat, inv_std, n = cache["xhat"], cache["inv_std"], cache["count"]
    grads = {"bias": dy.sum(axis=axes)}
    if not layer.fix_gamma:  # a fixed gamma has no gradient (MXNet zeroes it)
        grads["weight"] = (dy * xhat).sum(axis=axes)
    dxhat = dy * _gamma(layer, p).reshape(bs)
    dx = (inv_std.reshape(bs) / n) * (
        n * dxhat - dxhat.sum(axis=axes).reshape(bs) - xhat * (dxhat * xhat).sum(axis=axes).reshape(bs)
    )
    return dx, grads


# -- activations ---------------------------------------------------------------


def activation_forward(layer, x: np.ndarray):
    if isinstance(layer, ReLU):
        return np.maximum(x, 0.0), {"x": x}
    if isinstance(layer, LeakyReLU):
        return np.where(x > 0, x, layer.slope * x), {"x": x}
    if isinstance(layer, Tanh):
        y = np.tanh(x)
        return y, {"y": y}
    if isinstance(layer, Sigmoid):
        y = sigmoid(x)
        return y, {"y": y}
    raise TypeError(f"not an activation: {layer!r}")


def activation_backward(layer, cache: Cache, dy: np.ndarray) -> np.ndarray:
    """``cache["flip"]`` (optional, boolean like x) makes the derivative take the OTHER branch
    at those elements: common/kinks.py uses it to follow a float32 backend whose input rounded
    to the other side of the kink. ``cache["dy"]`` keeps the incoming gradient for the same use."""
    if isinstance(layer, (ReLU, LeakyReLU)):
        cache["dy"] = dy
        positive = cache["x"] > 0
        if cache.get("flip") is not None:
            positive = positive ^ cache["flip"]
        return dy * np.where(positive, 1.0, negative_slope(layer))
    if isinstance(layer, Sigmoid):
        return dy * cache["y"] * (1.0 - cache["y"])
    return dy * (1.0 - cache["y"] ** 2)  # Tanh


def negative_slope(layer) -> float:
    """The derivative left of the kink: 0 for ReLU, the slope for LeakyReLU."""
    return layer.slope if isinstance(layer, LeakyReLU) else 0.0


# -- shape layers, dropout, the label embedding -----------------------------------


def reshape_forward(x: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, Cache]:
    """Flatten (``shape = (F,)``) or Reshape: C-order, as ``x.view(B, *shape)``."""
    return x.reshape((x.shape[0], *shape)), {"shape": x.shape}


def reshape_backward(cache: Cache, dy: np.ndarray) -> np.ndarray:
    return dy.reshape(cache["shape"])


def dropout_forward(x: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, Cache]:
    """``x * mask``, the mask pre-scaled (``keep / (1 - p)``, common/draws.py); None: no dropout."""
    if mask is None:
        return x, {"mask": None}
    if mask.shape != x.shape:
        raise ValueError(f"dropout mask of shape {mask.shape} for an input of shape {x.shape}")
    return x * mask, {"mask": mask}


def dropout_backward(cache: Cache, dy: np.ndarray) -> np.ndarray:
    return dy if cache["mask"] is None else dy * cache["mask"]


def embed_concat_forward(layer: EmbedConcat, p, x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, Cache]:
    """``torch.cat([x, weight[labels]], 1)``: the features first, then the label's row."""
    labels = np.asarray(labels, np.int64)
    return np.concatenate([x, p["weight"][labels]], axis=1), {"labels": labels, "features": x.shape[1]}


def embed_concat_backward(layer: EmbedConcat, p, cache: Cache, dy: np.ndarray):
    """The features' gradient is the first block; each label's row sums the gradients of the
    examples that carry it (``np.add.at``: repeated labels accumulate)."""
    f = cache["features"]
    dw = np.zeros((layer.num_classes, layer.dim))
    np.add.at(dw, cache["labels"], dy[:, f:])
    return dy[:, :f], {"weight": dw}


# -- loss ----------------------------------------------------------------------


def bce_with_logits_terms(x: np.ndarray, target: float) -> np.ndarray:
    """BCE-with-logits per element, computed stably: ``max(x,0) - x t + log(1 + exp(-|x|))``."""
    return np.maximum(x, 0.0) - x * target + np.log1p(np.exp(-np.abs(x)))


def bce_with_logits(logits: np.ndarray, target: float, reduction: str) -> tuple[float, np.ndarray]:
    """``max(x,0) - x t + log(1 + exp(-|x|))`` per example; gradient ``sigmoid(x) - t``.

    ``"per_example"`` is back-propagated as the sum (its 1/B comes later, on the parameter
    gradients: :func:`rescale`) and reported as the sum."""
    x = logits.reshape(logits.shape[0])
    per = bce_with_logits_terms(x, target)
    grad = sigmoid(x) - target
    if reduction == "mean":
        return float(per.mean()), (grad / x.shape[0]).reshape(logits.shape)
    return float(per.sum()), grad.reshape(logits.shape)


#: PyTorch's ``binary_cross_entropy``: each log clamped at -100, and its backward's denominator
#: ``max((1 - p) p, EPSILON)`` (aten/src/ATen/native/Loss.cpp).
BCE_LOG_CLAMP = -100.0
BCE_BACKWARD_EPS = 1e-12


def bce_probabilities(p_out: np.ndarray, target: float | np.ndarray, reduction: str) -> tuple[float, np.ndarray]:
    """``BCELoss`` on probabilities as PyTorch computes it (seed 002): per element
    ``-(t max(log p, -100) + (1 - t) max(log(1 - p), -100))``; gradient
    ``(p - t) / max((1 - p) p, 1e-12)``, PyTorch's formula (the exact derivative wherever no log is
    clamped). ``target`` is a label (GAN) or an array (the VAE's pixels). Reductions as
    :func:`bce_with_logits`; ``"mean"`` divides by the element count."""
    p = np.asarray(p_out, np.float64)
    t = np.broadcast_to(np.asarray(target, np.float64), p.shape)
    with np.errstate(divide="ignore"):  # log(0) = -inf, then clamped, as PyTorch
        per = -(t * np.maximum(np.log(p), BCE_LOG_CLAMP) + (1 - t) * np.maximum(np.log1p(-p), BCE_LOG_CLAMP))
    grad = (p - t) / np.maximum((1 - p) * p, BCE_BACKWARD_EPS)
    if reduction == "mean":
        return float(per.mean()), grad / p.size
    return float(per.sum()), grad


def sigmoid(x: np.ndarray) -> np.ndarray:
    # Two branches avoid overflow in exp for large |x|.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def rescale(grads: dict[str, np.ndarray], reduction: str, batch: int) -> dict[str, np.ndarray]:
    """The per-example reduction's gradient rescale, 1/B applied to the accumulated parameter
    gradients as MXNet's optimizer applies ``rescale_grad = 1.0 / batch_size``; others unchanged."""
    if reduction != "per_example":
        return grads
    scale = 1.0 / batch
    return {k: g * scale for k, g in grads.items()}
