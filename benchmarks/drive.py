"""Run the benchmark for several backends, each in its own environment, then the summary.

    python -m gansuite.benchmarks.drive --backends torch,jax,tensorflow,mxnet --out results/bench [--quick]
        [--models ...] [--modes ...] [--dtypes ...] [--device cpu|cuda]

Each backend's interpreter is its tox env when run through tox (``GANSUITE_TOX_WORKDIR``
set: ``bench-<name>``, else ``cmp-<name>``, else ``<name>``), otherwise this interpreter
if the framework imports here. A backend whose env is missing, or whose run exits with
status 2, is reported and skipped; status 1 (some configs failed) keeps its rows.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from gansuite.common.errors import ArgumentParser, GanSuiteError, run_main
from gansuite.common.registry import BACKENDS, backend_python

from .summary import build_summary


def drive(out: Path, backends: list[str], extra_args: list[str], echo: Callable[[str], None] = print) -> dict[str, str]:
    """Benchmark each backend in its interpreter; return backend -> outcome; write the summary."""
    outcomes: dict[str, str] = {}
    for name in backends:
        python, reason = backend_python(name, ["bench", "compare", "test"], "`python3 -m tox -m bench`")
        if python is None:
            outcomes[name] = f"unavailable: {reason}"
            echo(f"{name}: {outcomes[name]}")
            continue
        cmd = [python, "-m", "gansuite.benchmarks.run", "--backend", name, "--out", str(out), *extra_args]
        echo(f"{name}: {' '.join(cmd[1:])}")
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        last = ""
        assert proc.stdout is not None
        for line in proc.stdout:  # stream: a full run takes minutes per backend
            line = line.rstrip()
            if line.startswith(("  ", "skip ", "wrote ", "benchmarking ", "error: ")):
                echo(f"  [{name}] {line.strip()}")
            if line.strip():
                last = line.strip()
        code = proc.wait()
        took = f"{time.perf_counter() - t0:.0f} s"
        outcomes[name] = {0: f"done in {took}", 1: f"done in {took}, some configs failed"}.get(
            code, f"FAILED (exit {code}): {last}")
        echo(f"{name}: {outcomes[name]}")
    if any(o.startswith("done") for o in outcomes.values()) or (out.is_dir() and any(out.glob("*/*.json"))):
        echo(f"wrote {build_summary(out)}")
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m gansuite.benchmarks.drive", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="torch,jax,tensorflow,mxnet")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("--quick", action="store_true")
    for opt in ("--models", "--modes", "--dtypes", "--device", "--batch-sizes"):
        parser.add_argument(opt, default=None)
    def body() -> int:
        args = parser.parse_args(argv)
        names = [b.strip() for b in args.backends.split(",") if b.strip()]
        for name in names:
            if name not in BACKENDS:
                raise GanSuiteError(f"backends: unknown backend {name!r}; allowed: {', '.join(BACKENDS)}")
        extra = ["--quick"] if args.quick else []
        for opt in ("models", "modes", "dtypes", "device", "batch_sizes"):
            value = getattr(args, opt)
            if value is not None:
                extra += [f"--{opt.replace('_', '-')}", value]
        outcomes = drive(args.out, names, extra, echo=lambda line: print(line, flush=True))
        return 0 if all(o.startswith("done") for o in outcomes.values()) else 1

    return run_main(body)

if __name__ == "__main__":
    sys.exit(main())
