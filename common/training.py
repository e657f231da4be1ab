"""The training loop, written once for every backend: streams in, checkpoints and pictures out.

Output folder layout::

    checkpoint.safetensors   latest checkpoint (atomic), resumable with --resume
    summary.json             final numbers, the image quality over training (or Gaussian moments / Frechet distance)
    losses.png               D and G loss, D(x) and D(G(z)) per iteration
    samples.png              sample grid from the fixed noise (images) or real-vs-generated scatter
    progress.gif             the fixed-noise grid over training (image models)
    quality.png              the quality metrics against iterations (image models), with baselines
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import plots
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .data_parallel import maybe_die
from .errors import GanSuiteError
from .metrics import gaussian_report, swd_images
from .params import init_params
from .protocol import SCALARS, BuildOptions, GANProtocol, StepOutput
from .quality import ImageQuality
from .reporting import TrainingReporter
from .spec import GANSpec
from .streams import Streams

CHECKPOINT = "checkpoint.safetensors"
QUALITY_PREFIX = "quality/"  # checkpoint history keys of the quality measurements


@dataclass
class RunConfig:
    spec: GANSpec  # or common.vae.VAESpec: common/vae_training.py runs the VAE on the same config
    backend: GANProtocol  # or a common.vae_backend.VAEProtocol (the VAE)
    out_dir: Path
    seed: int = 0
    dtype: str = "float32"
    mode: str = "parity"
    device: str = "cpu"
    iterations: int | None = None  # default: spec.train.epochs full epochs
    checkpoint_every: int = 200
    sample_every: int = 0  # 0: about 10 frames over the run
    quality_every: int = 0  # image models: iterations between quality measurements (0: at every frame)
    quality: bool = True  # image models: measure quality (SWD, digit Frechet distance) over and after training
    resume: bool = False
    progress: bool = True  # a progress bar on a terminal; log lines otherwise (common/reporting.py)
    log_every: int = 50  # iterations between log lines when there is no progress bar
    tensorboard: Path | None = None  # TensorBoard event files of every scalar, if given
    extra: dict[str, Any] = field(default_factory=dict)


def ensure_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise GanSuiteError(f"out: cannot write to {str(out_dir)!r} ({err.strerror or err})") from None


def train(cfg: RunConfig) -> dict[str, Any]:
    spec, backend = cfg.spec, cfg.backend
    ensure_writable(cfg.out_dir)
    ckpt_path = cfg.out_dir / CHECKPOINT
    streams = Streams(spec, cfg.seed)
    # Data-parallel (common/data_parallel.py): every worker runs this loop on the same canonical
    # batches; only the writer (rank 0) checkpoints, measures and draws. Pure forwards and exports
    # are collective-free in every engine, so the other ranks may skip them.
    writes = getattr(backend, "writes_outputs", True)
    worker_rank = getattr(backend, "rank", 0)

    total = cfg.iterations if cfg.iterations is not None else streams.total_iterations

    history = {k: [] for k in SCALARS}
    start = 0
    if cfg.resume:
        ck = load_checkpoint(ckpt_path, expect_model=spec.name)
        if ck.seed != cfg.seed:
            raise GanSuiteError(f"seed: the checkpoint was trained with seed {ck.seed}, not {cfg.seed}")
        params, opt, start = ck.params, ck.opt, ck.next_iteration
        history = {k: list(ck.history.get(k, np.empty(0))[:start]) for k in SCALARS}
        quality_history = {k[len(QUALITY_PREFIX):]: list(v) for k, v in ck.history.items() if k.startswith(QUALITY_PREFIX)}
    else:
        params, opt = init_params(spec, cfg.seed, "float64"), None
        quality_history = {}
    options = BuildOptions(dtype=cfg.dtype, device=cfg.device, mode=cfg.mode, seed=cfg.seed, extra=cfg.extra)
    state = backend.build(spec, params, opt, options)

    is_images = len(spec.generator.output_shape) == 3
    grid_n, grid_row = sample_grid(spec)
    fixed_z, fixed_labels = streams.fixed_noise(grid_n), streams.fixed_labels(grid_n)
    sample_every = cfg.sample_every or max(1, total // 10)
    frames: list[np.ndarray] = []
    epoch_quality: list[dict[str, float]] = []  # Gaussian: exact Frechet distance after every epoch
    quality = ImageQuality(streams.dataset, seed=cfg.seed) if is_images and writes and cfg.quality else None
    quality_every = cfg.quality_every or sample_every
    meta = {"backend": backend.name, "dtype": cfg.dtype, "mode": cfg.mode, "versions": backend.versions()}
    if getattr(backend, "workers", 1) > 1:
        meta["workers"] = backend.workers
        meta["sync_bn"] = backend.sync_bn

    def checkpoint(next_iteration: int) -> None:
        if not writes:
            return
        p, o = backend.export_params(state)
        hist = {k: np.asarray(v) for k, v in history.items()}
        hist.update({QUALITY_PREFIX + k: np.asarray(v) for k, v in quality_history.items()})
        save_checkpoint(ckpt_path, Checkpoint(spec, p, o, cfg.seed, next_iteration, hist, meta))

    def measure_quality(done: int) -> None:
        labels = streams.fixed_labels(quality.n)
        scores = quality.measure(generate_many(backend, state, streams.fixed_noise(quality.n), labels), labels)
        quality_history.setdefault("iteration", []).append(float(done))
        for k, v in scores.items():
            quality_history.setdefault(k, []).append(v)
            reporter.metric(f"quality/{k}", v, done)

    last_good = start
    t0, examples = time.perf_counter(), 0
    it = start
    multi = multi_step(backend, spec, cfg)
    gaussian_epochs = writes and spec.data.kind == "gaussian"

    def ends_a_call(done: int) -> bool:
        """Whether iteration ``done`` must end a multi-step call: something reads the state after it."""
        return (done == total or done % cfg.checkpoint_every == 0
                or (quality is not None and done % quality_every == 0)
                or (gaussian_epochs and done % streams.iterations_per_epoch == 0)
                or (writes and is_images and done % sample_every == 0)
                or done % MULTI_STEP_MAX == 0)
    def after_iteration(batch: Any, out: Any, done: int, last_good: int) -> int:
        """Iteration ``done`` (1-based) finished: its scalars, and whatever reads the state after it.
        Returns the iteration the last good checkpoint resumes at."""
        bad = [k for k, v in out.scalars().items() if not math.isfinite(v)]
        if bad:
            raise GanSuiteError(
                f"training diverged at iteration {batch.iteration}: {bad[0]} is {out.scalars()[bad[0]]}; "
                f"last good checkpoint: {ckpt_path} (resumes at iteration {last_good})")
        for k, v in out.scalars().items():
            history[k].append(v)
        if quality is not None and (done % quality_every == 0 or done == total):
            measure_quality(done)  # before the checkpoint, which then holds it
        if done % cfg.checkpoint_every == 0 or done == total:
            checkpoint(done)
            last_good = done
        if gaussian_epochs and done % streams.iterations_per_epoch == 0:
            fd = gaussian_report(spec, backend.export_weights(state))["frechet_distance"]
            epoch_quality.append({"epoch": done // streams.iterations_per_epoch, "frechet_distance": fd})
            reporter.metric("quality/frechet_distance", fd, done)
        if writes and is_images and (done % sample_every == 0 or done == total):
            frames.append(plots.image_grid(backend.generate(state, fixed_z, "batch", fixed_labels), grid_row))
        reporter.step(done, out, examples)
        return last_good

    reporter = TrainingReporter(f"{spec.name} on {backend.name}", total, start, cfg.progress and writes,
                                cfg.log_every, cfg.tensorboard if writes else None,
                                echo=None if writes else (lambda line: None))  # one log: the writer's
    try:
        with contextlib.closing(reporter):
            if quality is not None and start == 0:
                measure_quality(0)  # the initial G: what the run improves on
            pending: list[Any] = []  # the batches of the next multi-step call
            for next_batch in streams.iterate(start, total):
                if multi:
                    # Fast mode with backend.train_epoch: consecutive equal-shape batches in ONE
                    # compiled call (JAX lax.scan, TF while_loop), up to the next iteration whose
                    # state something reads (checkpoint, quality, frame, epoch, MULTI_STEP_MAX).
                    if pending and next_batch.real.shape != pending[0].real.shape:
                        batches, pending = pending, [next_batch]
                    else:
                        pending.append(next_batch)
                        if not ends_a_call(next_batch.iteration + 1):
                            continue
                        batches, pending = pending, []
                    steps = run_multi_step(backend, state, batches)
                else:
                    maybe_die(next_batch.iteration, worker_rank)  # a no-op unless a test asks this worker to die here
                    # fast mode draws z, fake labels and dropout masks on the device (the real labels stay)
                    batches = [next_batch]
                    steps = [backend.train_step(state, next_batch.real,
                                                next_batch.z if cfg.mode == "parity" else None,
                                                draws=next_batch.draws)]
                for batch, out in zip(batches, steps):
                    it = batch.iteration
                    examples += len(batch.real)
                    last_good = after_iteration(batch, out, it + 1, last_good)
            if pending:  # a shape change just before the end left these
                for batch, out in zip(pending, run_multi_step(backend, state, pending)):
                    it = batch.iteration
                    examples += len(batch.real)
                    last_good = after_iteration(batch, out, it + 1, last_good)
    except KeyboardInterrupt:
        done = len(history["loss_D"])
        checkpoint(done)  # the state is consistent: the interrupted step either finished or never began
        raise GanSuiteError(f"interrupted at iteration {done}; checkpoint saved to {ckpt_path}; "
                            f"continue with --resume") from None
    elapsed = time.perf_counter() - t0
    if not writes:
        return {"model": spec.name, "backend": backend.name, "iterations": total, "rank": worker_rank}
    return write_outputs(cfg, state, streams, history, frames, epoch_quality, elapsed, examples, start, total,
                         quality, quality_history)


#: Most iterations in one multi-step call (bounds the stacked batches' memory).
MULTI_STEP_MAX = 1000


def multi_step(backend: GANProtocol, spec: GANSpec, cfg: RunConfig) -> bool:
    """Whether the loop runs fast mode's iterations through the backend's multi-step primitive,
    ``train_epoch(state, reals)`` (JAX: one ``lax.scan``; TensorFlow: one ``tf.while_loop``;
    PyTorch: a compiled scan; MXNet: executors of unrolled iterations): fast mode (z from the
    device), one worker, a backend that has one, and a model that takes no per-iteration draws
    (labels, fresh z, dropout masks: train_epoch takes only the real batches) and that the
    backend's primitive takes (``train_epoch_refusal``, where a backend has one: PyTorch's and
    MXNet's take dense nets only). ``extra={"multi_step": False}`` keeps one call per iteration.
    Parity mode stays step by step."""
    refusal = getattr(backend, "train_epoch_refusal", None)
    return (cfg.mode == "fast" and callable(getattr(backend, "train_epoch", None))
            and getattr(backend, "workers", 1) == 1 and not spec.conditional
            and spec.train.g_noise == "reuse" and not spec.has_dropout
            and bool(cfg.extra.get("multi_step", True))
            and (refusal is None or refusal(spec, BuildOptions(dtype=cfg.dtype, mode=cfg.mode, extra=cfg.extra)) is None))


def run_multi_step(backend: GANProtocol, state: Any, batches: list[Any]) -> list[Any]:
    """``len(batches)`` iterations in one ``backend.train_epoch`` call; one StepOutput per iteration."""
    scalars = backend.train_epoch(state, np.stack([b.real for b in batches]))
    return [StepOutput(**{k: float(scalars[k][i]) for k in SCALARS}) for i in range(len(batches))]


def sample_grid(spec: GANSpec) -> tuple[int, int]:
    """(samples, per row) of the sample grid: the tutorial's 8x8, or for a conditional GAN seed
    002's 10x10 with one class per row (``Streams.fixed_labels``)."""
    return (spec.num_classes * 10, 10) if spec.conditional else (64, 8)


