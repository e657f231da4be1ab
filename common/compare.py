"""The cross-backend comparison (the main job): one subprocess per backend, each in its own environment.

``drive`` runs the phases of common/experiments.py in every backend's interpreter (``gansuite
compare-worker``), then common/report.py writes report.json / report.md / plots.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .errors import GanSuiteError
from .experiments import MIXED_REFERENCES
from .registry import backend_python
from .report import build_report, write_report


#: Backends' run phases: the oracle's first, since it leaves the float64 side of every backend's
#: mixed-precision rows (common/experiments.MIXED_REFERENCES), then slowest first, so that two at a
#: time finish together (CI, 2026-12-07, seconds: tensorflow 898, jax 703, mxnet 445, torch 301,
#: oracle 65).
_RUN_ORDER = ("oracle", "tensorflow", "jax", "mxnet", "torch")


def compare_jobs() -> int:
    """How many backend processes run at once: GANSUITE_COMPARE_JOBS, default 2.

    Why 2 on a 2-core machine: much of a run is single-threaded (tf.function tracing, XLA
    compilation, Python dispatch of small models), so two processes overlap it (CI's stage
    went from 1356 s one at a time). Each process computes exactly what it computes alone:
    the thread count of every framework is unchanged, only the wall clock is shared."""
    raw = os.environ.get("GANSUITE_COMPARE_JOBS", "2")
    if not raw.isdigit() or int(raw) < 1:
        raise GanSuiteError(f"GANSUITE_COMPARE_JOBS: must be a positive integer, got {raw!r}")
    return int(raw)


def drive(out: Path, backends: list[str], quick: bool = False, echo=print, data_parallel: bool = True) -> dict[str, Any]:
    """Run every phase of every backend, each in its own interpreter, then write the report.

    A phase runs in every backend (compare_jobs() at a time) before the next phase starts:
    convert reads every backend's run artifacts. Through tox the interpreters are the ``cmp-<name>`` envs (``tox -m compare``), or the test
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

    lock = threading.Lock()

    def worker(name: str, phase: str) -> None:
        cmd = [pythons[name], "-m", "gansuite.common.cli", "compare-worker", "--backend", name, "--phase", phase,
               "--out", str(out)] + (["--quick"] if quick else []) + ([] if data_parallel else ["--no-data-parallel"])
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        with lock:
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                availability[name].update(available=False, reason=f"{phase} phase failed: {tail}")
                pythons.pop(name)
                echo(f"  {name}: {phase} FAILED ({tail})")
            else:
                echo(f"  {name}: {phase} done in {time.perf_counter() - t0:.0f} s")

    # The backends' run phases read it once the oracle's has written it: never a previous run's.
    (out / "artifacts" / "oracle" / MIXED_REFERENCES).unlink(missing_ok=True)
    jobs = compare_jobs()
    for phase in ("run", "convert"):
        echo(f"phase {phase} ({jobs} at a time)")
        names = [n for n in pythons if not (phase == "convert" and n == "oracle")]
        names.sort(key=lambda n: _RUN_ORDER.index(n) if n in _RUN_ORDER else -1)
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(lambda n: worker(n, phase), names))
    for name in pythons:
        meta = out / "artifacts" / name / "meta.json"
        if meta.exists():
            versions = json.loads(meta.read_text())["versions"]
            availability[name]["version"] = ", ".join(f"{k} {v}" for k, v in versions.items())
    report = build_report(out, availability)
    write_report(out, report)
    return report
