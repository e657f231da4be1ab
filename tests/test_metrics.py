"""Image quality metric: sliced Wasserstein distance over Laplacian-pyramid patches."""

from __future__ import annotations

import numpy as np

from gansuite.common.data import load_dataset
from gansuite.common.metrics import laplacian_pyramid, sliced_wasserstein, swd_images
from gansuite.common.spec import DataSpec


def test_laplacian_pyramid_reconstructs_the_image():
    x = np.random.default_rng(0).normal(size=(2, 3, 16, 16))
    pyr = laplacian_pyramid(x, 3)
    assert [p.shape[-1] for p in pyr] == [16, 8, 4]
    rec = pyr[-1]
    for band in reversed(pyr[:-1]):
        rec = band + rec.repeat(2, axis=2).repeat(2, axis=3)
    np.testing.assert_allclose(rec, x, atol=1e-12)


def test_sliced_wasserstein_of_shifted_sets_is_the_shift():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(4000, 1))
    # in 1-D every unit direction is +-1, and W1 between a set and its shift is the shift
    assert abs(sliced_wasserstein(a, a + 0.5, 8, rng) - 0.5) < 1e-12


def test_swd_ranks_real_halves_above_noise_and_blur():
    x = load_dataset(DataSpec(kind="shapes", n_examples=256), 0).get(np.arange(256))
    same = swd_images(x[:128], x[128:])["mean"]
    noisy = swd_images(x[:128], np.clip(x[128:] + np.random.default_rng(0).normal(0, 0.2, x[128:].shape), -1, 1))["mean"]
    uniform = swd_images(x[:128], np.random.default_rng(0).uniform(-1, 1, x[:128].shape))["mean"]
    assert same < noisy < uniform
    assert same * 5 < noisy
