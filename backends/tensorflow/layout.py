"""Canonical <-> TensorFlow/Keras tensors: the one place where layouts are converted.

The canonical layout is PyTorch's; Keras differs in three ways, all handled here with the
numpy rules of common/layout.py:

* Dense kernels are ``(in, out)``: the canonical ``(out, in)`` transposed.
* Conv2D kernels are HWIO and Conv2DTranspose kernels ``(kh, kw, out, in)``; the
  canonical Conv is OIHW and ConvTranspose ``(in, out, kh, kw)``. Both become
  Keras's layout with the SAME permutation ``transpose(2, 3, 1, 0)``
  (:func:`~gansuite.common.layout.kernel_to_channels_last`).
  No kernel flip: ``tf.nn.conv2d_transpose`` is the scatter definition the
  oracle uses (it is the gradient of conv2d), as PyTorch's is.
* Activations are channels_last (NHWC); TF's CPU Conv2D kernels are NHWC-only,
  so NCHW batches are transposed at the boundary, never inside a network.

PyTorch's symmetric conv padding ``p`` has no Keras argument (Keras takes only
'same' / 'valid'): ``same_or_valid_conv`` / ``same_or_valid_conv_transpose``
(common/layout.py) say when one of the two strings is exactly ``p`` and otherwise
ask for an explicit pad or crop (models.py).

The functions and their parameters are the same in every backend's ``layout.py``
(tests/test_backend_signatures.py), so the files can be read side by side.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from gansuite.common.layout import kernel_from_channels_last, kernel_to_channels_last, nchw_to_nhwc, nhwc_to_nchw
from gansuite.common.spec import BatchNorm, EmbedConcat, Layer

DTYPES = {"float32": tf.float32, "float64": tf.float64}

# canonical tensor name -> Keras weight attribute. BatchNormalization calls its
# affine parameters gamma/beta and its buffers moving_mean/moving_variance; Embedding its
# table "embeddings" (already the canonical (num_classes, dim): no transpose).
_KERAS_ATTR = {"weight": "kernel", "bias": "bias"}
_KERAS_EMBED_ATTR = {"weight": "embeddings"}
_KERAS_BN_ATTR = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
                  "running_var": "moving_variance"}


def param_to_framework(name: str, value: np.ndarray, layer: Layer, dtype: tf.dtypes.DType,
                       device: str) -> tf.Tensor:
    """Canonical tensor -> Keras layout, as a tensor of ``dtype`` on ``device`` (to ``assign`` to a variable)."""
    with tf.device(device):
        return tf.constant(np.ascontiguousarray(kernel_to_channels_last(name, np.asarray(value), layer)),
                           dtype=dtype)


def param_from_framework(name: str, value: tf.Tensor | tf.Variable, layer: Layer) -> np.ndarray:
    """Keras tensor/variable -> canonical numpy array (dtype kept)."""
    arr = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
    return np.ascontiguousarray(kernel_from_channels_last(name, arr, layer)).copy()


def activations_to_framework(x: np.ndarray, dtype: tf.dtypes.DType, device: str) -> tf.Tensor:
    """Canonical NCHW (or (N, F)) batch -> NHWC (or (N, F)) tensor on ``device``."""
    with tf.device(device):
        return tf.constant(np.ascontiguousarray(nchw_to_nhwc(np.asarray(x))), dtype=dtype)


def activations_from_framework(x: tf.Tensor) -> np.ndarray:
    """NHWC (or (N, F)) tensor -> canonical NCHW float64 array."""
    return np.ascontiguousarray(nhwc_to_nchw(np.asarray(x.numpy(), dtype=np.float64)))


def labels_to_framework(labels: np.ndarray, device: str) -> tf.Tensor:
    """Class labels -> int64 tensor on ``device``: the indices of ``tf.gather`` (Keras Embedding's
    ``ops.take``), which takes int32 or int64. int64 because it is the canonical dtype (no cast), and
    because TF treats int32 as its shape/host dtype (on a GPU, int32 tensors of many ops live in host
    memory); int64 indices are plain device data. Keras Embedding casts only non-integer indices."""
    with tf.device(device):
        return tf.constant(np.ascontiguousarray(labels, dtype=np.int64), dtype=tf.int64)


def module_key(name: str, layer: Layer) -> tuple[str, str]:
    """``"G.3.weight"`` -> (Keras layer name ``"G.3"``, attribute ``"kernel"`` / ``"gamma"`` ...).

    Layer i of net G is the Keras layer named ``"G.<i>"`` (models.build_net), as torch's
    ``nn.Sequential`` child ``"<i>"``."""
    layer_name, tensor = name.rsplit(".", 1)
    attrs = (_KERAS_BN_ATTR if isinstance(layer, BatchNorm) else _KERAS_EMBED_ATTR if isinstance(layer, EmbedConcat)
             else _KERAS_ATTR)
    return layer_name, attrs[tensor]
