"""Parity checks of one backend against the oracle, written once for every backend.

``check_forward`` and ``check_one_step`` return rows (one per compared tensor)
that tests assert on and the comparison report prints.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .oracle import OracleBackend, adam_update
from .params import Params, init_params, is_buffer, trainable_names, zero_opt_state
from .protocol import Backend, BuildOptions
from .spec import GANSpec
from .streams import Streams
from .tolerances import tolerance


@dataclass
class Row:
    check: str  # forward_G | forward_D | loss | grad | adam | running_stats | params
    name: str
    max_abs_err: float
    max_rel_err: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return bool(self.max_rel_err <= self.tolerance)

    def as_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def rel_err(a: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max abs error, max abs error / max |ref|): the error in units of the tensor's scale."""
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    if a.shape != ref.shape:
        raise AssertionError(f"shape {a.shape} != reference shape {ref.shape}")
    if not np.all(np.isfinite(a)):
        return float("inf"), float("inf")
    err = float(np.max(np.abs(a - ref))) if a.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    return err, (err / scale if scale > 0 else err)


def _row(check: str, name: str, a, ref, dtype: str, quantity: str) -> Row:
    err, rel = rel_err(a, ref)
    return Row(check, name, err, rel, tolerance(dtype, quantity))


def parity_inputs(spec: GANSpec, seed: int, batch_size: int | None = None):
    """Canonical float64 params, the first real batch and its noise (optionally cut to ``batch_size``)."""
    streams = Streams(spec, seed)
    batch = streams.batch(0)
    n = batch_size or len(batch.real)
    return init_params(spec, seed), batch.real[:n], batch.z[:n]


def check_forward(backend: Backend, spec: GANSpec, dtype: str, seed: int = 0, batch_size: int | None = None,
                  bn: str = "batch", params: Params | None = None) -> list[Row]:
    """G(z) and D(x) vs the oracle. ``params`` defaults to the initial ones; pass trained ones
    (e.g. after a few oracle iterations) to exercise BN running statistics with ``bn="running"``."""
    init, real, z = parity_inputs(spec, seed, batch_size)
    params = init if params is None else params
    oracle = OracleBackend()
    ref = oracle.build(spec, params, None, BuildOptions(dtype="float64"))
    st = backend.build(spec, params, None, BuildOptions(dtype=dtype, mode="parity"))
    return [
        _row("forward_G", "G(z)", backend.generate(st, z, bn), oracle.generate(ref, z, bn), dtype, "forward"),
        _row("forward_D", "D(x)", backend.discriminate(st, real, bn), oracle.discriminate(ref, real, bn), dtype, "forward"),
    ]


def check_one_step(backend: Backend, spec: GANSpec, dtype: str, seed: int = 0, batch_size: int | None = None) -> list[Row]:
    """One full iteration from the same params, batch and noise, checked in three parts.

    1. D step vs the oracle: loss_D, D(x), D(G(z)) before the step, every D gradient.
    2. Adam, isolated: the backend's params and moments after the iteration vs the
       oracle's Adam applied to the backend's OWN gradients (see common/tolerances.py).
    3. G step vs the oracle CONDITIONED on the backend's updated D weights: loss_G,
       D(G(z)) after D's step, every G gradient, and all BN running statistics.
       Conditioning is needed because Adam's first step, ``lr*g/(|g|+eps)``, turns
       roundoff in near-zero D gradients into O(lr) weight differences (measured on
       full-size DCGAN: fp32 G gradients 1e-2 apart unconditioned, 1e-5 conditioned).
    """
    params, real, z = parity_inputs(spec, seed, batch_size)
    oracle = OracleBackend()
    ref = oracle.build(spec, params, None, BuildOptions(dtype="float64"))
    st = backend.build(spec, params, None, BuildOptions(dtype=dtype, mode="parity"))
    out = backend.train_step(st, real, z, with_grads=True)
    p_new, opt_new = backend.export_params(st)
    if out.grads is None:
        raise AssertionError(f"{backend.name}: train_step(with_grads=True) returned no gradients")
    missing = set(p for net in ("G", "D") for p in trainable_names(spec, net)) - set(out.grads)
    if missing:
        raise AssertionError(f"{backend.name}: no gradient for {sorted(missing)}")

    d = oracle.d_step(ref, real, z)
    rows = [_row("loss", k, getattr(out, k), getattr(d, k), dtype, "loss") for k in ("loss_D", "D_x", "D_G_z1")]
    rows += [_row("grad", k, out.grads[k], g, dtype, "grad") for k, g in d.grads.items()]

    for net in ("G", "D"):
        cfg = spec.train.optim_G if net == "G" else spec.train.optim_D
        zeros = zero_opt_state(spec)[net]
        for k in trainable_names(spec, net):
            start = np.asarray(params[k], dtype=dtype).astype(np.float64)
            expect, m, v = adam_update(start, out.grads[k], zeros.m[k], zeros.v[k], 1, cfg)
            rows.append(_row("adam", k, p_new[k], expect, dtype, "adam"))
            rows.append(_row("adam", k + " (m)", opt_new[net].m[k], m, dtype, "adam"))
            rows.append(_row("adam", k + " (v)", opt_new[net].v[k], v, dtype, "adam"))
        if opt_new[net].step != 1:
            raise AssertionError(f"{backend.name}: Adam step counter of {net} is {opt_new[net].step}, expected 1")

    for k in trainable_names(spec, "D"):  # condition the G step on the backend's D update
        ref.params[k] = np.asarray(p_new[k], np.float64).copy()
    g = oracle.g_step(ref, d)
    rows += [_row("loss", k, getattr(out, k), getattr(g, k), dtype, "loss") for k in ("loss_G", "D_G_z2")]
    rows += [_row("grad", k, out.grads[k], v, dtype, "grad") for k, v in g.grads.items()]
    rows += [_row("running_stats", k, p_new[k], ref.params[k], dtype, "running_stats")
             for k in ref.params if is_buffer(k)]
    return rows


def failures(rows: list[Row]) -> str:
    """A readable list of failing rows ('' if none), worst first."""
    bad = sorted((r for r in rows if not r.passed), key=lambda r: -r.max_rel_err)
    return "\n".join(f"{r.check} {r.name}: rel {r.max_rel_err:.3g} > tol {r.tolerance:.0e} (abs {r.max_abs_err:.3g})"
                     for r in bad)
