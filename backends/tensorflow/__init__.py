"""TensorFlow / Keras 3 backend. Keras is channels_last with its own kernel layouts: see layout.py.

oneDNN: TF's x86 CPU build runs float32 convolutions through oneDNN by default, which is
less accurate than TF's own Eigen kernels (measured here, TF 2.21, full-size DCGAN at
batch 4: D's float32 forward error 1.9e-6 vs 8.4e-7 with oneDNN off, enough to push
D(G(z)) after D's step to 1.4e-5 relative, over the 1e-5 parity tolerance). It can only
be turned off by ``TF_ENABLE_ONEDNN_OPTS=0`` in the environment BEFORE TensorFlow is
imported. This module sets that default when it is imported first; when TensorFlow is
already loaded (common.registry imports it before this module), parity-mode ``build``
checks the flag (backend.configure) and raises a one-line error saying how to set it.

The process-wide TF flags backend.configure sets and settings() records are read here.
"""

import os
import sys

if "tensorflow" not in sys.modules:
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


#: Keras's bf16 mixed-precision dtype policy (float32 variables, bfloat16 compute), fast mode's
#: ``extra={"mixed_precision": MIXED_BF16}`` (common/protocol.py names every backend's setting after it).
MIXED_POLICY = "mixed_bfloat16"


def onednn_enabled() -> bool:
    """Whether TF's oneDNN (MKL) CPU kernels are on: fixed at import by TF_ENABLE_ONEDNN_OPTS."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def op_determinism_enabled() -> bool:
    # Not exported in TF 2.21's public API (tensorflow/python/framework/config.py has it).
    from tensorflow.python.framework import config as tf_config

    return bool(tf_config.is_op_determinism_enabled())


def grappler_rewrites_on() -> bool:
    """Whether grappler's float-rewriting passes (arithmetic optimisation, constant folding) are on."""
    import tensorflow as tf

    opts = tf.config.optimizer.get_experimental_options()
    return opts.get("arithmetic_optimization", True) or opts.get("constant_folding", True)


def device_name(device: str) -> str:
    """The GPU's name for "/GPU:0", else the CPU's (platform.processor() is empty on some Linux builds)."""
    import platform

    import tensorflow as tf

    if device.startswith("/GPU"):
        details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
        return details.get("device_name", "gpu")
    return platform.processor() or platform.machine() or "cpu"


from .backend import TensorflowBackend as Backend  # noqa: E402  (after the environment is set)

__all__ = ["Backend"]
