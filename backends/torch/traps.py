"""PyTorch defaults that break parity, each measured with the default left in place vs corrected.

Every row reruns one experiment of common/parity.py with one setting changed back to the
framework's default; errors are max relative errors vs the float64 oracle.

Not a trap (measured, then withdrawn): oneDNN convolutions on CPU. With them on, full-size
DCGAN's D gradients at batch 8 were 1.9e-2 off; the cause was one LeakyReLU input 9.1e-7 from
0 that oneDNN's rounding put on the other side of the kink (common/kinks.py), not oneDNN.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gansuite.common import oracle_layers as L
from gansuite.common.oracle import OracleBackend
from gansuite.common.parity import parity_inputs, rel_err
from gansuite.common.presets import preset
from gansuite.common.protocol import BuildOptions

from .backend import TorchBackend


def _leaky_relu_error(slope: float | None) -> float:
    """D(x) of dcgan-tiny with nn.LeakyReLU's default slope (0.01) instead of the spec's 0.2."""
    spec = preset("dcgan-tiny")
    params, real, _ = parity_inputs(spec, 0)
    backend, oracle = TorchBackend(), OracleBackend()
    st = backend.build(spec, params, None, BuildOptions(dtype="float64"))
    if slope is not None:
        for m in st.D.modules():
            if isinstance(m, torch.nn.LeakyReLU):
                m.negative_slope = slope
    return rel_err(backend.discriminate(st, real), oracle.discriminate(oracle.build(spec, params, None, BuildOptions()), real))[1]


def _sigmoid_bce_error(with_logits: bool) -> float:
    """The tutorial's nn.Sigmoid + nn.BCELoss vs BCE-with-logits on saturated logits (float32):
    1 - sigmoid(x) rounds to 0 for x > ~17, and BCELoss clamps log(0) to -100."""
    x = np.linspace(-30.0, 30.0, 61)
    ref = np.array([L.bce_with_logits(np.array([[v]]), 0.0, "sum")[0] for v in x])  # fake label 0
    xt = torch.tensor(x, dtype=torch.float32)
    target = torch.zeros_like(xt)
    if with_logits:
        got = F.binary_cross_entropy_with_logits(xt, target, reduction="none")
    else:
        got = F.binary_cross_entropy(torch.sigmoid(xt), target, reduction="none")
    return rel_err(got.double().numpy(), ref)[1]


def run_traps() -> list[dict[str, Any]]:
    return [
        {"difference": "LeakyReLU default slope (nn.LeakyReLU() = 0.01; the tutorial passes 0.2)",
         "err_default": _leaky_relu_error(0.01), "err_corrected": _leaky_relu_error(None),
         "measured_on": "D(x), dcgan-tiny, float64"},
        {"difference": "Sigmoid + BCELoss (the tutorial) vs BCE-with-logits on saturated logits",
         "err_default": _sigmoid_bce_error(False), "err_corrected": _sigmoid_bce_error(True),
         "measured_on": "per-example loss, logits in [-30, 30], label 0, float32"},
    ]
