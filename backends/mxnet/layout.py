"""Canonical <-> MXNet Gluon tensors: the one place where layouts are converted.

Gluon 1.9 stores every tensor of the canonical layout as PyTorch does (verified
against the oracle by the parity tests, and by ``test_layouts_match_pytorch``):

* ``nn.Dense`` weight ``(units, in_units)`` = PyTorch's ``(out, in)``;
* ``nn.Conv2D`` weight ``(channels, in_channels, kh, kw)`` = OIHW;
* ``nn.Conv2DTranspose`` weight ``(in_channels, channels, kh, kw)`` = ``(in, out, kh, kw)``,
  and its ``padding`` crops like PyTorch's: ``out = (in - 1) s - 2p + k + output_padding``;
* ``nn.Embedding`` weight ``(input_dim, output_dim)`` = PyTorch's ``nn.Embedding`` ``(num_classes, dim)``;
* activations NCHW (``layout='NCHW'`` is Gluon's default; set explicitly in models.py).

So every conversion here is the identity plus a dtype/context move; what differs
is only the parameter NAMES (BatchNorm ``weight``/``bias`` are Gluon's
``gamma``/``beta``), mapped by :func:`module_key`. The function names match the
other backends' ``layout.py`` so the files can be read side by side.
"""

from __future__ import annotations

import mxnet as mx
import numpy as np
from mxnet import nd

from gansuite.common.spec import BatchNorm, Layer

DTYPES = {"float32": np.float32, "float64": np.float64}
#: The labels' dtype (see labels_to_framework).
_LABEL_DTYPE = np.float32

#: canonical tensor name -> Gluon parameter name, for the layers whose names differ.
_BATCH_NORM_NAMES = {"weight": "gamma", "bias": "beta", "running_mean": "running_mean", "running_var": "running_var"}


def _host_to_device(x: np.ndarray, dtype: type, device: mx.Context) -> nd.NDArray:
    """``nd.array(x, ctx=device, dtype=dtype)``'s values, WITHOUT its host sync: ``nd.array`` copies
    through MXNDArraySyncCopyFromCPU, which first waits until the new array is writable by pushing a
    no-op behind everything already queued on the engine's one CPU worker: it blocks Python until ALL
    queued work is done (measured, MXNet 1.9.1: 165 ms for a 4-element array behind two queued
    2000x2000 products). Per fast-mode step that was three full syncs (the real batch, D's and G's
    Adam coefficients), each stalling the Python side of the iteration that otherwise overlaps the
    engine. ``nd.from_numpy`` (zero-copy, DLPack) makes the NDArray without the engine (0.1 ms, none
    waited for): it wraps a fresh host copy that nobody else holds (numpy rounds to ``dtype`` as
    ``nd.array`` does: ``np.asarray(x, dtype)``), and MXNet keeps that buffer alive until the last
    array and queued operator reading it is gone (the DLPack deleter). Another device: one async copy.
    """
    host = nd.from_numpy(np.array(x, dtype=dtype, order="C", copy=True), zero_copy=True)
    return host if host.context == device else host.as_in_context(device)


def param_to_framework(name: str, value: np.ndarray, layer: Layer, dtype: type, device: mx.Context) -> nd.NDArray:
    """Canonical tensor -> NDArray (no transpose: same layout). ``nd.array`` copies."""
    return nd.array(np.ascontiguousarray(value), ctx=device, dtype=dtype)


def param_from_framework(name: str, value: nd.NDArray, layer: Layer) -> np.ndarray:
    """NDArray -> canonical numpy array (no transpose: same layout). ``asnumpy`` copies and syncs."""
    return value.asnumpy()


def activations_to_framework(x: np.ndarray, dtype: type, device: mx.Context) -> nd.NDArray:
    """Canonical NCHW (or (N, F)) batch -> NDArray. Gluon's default layout is NCHW too. Copied without
    a host sync (_host_to_device: every train_step passes its batch through here)."""
    return _host_to_device(x, dtype, device)


def activations_from_framework(x: nd.NDArray) -> np.ndarray:
    return x.asnumpy().astype(np.float64)


def labels_to_framework(labels: np.ndarray, device: mx.Context) -> nd.NDArray:
    """Class labels -> float32 NDArray, the index dtype MXNet's ``Embedding`` operator is documented
    with (Gluon feeds it ``nd.array`` data, float32 by default; its examples index with floats).

    float32 holds every integer below 2^24 exactly, and it is independent of the nets' dtype, so
    one dtype serves both precisions and the hybridized graphs never see a second input dtype
    (fast mode's device-drawn labels are cast to it too, train.py). Measured on 1.9.1: int32,
    int64, float32 and float64 indices give the same rows and weight gradients, bit for bit."""
    return _host_to_device(labels, _LABEL_DTYPE, device)  # per step too: without a host sync


def module_key(name: str, layer: Layer) -> str:
    """``"G.3.weight"`` -> the Gluon parameter name ``"G_3_gamma"`` (net prefix ``G_``, layer prefix ``3_``).

    models.py gives net ``G`` the prefix ``"G_"`` and its layer ``i`` the prefix ``"<i>_"``,
    so Gluon's own names carry the canonical layer index. An embed_concat layer's table is its
    ``nn.Embedding``'s own ``weight`` (models.py), ``"D_1_weight"``: the canonical name as it is.
    """
    net, index, tensor = name.split(".")
    if isinstance(layer, BatchNorm):
        tensor = _BATCH_NORM_NAMES[tensor]
    return f"{net}_{index}_{tensor}"
