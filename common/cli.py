"""``gansuite`` command line: train, sample, compare, verify, spec, backends.

Every user error is printed as one line (``error: <field>: <what is allowed>``)
with exit status 2; no traceback reaches the user for bad input.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

from .errors import GanSuiteError
from .overrides import apply_overrides
from .presets import PRESETS, preset
from .protocol import BN_MODES, DTYPES, MODES
from .spec import GANSpec
from .vae import VAE_PRESETS, VAESpec

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Run and compare the same GANs on PyTorch, TensorFlow, JAX and MXNet.")


def _choice(field: str, value: str, allowed) -> str:
    if value not in allowed:
        raise GanSuiteError(f"{field}: must be one of {', '.join(allowed)}; got {value!r}")
    return value


def resolve_spec(model: str, spec_file: Optional[Path], data: Optional[Path], epochs: Optional[int],
                 sets: List[str], split: Optional[str] = None) -> GANSpec:
    """Preset (or spec file) + --data + --epochs + --set overrides, validated as a whole."""
    if spec_file is not None:
        if not spec_file.is_file():
            raise GanSuiteError(f"spec: file {str(spec_file)!r} does not exist")
        text = spec_file.read_text()
        spec = GANSpec.from_toml(text) if spec_file.suffix == ".toml" else GANSpec.from_json(text)
    elif model in VAE_PRESETS:
        spec = VAE_PRESETS[model]()
    elif model in PRESETS:
        spec = preset(model)
    else:
        raise GanSuiteError(f"model: unknown model {model!r}; allowed: {', '.join([*PRESETS, *VAE_PRESETS])}")
    extra: list[str] = []
    if data is not None:
        if not data.exists():
            raise GanSuiteError(f"data.path: {str(data)!r} does not exist")
        if spec.data.kind == "gaussian":
            raise GanSuiteError("data: the gaussian model draws its own data; --data is for image models")
        is_idx = (data.is_file() and "idx" in data.name) or (data.is_dir() and any(data.glob("*-idx3-ubyte*")))
        extra += [f"data.kind={'idx' if is_idx else 'image_folder'}", f"data.path={json.dumps(str(data))}"]
    if split is not None:
        extra.append(f"data.split={split}")
    if epochs is not None:
        extra.append(f"train.epochs={epochs}")
    return apply_overrides(spec, extra + list(sets))


@app.command()
def train(
    backend: str = typer.Option("torch", help="torch | jax | tensorflow | mxnet | oracle"),
    model: str = typer.Option("gaussian", help=f"one of: {', '.join([*PRESETS, *VAE_PRESETS])}"),
    out: Path = typer.Option(..., help="output folder (checkpoint, summary.json, PNGs)"),
    data: Optional[Path] = typer.Option(None, help="image folder, or MNIST/FashionMNIST IDX file/folder"),
    split: Optional[str] = typer.Option(None, help="IDX folders: train (train-*, the default) | test (t10k-*)"),
    epochs: Optional[int] = typer.Option(None, help="override train.epochs"),
    iterations: Optional[int] = typer.Option(None, help="stop after this many iterations"),
    set_: List[str] = typer.Option([], "--set", help="override a spec field, e.g. train.batch_size=32"),
    spec_file: Optional[Path] = typer.Option(None, "--spec", help="a spec JSON/TOML file instead of --model"),
    seed: int = typer.Option(0, help="seeds params, data, batch order and noise"),
    dtype: str = typer.Option("float32", help="float32 | float64"),
    mode: str = typer.Option("parity", help="parity (host noise, deterministic) | fast (compiled, device noise)"),
    device: str = typer.Option("cpu", help="cpu | cuda"),
    checkpoint_every: int = typer.Option(200, help="iterations between checkpoints"),
    resume: bool = typer.Option(False, help="continue from OUT/checkpoint.safetensors"),
    progress: bool = typer.Option(True, help="a progress bar on a terminal (else a log line every --log-every)"),
    log_every: int = typer.Option(50, help="iterations between log lines when there is no progress bar"),
    tensorboard: Optional[Path] = typer.Option(None, help="write TensorBoard scalars (losses, D(x), quality) here"),
    quality_every: int = typer.Option(0, help="image models: iterations between quality measurements "
                                              "(SWD, digit Frechet distance); 0: 10 over the run"),
    sample_every: int = typer.Option(0, help="image models: iterations between progress.gif frames "
                                             "(0: about 10 over the run)"),
    quality: bool = typer.Option(True, "--quality/--no-quality",
                                 help="image models: measure SWD and the digit Frechet distance over and after "
                                      "training (off: faster short runs)"),
    workers: int = typer.Option(1, help="data-parallel workers on the framework's own engine (torchrun + DDP, "
                                        "jax.sharding, MirroredStrategy, MXNet kvstore); the batch splits over them"),
    sync_bn: bool = typer.Option(True, "--sync-bn/--no-sync-bn",
                                 help="data-parallel: BatchNorm statistics of the global batch (off: each "
                                      "worker's own, which changes the maths)"),
    processes: Optional[int] = typer.Option(None, help="data-parallel: the workers' processes, 1 or --workers "
                                                       "(one per worker: the multi-process, multi-host engine: "
                                                       "torchrun, MultiWorkerMirroredStrategy, jax.distributed); "
                                                       "default: torch one per worker, the others 1"),
) -> None:
    """Train one model on one backend (on several workers with --workers)."""
    from .registry import get_backend
    from .training import RunConfig
    from .training import train as run_training

    _choice("dtype", dtype, DTYPES)
    _choice("mode", mode, MODES)
    if iterations is not None and iterations <= 0:
        raise GanSuiteError(f"iterations: must be a positive integer, got {iterations}")
    if checkpoint_every <= 0:
        raise GanSuiteError(f"checkpoint-every: must be a positive integer, got {checkpoint_every}")
    if log_every <= 0:
        raise GanSuiteError(f"log-every: must be a positive integer, got {log_every}")
    if sample_every < 0:
        raise GanSuiteError(f"sample-every: must be 0 (about 10 over the run) or a positive integer, got {sample_every}")
    if quality_every < 0:
        raise GanSuiteError(f"quality-every: must be 0 (10 over the run) or a positive integer, got {quality_every}")
    spec = resolve_spec(model, spec_file, data, epochs, set_, split)
    from .data_parallel import check_processes, check_workers, get_data_parallel_backend, in_worker, launch

    check_workers(workers, spec, backend)
    processes = check_processes(processes, workers, backend, dtype)
    if workers > 1 and not in_worker():
        # The engine's own launcher runs this same command as the worker process(es).
        from .training import CHECKPOINT

        args = ["train", "--backend", backend, "--model", model, "--out", str(out), "--seed", str(seed),
                "--dtype", dtype, "--mode", mode, "--device", device, "--checkpoint-every", str(checkpoint_every),
                "--log-every", str(log_every), "--quality-every", str(quality_every), "--sample-every", str(sample_every),
                "--workers", str(workers), "--processes", str(processes),
                "--sync-bn" if sync_bn else "--no-sync-bn", "--resume" if resume else "--no-resume",
                "--progress" if progress else "--no-progress",
                "--quality" if quality else "--no-quality"]
        for flag, value in (("--data", data), ("--split", split), ("--epochs", epochs), ("--iterations", iterations),
                            ("--spec", spec_file), ("--tensorboard", tensorboard)):
            args += [] if value is None else [flag, str(value)]
        for item in set_:
            args += ["--set", item]
        typer.echo(launch(backend, workers, args, out / CHECKPOINT, processes), nl=False)
        return
    if isinstance(spec, VAESpec):
        return _train_vae(spec, backend, RunConfig(spec=spec, backend=None, out_dir=out, seed=seed, dtype=dtype,
                                                   mode=mode, device=device, iterations=iterations,
                                                   checkpoint_every=checkpoint_every, resume=resume,
                                                   progress=progress, log_every=log_every,
                                                   quality_every=quality_every), tensorboard)
    be = get_data_parallel_backend(backend, workers, sync_bn, processes) if workers > 1 else get_backend(backend)
    summary = run_training(RunConfig(spec=spec, backend=be, out_dir=out, seed=seed, dtype=dtype, mode=mode,
                                     device=device, iterations=iterations, checkpoint_every=checkpoint_every,
                                     resume=resume, progress=progress, log_every=log_every,
                                     tensorboard=tensorboard, quality_every=quality_every, quality=quality,
                                     sample_every=sample_every))
    if not getattr(be, "writes_outputs", True):
        return  # a data-parallel worker other than rank 0: rank 0 prints the summary
    brief = {k: summary[k] for k in ("model", "backend", "iterations", "examples_per_s", "final")}
    if "gaussian" in summary:
        brief["frechet_distance"] = summary["gaussian"]["frechet_distance"]
    if "quality" in summary:
        brief["quality"] = {"initial": summary["quality"]["over_training"][0],
                            "final": summary["quality"]["over_training"][-1],
                            "collapsed_baseline": summary["quality"]["baselines"]["collapsed"]}
    typer.echo(json.dumps(brief, indent=2))


def _train_vae(spec: VAESpec, backend: str, cfg: Any, tensorboard: Optional[Path]) -> None:
    """Seed 002's VAE: its own loop (common/vae_training.py), the same options as a GAN run."""
    from .vae_backend import get_vae_backend
    from .vae_training import train_vae

    cfg.tensorboard = tensorboard
    cfg.backend = get_vae_backend(backend)
    summary = train_vae(cfg)
    evals = summary["eval"]["over_training"]
    typer.echo(json.dumps({"model": summary["model"], "backend": summary["backend"],
                           "iterations": summary["iterations"], "examples_per_s": summary["examples_per_s"],
                           "final_per_example": summary["final_per_example"],
                           "eval_loss_per_example": {"initial": evals[0]["total"], "final": evals[-1]["total"]}},
                          indent=2))


