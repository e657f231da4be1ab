"""What gets timed: ``run(n)`` = n iterations of one thing, and ``sync()`` = its device barrier.

Inputs come from a small pool of batches drawn once from the shared streams
(common/streams.py; the VAE's from common/vae.py ``vae_batch``) and cast to the run's dtype on
the host beforehand, then cycled, so neither data loading nor dtype conversion is timed, and
successive iterations do not re-read one buffer that sits in a cache (METHOD.md).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

import numpy as np

from gansuite.common.data import load_dataset
from gansuite.common.overrides import apply_overrides
from gansuite.common.spec import GANSpec
from gansuite.common.streams import Streams
from gansuite.common.vae import VAESpec, vae_batch, vae_iterations_per_epoch

POOL_BATCHES = 4
#: The JAX scan's stacked inputs are copied to the device on every call: keep them small.
MAX_STACK_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Pool:
    """Per batch: ``real``, the data (a GAN's real images, the VAE's flat x in [0, 1]), and ``z``,
    the iteration's draw (a GAN's noise, the VAE's eps; both standard normal, so the VAE's also
    serve as the latent points that sampling decodes)."""

    real: list[np.ndarray]
    z: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.real)


def spec_at_batch(spec: GANSpec | VAESpec, batch_size: int, batches: int = POOL_BATCHES) -> GANSpec | VAESpec:
    """The spec with ``batch_size`` and exactly ``batches`` full batches of data."""
    return apply_overrides(spec, [f"train.batch_size={batch_size}", f"data.n_examples={batch_size * batches}"])


def _as(dtype: str) -> type:
    return np.float64 if dtype == "float64" else np.float32


def make_pool(spec: GANSpec, seed: int, dtype: str) -> Pool:
    """``POOL_BATCHES`` batches (real and z) of ``spec``'s batch size, as ``dtype`` numpy arrays."""
    np_dtype = _as(dtype)
    streams = Streams(spec, seed)
    batches = [streams.batch(i) for i in range(streams.iterations_per_epoch)]
    return Pool([np.ascontiguousarray(b.real, np_dtype) for b in batches],
                [np.ascontiguousarray(b.z, np_dtype) for b in batches])


def make_vae_pool(spec: VAESpec, seed: int, dtype: str) -> Pool:
    """The first epoch's (x, eps) of ``spec`` (a :func:`spec_at_batch` spec: ``POOL_BATCHES`` full
    batches), exactly what the VAE's training loop feeds (common/vae_training.py), as ``dtype``."""
    np_dtype = _as(dtype)
    dataset = load_dataset(spec.data, seed)
    batches = [vae_batch(spec, dataset, seed, i)
               for i in range(min(POOL_BATCHES, vae_iterations_per_epoch(spec, dataset.n)))]
    return Pool([np.ascontiguousarray(x, np_dtype) for x, _ in batches],
                [np.ascontiguousarray(eps, np_dtype) for _, eps in batches])


class TrainSteps:
    """``step(real, z)`` (a protocol's ``train_step`` on one state) on pooled batches; ``z=None``
    with ``device_noise`` (a GAN's fast mode: noise drawn on the device).

    ``context`` (bf16 autocast) is entered around EACH step, as a training loop wraps its forward:
    torch.autocast caches its bf16 copies of the weights until the outermost region exits, so one
    region around many steps would run every step after the first on the first step's weights."""

    def __init__(self, step: Callable[[np.ndarray, np.ndarray | None], Any], sync: Callable[[], None], pool: Pool,
                 device_noise: bool, context: Callable[[], ContextManager] = contextlib.nullcontext):
        self.step, self.sync, self.pool = step, sync, pool
        self.device_noise, self.context = device_noise, context
        self.i = 0

    def run(self, n: int) -> None:
        for _ in range(n):
            k = self.i % len(self.pool)
            with self.context():
                self.step(self.pool.real[k], None if self.device_noise else self.pool.z[k])
            self.i += 1


class Sampling:
    """``sample(z)`` (a GAN's ``generate`` with batch-statistics BatchNorm, as the tutorial samples;
    the VAE's ``decode``) on pooled z."""

    def __init__(self, sample: Callable[[np.ndarray], Any], sync: Callable[[], None], pool: Pool):
        self.sample, self.sync, self.pool = sample, sync, pool
        self.i = 0

    def run(self, n: int) -> None:
        for _ in range(n):
            self.sample(self.pool.z[self.i % len(self.pool)])
            self.i += 1


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
