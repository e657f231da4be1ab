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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def save_gaussian_scatter(real: np.ndarray, fake: np.ndarray, path: str | os.PathLike, title: str = "") -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(real[:, 0], real[:, 1], s=6, alpha=0.6, label="real")
    ax.scatter(fake[:, 0], fake[:, 1], s=6, alpha=0.6, label="generated")
    ax.legend()
    ax.set_title(title or "Real vs generated")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
