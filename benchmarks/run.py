"""Benchmark ONE backend in the current environment and write its JSON rows.

    python -m gansuite.benchmarks.run --backend torch --out results/bench \\
        [--models gaussian,dcgan,vae] [--modes parity,fast,peer] [--dtypes float32] \\
        [--device cpu|cuda] [--batch-sizes 8,64] [--quick]

Each backend lives in its own virtualenv, so one process benchmarks one backend; the
driver (benchmarks/drive.py) runs one such process per backend's env, then the summary.
``--modes peer`` picks the seed loop that reproduces each model in this framework
(peer-d2l for the Gaussian GAN, peer-tutorial for the DCGAN, peer-seed002 for seed 002's VAE:
``--models vae`` or ``vae-tiny``, any preset of benchmarks/families.py). Bad input is one line on
stderr and exit status 2; a config that raises is reported, recorded in
``<backend>.failures.json`` and makes the exit status 1, the others still run. A config that
cannot run here is recorded with its reason in ``<backend>.skipped.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

from gansuite.common.errors import ArgumentParser, GanSuiteError, run_main
from gansuite.common.registry import get_backend

from .families import family_of
from .frameworks import device_label, framework_of, is_gpu
from .harness import (BACKEND_MODES, DTYPES, PEER_MODES, Config, PeakCache, Skip, bench_config, combination_reason,
                      skip_reason)
from .peers import IDIOMATIC_MODE, peer_class
from .results import skip_entry, write_results
from .timing import Budget

MODE_CHOICES = (*BACKEND_MODES, "peer", *PEER_MODES)
DEVICES = ("cpu", "cuda")

#: Batch-size sweeps: (Family.sweep of the model, device kind) -> sizes. The DCGAN on a CPU stays
#: small (a full-size iteration at batch 64 is ~160 GFLOP); GPUs get the issue's full ranges. The
#: VAE is an MLP of 0.5 GFLOP per iteration at the seed's batch 128: the GAN MLP's range.
SWEEPS = {
    ("gaussian", "cpu"): (8, 16, 32, 64, 128, 256, 512, 1024),
    ("gaussian", "gpu"): (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
    ("image", "cpu"): (1, 4, 16, 64),
    ("image", "gpu"): (1, 2, 4, 8, 16, 32, 64, 128, 256),
    ("vae", "cpu"): (16, 32, 64, 128, 256, 512, 1024),
    ("vae", "gpu"): (16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
}
QUICK_SWEEPS = {
    ("gaussian", "cpu"): (8, 64),
    ("gaussian", "gpu"): (8, 512),
    ("image", "cpu"): (2,),  # one size: compiling the full DCGAN alone takes ~5-25 s on 2 cores
    ("image", "gpu"): (16, 64),
    ("vae", "cpu"): (16,),  # one size: each backend's bench test runs these rows in a few seconds
    ("vae", "gpu"): (16, 512),
}


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m gansuite.benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", required=True, help="torch | jax | tensorflow | mxnet | oracle")
    p.add_argument("--out", type=Path, default=Path("results/bench"), help="results root (default results/bench)")
    p.add_argument("--models", default="gaussian,dcgan,vae",
                   help="comma-separated presets, GAN or VAE (default gaussian,dcgan,vae)")
    p.add_argument("--modes", default="parity,fast,peer", help=f"comma-separated: {', '.join(MODE_CHOICES)}")
    p.add_argument("--dtypes", default="float32", help=f"comma-separated: {', '.join(DTYPES)}")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--batch-sizes", default=None, help="comma-separated, replaces every model's sweep")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny sweep, few repeats: a smoke run (seconds)")
    return p


def _split(field: str, text: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise GanSuiteError(f"{field}: must name at least one value")
    for item in items:
        if allowed is not None and item not in allowed:
            raise GanSuiteError(f"{field}: unknown value {item!r}; allowed: {', '.join(allowed)}")
    return list(dict.fromkeys(items))


def _batch_sizes(text: str) -> list[int]:
    sizes = []
    for item in _split("batch-sizes", text):
        if not item.isdigit() or int(item) <= 0:
            raise GanSuiteError(f"batch-sizes: must be positive integers, got {item!r}")
        sizes.append(int(item))
    return sizes


def plan(backend: str, models: list[str], modes: list[str], dtypes: list[str], device: str, label: str,
         sizes: list[int] | None, quick: bool, seed: int) -> tuple[list[Config], list[dict[str, Any]]]:
    """The configs to run, in order (per model: the peer first, in a process the backends have
    not yet reconfigured; then parity, then fast), and each skipped group (results.skip_entry)."""
    configs: list[Config] = []
    skipped: list[dict[str, Any]] = []
    for model in models:
        family = family_of(model)
        spec = family.spec(model)
        sweep = sizes or list((QUICK_SWEEPS if quick else SWEEPS)[(family.sweep(spec), "gpu" if is_gpu(device) else "cpu")])
        model_modes: list[str] = []
        for mode in modes:
            # "peer": the seed's own loop and, where there is one, the framework's idiomatic loop.
            wanted = [None, IDIOMATIC_MODE] if mode == "peer" else [mode]
            for want in wanted:
                if want is None or want in PEER_MODES:
                    cls, peer_mode = peer_class(backend, spec, want)
                    if cls is None:
                        skipped.append(skip_entry(backend, model, want or "peer", "float32", label, peer_mode))
                        continue
                    want = peer_mode
                if want not in model_modes:
                    model_modes.append(want)
        model_modes.sort(key=lambda m: (m not in PEER_MODES, MODE_CHOICES.index(m)))
        for mode in model_modes:
            for dtype in dtypes:
                group = [Config(backend, model, mode, dtype, device, b, label, seed, quick) for b in sweep]
                reason = skip_reason(group[0])
                if reason is not None:
                    skipped.append(skip_entry(backend, model, mode, dtype, label, reason))
                else:
                    configs.extend(group)
    return configs, skipped


def skip_line(entry: dict[str, Any]) -> str:
    return f"{entry['backend']} {entry['model']} {entry['mode']} {entry['dtype']}: {entry['reason']}"


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or "no message"
    return f"{type(err).__name__}: {text[:300]}"


def _summary_line(row: dict[str, Any]) -> str:
    return (f"{row['examples_per_s']:.1f} ex/s, {row['step_ms_median']:.3f} ms/it "
            f"[{row['step_ms_min']:.3f}-{row['step_ms_max']:.3f}], compile {row['compile_s']:.2f} s, "
            f"{row['gflops_per_s']:.3g} GFLOP/s ({100 * row['fraction_of_peak']:.2g}% of peak), "
            f"{row['peak_mem_mb']:.0f} MB")


def _echo(line: str) -> None:
    print(line, flush=True)  # a driver reads this process's output as it comes


def run(args: argparse.Namespace, echo: Callable[[str], None] = _echo) -> int:
    backend_name = args.backend
    get_backend(backend_name)  # unknown or not installed here: one-line GanSuiteError
    models = _split("models", args.models)
    for model in models:
        family_of(model)  # unknown model: one-line SpecError
    modes = _split("modes", args.modes, MODE_CHOICES)
    dtypes = _split("dtypes", args.dtypes, DTYPES)
    if args.device not in DEVICES:
        raise GanSuiteError(f"device: unknown device {args.device!r}; allowed: {', '.join(DEVICES)}")
    if backend_name == "oracle" and is_gpu(args.device):
        raise GanSuiteError("device: the oracle runs on the CPU only; allowed: cpu")
    sizes = _batch_sizes(args.batch_sizes) if args.batch_sizes else None
    label = device_label(framework_of(backend_name), args.device)
    configs, skipped = plan(backend_name, models, modes, dtypes, args.device, label, sizes, args.quick, args.seed)
    for entry in skipped:
        echo(f"skip {skip_line(entry)}")
    if not configs:
        raise GanSuiteError("nothing to run: every requested config is skipped here (see the skip lines)")

    budget = Budget.quick() if args.quick else Budget()
    peaks = PeakCache(args.quick, echo)
    rows, failures = [], []
    t0 = time.perf_counter()
    echo(f"benchmarking {backend_name} on {label}: {len(configs)} configs")
    for cfg in configs:
        try:
            row = bench_config(cfg, budget, peaks)
        except GanSuiteError:
            raise  # bad input or environment (e.g. no CUDA device): stop with its one line
        except Skip as err:
            echo(f"  skip {cfg.describe()}: {err}")
            entry = skip_entry(cfg.backend, cfg.model, cfg.mode, cfg.dtype, label, str(err))
            if entry not in skipped:  # every batch size of a group skips for the same reason
                skipped.append(entry)
            continue
        except Exception as err:  # a framework error in one config: record it, run the others
            failures.append({"backend": cfg.backend, "model": cfg.model, "mode": cfg.mode, "dtype": cfg.dtype,
                             "batch_size": cfg.batch_size, "device": label, "error": _one_line(err)})
            echo(f"  FAILED {cfg.describe()}: {_one_line(err)}")
            continue
        rows.append(row)
        echo(f"  {cfg.describe()}: {_summary_line(row)}")
    rows_path, fail_path = write_results(args.out, label, backend_name, rows, failures,
                                         # echoed, not recorded: what no machine would run
                                         [e for e in skipped if combination_reason(e["mode"], e["dtype"]) is None])
    echo(f"wrote {rows_path} ({len(rows)} rows{f', {len(failures)} failed: see ' + str(fail_path) if failures else ''})"
         f" in {time.perf_counter() - t0:.0f} s")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    return run_main(lambda: run(_parser().parse_args(argv)))

if __name__ == "__main__":
    sys.exit(main())
