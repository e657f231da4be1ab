"""What gets timed: ``run(n)`` = n iterations of one thing, and ``sync()`` = its device barrier.

Inputs come from a small pool of batches drawn once from the shared streams
(common/streams.py) and cast to the run's dtype on the host beforehand, then cycled, so
neither data loading nor dtype conversion is timed, and successive iterations do not
re-read one buffer that sits in a cache (METHOD.md).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

import numpy as np

from gansuite.common.overrides import apply_overrides
from gansuite.common.protocol import GANProtocol
from gansuite.common.spec import GANSpec
from gansuite.common.streams import Streams

POOL_BATCHES = 4
#: The JAX scan's stacked inputs are copied to the device on every call: keep them small.
MAX_STACK_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Pool:
    real: list[np.ndarray]
    z: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.real)


def spec_at_batch(spec: GANSpec, batch_size: int, batches: int = POOL_BATCHES) -> GANSpec:
    """The spec with ``batch_size`` and exactly ``batches`` full batches of data."""
    return apply_overrides(spec, [f"train.batch_size={batch_size}", f"data.n_examples={batch_size * batches}"])


def make_pool(spec: GANSpec, seed: int, dtype: str) -> Pool:
    """``POOL_BATCHES`` batches (real and z) of ``spec``'s batch size, as ``dtype`` numpy arrays."""
    np_dtype = np.float64 if dtype == "float64" else np.float32
    streams = Streams(spec, seed)
    batches = [streams.batch(i) for i in range(streams.iterations_per_epoch)]
    return Pool([np.ascontiguousarray(b.real, np_dtype) for b in batches],
                [np.ascontiguousarray(b.z, np_dtype) for b in batches])


class TrainSteps:
    """``backend.train_step`` on pooled batches; ``z=None`` in fast mode (noise drawn on the device)."""

    def __init__(self, backend: GANProtocol, state: Any, pool: Pool, device_noise: bool,
                 context: Callable[[], ContextManager] = contextlib.nullcontext):
        self.backend, self.state, self.pool = backend, state, pool
        self.device_noise, self.context = device_noise, context
        self.i = 0

    def run(self, n: int) -> None:
        with self.context():
            for _ in range(n):
                k = self.i % len(self.pool)
                self.backend.train_step(self.state, self.pool.real[k], None if self.device_noise else self.pool.z[k])
                self.i += 1

    def sync(self) -> None:
        self.backend.sync(self.state)


class Sampling:
    """``backend.generate`` (batch-statistics BatchNorm, as the tutorial samples) on pooled z."""

    def __init__(self, backend: GANProtocol, state: Any, pool: Pool):
        self.backend, self.state, self.pool = backend, state, pool
        self.i = 0

    def run(self, n: int) -> None:
        for _ in range(n):
            self.backend.generate(self.state, self.pool.z[self.i % len(self.pool)], "batch")
            self.i += 1

    def sync(self) -> None:
        self.backend.sync(self.state)


class EpochScan:
    """A backend's optional ``train_epoch(state, reals, zs)``: ``k`` iterations in one compiled call."""

    def __init__(self, backend: Any, state: Any, pool: Pool, device_noise: bool, k: int):
        per_batch = pool.real[0].nbytes + (0 if device_noise else pool.z[0].nbytes)
        self.k = max(1, min(k, MAX_STACK_BYTES // max(1, per_batch)))
        order = [i % len(pool) for i in range(self.k)]
        self.reals = np.stack([pool.real[i] for i in order])
        self.zs = None if device_noise else np.stack([pool.z[i] for i in order])
        self.backend, self.state = backend, state

    def run(self, n: int) -> None:
        for _ in range(n):
            self.backend.train_epoch(self.state, self.reals, self.zs)

    def sync(self) -> None:
        self.backend.sync(self.state)


class PeerTraining:
    def __init__(self, peer: Any):
        self.peer = peer

    def run(self, n: int) -> None:
        self.peer.train(n)

    def sync(self) -> None:
        self.peer.sync()


class PeerSampling:
    def __init__(self, peer: Any):
        self.peer = peer

    def run(self, n: int) -> None:
        self.peer.sample(n)

    def sync(self) -> None:
        self.peer.sync()
