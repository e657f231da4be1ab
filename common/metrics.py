"""Quality metrics computed in numpy, the same code scoring every backend."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .data import gaussian_truth
from .params import Params
from .spec import Dense, GANSpec


def _sqrtm_psd(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_gaussian(m1: np.ndarray, c1: np.ndarray, m2: np.ndarray, c2: np.ndarray) -> float:
    """Exact squared Frechet (2-Wasserstein) distance between N(m1, c1) and N(m2, c2):
    ``|m1 - m2|^2 + tr(c1 + c2 - 2 (c1^1/2 c2 c1^1/2)^1/2)``."""
    s1 = _sqrtm_psd(c1)
    cross = _sqrtm_psd(s1 @ c2 @ s1)
    return float(np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * cross))


def linear_generator_moments(spec: GANSpec, params: Params) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of G(z), z ~ N(0, I), for a generator that is one Dense layer
    (the Gaussian GAN): G(z) = W z + b  =>  mean b, covariance W W^T (exact)."""
    layers = spec.generator.layers
    if len(layers) != 1 or not isinstance(layers[0], Dense):
        raise ValueError("exact moments need a generator made of one Dense layer")
    w = np.asarray(params["G.0.weight"], np.float64)
    b = np.asarray(params["G.0.bias"], np.float64) if layers[0].bias else np.zeros(w.shape[0])
    return b, w @ w.T


def gaussian_report(spec: GANSpec, params: Params) -> dict[str, object]:
    """Learned vs true mean/covariance of the Gaussian GAN and their exact Frechet distance."""
    mean, cov = linear_generator_moments(spec, params)
    true_mean, true_cov = gaussian_truth(spec.data)
    return {
        "learned_mean": mean.tolist(),
        "learned_cov": cov.tolist(),
        "true_mean": true_mean.tolist(),
        "true_cov": true_cov.tolist(),
        "frechet_distance": frechet_gaussian(mean, cov, true_mean, true_cov),
    }


# ---------------------------------------------------------------------------
# images: sliced Wasserstein distance over Laplacian-pyramid patches (Karras et al. 2018,
# "Progressive Growing of GANs", section 5). Download-free, numpy only.


def _downsample(x: np.ndarray) -> np.ndarray:
    """2x2 average pooling, NCHW."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))


def _upsample(x: np.ndarray) -> np.ndarray:
    return x.repeat(2, axis=2).repeat(2, axis=3)


def laplacian_pyramid(x: np.ndarray, levels: int) -> list[np.ndarray]:
    """Finest level first; the last entry is the low-pass residual."""
    out, cur = [], x
    for _ in range(levels - 1):
        low = _downsample(cur)
        out.append(cur - _upsample(low))
        cur = low
    out.append(cur)
    return out


def _patch_positions(shape: tuple[int, ...], per_image: int, size: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners of ``per_image`` random patches per image: they depend on the shape only."""
    n, _, h, w = shape
    return rng.integers(0, h - size + 1, size=(n, per_image)), rng.integers(0, w - size + 1, size=(n, per_image))


def _gather_patches(level: np.ndarray, positions: tuple[np.ndarray, np.ndarray], size: int) -> np.ndarray:
    ys, xs = positions
    n, per_image = ys.shape
    dy, dx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    img = np.arange(n)[:, None, None, None]
    p = level[img, :, (ys[..., None, None] + dy), (xs[..., None, None] + dx)]  # (n, per, size, size, c)
    return p.reshape(n * per_image, -1)


def _patches(level: np.ndarray, per_image: int, size: int, rng: np.random.Generator) -> np.ndarray:
    return _gather_patches(level, _patch_positions(level.shape, per_image, size, rng), size)


def _directions(dim: int, projections: int, rng: np.random.Generator) -> np.ndarray:
    dirs = rng.standard_normal((dim, projections))
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
    return dirs


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, projections: int, rng: np.random.Generator) -> float:
    """Mean over random unit directions of the 1-D Wasserstein-1 distance of the projections."""
    dirs = _directions(a.shape[1], projections, rng)
    pa, pb = np.sort(a @ dirs, axis=0), np.sort(b @ dirs, axis=0)
    return float(np.mean(np.abs(pa - pb)))


class _Level(NamedTuple):
    """One pyramid level of the real side: what every fake is scored against."""

    name: str
    fake_positions: tuple[np.ndarray, np.ndarray]
    mean: np.ndarray
    std: np.ndarray
    dirs: np.ndarray
    sorted_real: np.ndarray


class SlicedWassersteinReference:
    """:func:`swd_images` against one real set, its side computed once.

    Training scores every quality point against the same real images: their pyramid, patches,
    normalisation and sorted projections were recomputed each time, half of each SWD (the CLI's
    resume test spent 38% of its time in it). The random draws depend on shapes only (patch
    corners, then directions), so they are drawn here in swd_images' order: the same numbers."""

    def __init__(self, real: np.ndarray, levels: int = 3, patch: int = 7, per_image: int = 32,
                 projections: int = 256, seed: int = 0) -> None:
        self.shape, self.patch = real.shape, patch
        rng = np.random.default_rng(seed)
        self.levels: list[_Level] = []
        for i, lr in enumerate(laplacian_pyramid(real, levels)):
            pr = _patches(lr, per_image, patch, rng)
            fake_positions = _patch_positions(lr.shape, per_image, patch, rng)
            mean, std = pr.mean(axis=0), pr.std(axis=0) + 1e-8
            dirs = _directions(pr.shape[1], projections, rng)
            sorted_real = np.sort(((pr - mean) / std) @ dirs, axis=0)
            self.levels.append(_Level(f"level{i}_{lr.shape[-1]}px", fake_positions, mean, std, dirs, sorted_real))

    def distance(self, fake: np.ndarray) -> dict[str, float]:
        """SWD per pyramid level (x1e3) and their mean; lower is better."""
        if fake.shape != self.shape:
            raise ValueError(f"swd needs equal-sized sets of one shape, got {self.shape} and {fake.shape}")
        out: dict[str, float] = {}
        for level, lf in zip(self.levels, laplacian_pyramid(fake, len(self.levels))):
            pf = _gather_patches(lf, level.fake_positions, self.patch)
            sorted_fake = np.sort(((pf - level.mean) / level.std) @ level.dirs, axis=0)
            out[level.name] = 1e3 * float(np.mean(np.abs(level.sorted_real - sorted_fake)))
        out["mean"] = float(np.mean(list(out.values())))
        return out


def swd_images(real: np.ndarray, fake: np.ndarray, levels: int = 3, patch: int = 7, per_image: int = 32,
               projections: int = 256, seed: int = 0) -> dict[str, float]:
    """SWD between two image sets (NCHW, [-1, 1], equal counts) per pyramid level, x1e3 as in
    the paper; lower is better. Patches are normalised per channel with the real set's stats."""
    return SlicedWassersteinReference(real, levels, patch, per_image, projections, seed).distance(fake)
