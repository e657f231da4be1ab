"""Check any implementation of a preset against the float64 oracle: ``gansuite verify``.

A *port* is a class, in any framework, written the way its author writes GAN code, plus five
small methods that let the suite drive it from the canonical start (README, "Verify your own
port")::

    class MyPort:
        def __init__(self, spec: GANSpec, params: dict[str, np.ndarray], dtype: str): ...
        def generate(self, z: np.ndarray) -> np.ndarray: ...        # G(z), canonical NCHW / (N, F)
        def discriminate(self, x: np.ndarray) -> np.ndarray: ...    # D(x) logits (or probabilities: see below), (B,)
        def train_step(self, real: np.ndarray, z: np.ndarray) -> dict[str, float]: ...  # loss_D, loss_G
        def export_params(self) -> dict[str, np.ndarray]: ...       # canonical names and layout

``params`` are the canonical tensors (common/params.py), ``real`` and ``z`` the canonical
batches and noise of common/streams.py. A port whose D ends in a Sigmoid sets the class
attribute ``outputs = "probabilities"``; the check then compares ``logit(p)`` -- or ``p`` itself
where the preset's D ends in a Sigmoid layer too (``loss.on = "probabilities"``, seed 002).

A preset with more random draws than the batch and z (common/draws.py) needs a port that takes
them, as keyword parameters of these names::

        def generate(self, z, labels=None): ...          # conditional: one int64 label per row of z
        def discriminate(self, x, labels=None): ...      # conditional: one label per row of x
        def train_step(self, real, z, draws=None): ...   # the iteration's draws (Streams.batch(i).draws)

``labels`` are passed when the spec is conditional (``spec.conditional``); ``draws`` when it is
conditional, has dropout (``spec.has_dropout``) or draws new G noise (``train.g_noise ==
"fresh"``): a flat dict of ``labels``, ``fake_labels``, ``z_gen``, ``fake_labels_gen`` and the
pre-scaled dropout masks ``mask/<pass>/<net>.<i>`` (common/draws.py), which the port uses in place
of its framework's RNG. The pure forwards apply no dropout. A port whose methods do not take what
its preset needs is refused with a one-line error when it is built; a spec that needs none of
them calls the five methods as above, so ports written for plain GANs keep working.

The seed documents' own code is held to its presets the same way: ``benchmarks/peers``
transcribes each seed system and wraps it as a port (``SEED_PORTS``).

Checks, in order: the forward (G(z), D(x)), one iteration (losses and every parameter after
it), and a trajectory (losses and parameters after every iteration), each as the maximum
relative error per tensor (common.parity.rel_err) vs the oracle on the same numbers.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .draws import check_draws, check_labels
from .errors import GanSuiteError
from .oracle import OracleBackend
from .parity import rel_err
from .params import OptState, Params, init_params, param_shapes
from .protocol import DTYPES, BuildOptions, GANProtocol, StepOutput
from .spec import GANSpec
from .streams import Streams
from .tolerances import SEED_CODE, tolerance

#: Methods a port must have.
PORT_METHODS = ("generate", "discriminate", "train_step", "export_params")


def load_port(target: str) -> type:
    """``"path/to/file.py:ClassName"`` or ``"package.module:ClassName"`` -> the class."""
    if ":" not in target:
        raise GanSuiteError(f"impl: expected FILE.py:CLASS or module:CLASS, got {target!r}")
    where, cls_name = target.rsplit(":", 1)
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise GanSuiteError(f"impl: file {where!r} does not exist")
        spec = importlib.util.spec_from_file_location(f"gansuite_port_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as err:
            raise GanSuiteError(f"impl: cannot import {where!r} ({err})") from None
    cls = getattr(module, cls_name, None)
    if not isinstance(cls, type):
        raise GanSuiteError(f"impl: {where!r} defines no class {cls_name!r}")
    missing = [m for m in PORT_METHODS if not callable(getattr(cls, m, None))]
    if missing:
        raise GanSuiteError(f"impl: {cls_name} lacks {', '.join(missing)}; a port defines {', '.join(PORT_METHODS)}")
    return cls


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def _takes(cls: type, method: str, param: str) -> bool:
    """Whether ``cls.method`` accepts a keyword ``param`` (by name, or through ``**kwargs``)."""
    try:
        params = inspect.signature(getattr(cls, method)).parameters
    except (TypeError, ValueError):
        return False
    return param in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def needs_draws(spec: GANSpec) -> bool:
    """Whether an iteration of ``spec`` has draws besides the batch and z (common/draws.py)."""
    return spec.conditional or spec.has_dropout or spec.train.g_noise == "fresh"


def port_needs(spec: GANSpec) -> list[tuple[str, str]]:
    """(method, keyword) pairs a port of ``spec`` must accept (module docstring)."""
    need = [("generate", "labels"), ("discriminate", "labels")] if spec.conditional else []
    return need + ([("train_step", "draws")] if needs_draws(spec) else [])


@dataclass
class PortState:
    port: Any
    spec: GANSpec


class PortBackend(GANProtocol):
    """A port seen through the protocol, so the suite's checks and trajectories run on it."""

    def __init__(self, cls: type, name: str | None = None):
        self.cls = cls
        self.name = name or cls.__name__

    def versions(self) -> dict[str, str]:
        return dict(getattr(self.cls, "versions", lambda: {})())

    def check_port(self, spec: GANSpec) -> None:
        """One-line error if the port's methods do not take the labels / draws ``spec`` needs."""
        missing = [f"{m}(..., {k}=None)" for m, k in port_needs(spec) if not _takes(self.cls, m, k)]
        if missing:
            why = ("conditional" if spec.conditional else
                   "with dropout" if spec.has_dropout else "with fresh G noise (train.g_noise)")
            raise GanSuiteError(f"impl: model {spec.name!r} is {why}: {self.name} must take "
                                f"{', '.join(missing)} to use common/draws.py's labels, noise and masks "
                                "(common/verify.py)")

    def build(self, spec: GANSpec, params: Params, opt_state: OptState | None, options: BuildOptions) -> PortState:
        if opt_state is not None and (opt_state.G.step or opt_state.D.step):
            raise GanSuiteError("impl: a port starts from fresh Adam state; resume is not part of verify")
        self.check_port(spec)
        return PortState(self.cls(spec, {k: np.array(v, np.float64) for k, v in params.items()}, options.dtype), spec)

    def generate(self, state: PortState, z: np.ndarray, bn: str = "batch", labels: np.ndarray | None = None) -> np.ndarray:
        labels = check_labels(labels, state.spec, len(z))
        out = state.port.generate(z) if labels is None else state.port.generate(z, labels=labels)
        return np.asarray(out, np.float64)

    def discriminate(self, state: PortState, x: np.ndarray, bn: str = "batch", labels: np.ndarray | None = None) -> np.ndarray:
        labels = check_labels(labels, state.spec, len(x))
        out = state.port.discriminate(x) if labels is None else state.port.discriminate(x, labels=labels)
        out = np.asarray(out, np.float64).reshape(len(x))
        # The protocol's D(x) is the spec's D output: a logit, or with loss.on = "probabilities"
        # the probability of the spec's own Sigmoid layer (seed 002), as the oracle gives it.
        port_p, spec_p = getattr(self.cls, "outputs", "logits") == "probabilities", state.spec.loss.on == "probabilities"
        if port_p == spec_p:
            return out
        return _logit(out) if port_p else 1.0 / (1.0 + np.exp(-out))

    def train_step(self, state: PortState, real: np.ndarray, z: np.ndarray | None, with_grads: bool = False,
                   draws: dict | None = None) -> StepOutput:
        if z is None:
            raise GanSuiteError("impl: a port takes its noise from common/ (parity mode)")
        if needs_draws(state.spec):  # labels, fresh noise, dropout masks (common/draws.py)
            self.check_port(state.spec)
            losses = state.port.train_step(real, z, draws=check_draws(state.spec, draws, len(real), len(z)))
        else:
            losses = state.port.train_step(real, z)
        nan = float("nan")  # a port reports its losses; D(x) and D(G(z)) are not asked of it
        return StepOutput(float(losses["loss_D"]), float(losses["loss_G"]), nan, nan, nan)

    def export_params(self, state: PortState) -> tuple[Params, OptState]:
        params = {k: np.asarray(v, np.float64) for k, v in state.port.export_params().items()}
        expected = param_shapes(state.spec)
        if set(params) != set(expected):
            raise GanSuiteError(f"impl: export_params gives {sorted(set(params) ^ set(expected))[:4]} "
                                f"differently from the canonical names (see common/params.py)")
        return {k: params[k] for k in expected}, OptState()


