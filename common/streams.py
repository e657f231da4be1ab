"""The shared random streams: batch order and latent noise, by iteration number.

Every stream is keyed by ``SeedSequence([seed, stream id, index])``, so any
iteration's batch and noise can be produced directly (no replay), which is what
makes resume exact and lets every backend train on the same numbers.

* order:  one permutation of the dataset per epoch (``train.shuffle``, the default), or the
          dataset's own order every epoch; with ``train.pad_last`` the last batch is filled up
          from the start of that order (MXNet's ``NDArrayIter`` 'pad'),
* noise:  ``z ~ N(0, 1)`` of shape ``(B, *latent_shape)`` per iteration, where
          ``B`` is that iteration's real batch size (the last one may be short), or always
          ``batch_size`` with ``train.noise_batch = "batch_size"`` (seed 003),
* fixed:  the fixed noise used for sample grids (the tutorial's fixed_noise), and for a
          conditional GAN the fixed labels beside it (row i shows digit i // 10 of a 10x10 grid),
* draws:  labels, the G step's fresh noise and dropout masks (common/draws.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .data import Dataset, load_dataset
from .draws import Draws, cut_draws, iteration_draws, raise_missing_labels
from .spec import GANSpec

STREAM_ORDER = 3
STREAM_NOISE = 4
STREAM_FIXED = 5


def _rng(*words: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(w) for w in words])))


@dataclass(frozen=True)
class Batch:
    iteration: int
    epoch: int
    real: np.ndarray  # float64, (B, *example_shape)
    z: np.ndarray  # float64, (B, *latent_shape)
    draws: Draws  # labels, fresh noise, dropout masks (common/draws.py); {} for a plain GAN

    def cut(self, real_rows: int, noise_rows: int) -> "Batch":
        """The first ``real_rows`` examples and ``noise_rows`` noise rows, with their draws."""
        return Batch(self.iteration, self.epoch, self.real[:real_rows], self.z[:noise_rows],
                     cut_draws(self.draws, real_rows, noise_rows))


class Streams:
    def __init__(self, spec: GANSpec, seed: int, dataset: Dataset | None = None):
        self.spec = spec
        self.seed = int(seed)
        self.dataset = dataset if dataset is not None else load_dataset(spec.data, seed)
        if spec.conditional and self.dataset.labels is None:  # refused before any work is done
            raise_missing_labels(spec)
        bs, n = spec.train.batch_size, self.dataset.n
        self.iterations_per_epoch = n // bs if spec.train.drop_last else -(-n // bs)
        if self.iterations_per_epoch == 0:
            from .errors import SpecError

            raise SpecError("train.batch_size", f"{bs} exceeds the dataset size {n} with drop_last=true")
        self.total_iterations = self.iterations_per_epoch * spec.train.epochs
        self._perm_epoch = -1
        self._perm = np.empty(0, dtype=np.int64)

    def permutation(self, epoch: int) -> np.ndarray:
        if not self.spec.train.shuffle:
            return np.arange(self.dataset.n)
        if epoch != self._perm_epoch:
            self._perm = _rng(self.seed, STREAM_ORDER, epoch).permutation(self.dataset.n)
            self._perm_epoch = epoch
        return self._perm

    def indices(self, iteration: int) -> np.ndarray:
        epoch, k = divmod(int(iteration), self.iterations_per_epoch)
        bs = self.spec.train.batch_size
        order = self.permutation(epoch)
        idx = order[k * bs : (k + 1) * bs]
        if self.spec.train.pad_last and len(idx) < bs:
            idx = np.concatenate([idx, np.resize(order, bs - len(idx))])  # wraps around, as NDArrayIter
        return idx

    def real(self, iteration: int) -> np.ndarray:
        return self.dataset.get(self.indices(iteration))

    def noise(self, iteration: int, batch_size: int | None = None) -> np.ndarray:
        if batch_size is None:
            batch_size = self.spec.train.noise_rows(len(self.indices(iteration)))
        return _rng(self.seed, STREAM_NOISE, iteration).standard_normal((batch_size, *self.spec.latent_shape))

    def batch(self, iteration: int) -> Batch:
        idx = self.indices(iteration)
        real = self.dataset.get(idx)
        rows = self.spec.train.noise_rows(len(real))
        labels = self.dataset.labels[idx] if self.dataset.labels is not None else None
        draws = iteration_draws(self.spec, self.seed, iteration, labels, len(real))
        return Batch(iteration, iteration // self.iterations_per_epoch, real, self.noise(iteration, rows), draws)

    def iterate(self, start: int = 0, stop: int | None = None) -> Iterator[Batch]:
        stop = self.total_iterations if stop is None else stop
        for it in range(start, stop):
            yield self.batch(it)

    def fixed_noise(self, n: int = 64) -> np.ndarray:
        return _rng(self.seed, STREAM_FIXED).standard_normal((n, *self.spec.latent_shape))

    def fixed_labels(self, n: int = 64) -> np.ndarray | None:
        """Labels beside :meth:`fixed_noise` for a conditional GAN: ``i * k // n`` for row i (for
        n = 100 and 10 classes, seed 002's grid: ten rows of each digit in turn); None otherwise."""
        if not self.spec.conditional:
            return None
        k = self.spec.num_classes
        return (np.arange(n) * k // n).astype(np.int64)
