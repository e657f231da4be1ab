"""TensorFlow / Keras 3 backend. Keras is channels_last with its own kernel layouts: see layout.py.

oneDNN: TF's x86 CPU build runs float32 convolutions through oneDNN by default, which is
less accurate than TF's own Eigen kernels (measured here, TF 2.21, full-size DCGAN at
batch 4: D's float32 forward error 1.9e-6 vs 8.4e-7 with oneDNN off, enough to push
D(G(z)) after D's step to 1.4e-5 relative, over the 1e-5 parity tolerance). It can only
be turned off by ``TF_ENABLE_ONEDNN_OPTS=0`` in the environment BEFORE TensorFlow is
imported. This module sets that default when it is imported first; when TensorFlow is
already loaded (common.registry imports it before this module), parity-mode ``build``
checks the flag and raises a one-line error saying how to set it.
"""

import os
import sys

if "tensorflow" not in sys.modules:
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from .backend import TensorflowBackend as Backend  # noqa: E402  (after the environment is set)

__all__ = ["Backend"]