@dataclass
class Check:
    check: str
    quantity: str
    rel_err: float
    tolerance: float | None

    @property
    def passed(self) -> bool:
        return self.tolerance is None or self.rel_err <= self.tolerance


def trajectory_errors(a: GANProtocol, b: GANProtocol, spec: GANSpec, dtype: str, iterations: int,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per iteration: the worst relative error of the two losses, and of every parameter tensor,
    between ``a`` and ``b`` run on the same canonical start, batches and noise."""
    streams, params = Streams(spec, seed), init_params(spec, seed)
    sa = a.build(spec, params, None, BuildOptions(dtype=dtype))
    sb = b.build(spec, params, None, BuildOptions(dtype="float64" if isinstance(b, OracleBackend) else dtype))
    loss_err, param_err = np.empty(iterations), np.empty(iterations)
    for batch in streams.iterate(0, iterations):
        oa = a.train_step(sa, batch.real, batch.z, draws=batch.draws)
        ob = b.train_step(sb, batch.real, batch.z, draws=batch.draws)
        loss_err[batch.iteration] = max(abs(x - y) / max(abs(y), 1e-300)
                                        for x, y in ((oa.loss_D, ob.loss_D), (oa.loss_G, ob.loss_G)))
        pa, pb = a.export_weights(sa), b.export_weights(sb)
        param_err[batch.iteration] = max(rel_err(pa[k], pb[k])[1] for k in pb)
    return loss_err, param_err


def verify(port: PortBackend, spec: GANSpec, dtype: str, iterations: int, seed: int = 0) -> list[Check]:
    """Forward, one iteration and ``iterations`` of trajectory, each vs the float64 oracle."""
    if dtype not in DTYPES:
        raise GanSuiteError(f"dtype: must be one of {', '.join(DTYPES)}; got {dtype!r}")
    oracle = OracleBackend()
    params, streams = init_params(spec, seed), Streams(spec, seed)
    batch = streams.batch(0)
    st, ref = port.build(spec, params, None, BuildOptions(dtype=dtype)), oracle.build(spec, params, None, BuildOptions())
    tol_fwd = tolerance(dtype, "forward")
    g_labels, d_labels = batch.draws.get("fake_labels"), batch.draws.get("labels")  # conditional GANs
    checks = [Check("forward", "G(z)", rel_err(port.generate(st, batch.z, "batch", g_labels),
                                               oracle.generate(ref, batch.z, "batch", g_labels))[1], tol_fwd),
              Check("forward", "D(x) logits", rel_err(port.discriminate(st, batch.real, "batch", d_labels),
                                                     oracle.discriminate(ref, batch.real, "batch", d_labels))[1],
                    tol_fwd)]
    loss_err, param_err = trajectory_errors(port, oracle, spec, dtype, max(iterations, 1), seed)
    # One iteration end to end: Adam's first step amplifies roundoff in near-zero gradients
    # (tolerances.py), so float64 parameters are held to SEED_CODE and float32 ones only reported.
    tol_params = SEED_CODE if dtype == "float64" else None
    checks += [Check("one iteration", "losses", float(loss_err[0]), tolerance(dtype, "loss")),
               Check("one iteration", "parameters", float(param_err[0]), tol_params),
               Check(f"trajectory ({len(loss_err)} iterations)", "losses, worst", float(loss_err.max()), None),
               Check(f"trajectory ({len(loss_err)} iterations)", "parameters, worst", float(param_err.max()), None)]
    return checks


def format_checks(name: str, model: str, dtype: str, checks: list[Check]) -> str:
    lines = [f"{name} vs the float64 oracle, model {model}, {dtype}:", "",
             "| check | quantity | max rel. error | tolerance | |", "|---|---|---|---|---|"]
    for c in checks:
        tol = f"{c.tolerance:.0e}" if c.tolerance is not None else "reported"
        lines.append(f"| {c.check} | {c.quantity} | {c.rel_err:.2e} | {tol} | {'ok' if c.passed else 'FAIL'} |")
    return "\n".join(lines)
