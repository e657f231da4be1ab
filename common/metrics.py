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
