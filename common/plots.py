"""Pictures of a run: loss curves, sample grids, the Gaussian scatter, the fixed-z GIF."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on servers/CI
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: str | os.PathLike) -> Path:
    """Every figure ends the same way: laid out, written at 110 dpi, closed."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def image_grid(images: np.ndarray, nrow: int = 8, pad: int = 2) -> np.ndarray:
    """``(N, C, H, W)`` in [-1, 1] -> one uint8 ``(H', W', 3)`` image (torchvision.make_grid style)."""
    n, c, h, w = images.shape
    ncol = min(nrow, n)
    nrows = -(-n // ncol)
    grid = np.zeros((3, nrows * (h + pad) + pad, ncol * (w + pad) + pad), dtype=np.float64)
    rgb = images if c == 3 else np.repeat(images, 3, axis=1)
    for i in range(n):
        r, k = divmod(i, ncol)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = rgb[i]
    return np.clip(np.rint((grid.transpose(1, 2, 0) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def save_grid(images: np.ndarray, path: str | os.PathLike, nrow: int = 8) -> Path:
    from PIL import Image

    Image.fromarray(image_grid(images, nrow)).save(path)
    return Path(path)


def save_gif(frames: Sequence[np.ndarray], path: str | os.PathLike, ms_per_frame: int = 300) -> Path:
    """Animated GIF of uint8 grids (the tutorial's fixed-noise animation)."""
    from PIL import Image

    imgs = [Image.fromarray(f) for f in frames]
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=ms_per_frame, loop=0)
    return Path(path)


def save_loss_curves(history: dict[str, np.ndarray], path: str | os.PathLike, title: str = "") -> Path:
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    it = np.arange(1, len(history["loss_D"]) + 1)
    ax1.plot(it, history["loss_D"], label="D", lw=0.8)
    ax1.plot(it, history["loss_G"], label="G", lw=0.8)
    ax1.set_ylabel("loss")
    ax1.legend()
    ax1.set_title(title or "Generator and discriminator loss during training")
    ax2.plot(it, history["D_x"], label="D(x)", lw=0.8)
    ax2.plot(it, history["D_G_z1"], label="D(G(z)) before D step", lw=0.8)
    ax2.plot(it, history["D_G_z2"], label="D(G(z)) after D step", lw=0.8)
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("mean D output")
    ax2.set_ylim(0, 1)
    ax2.legend()
    return _save(plt, fig, path)


def save_vae_loss_curves(history: dict[str, np.ndarray], path: str | os.PathLike, title: str = "") -> Path:
    """Seed 002's VAE: reconstruction (BCE), KL and their sum per example, against iterations."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    it = np.arange(1, len(history["total"]) + 1)
    for key, label in (("total", "total (BCE + KL)"), ("reconstruction", "reconstruction (BCE)"), ("kl", "KL")):
        ax.plot(it, history[key], label=label, lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss per example")
    ax.legend()
    ax.set_title(title or "VAE loss during training")
    return _save(plt, fig, path)


def save_gaussian_scatter(real: np.ndarray, fake: np.ndarray, path: str | os.PathLike, title: str = "") -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(real[:, 0], real[:, 1], s=6, alpha=0.6, label="real")
    ax.scatter(fake[:, 0], fake[:, 1], s=6, alpha=0.6, label="generated")
    ax.legend()
    ax.set_title(title or "Real vs generated")
    return _save(plt, fig, path)


QUALITY_LABELS = {"frechet_digits": "Frechet distance, digit-classifier features", "swd": "sliced Wasserstein (x1e3)",
                  "label_error": "samples not read as their label (conditional G)"}
LINEAR_METRICS = ("label_error",)  # a fraction in [0, 1], which may reach 0


def save_quality_curves(runs: dict[str, dict], path: str | os.PathLike, title: str = "") -> Path:
    """Each quality metric against iterations, one line per run (``summary["quality"]`` of each);
    the collapsed-G baseline of the first run dashed. Log scale: the scores span decades."""
    plt = _pyplot()
    metrics = [m for m in QUALITY_LABELS if any(m in q["metrics"] for q in runs.values())]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for label, q in runs.items():
            rows = [r for r in q["over_training"] if metric in r]
            ax.plot([r["iteration"] for r in rows], [r[metric] for r in rows], marker="o", ms=3, lw=1, label=label)
        first = next(iter(runs.values()))
        if metric in first["baselines"]["collapsed"]:
            ax.axhline(first["baselines"]["collapsed"][metric], ls="--", c="grey", lw=1, label="collapsed G (data mean)")
        ax.set_yscale("linear" if metric in LINEAR_METRICS else "log")
        ax.set_xlabel("iteration")
        ax.set_ylabel(QUALITY_LABELS[metric])
        ax.legend(fontsize=8)
    fig.suptitle(title or "Image quality during training (lower is better)")
    return _save(plt, fig, path)


def save_panels(images: dict[str, str | os.PathLike], path: str | os.PathLike) -> Path:
    """PNG files side by side, each titled with its key (the backends' sample grids)."""
    from PIL import Image

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(images), figsize=(3.2 * len(images), 3.5), squeeze=False)
    for ax, (label, file) in zip(axes[0], images.items()):
        with Image.open(file) as img:
            ax.imshow(np.asarray(img.convert("RGB")))
        ax.set_title(label)
        ax.axis("off")
    return _save(plt, fig, path)


def save_loss_overlay(histories: dict[str, dict[str, np.ndarray]], path: str | os.PathLike, title: str = "") -> Path:
    """loss_D and loss_G per iteration, one line per run (a 10-iteration moving mean: the raw
    losses of a GAN jump from batch to batch and four overlaid runs would be unreadable)."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8), sharex=True)
    kernel = np.ones(10) / 10
    for label, h in histories.items():
        for ax, key in ((ax1, "loss_D"), (ax2, "loss_G")):
            smooth = np.convolve(np.asarray(h[key], np.float64), kernel, mode="valid")
            ax.plot(np.arange(len(smooth)) + len(kernel), smooth, lw=1, label=label)
    for ax, name in ((ax1, "D loss"), (ax2, "G loss")):
        ax.set_xlabel("iteration")
        ax.set_ylabel(f"{name} (10-iteration mean)")
        ax.legend(fontsize=8)
    fig.suptitle(title or "Losses per backend")
    return _save(plt, fig, path)
