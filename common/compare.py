"""The cross-backend comparison (the main job): one subprocess per backend, each in its own environment.

``drive`` runs the phases of common/experiments.py in every backend's interpreter (``gansuite
compare-worker``), then common/report.py writes report.json / report.md / plots.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from .errors import GanSuiteError
from .registry import backend_python
from .report import build_report, write_report


def drive(out: Path, backends: list[str], quick: bool = False, echo=print) -> dict[str, Any]:
    """Run every phase of every backend, each in its own interpreter, then write the report.

    Through tox the interpreters are the ``cmp-<name>`` envs (``tox -m compare``), or the test
    envs ``<name>`` when GANSUITE_TOX_ENVS=test (CI's cross-backend stage reuses those)."""
    env_kind = os.environ.get("GANSUITE_TOX_ENVS", "compare")
    if env_kind not in ("compare", "test"):
        raise GanSuiteError(f"GANSUITE_TOX_ENVS: must be 'compare' or 'test', got {env_kind!r}")
    hint = "`python3 -m tox -m compare`" if env_kind == "compare" else "`python3 -m tox` (the test envs)"

    out.mkdir(parents=True, exist_ok=True)
    availability: dict[str, dict[str, Any]] = {}
    pythons: dict[str, str] = {}
    for name in ["oracle", *backends]:
        py, reason = backend_python(name, [env_kind], hint)
        availability[name] = {"available": py is not None, "version": None, "reason": reason}
        if py is not None:
            pythons[name] = py

    def worker(name: str, phase: str) -> None:
        cmd = [pythons[name], "-m", "gansuite.common.cli", "compare-worker", "--backend", name, "--phase", phase,
               "--out", str(out)] + (["--quick"] if quick else [])
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            availability[name].update(available=False, reason=f"{phase} phase failed: {tail}")
            pythons.pop(name)
            echo(f"  {name}: {phase} FAILED ({tail})")
        else:
            echo(f"  {name}: {phase} done in {time.perf_counter() - t0:.0f} s")

    for phase in ("run", "convert"):
        echo(f"phase {phase}")
        for name in list(pythons):
            if phase == "convert" and name == "oracle":
                continue
            worker(name, phase)
    for name in pythons:
        meta = out / "artifacts" / name / "meta.json"
        if meta.exists():
            versions = json.loads(meta.read_text())["versions"]
            availability[name]["version"] = ", ".join(f"{k} {v}" for k, v in versions.items())
    report = build_report(out, availability)
    write_report(out, report)
    return report
