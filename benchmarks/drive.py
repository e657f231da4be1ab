"""Run the benchmark for several backends, each in its own environment, then the summary.

    python -m gansuite.benchmarks.drive --backends torch,jax,tensorflow,mxnet --out results/bench [--quick]
        [--models ...] [--modes ...] [--dtypes ...] [--device cpu|cuda] [--readme README.md]

``--readme`` rewrites that file's generated block (benchmarks/targets.py: issue 16's targets, from
every row under ``--out``), as ``python3 -m tox -m bench`` does for this repository's README.

Each backend's interpreter is its tox env when run through tox (``GANSUITE_TOX_WORKDIR``
set: ``bench-<name>``, else ``cmp-<name>``, else ``<name>``), otherwise this interpreter
if the framework imports here. TensorFlow and MXNet read their oneDNN switch once per process,
and parity needs it off (their tox envs set it so): their parity rows run in one process as the
env has it, their fast and peer rows in another with oneDNN ON (:data:`FAST_ENV`), each
framework's own default and its fastest CPU configuration; each row records the value. A backend whose env is missing, or whose run exits with
status 2, is reported and skipped; status 1 (some configs failed) keeps its rows.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from gansuite.common.errors import ArgumentParser, GanSuiteError, run_main
from gansuite.common.registry import BACKENDS, FAST_ENV, backend_python

from .summary import write_summary


#: The non-parity (fast, peer) benchmark processes run with common/registry.py's FAST_ENV (oneDNN on,
#: PyTorch's TCMalloc, JAX's YNNPACK dot fusions).
DEFAULT_MODES = "parity,fast,peer"  # benchmarks/run.py's default
#: The driver's default adds bf16-mixed to run.py's float32: one run holds every row issue 16's targets
#: compare (bf16 is fast-mode only; the harness skips it elsewhere, with its reason).
DEFAULT_DTYPES = "float32,bf16-mixed"


def processes(name: str, extra_args: list[str]) -> list[tuple[list[str], dict[str, str]]]:
    """(arguments, environment additions) of each benchmark process of backend ``name``: one, or for
    a backend in FAST_ENV its parity modes and its other modes apart."""
    if name not in FAST_ENV:
        return [(extra_args, {})]
    args = list(extra_args)
    modes = DEFAULT_MODES
    if "--modes" in args:
        i = args.index("--modes")
        modes = args[i + 1]
        del args[i:i + 2]
    chosen = [m.strip() for m in modes.split(",") if m.strip()]
    parity, other = [m for m in chosen if m == "parity"], [m for m in chosen if m != "parity"]
    return [([*args, "--modes", ",".join(group)], env) for group, env in ((parity, {}), (other, FAST_ENV[name]))
            if group]


def drive(out: Path, backends: list[str], extra_args: list[str], echo: Callable[[str], None] = print,
          readme: Path | None = None) -> dict[str, str]:
    """Benchmark each backend in its interpreter(s); return backend -> outcome; write the summary
    (and ``readme``'s generated block)."""
    outcomes: dict[str, str] = {}
    for name in backends:
        python, reason = backend_python(name, ["bench", "compare", "test"], "`python3 -m tox -m bench`")
        if python is None:
            outcomes[name] = f"unavailable: {reason}"
            echo(f"{name}: {outcomes[name]}")
            continue
        results = [_run_one(python, name, out, args, env, echo) for args, env in processes(name, extra_args)]
        outcomes[name] = next((r for r in results if not r.startswith("done in")), results[-1])
        echo(f"{name}: {outcomes[name]}")
    if any(o.startswith("done") for o in outcomes.values()) or (out.is_dir() and any(out.glob("*/*.json"))):
        write_summary(out, readme, echo)
    return outcomes


def _run_one(python: str, name: str, out: Path, extra_args: list[str], env: dict[str, str],
             echo: Callable[[str], None]) -> str:
    """One benchmark process; its outcome line."""
    cmd = [python, "-m", "gansuite.benchmarks.run", "--backend", name, "--out", str(out), *extra_args]
    echo(f"{name}: {' '.join(f'{k}={v}' for k, v in env.items())}{' ' if env else ''}{' '.join(cmd[1:])}")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **env})
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
    return {0: f"done in {took}", 1: f"done in {took}, some configs failed"}.get(code, f"FAILED (exit {code}): {last}")


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m gansuite.benchmarks.drive", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="torch,jax,tensorflow,mxnet")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--readme", type=Path, default=None, help="a README whose generated block to rewrite")
    parser.add_argument("--dtypes", default=DEFAULT_DTYPES)
    for opt in ("--models", "--modes", "--device", "--batch-sizes"):
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
        outcomes = drive(args.out, names, extra, echo=lambda line: print(line, flush=True), readme=args.readme)
        return 0 if all(o.startswith("done") for o in outcomes.values()) else 1

    return run_main(body)

if __name__ == "__main__":
    sys.exit(main())
