"""Seed 002's MLP GAN and CGAN learn MNIST (torch env; tests/conftest.py collects this file only
where torch is declared): each preset trains on the MNIST test set (../shared/data/mnist, 28x28, [-1, 1]) in float32 parity mode for the iterations of
common/gallery.SEED002_LEARNING, and its digit Frechet distance (the suite's NumPy classifier,
images scored at 32x32) must fall by the stated factor and below a collapsed G's (every sample
the data mean). The samples, losses and quality curves of these runs are README's seed-002
pictures (`gansuite train ... --out results/seed002/<model>`, README names the command).
The parity of these presets on all four backends is held to the oracle in each backend's
contract tests and the comparison; one framework suffices to show the spec learns."""

from __future__ import annotations

import pytest

from shared_data import require_mnist

from gansuite.common.gallery import SEED002_LEARNING, learning_run, seed002_verdict
from gansuite.common.registry import get_backend


@pytest.mark.parametrize("model", sorted(SEED002_LEARNING))
def test_seed002_gan_learns_mnist(model, tmp_path):
    check = SEED002_LEARNING[model]
    summary = learning_run(get_backend("torch"), tmp_path, require_mnist(), log_every=10**9, model=model,
                           iterations=check.iterations, quality_every=check.iterations)
    rows = summary["quality"]["over_training"]
    assert [r["iteration"] for r in rows] == [0, check.iterations]
    v = seed002_verdict(summary, check)
    assert v["improved"] and v["beats_collapsed"], (v, check)
    # the sliced Wasserstein distance agrees: below half the start's (against a collapsed G it is
    # noisy at these lengths: the CGAN's was 392, 361, 459 at 2000, 2500, 3000 iterations, collapsed 508)
    assert rows[-1]["swd"] < rows[0]["swd"] / 2, summary["quality"]