@app.command()
def sample(
    checkpoint: Path = typer.Option(..., help="a checkpoint written by any backend"),
    backend: str = typer.Option("torch"),
    n: int = typer.Option(64, help="number of samples"),
    out: Path = typer.Option(Path("samples.png"), help="PNG to write"),
    seed: int = typer.Option(0, help="seed of the latent noise"),
    bn: str = typer.Option("batch", help="BatchNorm statistics: batch (as the tutorial samples) | running"),
    dtype: str = typer.Option("float32"),
    label: Optional[int] = typer.Option(None, help="conditional models: the class of every sample "
                                        "(default: a grid with one class per row)"),
) -> None:
    """Generate samples from a checkpoint (grid for images, scatter for the Gaussian)."""
    import numpy as np

    from . import plots
    from .checkpoint import load_checkpoint
    from .data import load_dataset
    from .protocol import BuildOptions
    from .registry import get_backend

    _choice("bn", bn, BN_MODES)
    _choice("dtype", dtype, DTYPES)
    if n <= 0:
        raise GanSuiteError(f"n: must be a positive integer, got {n}")
    from .checkpoint import checkpoint_family

    if checkpoint_family(checkpoint) == "vae":
        return _sample_vae(checkpoint, backend, n, out, seed, dtype, label)
    ck = load_checkpoint(checkpoint)
    be = get_backend(backend)
    state = be.build(ck.spec, ck.params, ck.opt, BuildOptions(dtype=dtype))
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 6])))
    z = rng.standard_normal((n, *ck.spec.latent_shape))
    labels = _sample_labels(ck.spec, label, n)
    fake = be.generate(state, z, bn, labels)
    out.parent.mkdir(parents=True, exist_ok=True)
    if ck.spec.data.kind == "gaussian":
        real = load_dataset(ck.spec.data, ck.seed).values[:n]
        plots.save_gaussian_scatter(real, fake, out, f"{be.name}: {n} samples")
    else:
        plots.save_grid(fake, out, 10 if labels is not None and label is None else 8)
    typer.echo(f"wrote {out} ({n} samples from {ck.spec.name}, iteration {ck.next_iteration}, {be.name})")


