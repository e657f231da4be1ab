"""Data-parallel scaling rows (issue 17): W workers on each framework's own engine against one.

    python -m gansuite.benchmarks.scaling --backends torch,jax,tensorflow,mxnet --out results/bench-scaling
        [--model dcgan-tiny] [--workers 1,2] [--iterations 5,45]

Each row is ``gansuite train --workers W`` as a user runs it (common/data_parallel.py: torchrun and
DDP, jax.sharding, MirroredStrategy, MXNet contexts and a kvstore), in the backend's own interpreter
(its tox env when ``GANSUITE_TOX_WORKDIR`` is set, as benchmarks/drive.py finds it). The steady-state
time per iteration is the difference of two runs of different lengths,
``(seconds(N_long) - seconds(N_short)) / (N_long - N_short)``, each ``seconds`` being the training
loop's wall time from summary.json. The loop reads every iteration's losses on the host, which
synchronises the device. The difference removes what both runs share: process start, build,
compilation and the first iterations' warm-up. The global batch is the preset's, split over W.

Caveat, written into every table: a 2-core CPU is no scaling testbed. Two workers share the two
cores that one worker already uses (intra-op threads), so W = 2 measures the engine's overhead, not
its speed-up.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Sequence

from gansuite.common.data_parallel import ENGINES
from gansuite.common.dp_compare import cli_train
from gansuite.common.errors import ArgumentParser, GanSuiteError, run_main
from gansuite.common.registry import backend_python

CAVEAT = ("2 CPU cores are no scaling testbed: W workers share the cores one worker already uses, so "
          "these rows measure each engine's overhead, not a speed-up")
DEFAULT_MODEL = "dcgan-tiny"
DEFAULT_WORKERS = (1, 2)
DEFAULT_ITERATIONS = (5, 45)


def steady_seconds_per_iteration(short: tuple[int, float], long: tuple[int, float]) -> float:
    """(iterations, seconds) of a short and a long run -> the seconds of one steady-state iteration."""
    (n_short, s_short), (n_long, s_long) = short, long
    if n_long <= n_short:
        raise GanSuiteError(f"iterations: the long run must be longer than the short one, got {n_short},{n_long}")
    return (s_long - s_short) / (n_long - n_short)


def train_seconds(python: str, backend: str, model: str, workers: int, iterations: int, out: Path) -> float:
    """Run ``gansuite train`` in ``python`` (common/dp_compare.cli_train, the comparison's command
    line) and return summary.json's ``seconds``."""
    res = cli_train(backend, model, out, workers=workers, iterations=iterations, dtype="float32",
                    checkpoint_every=iterations, python=python, timeout=1800)
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise GanSuiteError(f"{backend} --workers {workers}: {last}")
    return float(json.loads((out / "summary.json").read_text())["seconds"])


def scaling_rows(backend: str, python: str, model: str, workers: Sequence[int],
                 iterations: tuple[int, int]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for w in workers:
            runs = {n: train_seconds(python, backend, model, w, n, Path(tmp) / f"w{w}-n{n}") for n in iterations}
            per_it = steady_seconds_per_iteration(*((n, runs[n]) for n in iterations))
            rows.append({"backend": backend, "engine": ENGINES[backend] if w > 1 else "one worker",
                         "model": model, "dtype": "float32", "mode": "parity", "workers": w,
                         "seconds_per_iteration": per_it, "runs_seconds": {str(n): s for n, s in runs.items()}})
    one = next((r["seconds_per_iteration"] for r in rows if r["workers"] == 1), None)
    for r in rows:
        r["speedup_vs_one_worker"] = one / r["seconds_per_iteration"] if one and r["seconds_per_iteration"] > 0 else None
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["# Data-parallel scaling (gansuite train --workers W)", "", f"Caveat: {CAVEAT}.", "",
             "Steady-state seconds per iteration = (seconds of the long run - seconds of the short run) / "
             "(difference in iterations), from each run's summary.json; float32, parity mode, the preset's "
             "global batch split over W.", "",
             "| backend | model | workers | engine | ms / iteration | vs one worker |", "|---|---|---:|---|---:|---:|"]
    for r in rows:
        speed = f"{r['speedup_vs_one_worker']:.2f}x" if r.get("speedup_vs_one_worker") else "-"
        lines.append(f"| {r['backend']} | {r['model']} | {r['workers']} | {r['engine']} | "
                     f"{1e3 * r['seconds_per_iteration']:.1f} | {speed} |")
    return "\n".join(lines) + "\n"


def _ints(text: str, field: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        raise GanSuiteError(f"{field}: comma-separated positive integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise GanSuiteError(f"{field}: comma-separated positive integers, got {text!r}")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m gansuite.benchmarks.scaling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(ENGINES))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--workers", default=",".join(map(str, DEFAULT_WORKERS)))
    parser.add_argument("--iterations", default=",".join(map(str, DEFAULT_ITERATIONS)))

    def body() -> int:
        args = parser.parse_args(argv)
        backends = [b for b in args.backends.split(",") if b]
        unknown = [b for b in backends if b not in ENGINES]
        if unknown:
            raise GanSuiteError(f"backends: {unknown[0]!r} has no data-parallel engine; allowed: {', '.join(ENGINES)}")
        workers = _ints(args.workers, "workers")
        iterations = _ints(args.iterations, "iterations")
        if len(iterations) != 2:
            raise GanSuiteError(f"iterations: two lengths, short,long; got {args.iterations!r}")
        rows: list[dict[str, Any]] = []
        for name in backends:
            python, why = backend_python(name, ("test", "compare"), "python3 -m tox -e " + name)
            if python is None:
                raise GanSuiteError(f"{name}: {why}")
            new = scaling_rows(name, python, args.model, workers, (iterations[0], iterations[1]))
            for r in new:
                print(f"  {name} W={r['workers']}: {1e3 * r['seconds_per_iteration']:.1f} ms/iteration", flush=True)
            rows += new
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "scaling.json").write_text(json.dumps({"caveat": CAVEAT, "rows": rows}, indent=1))
        (args.out / "scaling.md").write_text(markdown(rows))
        print(f"wrote {args.out / 'scaling.md'}")
        return 0

    return run_main(body)


if __name__ == "__main__":
    raise SystemExit(main())
