"""Seed 002's VAE training loop (8.1.3), written once for every backend: batches and eps in,
checkpoints and the seed's pictures out.

The seed's loop, per iteration: ``x_reconst, mu, log_var = model(x)``, the BCE sum + KL, one
Adam step; per epoch it saves ``sampled-<epoch>.png`` (``model.decode(z)`` of
``z = torch.randn(batch_size, z_dim)``) and ``reconst-<epoch>.png`` (the epoch's last batch next
to its reconstruction). Here, in the output folder::

    checkpoint.safetensors   latest checkpoint (family "vae", atomic), resumable with --resume
    summary.json             final losses, the evaluation loss over training, settings, versions
    losses.png               reconstruction, KL and total loss per example, per iteration
    sampled.png              Dec(z) of fixed z (the seed's sampled grid), at the end
    reconst.png              fixed images, each left of its reconstruction (the seed's x_concat)

With ``--tensorboard DIR`` (tensorboardX, as the GANs' runs): every iteration's losses per
example (``loss/reconstruction``, ``loss/kl``, ``loss/total``) and examples/s, and each
evaluation (``eval/reconstruction``, ``eval/kl``, ``eval/total``) at its iteration.

The learning measure, ``eval_loss``: the seed's loss per example (BCE sum + KL, divided by the
examples) on the first :data:`EVAL_EXAMPLES` images of the dataset with fixed eps, measured
before the first iteration and every ``quality_every`` iterations. It is the objective the seed
minimises, on a fixed sample, so its fall is the run's learning, not batch noise.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import plots
from .checkpoint import VAECheckpoint, load_vae_checkpoint, save_vae_checkpoint
from .data import load_dataset
from .errors import GanSuiteError
from .oracle_layers import bce_probabilities
from .protocol import BuildOptions
from .training import CHECKPOINT, RunConfig, ensure_writable
from .vae import (VAE_SCALARS, init_vae_params, to_unit_range, vae_batch, vae_fixed_draws, vae_iterations_per_epoch)

EVAL_EXAMPLES = 1000
GRID = 64  # the seed saves batch_size = 128 images per grid; 8x8 here, as the GANs' grids


def eval_loss(vae: Any, state: Any, x: np.ndarray, eps: np.ndarray, chunk: int = 250) -> dict[str, float]:
    """The seed's losses per example on ``x`` with ``eps`` (float64 sums over chunks of the
    backend's forward; BCE with PyTorch's clamp of each log at -100, the KL summed)."""
    totals = {"reconstruction": 0.0, "kl": 0.0}
    for i in range(0, len(x), chunk):
        out = vae.forward(state, x[i:i + chunk], eps[i:i + chunk])
        totals["reconstruction"] += bce_probabilities(out["x_reconst"], x[i:i + chunk], "sum")[0]
        mu, log_var = out["mu"], out["log_var"]
        totals["kl"] += float(-0.5 * np.sum(1 + log_var - mu**2 - np.exp(log_var)))
    per = {k: v / len(x) for k, v in totals.items()}
    per["total"] = per["reconstruction"] + per["kl"]
    return per


def _as_images(flat: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Flat [0, 1] pixels -> ``(N, C, H, W)`` in [-1, 1], what common/plots.py draws."""
    return np.asarray(flat, np.float64).reshape(len(flat), *shape) * 2.0 - 1.0


