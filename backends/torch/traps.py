"""PyTorch defaults that break parity, each measured with the default left in place vs corrected.

Every trap is one function ``(default: bool) -> float`` (common/traps.py): the max relative error
vs the float64 oracle with ONE setting put back to the framework's default, or as the backend has it.

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
from gansuite.common.parity import rel_err
from gansuite.common.traps import Trap, case, measure_all

from .backend import TorchBackend


def _leaky_relu_slope(default: bool) -> float:
    """D(x) of dcgan-tiny with nn.LeakyReLU's default slope (0.01) instead of the spec's 0.2."""
    backend = TorchBackend()
    c = case(backend)
    if default:
        for m in c.state.D.modules():
            if isinstance(m, torch.nn.LeakyReLU):
                m.negative_slope = 0.01
    return rel_err(backend.discriminate(c.state, c.real), c.oracle_D())[1]


def _sigmoid_bce(default: bool) -> float:
    """The tutorial's nn.Sigmoid + nn.BCELoss vs BCE-with-logits on saturated logits (float32):
    1 - sigmoid(x) rounds to 0 for x > ~17, and BCELoss clamps log(0) to -100."""
    x = np.linspace(-30.0, 30.0, 61)
    ref = np.array([L.bce_with_logits(np.array([[v]]), 0.0, "sum")[0] for v in x])  # fake label 0
    xt = torch.tensor(x, dtype=torch.float32)
    target = torch.zeros_like(xt)
    if default:
        got = F.binary_cross_entropy(torch.sigmoid(xt), target, reduction="none")
    else:
        got = F.binary_cross_entropy_with_logits(xt, target, reduction="none")
    return rel_err(got.double().numpy(), ref)[1]


TRAPS = [
    Trap("LeakyReLU default slope (nn.LeakyReLU() = 0.01; the tutorial passes 0.2)",
         "D(x), dcgan-tiny, float64", _leaky_relu_slope),
    Trap("Sigmoid + BCELoss (the tutorial) vs BCE-with-logits on saturated logits",
         "per-example loss, logits in [-30, 30], label 0, float32", _sigmoid_bce),
]


def run_traps() -> list[dict[str, Any]]:
    return measure_all(TRAPS, TorchBackend.name)
