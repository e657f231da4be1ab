"""Parity checks of one backend against the oracle, written once for every backend.

``check_forward`` and ``check_one_step`` return rows (one per compared tensor)
that tests assert on and the comparison report prints.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .kinks import flip_signature, follow_backend_branches, near_kinks
from .oracle import NetRun, OracleBackend, adam_update, net_backward
from .params import Params, init_params, is_buffer, trainable_names, zero_opt_state
from .protocol import GANProtocol, BuildOptions
from .spec import GANSpec
from .streams import Batch, Streams
from .tolerances import kink_margin, tolerance


@dataclass
class Row:
    check: str  # forward_G | forward_D | loss | grad | adam | running_stats | params
    name: str
    max_abs_err: float
    max_rel_err: float
    tolerance: float
    note: str = ""  # e.g. the kink branches the oracle followed (common/kinks.py)

    @property
    def passed(self) -> bool:
        return bool(self.max_rel_err <= self.tolerance)

    def as_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def rel_err(a: np.ndarray, ref: np.ndarray, scale: float | None = None) -> tuple[float, float]:
    """(max abs error, max abs error / max |ref|): the error in units of the tensor's scale, or of
    ``scale`` when the reference is a cancelling sum whose terms are larger than it (see
    :func:`summand_scale`). Infinite where ``a`` is not finite; a shape mismatch is an error."""
    return _ErrorMeter({"a": a}, ["a"], {} if scale is None else {"a": scale}).errors("a", ref)


def _in_scale_units(err: float, ref_scale: float, scale: float | None) -> float:
    scale = ref_scale if scale is None else max(scale, ref_scale)
    return err / scale if scale > 0 else err


class _ErrorMeter:
    """:func:`rel_err` of one set of backend tensors against any number of references: the one
    implementation (rel_err is a meter of one tensor used once).

    The kink search scores up to 65 candidate oracle gradients against the same backend
    gradients: on seed 003's G (12.6M values) converting the backend side to float64, its
    finiteness test and three full-size temporaries per call were 40% of the comparison's
    dcgan-mnist float32 one-iteration check (torch: 50 of 122 s). Here the backend side is
    converted and tested once and the differences go through one reused scratch buffer."""

    def __init__(self, tensors: Params, names: list[str], scales: dict[str, float]) -> None:
        self.tensors = {k: np.asarray(tensors[k], np.float64) for k in names}
        self.finite = {k: bool(np.all(np.isfinite(v))) for k, v in self.tensors.items()}
        self.scales = scales
        self._scratch = np.empty(max((v.size for v in self.tensors.values()), default=0))

    def errors(self, name: str, ref: np.ndarray) -> tuple[float, float]:
        """(max abs error, that error in scale units) of tensor ``name`` against ``ref``."""
        a, ref = self.tensors[name], np.asarray(ref, np.float64)
        if a.shape != ref.shape:
            raise AssertionError(f"shape {a.shape} != reference shape {ref.shape}")
        if not self.finite[name]:
            return float("inf"), float("inf")
        if not a.size:
            return 0.0, _in_scale_units(0.0, 0.0, self.scales.get(name))
        buf = self._scratch[:a.size].reshape(a.shape)
        err = float(np.abs(np.subtract(a, ref, out=buf), out=buf).max())
        ref_scale = float(np.abs(ref, out=buf).max())
        return err, _in_scale_units(err, ref_scale, self.scales.get(name))

    def rel(self, name: str, ref: np.ndarray) -> float:
        """The error of tensor ``name`` against ``ref`` in scale units (:meth:`errors`' second)."""
        return self.errors(name, ref)[1]


def summand_scale(*terms: np.ndarray) -> float:
    """``max(|t1| + |t2| + ...)``: what the roundoff of a sum of these terms is proportional to.

    D's gradient is the sum of its real-batch and fake-batch passes. Where they cancel (d2l's
    MXNet tab: zero biases, logits ~1e-4, so D's last bias gradient is 1.2e-5 left of terms of
    ~3e-2), a correct float64 implementation is 2e-12 off the exact sum relative to the sum itself
    (measured against a 50-digit reference: the oracle 5.2e-12, torch and MXNet 2.0e-12), so no
    implementation meets 1e-12 in units of |sum|. In units of the terms it is ~1e-15."""
    return float(np.max(sum(np.abs(np.asarray(t, np.float64)) for t in terms)))


def _row(check: str, name: str, a, ref, dtype: str, quantity: str, note: str = "", scale: float | None = None) -> Row:
    err, rel = rel_err(a, ref, scale)
    return Row(check, name, err, rel, tolerance(dtype, quantity), note)


def parity_batch(spec: GANSpec, seed: int, batch_size: int | None = None) -> Batch:
    """The first batch (real, noise and the other draws), optionally cut to ``batch_size``. The
    noise follows ``train.noise_batch``: cut with it, or (seed 003's rule) kept at
    ``train.batch_size`` rows, as for a short last batch."""
    batch = Streams(spec, seed).batch(0)
    n = batch_size or len(batch.real)
    return batch.cut(n, spec.train.noise_rows(n))


def parity_inputs(spec: GANSpec, seed: int, batch_size: int | None = None):
    """Canonical float64 params, the first real batch and its noise (:func:`parity_batch`)."""
    batch = parity_batch(spec, seed, batch_size)
    return init_params(spec, seed), batch.real, batch.z


def check_forward(backend: GANProtocol, spec: GANSpec, dtype: str, seed: int = 0, batch_size: int | None = None,
                  bn: str = "batch", params: Params | None = None) -> list[Row]:
    """G(z) and D(x) vs the oracle. ``params`` defaults to the initial ones; pass trained ones
    (e.g. after a few oracle iterations) to exercise BN running statistics with ``bn="running"``."""
    batch = parity_batch(spec, seed, batch_size)
    params = init_params(spec, seed) if params is None else params
    real, z = batch.real, batch.z
    # a conditional GAN: G draws the D step's fake labels, D sees the real batch's labels
    g_labels, d_labels = batch.draws.get("fake_labels"), batch.draws.get("labels")
    oracle = OracleBackend()
    ref = oracle.build(spec, params, None, BuildOptions(dtype="float64"))
    st = backend.build(spec, params, None, BuildOptions(dtype=dtype, mode="parity"))
    return [
        _row("forward_G", "G(z)", backend.generate(st, z, bn, g_labels), oracle.generate(ref, z, bn, g_labels),
             dtype, "forward"),
        _row("forward_D", "D(x)", backend.discriminate(st, real, bn, d_labels),
             oracle.discriminate(ref, real, bn, d_labels), dtype, "forward"),
    ]


@dataclass
class OneStepResult:
    """Rows of one iteration's check, the kink branches followed, and the backend's D step
    (scalars and gradients) for pairwise comparison between backends."""

    rows: list[Row]
    near_kinks: dict[str, int] = field(default_factory=dict)  # "D step"/"G step" -> candidates
    flips: list[str] = field(default_factory=list)  # descriptions of the branches followed
    d_step: dict[str, np.ndarray] = field(default_factory=dict)


def check_one_step(backend: GANProtocol, spec: GANSpec, dtype: str, seed: int = 0, batch_size: int | None = None) -> list[Row]:
    """The rows of :func:`one_step` (what tests assert on)."""
    return one_step(backend, spec, dtype, seed, batch_size).rows


def one_step(backend: GANProtocol, spec: GANSpec, dtype: str, seed: int = 0, batch_size: int | None = None) -> OneStepResult:
    """One full iteration from the same params, batch and noise, checked in three parts.

    1. D step vs the oracle: loss_D, D(x), D(G(z)) before the step, every D gradient.
    2. Adam, isolated: the backend's params and moments after the iteration vs the
       oracle's Adam applied to the backend's OWN gradients (see common/tolerances.py).
    3. G step vs the oracle CONDITIONED on the backend's updated D weights: loss_G,
       D(G(z)) after D's step, every G gradient, and all BN running statistics.
       Conditioning is needed because Adam's first step, ``lr*g/(|g|+eps)``, turns
       roundoff in near-zero D gradients into O(lr) weight differences (measured on
       full-size DCGAN: fp32 G gradients 1e-2 apart unconditioned, 1e-5 conditioned).

    Gradients that miss the tolerance are compared once more with the oracle following the
    backend's side at activation inputs closer to a kink than float32 can resolve
    (common/kinks.py); the rows then say which branches were followed.
    """
    batch = parity_batch(spec, seed, batch_size)
    params, real, z, draws = init_params(spec, seed), batch.real, batch.z, batch.draws
    oracle = OracleBackend()
    ref = oracle.build(spec, params, None, BuildOptions(dtype="float64"))
    st = backend.build(spec, params, None, BuildOptions(dtype=dtype, mode="parity"))
    out = backend.train_step(st, real, z, with_grads=True, draws=draws)
    p_new, opt_new = backend.export_params(st)
    if out.grads is None:
        raise AssertionError(f"{backend.name}: train_step(with_grads=True) returned no gradients")
    missing = set(p for net in ("G", "D") for p in trainable_names(spec, net)) - set(out.grads)
    if missing:
        raise AssertionError(f"{backend.name}: no gradient for {sorted(missing)}")
    result = OneStepResult(rows=[])
    margin = kink_margin(dtype)

    # 1. D step (kinks: D on the real and on the fake batch). Must run before ref's D weights change.
    d = oracle.d_step(ref, real, z, draws)
    d_runs = {"D(real)": d.run_real, "D(fake)": d.run_fake}
    D, G = spec.discriminator, spec.generator
    backward = _MemoBackward()
    g_real, g_fake = oracle.d_grad_parts(ref, d)
    d_scales = {k: summand_scale(g_real[k], g_fake[k]) for k in g_real}
    d_grads, d_note = _conditioned_grads(
        result, "D step", out.grads, d.grads, d_runs,
        lambda: [k for label, run in d_runs.items() for k in near_kinks(D, run, label, margin)],
        lambda: oracle.d_grads(ref, d, backward), dtype, d_scales)
    rows = [_row("loss", k, getattr(out, k), getattr(d, k), dtype, "loss") for k in ("loss_D", "D_x", "D_G_z1")]
    rows += [_row("grad", k, out.grads[k], g, dtype, "grad", d_note, d_scales[k]) for k, g in d_grads.items()]
    result.d_step = {f"scalar/{k}": np.asarray(getattr(out, k)) for k in ("loss_D", "D_x", "D_G_z1")}
    # the backend's D gradients moved onto the oracle's own branches, so two backends that
    # rounded different elements across a kink can still be compared with each other
    result.d_step.update({f"grad/{k}": np.asarray(out.grads[k], np.float64) - (d_grads[k] - d.grads[k])
                          for k in d_grads})
    result.d_step.update({f"scale/{k}": np.asarray(v) for k, v in d_scales.items()})

    # 2. Adam on the backend's own gradients
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

    # 3. G step, conditioned on the backend's D update (kinks: D after its step on the fake, and G)
    for k in trainable_names(spec, "D"):
        ref.params[k] = np.asarray(p_new[k], np.float64).copy()
    g = oracle.g_step(ref, d, draws)
    g_runs = {"D(fake) after D step": g.run_gen, "G(z)": g.run_g}
    g_grads, g_note = _conditioned_grads(
        result, "G step", out.grads, g.grads, g_runs,
        lambda: near_kinks(D, g.run_gen, "D(fake) after D step", margin) + near_kinks(G, g.run_g, "G(z)", margin),
        lambda: oracle.g_grads(ref, d, g, backward), dtype)
    rows += [_row("loss", k, getattr(out, k), getattr(g, k), dtype, "loss") for k in ("loss_G", "D_G_z2")]
    rows += [_row("grad", k, out.grads[k], v, dtype, "grad", g_note) for k, v in g_grads.items()]
    rows += [_row("running_stats", k, p_new[k], ref.params[k], dtype, "running_stats")
             for k in ref.params if is_buffer(k)]
    result.rows = rows
    return result


def _conditioned_grads(result: OneStepResult, step: str, backend_grads: Params, oracle_grads: Params, runs,
                       candidates, recompute, dtype: str, scales: dict[str, float] | None = None) -> tuple[Params, str]:
    """The oracle's gradients for this step: its own branches if the backend is within tolerance
    everywhere, else with the branches followed that explain the difference (common/kinks.py)."""
    tol = tolerance(dtype, "grad")
    names = list(oracle_grads)
    meter = _ErrorMeter(backend_grads, names, scales or {})

    def score(grads: Params) -> float:
        return sum(meter.rel(k, grads[k]) / tol for k in names)

    def good_enough(grads: Params) -> bool:
        return all(meter.rel(k, grads[k]) <= tol for k in names)

    if good_enough(oracle_grads):
        return oracle_grads, ""
    found = candidates()
    result.near_kinks[step] = len(found)
    if not found:
        return oracle_grads, ""
    grads, flipped = follow_backend_branches(runs, found, recompute, score, good_enough)
    if not flipped:
        return oracle_grads, f"{len(found)} near-kink inputs; following none explains the difference"
    result.flips += [f"{step}: {k.describe()}" for k in flipped]
    return grads, f"oracle follows the backend's branch at {len(flipped)} of {len(found)} near-kink inputs"


class _MemoBackward:
    """``net_backward`` that reruns only when the flips of its run changed or its incoming gradient
    is a different array: the kink search flips one element at a time, and most runs stay as they
    were (the G backward gets the same array back from an unchanged D backward)."""

    def __init__(self) -> None:
        self.memo: dict[int, tuple[NetRun, tuple, np.ndarray, tuple[np.ndarray, Params]]] = {}

    def __call__(self, net, params: Params, prefix: str, run: NetRun, dy: np.ndarray) -> tuple[np.ndarray, Params]:
        key = flip_signature(run)
        hit = self.memo.get(id(run))
        if hit is None or hit[0] is not run or hit[1] != key or hit[2] is not dy:
            hit = (run, key, dy, net_backward(net, params, prefix, run, dy))
            self.memo[id(run)] = hit
        return hit[3]


def failures(rows: list[Row]) -> str:
    """A readable list of failing rows ('' if none), worst first."""
    bad = sorted((r for r in rows if not r.passed), key=lambda r: -r.max_rel_err)
    return "\n".join(f"{r.check} {r.name}: rel {r.max_rel_err:.3g} > tol {r.tolerance:.0e} (abs {r.max_abs_err:.3g})"
                     for r in bad)
