"""`gansuite compare` machinery on this env's backend: artifacts, conversion, report schema."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from gansuite.common.experiments import convert_phase, run_phase
from gansuite.common.trajectory import divergence_iteration, trajectory_error
from gansuite.common.report import build_report, write_report

_declared = [b for b in os.environ.get("GANSUITE_BACKENDS", "").split(",") if b.strip()]
BACKEND = _declared[0] if _declared else None


def test_divergence_horizon_and_error_curve():
    ref = {"scalars": np.ones((4, 5)), "params": np.ones((4, 3)), "tensor_sizes": np.array([2, 1])}
    traj = {"scalars": np.ones((4, 5)), "params": np.array([[1, 1, 1], [1, 1.0001, 1], [1, 1, 1.01], [1, 1, np.nan]]),
            "tensor_sizes": np.array([2, 1])}
    err = trajectory_error(traj, ref)
    np.testing.assert_allclose(err[:3], [0, 1e-4, 1e-2], rtol=1e-6, atol=1e-12)
    assert divergence_iteration(err, 1e-3) == 2
    assert divergence_iteration(err[:2], 1e-3) is None
    assert divergence_iteration(np.array([0.0, np.nan]), 1e-3) == 1  # NaN is divergence


def test_the_oracles_mixed_precision_side_is_read_back_as_it_was_computed(tmp_path, monkeypatch):
    """What the oracle's run phase leaves for the backends (common/mixed_compare.save_references) is
    what they would compute themselves; without the file they compute it."""
    from gansuite.common import mixed_compare

    rng = np.random.default_rng(0)
    computed = ({"G(z)": rng.normal(size=(2, 3)), "D(x)": rng.normal(size=2),
                 "after": {"G.0.weight": rng.normal(size=(3, 3)), "D.0.bias": rng.normal(size=1)}},
                {"scalars": rng.normal(size=(4, 5)), "params": rng.normal(size=(4, 6)),
                 "tensor_sizes": np.array([2, 4]), "tensor_names": np.array(["G.0.weight", "D.0.bias"])})
    calls = []
    monkeypatch.setattr(mixed_compare, "references", lambda: calls.append(1) or computed)
    path = tmp_path / "references.npz"
    mixed_compare.save_references(path)
    assert [p.name for p in tmp_path.iterdir()] == ["references.npz"]  # no temporary file left
    reference, trajectory = mixed_compare.load_references(path)
    assert reference.keys() == computed[0].keys() and trajectory.keys() == computed[1].keys()
    assert reference["after"].keys() == computed[0]["after"].keys()
    for got, want in ((reference["after"], computed[0]["after"]), (trajectory, computed[1]),
                      ({k: v for k, v in reference.items() if k != "after"},
                       {k: v for k, v in computed[0].items() if k != "after"})):
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert len(calls) == 1
    mixed_compare.load_references(tmp_path / "missing.npz"), mixed_compare.load_references(None)
    assert len(calls) == 3


@pytest.mark.skipif(BACKEND is None, reason="needs a framework backend (runs in each backend's tox env)")
def test_compare_report_on_this_backend(tmp_path):
    run_phase("oracle", tmp_path, models=("gaussian",), quick=True)
    run_phase(BACKEND, tmp_path, models=("gaussian",), quick=True, data_parallel=False)  # tests/test_backend_*_dp.py
    convert_phase(BACKEND, tmp_path)
    availability = {"oracle": {"available": True, "version": "x", "reason": None},
                    BACKEND: {"available": True, "version": "y", "reason": None},
                    "nonexistent": {"available": False, "version": None, "reason": "not built"}}
    report = build_report(tmp_path, availability)
    write_report(tmp_path, report)
    data = json.loads((tmp_path / "report.json").read_text())
    assert set(data) == {"backends", "parity", "traps", "conversion", "seed_code", "data_parallel", "mixed_precision"}
    assert data["mixed_precision"] == []  # measured on the full-size dcgan only (common/mixed_compare.py)
    assert data["backends"]["nonexistent"]["reason"] == "not built"
    keys = {"model", "dtype", "check", "backend", "against", "max_abs_err", "max_rel_err", "tolerance", "passed",
            "divergence_iteration"}
    checks = {(r["dtype"], r["check"]) for r in data["parity"]}
    assert {("float32", c) for c in ("forward_G", "forward_D", "one_step", "trajectory")} <= checks
    for r in data["parity"]:
        assert keys <= set(r)
        if r["check"] != "trajectory":
            assert r["passed"], r  # the gaussian GAN is within tolerance on every backend
    fp64 = [r for r in data["parity"] if r["check"] == "trajectory" and r["dtype"] == "float64"]
    assert fp64 and all(r["divergence_iteration"] is None for r in fp64)
    conv = [c for c in data["conversion"] if c["from"] == "oracle" and c["to"] == BACKEND]
    assert {c["model"] for c in conv} == {"gaussian", "dcgan-tiny"} and all(c["passed"] for c in conv)
    for t in data["traps"]:
        assert {"difference", "backends", "err_default", "err_corrected"} <= set(t)
        assert t["err_default"] > 10 * t["err_corrected"], t  # each trap matters, and the fix fixes it
    md = (tmp_path / "report.md").read_text()
    assert "| gaussian | float32 | forward_G |" in md and (tmp_path / "trajectory-gaussian-float32.png").exists()


@pytest.mark.skipif(BACKEND is None, reason="needs a framework backend (runs in each backend's tox env)")
def test_compare_report_holds_the_vae_on_this_backend(tmp_path):
    """Seed 002's VAE (common/vae_compare.py) in the report: forward and one iteration vs the oracle
    within tolerance, float64 trajectory never diverging, and on torch the seed's own code row."""
    run_phase("oracle", tmp_path, models=("vae",), quick=True)
    run_phase(BACKEND, tmp_path, models=("vae",), quick=True, data_parallel=False)
    availability = {name: {"available": True, "version": "x", "reason": None} for name in ("oracle", BACKEND)}
    report = build_report(tmp_path, availability)
    rows = {(r["dtype"], r["check"]): r for r in report["parity"] if r["model"] == "vae"}
    assert set(rows) == {(d, c) for d in ("float32", "float64") for c in ("forward", "one_step", "trajectory")}
    for (dtype, check), r in rows.items():
        assert r["backend"] == BACKEND and r["against"] == "oracle"
        assert r["passed"], r
    assert rows[("float64", "trajectory")]["final_rel_err"] < 1e-10, rows[("float64", "trajectory")]
    seed_rows = [r for r in report["seed_code"] if r["system"] == "002-vae-torch"]
    if BACKEND == "torch":
        assert len(seed_rows) == 1 and seed_rows[0]["passed"] and seed_rows[0]["iterations"] == 20, seed_rows
