"""CI's cross-backend stage: the comparison report of every backend CI installs, asserted.

The tox env ``crossbackend`` runs after the per-backend envs, drives them (``gansuite compare
--quick`` with GANSUITE_TOX_ENVS=test), then runs this file on the report.json it wrote
(GANSUITE_CROSSBACKEND_REPORT). Every backend listed in GANSUITE_CROSSBACKEND_EXPECT must be in
it: a missing one fails here, with the reason the report gives, and is never skipped.
Tolerances are the report's own (common/tolerances.py); nothing is loosened here.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest

from gansuite.common.experiments import COMPARE_MODELS as MODELS
from gansuite.common.protocol import DTYPES, NO_BF16_KERNELS
from gansuite.common.seeds import SEED_SYSTEMS
from gansuite.common.tolerances import ILL_CONDITIONED

ORACLE_CHECKS = ("forward_G", "forward_D", "one_step")
#: Seed 002's VAE has one forward (x_reconst, mu, log_var: common/vae_compare.py), not G's and D's.
VAE_CHECKS = ("forward", "one_step")


def _checks(model: str) -> tuple[str, ...]:
    return VAE_CHECKS if model == "vae" else ORACLE_CHECKS


@pytest.fixture(scope="module")
def report() -> dict:
    path = Path(os.environ["GANSUITE_CROSSBACKEND_REPORT"])
    assert path.exists(), f"{path} was not written: the `gansuite compare` command of this tox env failed"
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def expected() -> list[str]:
    names = [b.strip() for b in os.environ.get("GANSUITE_CROSSBACKEND_EXPECT", "").split(",") if b.strip()]
    assert names, "GANSUITE_CROSSBACKEND_EXPECT lists no backend"
    return names


def _rows(report, **match) -> list[dict]:
    return [r for r in report["parity"] if all(r.get(k) == v for k, v in match.items())]


def test_every_installed_backend_is_in_the_report(report, expected):
    for name in ["oracle", *expected]:
        info = report["backends"].get(name)
        assert info is not None, f"{name}: not in the report"
        assert info["available"], f"{name}: unavailable: {info['reason']}"


@pytest.mark.parametrize("model,dtype,check", [(m, d, c) for m, d in itertools.product(MODELS, DTYPES)
                                               for c in _checks(m)])
def test_every_backend_matches_the_oracle(report, expected, model, dtype, check):
    for name in expected:
        rows = _rows(report, model=model, dtype=dtype, check=check, backend=name, against="oracle")
        assert len(rows) == 1, f"{name}: {len(rows)} rows for {model} {dtype} {check} vs oracle"
        r = rows[0]
        bound = ILL_CONDITIONED.get((model, dtype)) if check == "one_step" else None
        if bound is not None and not r["passed"]:  # measured cause in common/tolerances.py
            assert r["max_rel_err"] <= bound, f"{name} {model} {dtype} {check}: {r['max_rel_err']:.3g} > {bound:g}"
            continue
        assert r["passed"], (f"{name} {model} {dtype} {check}: {r['worst']} rel err {r['max_rel_err']:.3g} > "
                             f"{r['tolerance']:.0e}")


@pytest.mark.parametrize("model,dtype", list(itertools.product(MODELS, DTYPES)))
def test_every_pair_of_backends_agrees(report, expected, model, dtype):
    for a, b in itertools.combinations(expected, 2):
        for check in _checks(model):
            rows = _rows(report, model=model, dtype=dtype, check=check, backend=a, against=b)
            assert len(rows) == 1, f"{a} vs {b}: {len(rows)} rows for {model} {dtype} {check}"
            r = rows[0]
            bound = r.get("ill_conditioned_bound") if check == "one_step" else None
            if bound is not None and not r["passed"]:  # as vs the oracle: common/tolerances.ILL_CONDITIONED
                assert r["max_rel_err"] <= bound, f"{a} vs {b} {model} {dtype} {check}: {r['max_rel_err']:.3g} > {bound:g}"
                continue
            assert r["passed"], f"{a} vs {b} {model} {dtype} {check}: rel err {r['max_rel_err']:.3g}"


@pytest.mark.parametrize("model", MODELS)
def test_float64_trajectories_never_diverge(report, expected, model):
    """float64 keeps every backend within 1e-3 of the oracle (and of each other) for the whole
    trajectory; float32 trajectories are chaotic and only reported (their divergence iteration)."""
    for name in expected:
        for against in ["oracle", *[b for b in expected if b != name]]:
            rows = _rows(report, model=model, dtype="float64", check="trajectory", backend=name, against=against)
            for r in rows:
                assert r["passed"], f"{name} vs {against} {model} float64: diverged at {r['divergence_iteration']}"
        assert _rows(report, model=model, dtype="float64", check="trajectory", backend=name, against="oracle")
        assert _rows(report, model=model, dtype="float32", check="trajectory", backend=name, against="oracle")


def test_checkpoints_convert_between_every_pair(report, expected):
    got = {(c["from"], c["to"], c["model"]): c for c in report["conversion"]}
    for src, dst in itertools.permutations(["oracle", *expected], 2):
        if dst == "oracle":
            continue
        for model in ("gaussian", "dcgan-tiny"):
            c = got.get((src, dst, model))
            assert c is not None, f"no conversion {src} -> {dst} ({model})"
            assert c["passed"], f"{src} -> {dst} {model}: samples {c['samples_rel_err']:.3g}, " \
                                f"continued {c['continued_params_rel_err']:.3g}"


def test_every_trap_matters_and_its_fix_works(report, expected):
    traps = report["traps"]
    assert {b for t in traps for b in t["backends"]} == set(expected)
    for t in traps:
        assert t["err_default"] > 10 * t["err_corrected"], t


@pytest.mark.parametrize("system", SEED_SYSTEMS, ids=lambda s: s.key)
def test_seed_code_matches_its_preset_on_every_backend(report, expected, system):
    """The seed document's own code (benchmarks/peers) against every backend's run of its preset,
    float64, at the report's tolerance (common/tolerances.py: SEED_CODE)."""
    if system.framework not in expected:
        pytest.fail(f"{system.key}: its code runs on {system.framework}, which this CI stage did not install")
    rows = {r["backend"]: r for r in report.get("seed_code", []) if r["system"] == system.key}
    for name in expected:
        assert name in rows, f"{system.key}: no seed-code row for {name} (did {system.framework}'s run phase fail?)"
        r = rows[name]
        if system.known_gap:  # measured and modelled in tests/test_backend_<framework>.py; here: it ran
            assert r["known_gap"] == system.known_gap and r["iterations"] == system.iterations, r
            continue
        assert r["passed"], (f"{system.document} vs {system.preset} on {name}: losses {r['losses_rel_err']:.3g}, "
                             f"params {r['params_rel_err']:.3g} > {r['tolerance']:.0e}")


