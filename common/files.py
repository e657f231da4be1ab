"""Files written whole or not at all: a reader (another process of the comparison, a resumed run)
never sees half of one."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def write_npz_atomically(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """``np.savez`` of ``arrays`` to a temporary file beside ``path`` (this process's own), then one
    ``os.replace`` onto ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
        np.savez(f, **arrays)
    os.replace(tmp, path)
    return path