def _sample_vae(checkpoint: Path, backend: str, n: int, out: Path, seed: int, dtype: str,
                label: Optional[int]) -> None:
    """The seed's sampled grid from a VAE checkpoint: ``Dec(z)`` of standard normal z."""
    import numpy as np

    from . import plots
    from .checkpoint import load_vae_checkpoint
    from .protocol import BuildOptions
    from .vae_backend import get_vae_backend

    ck = load_vae_checkpoint(checkpoint)
    if label is not None:
        raise GanSuiteError(f"label: model {ck.spec.name!r} is not conditional; omit --label")
    vae = get_vae_backend(backend)
    state = vae.build(ck.spec, ck.params, ck.opt, BuildOptions(dtype=dtype))
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 6])))
    flat = vae.decode(state, rng.standard_normal((n, ck.spec.latent)))
    out.parent.mkdir(parents=True, exist_ok=True)
    plots.save_grid(flat.reshape(n, *ck.spec.data.example_shape()) * 2.0 - 1.0, out, 8)
    typer.echo(f"wrote {out} ({n} samples from {ck.spec.name}, iteration {ck.next_iteration}, {vae.name})")


def _sample_labels(spec: Any, label: int | None, n: int) -> Any:
    """The labels of ``gansuite sample``: ``--label`` for every row, or seed 002's grid (row r of 10
    shows class r); refused for an unconditional model, as is a class outside the model's."""
    import numpy as np

    if not spec.conditional:
        if label is not None:
            raise GanSuiteError(f"label: model {spec.name!r} is not conditional; omit --label")
        return None
    k = spec.num_classes
    if label is not None and not 0 <= label < k:
        raise GanSuiteError(f"label: must be in 0..{k - 1} for model {spec.name!r}, got {label}")
    return np.full(n, label, np.int64) if label is not None else (np.arange(n) // 10 % k).astype(np.int64)


@app.command("spec")
def show_spec(
    model: str = typer.Option("gaussian"),
    set_: List[str] = typer.Option([], "--set"),
) -> None:
    """Print a preset's spec as JSON (with any --set overrides applied)."""
    typer.echo(resolve_spec(model, None, None, None, set_).to_json())


@app.command()
def compare(
    out: Path = typer.Option(Path("results/compare"), help="report.md, report.json, plots, artifacts/"),
    backends_: str = typer.Option("torch,jax,tensorflow,mxnet", "--backends", help="comma-separated subset"),
    quick: bool = typer.Option(False, help="short trajectories (20 iterations): a smoke run"),
    data_parallel: bool = typer.Option(True, "--data-parallel/--no-data-parallel",
                                       help="the data-parallel section: 2 workers on each engine vs one"),
) -> None:
    """Run every experiment in every backend's environment and write the comparison report."""
    from .compare import drive
    from .registry import FRAMEWORK_BACKENDS

    names = [b.strip() for b in backends_.split(",") if b.strip()]
    for b in names:
        _choice("backends", b, FRAMEWORK_BACKENDS)
    report = drive(out, names, quick=quick, echo=typer.echo, data_parallel=data_parallel)
    failed = [r for r in report["parity"] if r["check"] != "trajectory" and not r["passed"]]
    # an ill-conditioned (model, dtype) row within its measured bound (common/tolerances.py) is not a failure
    bounded = [r for r in failed if r.get("ill_conditioned_bound") and r["max_rel_err"] <= r["ill_conditioned_bound"]]
    missing = [n for n, a in report["backends"].items() if not a["available"]]
    dp = report.get("data_parallel", [])
    dp_line = f"; data-parallel rows {len(dp)}, failed {sum(not r['passed'] for r in dp)}" if data_parallel else ""
    typer.echo(f"wrote {out / 'report.md'}: {len(report['parity'])} parity rows, {len(failed) - len(bounded)} failed, "
               f"{len(bounded)} ill-conditioned within their bound{dp_line}; unavailable: {', '.join(missing) or 'none'}")


@app.command()
def gallery(
    out: Path = typer.Option(Path("results/gallery"), help="samples.png, quality.png, losses.png, gallery.md/json"),
    backends_: str = typer.Option("torch,jax,tensorflow,mxnet", "--backends", help="comma-separated subset"),
    data: Path = typer.Option(None, help="a folder with the MNIST test set (default: ../shared/data/mnist)"),
    parts: str = typer.Option("mnist,glyphs,seed-loop", help="comma-separated subset of mnist, glyphs, seed-loop"),
) -> None:
    """Train the learning configuration on every backend (each in its env) and draw them together."""
    from .gallery import MNIST_DIR, PARTS, drive
    from .registry import FRAMEWORK_BACKENDS

    names = [b.strip() for b in backends_.split(",") if b.strip()]
    for b in names:
        _choice("backends", b, FRAMEWORK_BACKENDS)
    chosen = tuple(p.strip() for p in parts.split(",") if p.strip())
    for p in chosen:
        _choice("parts", p, PARTS)
    result = drive(out, names, data or MNIST_DIR, chosen, echo=typer.echo)
    typer.echo(f"wrote {out / 'gallery.md'}: " + "; ".join(
        f"{d}: " + ", ".join(f"{r['backend']} digit FD {r['initial']:.0f} -> {r['final']:.0f}" for r in result[d]["rows"])
        for d in result if d != "seed-loop"))


@app.command("gallery-seed-loop", hidden=True)
def gallery_seed_loop(out: Path = typer.Option(..., help="the result JSON")) -> None:
    """Seed 000's own loop on the dcgan preset's default data (run by `gansuite gallery` in the torch env)."""
    from .gallery import seed_loop_run

    out.write_text(json.dumps(seed_loop_run(echo=typer.echo), indent=1, default=str))


@app.command()
def verify(
    impl: str = typer.Option(..., help="your implementation: FILE.py:CLASS or module:CLASS (common/verify.py)"),
    model: str = typer.Option("gaussian", help=f"the preset it implements: {', '.join(PRESETS)}"),
    dtype: str = typer.Option("float64", help="float64 | float32"),
    iterations: Optional[int] = typer.Option(None, help="trajectory length (default: the comparison's for the model)"),
    sets: List[str] = typer.Option([], "--set", help="spec override key=value (repeatable)"),
) -> None:
    """Hold your own port of a preset to the float64 oracle: forward, one iteration, trajectory."""
    from .experiments import compare_spec
    from .trajectory import trajectory_iterations
    from .verify import PortBackend, format_checks, load_port
    from .verify import verify as run_verify

    _choice("dtype", dtype, DTYPES)
    if model not in PRESETS:
        raise GanSuiteError(f"model: unknown model {model!r}; allowed: {', '.join(PRESETS)}")
    if iterations is not None and iterations <= 0:
        raise GanSuiteError(f"iterations: must be a positive integer, got {iterations}")
    spec = apply_overrides(compare_spec(model), list(sets))
    port = PortBackend(load_port(impl))
    checks = run_verify(port, spec, dtype, iterations or trajectory_iterations(model))
    typer.echo(format_checks(port.name, model, dtype, checks))
    if not all(c.passed for c in checks):
        raise typer.Exit(1)


@app.command("compare-worker", hidden=True)
def compare_worker(
    backend: str = typer.Option(...),
    phase: str = typer.Option("run", help="run | convert"),
    out: Path = typer.Option(Path("results/compare")),
    quick: bool = typer.Option(False),
    data_parallel: bool = typer.Option(True, "--data-parallel/--no-data-parallel"),
) -> None:
    """One backend's share of `gansuite compare` (runs inside that backend's environment)."""
    from .experiments import convert_phase, run_phase

    _choice("phase", phase, ("run", "convert"))
    if phase == "run":
        run_phase(backend, out, quick=quick, data_parallel=data_parallel)
    else:
        convert_phase(backend, out)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False)
