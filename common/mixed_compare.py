"""bf16 mixed precision against the float64 oracle (issue 16): the comparison report's mixed-precision
section, measured once here for every backend env.

Fast mode with ``extra={"mixed_precision": MIXED_BF16}`` (common/protocol.py) computes the layers that
multiply in bfloat16 and keeps everything else float32. Two things characterise it, each beside the
same fast mode in float32, so the bf16 part of the error is read against float32's:

* **one iteration** (full-size ``dcgan`` at the comparison's batch 8, the shared start, batch and
  host-fed noise): per tensor, G(z) and D(x), the five scalars, every gradient (D's from the D step at
  the shared start; G's from the G step after the backend's own D update, so it also carries the D
  step's error) and every parameter after Adam, against the oracle's same iteration in float64;
* **the divergence horizon** (``dcgan-tiny``, its own batch 16, MIXED_TRAJECTORY iterations on the shared
  streams, host-fed noise): the per-iteration trajectory error (common/trajectory.py: both losses and a
  fixed subsample of every tensor) against the oracle's float64 run, and the first iteration above each of
  HORIZON_THRESHOLDS.

Errors are common/parity.rel_err: max|x - ref| / max|ref| per tensor; the scalars relative to
max(1, |ref|); parameters after the step in units of the learning rate (Adam's first step moves each
element by at most lr, so ``2 lr`` bounds any port with a correct Adam, whatever its gradients).
Tolerances: common/tolerances.py MIXED_BF16_TOLERANCES (derived there). A backend with no bf16 path
says why.

Fast mode is measured as the benchmarks run it, in a child process with common/registry.py's FAST_ENV
(oneDNN on: MXNet's bf16 kernels exist only there), since the comparison's envs turn oneDNN off for
parity and each framework reads that switch once per process (:func:`mixed_rows_in_fast_env`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .errors import GanSuiteError
from .experiments import compare_spec
from .files import write_npz_atomically
from .oracle import OracleBackend
from .parity import parity_batch, rel_err, summand_scale
from .params import init_params, trainable_names
from .presets import preset
from .protocol import MIXED_BF16, SCALARS, BuildOptions, GANProtocol
from .registry import FAST_ENV, get_backend
from .spec import GANSpec
from .tolerances import MIXED_BF16_TOLERANCES
from .trajectory import divergence_iteration, run_trajectory, trajectory_error

#: The one-iteration model (full size, the comparison's batch 8) and the horizon's (cheap enough for the
#: float64 oracle over a long run: 0.12 s per iteration).
ONE_ITERATION_MODEL = "dcgan"
HORIZON_MODEL = "dcgan-tiny"
#: Horizon run length: long enough for float32 to cross DIVERGENCE_THRESHOLD (Adam amplifies roundoff
#: wherever a gradient is near zero) and bf16 to cross 1e-1.
MIXED_TRAJECTORY = 100
HORIZON_THRESHOLDS = (1e-3, 1e-2, 1e-1)
#: The precisions compared, as (label, BuildOptions.extra) of a float32 fast-mode build.
PRECISIONS: tuple[tuple[str, dict[str, Any]], ...] = (("float32", {}), ("bf16-mixed", {"mixed_precision": MIXED_BF16}))


def _fast(extra: dict[str, Any]) -> BuildOptions:
    return BuildOptions(dtype="float32", mode="fast", extra=dict(extra))


def oracle_reference(spec: GANSpec) -> dict[str, Any]:
    """What does not depend on the backend: the oracle's forwards and its parameters after its own whole
    iteration from the comparison's start (one for every precision)."""
    batch = parity_batch(spec, 0)
    oracle = OracleBackend()
    st = oracle.build(spec, init_params(spec, 0), None, BuildOptions(dtype="float64"))
    ref = {"G(z)": oracle.generate(st, batch.z, "batch", batch.draws.get("fake_labels")),
           "D(x)": oracle.discriminate(st, batch.real, "batch", batch.draws.get("labels"))}
    oracle.train_step(st, batch.real, batch.z, draws=batch.draws)
    ref["after"] = oracle.export_params(st)[0]
    return ref