def generate_many(backend: GANProtocol, state: Any, z: np.ndarray, labels: np.ndarray | None = None,
                  chunk: int = 64) -> np.ndarray:
    """G on ``z`` (and ``labels``, conditional GANs) in batches of ``chunk`` (the size of the sample
    grid, so BatchNorm sees the same batch statistics as in the pictures)."""
    return np.concatenate([backend.generate(state, z[i:i + chunk], "batch",
                                            None if labels is None else labels[i:i + chunk])
                           for i in range(0, len(z), chunk)])


def write_outputs(cfg: RunConfig, state: Any, streams: Streams, history: dict[str, list], frames: list,
                  epoch_quality: list, elapsed: float, examples: int, start: int, total: int,
                  quality: ImageQuality | None = None,
                  quality_history: dict[str, list] | None = None) -> dict[str, Any]:
    spec, backend = cfg.spec, cfg.backend
    hist = {k: np.asarray(v, dtype=np.float64) for k, v in history.items()}
    summary: dict[str, Any] = {
        "model": spec.name,
        "source": spec.source,
        "backend": backend.name,
        "versions": backend.versions(),
        "settings": backend.settings(state),
        "seed": cfg.seed,
        "dtype": cfg.dtype,
        "mode": cfg.mode,
        "iterations": total,
        "resumed_from": start if cfg.resume else None,
        "seconds": elapsed,
        "examples_per_s": examples / elapsed if elapsed > 0 else None,
        # fast mode's multi-step primitive (backend.train_epoch), or one train_step per iteration
        "iterations_per_call": f"up to {MULTI_STEP_MAX}" if multi_step(backend, spec, cfg) else 1,
        "final": {k: float(v[-1]) for k, v in hist.items() if len(v)},
    }
    if len(hist["loss_D"]):
        plots.save_loss_curves(hist, cfg.out_dir / "losses.png", f"{spec.name} on {backend.name} ({cfg.dtype}, {cfg.mode})")
    params, _ = backend.export_params(state)
    if spec.data.kind == "gaussian":
        summary["gaussian"] = gaussian_report(spec, params)
        summary["gaussian"]["per_epoch"] = epoch_quality
        fake = backend.generate(state, streams.fixed_noise(1000))
        plots.save_gaussian_scatter(streams.dataset.values[:1000], fake, cfg.out_dir / "samples.png",
                                    f"{backend.name}: Frechet distance {summary['gaussian']['frechet_distance']:.3f}")
    else:
        grid_n, grid_row = sample_grid(spec)
        plots.save_grid(backend.generate(state, streams.fixed_noise(grid_n), "batch", streams.fixed_labels(grid_n)),
                        cfg.out_dir / "samples.png", grid_row)
        if cfg.quality:
            # Sliced Wasserstein distance on Laplacian-pyramid patches: same code for every backend.
            n = min(256, streams.dataset.n)
            real = streams.dataset.get(np.random.default_rng(0).permutation(streams.dataset.n)[:n])
            fake = generate_many(backend, state, streams.fixed_noise(n), streams.fixed_labels(n))
            summary["swd"] = swd_images(real, fake)
        if quality is not None and quality_history:
            summary["quality"] = {"examples": quality.n, "metrics": sorted(k for k in quality_history if k != "iteration"),
                                  "digit_classifier_holdout_accuracy": (quality.classifier.holdout_accuracy
                                                                        if quality.classifier else None),
                                  "baselines": quality.baselines(streams.fixed_labels(quality.n)),
                                  "over_training": [dict(zip(quality_history, map(float, row)))
                                                    for row in zip(*quality_history.values())]}
            plots.save_quality_curves({summary["backend"]: summary["quality"]}, cfg.out_dir / "quality.png",
                                      f"{spec.name} on {backend.name}")
        if frames:
            plots.save_gif(frames, cfg.out_dir / "progress.gif")
    (cfg.out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