def bench(ctx: typer.Context) -> None:
    """Benchmark one backend in this environment (options: gansuite bench --help)."""
    from gansuite.benchmarks.run import main as bench_main

    code = bench_main(list(ctx.args))
    if code:
        raise typer.Exit(code)


@app.command("bench-summary", context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
             add_help_option=False)
def bench_summary(ctx: typer.Context) -> None:
    """Merge results/bench/**/*.json into results/bench/summary.md with plots."""
    from gansuite.benchmarks.summary import main as summary_main

    code = summary_main(list(ctx.args))
    if code:
        raise typer.Exit(code)


@app.command()
def backends() -> None:
    """Which backends import in this environment, and why not."""
    from .registry import BACKENDS, available

    for name in BACKENDS:
        ok, reason = available(name)
        typer.echo(f"{name:11s} {'available' if ok else 'unavailable: ' + str(reason)}")


def main(argv: Optional[List[str]] = None) -> int:
    try:
        # Without standalone mode, typer.Exit(code) comes back as the return value.
        result = app(args=argv, standalone_mode=False)
        if isinstance(result, int) and not isinstance(result, bool):
            return result
    except GanSuiteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except typer.Exit as err:
        return int(getattr(err, "exit_code", 0) or 0)
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        return 1
    except typer.exceptions.TyperException as err:  # usage errors: unknown option, bad value
        print(f"error: {err.format_message()}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
