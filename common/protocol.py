"""The backend protocol: the one interface every framework implements.

The training loop, CLI, traces, parity tests and benchmarks are written once
against this class. A backend lives in ``backends/<framework>/`` and exposes a
``Backend`` subclass from ``backend.py``; ``common.registry`` finds it.

Semantics every backend must reproduce (the spec's, i.e. the tutorial's):

``train_step`` runs ONE iteration in the tutorial's call order::

    D.zero_grad()
    out_real = D(real)                 # BN: batch stats, running stats updated
    fake     = G(z)                    # BN: batch stats, running stats updated (G runs once)
    out_fake = D(fake.detach())        # running stats updated again
    loss_D   = d_loss_scale * (BCE(out_real, real_label) + BCE(out_fake, fake_label))
    Adam step on D
    out_gen  = D(fake)                 # D after its step; running stats updated a third time
    loss_G   = BCE(out_gen, real_label)
    Adam step on G (gradient through D into G; D's parameters unchanged)

``generate`` / ``discriminate`` are pure forwards: with ``bn="batch"`` BatchNorm
uses the batch statistics (the tutorial samples in train mode) and with
``bn="running"`` the running ones (eval mode); neither changes any state.

Modes:
* ``parity``: inputs fed from the host (common.streams), deterministic kernels,
  no TF32, no compilation that changes arithmetic. Float32 or float64.
* ``fast``: compiled (torch.compile / jax.jit / tf.function(jit_compile) /
  hybridize) and, when ``train_step`` is given ``z=None``, latent noise drawn
  on the device from the backend's own RNG seeded at ``build``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .params import OptState, Params
from .spec import GANSpec

DTYPES = ("float32", "float64")
MODES = ("parity", "fast")
BN_MODES = ("batch", "running")


@dataclass
class StepOutput:
    """What one iteration reports (floats on the host)."""

    loss_D: float
    loss_G: float
    D_x: float  # mean sigmoid(D(real)), the tutorial's D(x)
    D_G_z1: float  # mean sigmoid(D(G(z))) before D's step
    D_G_z2: float  # mean sigmoid(D(G(z))) after D's step
    grads: Params | None = None  # canonical layout; D from the D step, G from the G step

    def scalars(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in SCALARS}


SCALARS = ("loss_D", "loss_G", "D_x", "D_G_z1", "D_G_z2")


@dataclass
class BuildOptions:
    dtype: str = "float32"
    device: str = "cpu"
    mode: str = "parity"
    seed: int = 0  # device RNG seed for fast mode
    extra: dict[str, Any] = field(default_factory=dict)


class Backend(abc.ABC):
    """One framework's implementation. Methods appear in the same order in every backend."""

    name: str = ""

    @abc.abstractmethod
    def versions(self) -> dict[str, str]:
        """Framework name -> version string, for every package that affects numbers."""

    @abc.abstractmethod
    def build(self, spec: GANSpec, params: Params, opt_state: OptState | None, options: BuildOptions) -> Any:
        """Networks and optimisers from canonical params (and Adam moments, if given)."""

    @abc.abstractmethod
    def generate(self, state: Any, z: np.ndarray, bn: str = "batch") -> np.ndarray:
        """G(z) as float64 in the canonical layout; changes no state."""

    @abc.abstractmethod
    def discriminate(self, state: Any, x: np.ndarray, bn: str = "batch") -> np.ndarray:
        """D(x) logits, shape ``(B,)``, float64; changes no state."""

    @abc.abstractmethod
    def train_step(self, state: Any, real: np.ndarray, z: np.ndarray | None, with_grads: bool = False) -> StepOutput:
        """One iteration (see module docstring). Updates ``state`` in place."""

    @abc.abstractmethod
    def export_params(self, state: Any) -> tuple[Params, OptState]:
        """Canonical params (incl. BN running stats) and Adam state, as numpy."""

    def settings(self, state: Any) -> dict[str, Any]:
        """Settings that change numbers or speed (TF32, threads, determinism), for records."""
        return {}

    def sync(self, state: Any) -> None:
        """Block until queued device work is done (before reading a clock)."""
