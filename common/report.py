"""report.json / report.md / plots from the artifacts that ``common.compare`` wrote per backend.

Pairwise tolerances are twice the oracle's: if a and b are each within t of the oracle
(in units of the oracle's scale), they are within 2t of each other (triangle inequality).
A trajectory "passes" when it never leaves the oracle by more than DIVERGENCE_THRESHOLD.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np

from .protocol import DTYPES
from .trajectory import divergence_iteration, trajectory_error
from .parity import rel_err
from .seeds import SEED_SYSTEMS
from .tolerances import DIVERGENCE_THRESHOLD, ILL_CONDITIONED, SEED_CODE, tolerance

ONE_STEP_CHECKS = ("loss", "grad", "adam", "running_stats")
CONVERSION_TOL = {"samples": 2 * tolerance("float64", "forward"), "continued": 1e-10}


def _load_traj(path: Path) -> dict[str, np.ndarray] | None:
    if not path.exists():
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def build_report(out: Path, availability: dict[str, dict[str, Any]]) -> dict[str, Any]:
    art = out / "artifacts"
    present = [b for b, a in availability.items() if a["available"] and (art / b / "meta.json").exists()]
    frameworks = [b for b in present if b != "oracle"]
    report: dict[str, Any] = {"backends": availability, "parity": [], "traps": [], "conversion": [],
                              "data_parallel": [], "mixed_precision": []}

    for b in frameworks:  # vs the oracle, from the rows each env computed
        rows = json.loads((art / b / "rows.json").read_text())
        kinks_file = art / b / "kinks.json"
        kinks = {(k["model"], k["dtype"]): k for k in json.loads(kinks_file.read_text())} if kinks_file.exists() else {}
        for (model, dtype), group in itertools.groupby(sorted(rows, key=lambda r: (r["model"], r["dtype"])),
                                                       key=lambda r: (r["model"], r["dtype"])):
            group = list(group)
            for check in ("forward_G", "forward_D", "forward"):  # "forward": the VAE's (x_reconst, mu, log_var)
                sel = [r for r in group if r["check"] == check]
                if sel:
                    report["parity"].append(_parity_row(model, dtype, check, b, "oracle", sel))
            sel = [r for r in group if r["check"] in ONE_STEP_CHECKS]
            if sel:
                row = _parity_row(model, dtype, "one_step", b, "oracle", sel)
                row["ill_conditioned_bound"] = ILL_CONDITIONED.get((model, dtype))
                k = kinks.get((model, dtype), {})
                row["near_kinks"], row["kink_flips"] = k.get("near_kinks", {}), k.get("flips", [])
                report["parity"].append(row)

    models = sorted({_traj_model(p.name) for b in present for p in (art / b).glob("traj-*.npz")})
    for model, dtype in itertools.product(models, DTYPES):
        for a, b in itertools.combinations(frameworks, 2):  # pairwise forward / D step
            report["parity"] += _pairwise(art, model, dtype, a, b)
        ref = _load_traj(art / "oracle" / f"traj-{model}-{dtype}.npz")
        trajs = {b: _load_traj(art / b / f"traj-{model}-{dtype}.npz") for b in frameworks}
        for b, tr in trajs.items():
            if tr is not None and ref is not None:
                report["parity"].append(_trajectory_row(model, dtype, b, "oracle", tr, ref))
        for a, b in itertools.combinations([k for k, v in trajs.items() if v is not None], 2):
            report["parity"].append(_trajectory_row(model, dtype, a, b, trajs[a], trajs[b]))

    report["seed_code"] = _seed_code_rows(art, frameworks)
    for b in frameworks:
        traps = art / b / "traps.json"
        if traps.exists():
            report["traps"] += json.loads(traps.read_text())
        mixed = art / b / "mixed.json"
        if mixed.exists():
            report["mixed_precision"] += json.loads(mixed.read_text())
        dp = art / b / "data_parallel.json"
        if dp.exists():
            report["data_parallel"] += json.loads(dp.read_text())
        conv = art / b / "conversion.json"
        if conv.exists():
            for c in json.loads(conv.read_text()):
                c["passed"] = bool(c["samples_rel_err"] <= CONVERSION_TOL["samples"]
                                   and c["continued_params_rel_err"] <= CONVERSION_TOL["continued"])
                report["conversion"].append(c)
    return report


def _traj_model(filename: str) -> str:
    """``traj-dcgan-mnist-float64.npz`` -> ``dcgan-mnist``."""
    stem = filename[len("traj-"):-len(".npz")]
    return stem.rsplit("-", 1)[0]


def _seed_code_rows(art: Path, frameworks: list[str]) -> list[dict[str, Any]]:
    """Each seed system's own code (its transcription's float64 trajectory) vs every backend's
    float64 trajectory of the preset that reproduces it."""
    rows = []
    for system in SEED_SYSTEMS:
        seed = _load_traj(art / system.framework / f"seedtraj-{system.key}.npz")
        for b in frameworks:
            traj = _load_traj(art / b / f"traj-{system.preset}-float64.npz")
            if seed is None or traj is None:
                continue
            losses = trajectory_error(traj, seed, "losses")
            params = trajectory_error(traj, seed, "params")
            worst = float(max(losses.max(), params.max()))
            rows.append({"system": system.key, "document": system.document, "preset": system.preset,
                         "seed_framework": system.framework, "backend": b, "iterations": int(len(losses)),
                         "losses_rel_err": float(losses.max()), "params_rel_err": float(params.max()),
                         "tolerance": SEED_CODE, "passed": bool(worst <= SEED_CODE), "known_gap": system.known_gap})
    return rows


def _parity_row(model, dtype, check, backend, against, rows) -> dict[str, Any]:
    worst = max(rows, key=lambda r: r["max_rel_err"] / r["tolerance"])
    return {"model": model, "dtype": dtype, "check": check, "backend": backend, "against": against,
            "max_abs_err": max(r["max_abs_err"] for r in rows), "max_rel_err": worst["max_rel_err"],
            "tolerance": worst["tolerance"], "passed": all(r["passed"] for r in rows),
            "divergence_iteration": None, "worst": worst["name"]}


def _pairwise(art: Path, model: str, dtype: str, a: str, b: str) -> list[dict[str, Any]]:
    pa, pb = art / a / f"outputs-{model}-{dtype}.npz", art / b / f"outputs-{model}-{dtype}.npz"
    if not (pa.exists() and pb.exists()):
        return []
    out = []
    with np.load(pa) as za, np.load(pb) as zb:
        for check, keys in (("forward_G", ["forward_G"]), ("forward_D", ["forward_D"]),
                            ("forward", [k for k in za.files if k.startswith("forward/")]),  # the VAE's
                            ("one_step", [k for k in za.files if k.startswith(("scalar/", "grad/"))])):
            # D gradients in units of their real + fake terms, as vs the oracle (parity.summand_scale)
            errs = [rel_err(za[k], zb[k], float(za[f"scale/{k[5:]}"]) if f"scale/{k[5:]}" in za.files else None)
                    for k in keys if k in zb.files]
            if not errs:  # a GAN has no "forward", a VAE no forward_G / forward_D
                continue
            quantity = "forward" if check != "one_step" else "grad"
            tol = 2 * tolerance(dtype, quantity)
            worst = max(e[1] for e in errs)
            row = {"model": model, "dtype": dtype, "check": check, "backend": a, "against": b,
                   "max_abs_err": max(e[0] for e in errs), "max_rel_err": worst, "tolerance": tol,
                   "passed": bool(worst <= tol), "divergence_iteration": None}
            if check == "one_step":  # two float32 backends, each perturbed vs the oracle by the same cause
                row["ill_conditioned_bound"] = ILL_CONDITIONED.get((model, dtype))
            out.append(row)
    return out


def _trajectory_row(model, dtype, backend, against, traj, ref) -> dict[str, Any]:
    n = min(len(traj["scalars"]), len(ref["scalars"]))
    err = trajectory_error({**traj, "scalars": traj["scalars"][:n], "params": traj["params"][:n]},
                           {**ref, "scalars": ref["scalars"][:n], "params": ref["params"][:n]})
    div = divergence_iteration(err, DIVERGENCE_THRESHOLD)
    final = float(err[-1]) if n else float("nan")
    return {"model": model, "dtype": dtype, "check": "trajectory", "backend": backend, "against": against,
            "max_abs_err": None, "max_rel_err": float(np.nanmax(err)) if n else None, "final_rel_err": final,
            "tolerance": DIVERGENCE_THRESHOLD, "passed": div is None, "divergence_iteration": div,
            "iterations": n, "error_curve": err.tolist()}


def write_report(out: Path, report: dict[str, Any]) -> None:
    """report.json (error curves stripped), report.md, trajectory plots."""
    curves = {}
    for r in report["parity"]:
        if r["check"] == "trajectory":
            curves[(r["model"], r["dtype"], r["backend"], r["against"])] = r.pop("error_curve")
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    _plots(out, curves)
    (out / "report.md").write_text(_markdown(report))


def _plots(out: Path, curves: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for model, dtype in sorted({(k[0], k[1]) for k in curves}):
        fig, ax = plt.subplots(figsize=(7, 4))
        for (m, d, b, against), err in sorted(curves.items()):
            if (m, d) == (model, dtype) and against == "oracle":
                ax.semilogy(np.arange(1, len(err) + 1), np.maximum(err, 1e-17), label=b, lw=1)
        ax.axhline(DIVERGENCE_THRESHOLD, color="k", ls="--", lw=0.8, label="divergence threshold")
        ax.set_xlabel("iteration")
        ax.set_ylabel("relative error vs float64 oracle")
        ax.set_title(f"{model}, {dtype}: trajectory error (losses and parameters)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"trajectory-{model}-{dtype}.png", dpi=110)
        plt.close(fig)


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "**NO**"
    if isinstance(x, float):
        return f"{x:.2e}"
    return str(x)


def _verdict(row: dict[str, Any]) -> str:
    """yes / **NO**, or an ill-conditioned row within its measured bound (common/tolerances.py)."""
    bound = row.get("ill_conditioned_bound")
    if not row["passed"] and bound and row["max_rel_err"] <= bound:
        return f"ill-conditioned (<= {bound:g})"
    return _fmt(row["passed"])


def _markdown(report: dict[str, Any]) -> str:
    lines = ["# Cross-backend comparison", "",
             "Parity is measured here; learning is shown in [the gallery](../gallery/gallery.md): every backend "
             "trained on MNIST and on the default glyph digits from the same start, sample grids, loss curves and "
             "the quality metrics against iterations (`gansuite gallery`, `python3 -m tox -e gallery`).", "",
             "## Backends", "", "| backend | available | version | reason |", "|---|---|---|---|"]
    for name, a in report["backends"].items():
        lines.append(f"| {name} | {_fmt(a['available'])} | {a.get('version') or '-'} | {a.get('reason') or ''} |")
    lines += _modes()
    lines += _summary(report)
    lines += _kinks(report)
    lines += ["", "## Parity vs the float64 oracle and pairwise", "",
              "Error = max|x - ref| / max|ref| per tensor, worst tensor shown. Pairwise tolerance = 2x the oracle's; "
              "pairwise D-step gradients are compared after moving each onto the oracle's kink branches.",
              "Trajectory: worst per-iteration relative error of the losses and of a fixed subsample of every "
              f"tensor; divergence = first iteration above {DIVERGENCE_THRESHOLD:g}.", "",
              "| model | dtype | check | backend | against | max rel err | tolerance | passed | divergence iteration |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in report["parity"]:
        lines.append(f"| {r['model']} | {r['dtype']} | {r['check']} | {r['backend']} | {r['against']} | "
                     f"{_fmt(r['max_rel_err'])} | {_fmt(r['tolerance'])} | {_verdict(r)} | "
                     f"{_fmt(r['divergence_iteration'])} |")
    lines += _seed_code(report)
    lines += ["", "## Porting traps: the framework default left in place vs corrected", "",
              "| difference | backends | error with default | error corrected | measured on |", "|---|---|---|---|---|"]
    for t in report["traps"]:
        lines.append(f"| {t['difference']} | {', '.join(t['backends'])} | {_fmt(t['err_default'])} | "
                     f"{_fmt(t['err_corrected'])} | {t.get('measured_on', '')} |")
    lines += _mixed_precision(report)
    lines += _data_parallel(report)
    lines += ["", "## Weight conversion (float64 checkpoints, same fixed z)", "",
              "| from | to | model | samples max abs diff | samples rel err | params after 2 more iterations, rel err | passed |",
              "|---|---|---|---|---|---|---|"]
    for c in report["conversion"]:
        lines.append(f"| {c['from']} | {c['to']} | {c['model']} | {_fmt(c['max_abs_err'])} | "
                     f"{_fmt(c['samples_rel_err'])} | {_fmt(c['continued_params_rel_err'])} | {_fmt(c['passed'])} |")
    return "\n".join(lines) + "\n"


def _data_parallel(report: dict[str, Any]) -> list[str]:
    """W workers on each framework's own engine vs one worker on the full batch (common/dp_compare.py)."""
    rows = report.get("data_parallel", [])
    lines = ["", "## Data-parallel: 2 workers vs one on the full batch", "",
             "`gansuite train --workers 2` on the framework's engine (common/data_parallel.py), against the ordinary "
             "backend on the whole batch, from the same parameters, batches and noise: worst relative error after "
             f"{rows[0]['iterations'] if rows else '-'} iterations over parameters, BatchNorm running stats, Adam "
             "moments and the per-iteration losses and D outputs. Synchronised BatchNorm must agree within the "
             "tolerance (common/tolerances.py DATA_PARALLEL); per-worker BatchNorm is the trap, other maths, and "
             "passes when it misses by more than DATA_PARALLEL_TRAP_FACTOR tolerances. Where the float32 one-worker run "
             "took another branch at an activation kink than the data-parallel one, both are held to the float64 "
             "one-worker run (shown in brackets). On 2 CPU cores this is a "
             "correctness check, not a scaling measurement.", "",
             "| backend | engine | model | dtype | BatchNorm | worst rel err | worst tensor | tolerance | passed |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        errors = r.get("errors") or {}
        where = max(errors, key=errors.get) if errors else r.get("error", "")
        bn = "synchronised" if r["sync_bn"] else "per worker (trap)"
        worst = _fmt(r.get("max_rel_err"))
        if "max_rel_err_vs_float64" in r:  # the float32 one-worker run took another branch at a kink
            worst += f" (vs the float64 run: {_fmt(r['max_rel_err_vs_float64'])})"
        lines.append(f"| {r['backend']} | {r['engine']} | {r['model']} | {r['dtype']} | {bn} | "
                     f"{worst} | {where} | {_fmt(r['tolerance'])} | {_fmt(r['passed'])} |")
    return lines


def _mixed_precision(report: dict[str, Any]) -> list[str]:
    """Fast mode's bf16 mixed precision beside its float32, vs the float64 oracle (common/mixed_compare.py)."""
    rows = report.get("mixed_precision", [])
    if not rows:
        return []
    first = next((r for r in rows if "errors" in r), rows[0])
    lines = ["", "## bf16 mixed precision vs the float64 oracle", "",
             "Fast mode with `extra={'mixed_precision': 'mixed_bfloat16'}` (each framework's own mechanism: "
             "torch.autocast, Keras's dtype policy, Flax's module dtype, MXNet's AMP) beside the same fast mode in "
             f"float32, host-fed noise. One iteration of full-size {first['model']} at batch {first['batch_size']}: "
             "forwards and gradients relative to the tensor's scale (D's in units of its real+fake parts), the "
             "scalars relative to max(1, |value|), parameters after Adam in learning rates; tolerances and their "
             "derivation in common/tolerances.py MIXED_BF16_TOLERANCES. Horizon: first iteration whose trajectory "
             f"error ({first.get('horizon_model', '-')}, {first.get('iterations', '-')} iterations) passes each "
             "threshold, over the losses and every tensor's subsample ('all') and over the losses alone ('-' = never).", "",
             "| backend | precision | forward | scalars | worst gradient | params after Adam (lr) | passed | "
             "horizon all 1e-3 / 1e-2 / 1e-1 | horizon losses 1e-3 / 1e-2 / 1e-1 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "errors" not in r:
            lines.append(f"| {r['backend']} | {r['precision']} | no path: {r.get('unsupported', '')} | | | | | | |")
            continue
        c = r["checks"]
        cell = {q: f"{_fmt(c[q]['worst'])} ({c[q]['tensor']})" for q in c}
        hz = {part: " / ".join(_fmt(h["first_above"][t]) for t in h["first_above"]) for part, h in r["horizon"].items()}
        lines.append(f"| {r['backend']} | {r['precision']} | {cell['forward']} | {cell['scalar']} | {cell['grad']} | "
                     f"{cell['param_lr']} | {_fmt(all(q['passed'] for q in c.values()))} | {hz['all']} | {hz['losses']} |")
    backends = list(dict.fromkeys(r["backend"] for r in rows if r["precision"] == "bf16-mixed" and "errors" in r))
    if backends:
        names = list(next(r for r in rows if r["precision"] == "bf16-mixed" and "errors" in r)["errors"]["grad"])
        lines += ["", "Per tensor, bf16-mixed, one iteration (gradient error; parameters after Adam in lr):", "",
                  "| tensor | " + " | ".join(backends) + " |", "|---" * (1 + len(backends)) + "|"]
        by = {r["backend"]: r["errors"] for r in rows if r["precision"] == "bf16-mixed" and "errors" in r}
        for name in names:
            lines.append(f"| {name} | " + " | ".join(
                f"{_fmt(by[b]['grad'].get(name))} / {_fmt(by[b]['param_lr'].get(name))}" for b in backends) + " |")
    return lines


def _modes() -> list[str]:
    """Which mode the rows measure, and why fast mode's own random draws keep it out of them."""
    return ["", "## Modes", "",
            "Every row below is *parity* mode: each backend is fed the same z, labels, dropout masks (seed 002's "
            "CGAN's D) and VAE eps from common/, so the frameworks can agree to roundoff. *Fast* mode (each "
            "framework's fastest configuration, benchmarks/) draws a GAN's z, fake labels, the G step's fresh z and "
            "dropout masks on the device, from the framework's own RNG seeded at build "
            "(PyTorch's torch.Generator, JAX's threefry key, TensorFlow's tf.random.Generator, MXNet's "
            "mx.random): those streams differ between frameworks, so fast-mode runs agree in distribution, not "
            "step by step, and have no row here (the VAE takes its eps from the host in both modes). Fast "
            "mode's maths is held to the oracle in every backend's tests with host-fed draws instead (tests/backend_contract.py "
            "test_fast_mode_matches_oracle_with_host_noise, losses within 1e-4; tests/vae_contract.py "
            "test_fast_mode_matches_oracle)."]


def _summary(report: dict[str, Any]) -> list[str]:
    """One line per (model, dtype, check), one column per backend: the vs-oracle verdict and error."""
    rows = [r for r in report["parity"] if r["against"] == "oracle"]
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    if not backends:
        return []
    lines = ["", "## Parity summary (each backend vs the float64 oracle)", "",
             "Worst relative error per check; trajectories show the final error and the divergence iteration "
             f"(first above {DIVERGENCE_THRESHOLD:g}; '-' = never).", "",
             "| model | dtype | check | " + " | ".join(backends) + " |", "|---" * (3 + len(backends)) + "|"]
    keys = list(dict.fromkeys((r["model"], r["dtype"], r["check"]) for r in rows))
    by_key = {(r["model"], r["dtype"], r["check"], r["backend"]): r for r in rows}
    for key in sorted(keys):
        cells = []
        for b in backends:
            r = by_key.get((*key, b))
            if r is None:
                cells.append("n/a")
            elif r["check"] == "trajectory":
                cells.append(f"{r['final_rel_err']:.1e} (div. {_fmt(r['divergence_iteration'])})")
            else:
                verdict = {"yes": "pass", "**NO**": "**FAIL**"}.get(_verdict(r), _verdict(r))
                flips = f", {len(r['kink_flips'])} kink flip" + ("s" if len(r["kink_flips"]) != 1 else "") \
                    if r.get("kink_flips") else ""
                cells.append(f"{verdict} {r['max_rel_err']:.1e}{flips}")
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
    return lines


def _seed_code(report: dict[str, Any]) -> list[str]:
    lines = ["", "## Seed code vs preset", "",
             "Each seed document's own code, transcribed in its framework and API (benchmarks/peers), driven from "
             "the canonical parameters, batches and noise, against every backend's run of the preset that "
             "reproduces it. float64; worst relative error over the trajectory of the losses and of a fixed "
             f"subsample of every tensor; tolerance {SEED_CODE:g} (common/tolerances.py).", "",
             "| seed system | its code runs on | preset | backend | iterations | losses | parameters | passed |",
             "|---|---|---|---|---|---|---|---|"]
    gaps: dict[str, str] = {}
    for r in report.get("seed_code", []):
        passed = _fmt(r["passed"]) if r["passed"] or not r.get("known_gap") else "no: known gap (below)"
        lines.append(f"| {r['document']} | {r['seed_framework']} | {r['preset']} | {r['backend']} | "
                     f"{r['iterations']} | {_fmt(r['losses_rel_err'])} | {_fmt(r['params_rel_err'])} | {passed} |")
        if r.get("known_gap"):
            gaps[r["document"]] = r["known_gap"]
    if not report.get("seed_code"):
        lines.append("| (no seed transcription ran in this comparison) | | | | | | | |")
    if gaps:
        lines += ["", "Known gaps: the seed's own code computes differently from its preset, measured and explained "
                  "(over a long trajectory the GAN's dynamics amplify any difference):", ""]
        lines += [f"* **{doc}**: {why}." for doc, why in gaps.items()]
    return lines


def _kinks(report: dict[str, Any]) -> list[str]:
    flips = [(r, f) for r in report["parity"] if r.get("kink_flips") for f in r["kink_flips"]]
    lines = ["", "## Activation kinks: where the oracle followed a backend's branch", "",
             "A float32 backend may round an activation input that lies closer to 0 than float32 can resolve "
             "to the other side of the kink; its backward then uses the other slope for that element. When a "
             "gradient misses its tolerance, the oracle follows the backend's branch at such inputs if, and only "
             "if, that explains the difference (common/kinks.py)."]
    if not flips:
        return lines + ["", "No branch had to be followed in this run."]
    lines += ["", "| model | dtype | backend | near-kink inputs | branch followed |", "|---|---|---|---|---|"]
    for r, f in flips:
        near = ", ".join(f"{k}: {v}" for k, v in r["near_kinks"].items())
        lines.append(f"| {r['model']} | {r['dtype']} | {r['backend']} | {near} | {f} |")
    return lines