def test_bf16_mixed_precision_is_characterised_on_every_backend(report, expected):
    """Each backend's fast-mode bf16-mixed iteration is within MIXED_BF16_TOLERANCES of the float64
    oracle for every quantity (common/tolerances.py derives them), its float32 fast mode is too, and
    bf16 really ran: its forward error is at least 100x float32's (bf16 keeps 8 bits to float32's 24).
    Both have a divergence horizon measured over the whole run. One exception, stated in the row: a
    device without bf16 kernels for a framework (MXNet's oneDNN on a CPU without AVX-512) has its bf16
    row refused in one line with common/protocol.NO_BF16_KERNELS, and no other reason passes."""
    rows = {(r["backend"], r["precision"]): r for r in report.get("mixed_precision", [])}
    for name in expected:
        for precision in ("float32", "bf16-mixed"):
            r = rows.get((name, precision))
            assert r is not None, f"{name}: no {precision} row in the mixed-precision section"
            if precision == "bf16-mixed" and NO_BF16_KERNELS in r.get("unsupported", ""):
                continue
            assert "errors" in r, f"{name} {precision}: no path: {r.get('unsupported')}"
            for quantity, c in r["checks"].items():
                assert c["passed"], f"{name} {precision} {quantity}: {c['tensor']} {c['worst']:.3g} > {c['tolerance']:g}"
            assert len(r["horizon"]["all"]["error"]) == r["iterations"], r["horizon"]
        if "errors" not in rows[(name, "bf16-mixed")]:
            continue
        f32, bf16 = (rows[(name, p)]["checks"]["forward"]["worst"] for p in ("float32", "bf16-mixed"))
        assert bf16 >= 100 * f32, f"{name}: bf16-mixed forward error {bf16:.3g} vs float32 {f32:.3g}: did bf16 run?"

