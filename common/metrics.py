"""Quality metrics computed in numpy, the same code scoring every backend."""

from __future__ import annotations

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


def _patches(level: np.ndarray, per_image: int, size: int, rng: np.random.Generator) -> np.ndarray:
    n, c, h, w = level.shape
    ys = rng.integers(0, h - size + 1, size=(n, per_image))
    xs = rng.integers(0, w - size + 1, size=(n, per_image))
    dy, dx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    img = np.arange(n)[:, None, None, None]
    p = level[img, :, (ys[..., None, None] + dy), (xs[..., None, None] + dx)]  # (n, per, size, size, c)
    return p.reshape(n * per_image, -1)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, projections: int, rng: np.random.Generator) -> float:
    """Mean over random unit directions of the 1-D Wasserstein-1 distance of the projections."""
    dirs = rng.standard_normal((a.shape[1], projections))
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
    pa, pb = np.sort(a @ dirs, axis=0), np.sort(b @ dirs, axis=0)
    return float(np.mean(np.abs(pa - pb)))


def swd_images(real: np.ndarray, fake: np.ndarray, levels: int = 3, patch: int = 7, per_image: int = 32,
               projections: int = 256, seed: int = 0) -> dict[str, float]:
    """SWD between two image sets (NCHW, [-1, 1], equal counts) per pyramid level, x1e3 as in
    the paper; lower is better. Patches are normalised per channel with the real set's stats."""
    if real.shape[1:] != fake.shape[1:] or len(real) != len(fake):
        raise ValueError(f"swd needs equal-sized sets of one shape, got {real.shape} and {fake.shape}")
    rng = np.random.default_rng(seed)
    out: dict[str, float] = {}
    for i, (lr, lf) in enumerate(zip(laplacian_pyramid(real, levels), laplacian_pyramid(fake, levels))):
        pr, pf = _patches(lr, per_image, patch, rng), _patches(lf, per_image, patch, rng)
        mean, std = pr.mean(axis=0), pr.std(axis=0) + 1e-8
        out[f"level{i}_{lr.shape[-1]}px"] = 1e3 * sliced_wasserstein((pr - mean) / std, (pf - mean) / std, projections, rng)
    out["mean"] = float(np.mean(list(out.values())))
    return out
