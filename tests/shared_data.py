"""The data CI keeps beside the clone (``../shared``): where it is missing, a test that needs it
fails when ``CI`` is set and skips with that reason elsewhere."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: ../shared/data/mnist, beside the repository: the MNIST test set (IDX .gz, md5 sums in its README)
SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def require_mnist() -> Path:
    if not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").exists():
        if os.environ.get("CI"):
            pytest.fail(f"{SHARED_MNIST} is missing: CI runs with ../shared beside the clone")
        pytest.skip(f"{SHARED_MNIST} is not here (it is beside the repository in CI)")
    return SHARED_MNIST
