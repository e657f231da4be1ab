"""The trap skeleton: a framework default left in place vs corrected, measured with numbers.

Each ``backends/<fw>/traps.py`` holds only that framework's swaps: one function per trap with
the one signature ``(default: bool) -> float`` (the error vs the float64 oracle with the
framework's default put back, or as the backend does it), and ``TRAPS``, a list of
:class:`Trap` naming them. ``run_traps()`` there is ``measure_all(TRAPS)``. The shared setup
(the dcgan-tiny case, the oracle's outputs on it) and the Adam reference live here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .oracle import OracleBackend, adam_update
from .parity import parity_inputs
from .params import Params
from .presets import preset
from .protocol import BuildOptions, GANProtocol
from .spec import AdamSpec, GANSpec

#: DCGAN's Adam (both nets): the spec the optimiser traps are measured with.
DCGAN_ADAM = AdamSpec(lr=2e-4, beta1=0.5, beta2=0.999, eps=1e-8)
#: What every optimiser trap measures, in units of the largest reference change (about 3 lr).
ADAM_MEASURED_ON = "parameter change after 3 Adam steps (lr 2e-4, betas 0.5/0.999), dcgan-tiny D.0.weight, float64"


@dataclass(frozen=True)
class Trap:
    """One row of the report's trap table: ``error(True)`` with the default, ``error(False)`` corrected."""

    difference: str
    measured_on: str
    error: Callable[[bool], float]

    def measure(self, backend: str) -> dict[str, Any]:
        return {"difference": self.difference, "err_default": float(self.error(True)),
                "err_corrected": float(self.error(False)), "measured_on": self.measured_on, "backends": [backend]}


def measure_all(traps: list[Trap], backend: str) -> list[dict[str, Any]]:
    return [t.measure(backend) for t in traps]


@dataclass
class Case:
    """A small parity case: the spec, a backend's parity state on it, canonical params, one batch."""

    spec: GANSpec
    state: Any
    params: Params
    real: np.ndarray
    z: np.ndarray

    def oracle_G(self, bn: str = "batch") -> np.ndarray:
        oracle = OracleBackend()
        return oracle.generate(oracle.build(self.spec, self.params, None, BuildOptions()), self.z, bn)

    def oracle_D(self, bn: str = "batch") -> np.ndarray:
        oracle = OracleBackend()
        return oracle.discriminate(oracle.build(self.spec, self.params, None, BuildOptions()), self.real, bn)


def case(backend: GANProtocol, model: str = "dcgan-tiny", dtype: str = "float64") -> Case:
    """``model``'s spec (batch 16 for dcgan-tiny), the backend's parity state, params, first batch, its noise."""
    spec = preset(model)
    params, real, z = parity_inputs(spec, 0)
    return Case(spec, backend.build(spec, params, None, BuildOptions(dtype=dtype)), params, real, z)


def adam_inputs(small: bool, seed: int = 5) -> tuple[np.ndarray, list[np.ndarray]]:
    """dcgan-tiny's initial D.0.weight and 3 gradients of random sign, magnitudes spread over
    1e-9..1 (``small``: where eps matters) or within 1..10 (no entry near 0, so where eps is added
    moves no step by more than ~3e-7 of itself)."""
    p0 = parity_inputs(preset("dcgan-tiny"), 0)[0]["D.0.weight"].reshape(-1)
    rng = np.random.default_rng(seed)
    lo, hi = (-9, 0) if small else (0, 1)
    return p0, [rng.choice([-1.0, 1.0], p0.size) * 10.0 ** rng.uniform(lo, hi, p0.size) for _ in range(3)]


def adam_reference(p0: np.ndarray, grads: list[np.ndarray], cfg: AdamSpec = DCGAN_ADAM) -> np.ndarray:
    """The spec's Adam (the oracle's) applied ``len(grads)`` times from ``p0``, float64."""
    ref, m, v = p0, np.zeros_like(p0), np.zeros_like(p0)
    for t, g in enumerate(grads, 1):
        ref, m, v = adam_update(ref, g, m, v, t, cfg)
    return ref