def one_iteration(backend: GANProtocol, spec: GANSpec, extra: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """Per-tensor errors of one fast-mode iteration against the float64 oracle's, measured the way the
    parity check measures them (common/parity.one_step), without its kink following: with bf16 a
    kink branch taken the other way is part of what the precision does.

    * D step: from the shared start; D's gradients in units of ``max(|g_real| + |g_fake|)`` (their
      real- and fake-batch parts nearly cancel at the start: common/parity.summand_scale);
    * G step: the oracle's G step from the backend's own updated D (so a G gradient measures the G
      step, not the D step's Adam update of near-zero gradients again);
    * parameters after Adam in units of the learning rate, against the oracle's Adam applied to the
      oracle's gradients: this one is end to end (Adam's first step ~ lr * sign(g) turns every
      near-zero gradient's error into up to 2 lr)."""
    batch = parity_batch(spec, 0)
    params, real, z, draws = init_params(spec, 0), batch.real, batch.z, batch.draws
    oracle = OracleBackend()
    ref = oracle.build(spec, params, None, BuildOptions(dtype="float64"))  # its D takes the backend's update
    st = backend.build(spec, params, None, _fast(extra))
    errors: dict[str, dict[str, float]] = {
        "forward": {"G(z)": rel_err(backend.generate(st, z, "batch", draws.get("fake_labels")), reference["G(z)"])[1],
                    "D(x)": rel_err(backend.discriminate(st, real, "batch", draws.get("labels")), reference["D(x)"])[1]}}
    out = backend.train_step(st, real, z, with_grads=True, draws=draws)
    after, _ = backend.export_params(st)
    missing = set(trainable_names(spec, "G") + trainable_names(spec, "D")) - set(out.grads or {})
    if missing:
        raise GanSuiteError(f"{backend.name}: train_step(with_grads=True) returned no gradient for {sorted(missing)}")
    d = oracle.d_step(ref, real, z, draws)
    g_real, g_fake = oracle.d_grad_parts(ref, d)
    errors["scalar"] = {k: _scalar_err(out, d, k) for k in ("loss_D", "D_x", "D_G_z1")}
    grads = {k: rel_err(out.grads[k], g, summand_scale(g_real[k], g_fake[k]))[1] for k, g in d.grads.items()}
    for k in trainable_names(spec, "D"):  # the G step from the backend's own D update (parity.one_step, 3.)
        ref.params[k] = np.asarray(after[k], np.float64).copy()
    g = oracle.g_step(ref, d, draws)
    errors["scalar"].update({k: _scalar_err(out, g, k) for k in ("loss_G", "D_G_z2")})
    grads.update({k: rel_err(out.grads[k], v)[1] for k, v in g.grads.items()})
    errors["grad"] = grads
    errors["param_lr"] = {k: float(np.max(np.abs(np.asarray(after[k], np.float64) - reference["after"][k])))
                          / _lr(spec, k) for k in grads}
    return {"errors": errors, "settings": {k: str(v) for k, v in backend.settings(st).items()}}


def _scalar_err(out: Any, ref: Any, name: str) -> float:
    """A scalar's error relative to max(1, |reference|)."""
    return abs(getattr(out, name) - getattr(ref, name)) / max(1.0, abs(getattr(ref, name)))


def _lr(spec: GANSpec, name: str) -> float:
    return (spec.train.optim_G if name.startswith("G.") else spec.train.optim_D).lr


def horizon(traj: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, Any]:
    """The per-iteration error against the oracle's trajectory and its first crossing of each threshold:
    of everything (the losses and every tensor's subsample, as the report's trajectories) and of the
    losses alone (a parameter that starts at 0, a BatchNorm bias, is off by O(1) of its own scale
    after one Adam step on a sign-flipped near-zero gradient, which the bf16 forward makes common)."""
    out: dict[str, Any] = {}
    for part in ("all", "losses"):
        err = trajectory_error(traj, ref, part)
        out[part] = {"error": [float(e) for e in err],
                     "first_above": {f"{t:g}": divergence_iteration(err, t) for t in HORIZON_THRESHOLDS}}
    return out


def references() -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The float64 oracle's side of every backend's rows: :func:`oracle_reference` of the one-iteration
    model and its MIXED_TRAJECTORY-iteration trajectory of the horizon model."""
    return (oracle_reference(compare_spec(ONE_ITERATION_MODEL)),
            run_trajectory(get_backend("oracle"), preset(HORIZON_MODEL), "float64", MIXED_TRAJECTORY))


def save_references(path: Path) -> None:
    """:func:`references` to ``path`` (.npz, written whole or not at all): the comparison's oracle run
    phase leaves them for the backends' envs, which would otherwise each recompute them (~15 s)."""
    reference, trajectory = references()
    arrays = {f"reference/{k}": v for k, v in reference.items() if k != "after"}
    arrays.update({f"reference/after/{k}": v for k, v in reference["after"].items()})
    arrays.update({f"trajectory/{k}": v for k, v in trajectory.items()})
    write_npz_atomically(path, arrays)


def load_references(path: Path | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """:func:`save_references`'s file where it exists, else :func:`references` computed here."""
    if path is None or not path.exists():
        return references()
    reference: dict[str, Any] = {"after": {}}
    trajectory: dict[str, np.ndarray] = {}
    with np.load(path) as saved:
        for key in saved.files:
            part, name = key.split("/", 1)
            if part == "trajectory":
                trajectory[name] = saved[key]
            elif name.startswith("after/"):
                reference["after"][name[len("after/"):]] = saved[key]
            else:
                reference[name] = saved[key]
    return reference, trajectory


def mixed_rows(backend_name: str, reference_file: Path | None = None) -> list[dict[str, Any]]:
    """Every precision of one backend: its one-iteration errors and its horizon, or why it has no path
    (the oracle's side from ``reference_file`` where the oracle's run phase wrote it)."""
    backend = get_backend(backend_name)
    one_spec, horizon_spec = compare_spec(ONE_ITERATION_MODEL), preset(HORIZON_MODEL)
    reference, ref_traj = load_references(reference_file)
    rows = []
    for label, extra in PRECISIONS:
        row: dict[str, Any] = {"backend": backend_name, "precision": label, "model": ONE_ITERATION_MODEL,
                               "batch_size": one_spec.train.batch_size, "horizon_model": HORIZON_MODEL,
                               "iterations": MIXED_TRAJECTORY}
        try:
            row.update(one_iteration(backend, one_spec, extra, reference))
        except GanSuiteError as e:  # no bf16 path in this backend: the one line that says why
            row["unsupported"] = str(e)
            rows.append(row)
            continue
        traj = run_trajectory(backend, horizon_spec, "float32", MIXED_TRAJECTORY, mode="fast", extra=extra)
        row["horizon"] = horizon(traj, ref_traj)
        row["checks"] = check_row(row["errors"])
        rows.append(row)
    return rows


def check_row(errors: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Worst tensor per quantity against its tolerance (common/tolerances.py MIXED_BF16_TOLERANCES;
    float32 fast mode against the same bounds: they hold a fortiori)."""
    out = {}
    for quantity, per_tensor in errors.items():
        if not per_tensor:
            continue
        name = max(per_tensor, key=per_tensor.get)
        tol = MIXED_BF16_TOLERANCES[quantity]
        out[quantity] = {"worst": per_tensor[name], "tensor": name, "tolerance": tol,
                         "passed": bool(per_tensor[name] <= tol)}
    return out


def mixed_rows_in_fast_env(backend_name: str, out: Path, reference_file: Path | None = None,
                           timeout: float = 1800) -> list[dict[str, Any]]:
    """:func:`mixed_rows` in a child process of this interpreter with the backend's FAST_ENV, written to
    ``out`` (JSON) and returned; a child that fails raises one line with the end of its stderr."""
    env = {**os.environ, **FAST_ENV.get(backend_name, {})}
    args = [backend_name, str(out)] + ([str(reference_file)] if reference_file is not None else [])
    proc = subprocess.run([sys.executable, "-m", "gansuite.common.mixed_compare", *args],
                          env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise GanSuiteError(f"mixed precision rows of {backend_name}: the fast-mode process failed: {tail}")
    return json.loads(out.read_text())


if __name__ == "__main__":  # the child process of mixed_rows_in_fast_env: <backend> <out.json> [<references.npz>]
    Path(sys.argv[2]).write_text(json.dumps(mixed_rows(sys.argv[1], Path(sys.argv[3]) if len(sys.argv) > 3 else None),
                                            indent=1))