def train_vae(cfg: RunConfig) -> dict[str, Any]:
    """``cfg.backend`` is a common/vae_backend.py VAEProtocol and ``cfg.spec`` a VAESpec."""
    spec, vae = cfg.spec, cfg.backend
    ensure_writable(cfg.out_dir)
    ckpt_path = cfg.out_dir / CHECKPOINT
    dataset = load_dataset(spec.data, cfg.seed)
    per_epoch = vae_iterations_per_epoch(spec, dataset.n)
    total = cfg.iterations if cfg.iterations is not None else per_epoch * spec.train.epochs
    history: dict[str, list[float]] = {k: [] for k in VAE_SCALARS}
    evals: dict[str, list[float]] = {}
    start = 0
    if cfg.resume:
        ck = load_vae_checkpoint(ckpt_path, expect_model=spec.name)
        if ck.seed != cfg.seed:
            raise GanSuiteError(f"seed: the checkpoint was trained with seed {ck.seed}, not {cfg.seed}")
        params, opt, start = ck.params, ck.opt, ck.next_iteration
        history = {k: list(ck.history.get(k, np.empty(0))[:start]) for k in VAE_SCALARS}
        evals = {k[len("eval/"):]: list(v) for k, v in ck.history.items() if k.startswith("eval/")}
    else:
        params, opt = init_vae_params(spec, cfg.seed, "float64"), None
    state = vae.build(spec, params, opt, BuildOptions(dtype=cfg.dtype, device=cfg.device, mode=cfg.mode,
                                                      seed=cfg.seed, extra=cfg.extra))
    n_eval = min(EVAL_EXAMPLES, dataset.n)
    eval_x = to_unit_range(dataset.get(np.arange(n_eval))).reshape(n_eval, -1)
    fixed = vae_fixed_draws(spec, cfg.seed, max(n_eval, GRID))
    quality_every = cfg.quality_every or max(1, total // 10)
    meta = {"backend": vae.name, "dtype": cfg.dtype, "mode": cfg.mode, "versions": vae.versions()}

    writer = _tensorboard_writer(cfg.tensorboard)

    def measure(done: int) -> None:
        scores = eval_loss(vae, state, eval_x, fixed["eps"][:n_eval])
        evals.setdefault("iteration", []).append(float(done))
        for k, v in scores.items():
            evals.setdefault(k, []).append(v)
            if writer is not None:
                writer.add_scalar(f"eval/{k}", v, done)

    def checkpoint(next_iteration: int) -> None:
        p, o = vae.export_params(state)
        hist = {k: np.asarray(v) for k, v in history.items()}
        hist.update({f"eval/{k}": np.asarray(v) for k, v in evals.items()})
        save_vae_checkpoint(ckpt_path, VAECheckpoint(spec, p, o, cfg.seed, next_iteration, hist, meta))

    if start == 0:
        measure(0)  # the initial model: what the run improves on
    last_good, t0, examples = start, time.perf_counter(), 0
    try:
        for it in range(start, total):
            x, eps = vae_batch(spec, dataset, cfg.seed, it)
            out = vae.train_step(state, x, eps)
            values = {k: getattr(out, k) for k in VAE_SCALARS}
            bad = [k for k, v in values.items() if not math.isfinite(v)]
            if bad:
                raise GanSuiteError(f"training diverged at iteration {it}: {bad[0]} is {values[bad[0]]}; "
                                    f"last good checkpoint: {ckpt_path} (resumes at iteration {last_good})")
            for k, v in values.items():
                history[k].append(v / len(x))  # per example, as the seed prints loss.item() / batch
            examples += len(x)
            done = it + 1
            if writer is not None:
                for k in VAE_SCALARS:
                    writer.add_scalar(f"loss/{k}", history[k][-1], done)
                writer.add_scalar("speed/examples_per_s", examples / max(time.perf_counter() - t0, 1e-9), done)
            if done % quality_every == 0 or done == total:
                measure(done)  # before the checkpoint, which then holds it
            if done % cfg.checkpoint_every == 0 or done == total:
                checkpoint(done)
                last_good = done
            if done % cfg.log_every == 0 or done == total:  # a log line (no bar: a VAE step is milliseconds)
                print(f"{spec.name} on {vae.name}: iteration {done}/{total} "
                      + " ".join(f"{k} {history[k][-1]:.2f}" for k in VAE_SCALARS), flush=True)
    except KeyboardInterrupt:
        done = len(history["total"])
        checkpoint(done)  # consistent: the interrupted step either finished or never began
        raise GanSuiteError(f"interrupted at iteration {done}; checkpoint saved to {ckpt_path}; "
                            f"continue with --resume") from None
    finally:
        if writer is not None:
            writer.close()
    elapsed = time.perf_counter() - t0
    return _write_outputs(cfg, state, dataset, history, evals, fixed, eval_x, elapsed, examples, start, total)


def _tensorboard_writer(logdir: Path | None) -> Any:
    """tensorboardX's writer, as common/reporting.py's for the GANs (no framework needed), or None."""
    if logdir is None:
        return None
    from tensorboardX import SummaryWriter

    return SummaryWriter(logdir=str(logdir))


def _write_outputs(cfg: RunConfig, state: Any, dataset: Any, history: dict[str, list], evals: dict[str, list],
                   fixed: dict[str, np.ndarray], eval_x: np.ndarray, elapsed: float, examples: int, start: int,
                   total: int) -> dict[str, Any]:
    spec, vae = cfg.spec, cfg.backend
    shape = spec.data.example_shape()
    summary: dict[str, Any] = {
        "model": spec.name, "source": spec.source, "backend": vae.name, "versions": vae.versions(),
        "seed": cfg.seed, "dtype": cfg.dtype, "mode": cfg.mode, "iterations": total,
        "resumed_from": start if cfg.resume else None, "seconds": elapsed,
        "examples_per_s": examples / elapsed if elapsed > 0 else None,
        "final_per_example": {k: float(v[-1]) for k, v in history.items() if v},
        "eval": {"examples": len(eval_x), "what": "the seed's loss per example (BCE sum + KL) on the dataset's "
                 "first images with fixed eps", "over_training": [dict(zip(evals, map(float, row)))
                                                                   for row in zip(*evals.values())]},
    }
    if history["total"]:
        plots.save_vae_loss_curves({k: np.asarray(v) for k, v in history.items()}, cfg.out_dir / "losses.png",
                                   f"{spec.name} on {vae.name} ({cfg.dtype}, {cfg.mode}): loss per example")
    sampled = vae.decode(state, fixed["z"][:GRID])
    plots.save_grid(_as_images(sampled, shape), cfg.out_dir / "sampled.png", 8)
    rec = vae.forward(state, eval_x[:GRID // 2], fixed["eps"][:GRID // 2])["x_reconst"]
    pairs = np.stack([eval_x[:GRID // 2], rec], axis=1).reshape(GRID, -1)  # each image, then its reconstruction
    plots.save_grid(_as_images(pairs, shape), cfg.out_dir / "reconst.png", 8)
    (cfg.out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
