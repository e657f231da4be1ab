"""d2l 20.1 (seed 001), MXNet tab: the Gaussian GAN's training loop as the book writes it.

Kept from the seed: the NumPy interface (``npx.set_np()``), ``load_array``
(``gluon.data.DataLoader`` over an ``ArrayDataset`` with ``shuffle=True``), Gluon
``nn.Sequential`` nets with ``Dense(..., activation='tanh')``, ``initialize(init.Normal(0.02))``
(deferred to the first forward), ``SigmoidBCELoss``, ``gluon.Trainer`` with Adam and the
book's learning rates, ``trainer.step(batch_size)``, ``update_D`` / ``update_G`` verbatim
(each returns ``float(loss.sum())``: one host sync per update) and the ``Accumulator``.
Left out: the Animator and the per-epoch scatter plot. On a GPU, nets and batches live on
``mx.gpu(0)`` (the book runs on the CPU context).

``npx.set_np()`` is process-wide and the suite's MXNet backend uses the classic NDArray
API, so the NumPy mode is switched on only while this peer runs (``_np_mode``).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Iterator

with warnings.catch_warnings():
    # mxnet 1.9's import touches numpy aliases and distutils that numpy 1.23 deprecates (~240 warnings).
    warnings.simplefilter("ignore", DeprecationWarning)
    import mxnet as mx
    from mxnet import autograd, gluon, init, np, npx
    from mxnet.gluon import nn

from gansuite.common.spec import GANSpec

from ..frameworks import is_gpu
from . import Peer as BasePeer
from . import gaussian_examples


@contextlib.contextmanager
def _np_mode() -> Iterator[None]:
    was_on = npx.is_np_array()
    npx.set_np()
    try:
        yield
    finally:
        if not was_on:
            npx.reset_np()


def load_array(data_arrays, batch_size, is_train=True):  # d2l.load_array (mxnet)
    dataset = gluon.data.ArrayDataset(*data_arrays)
    return gluon.data.DataLoader(dataset, batch_size, shuffle=is_train)


def update_D(X, Z, net_D, net_G, loss, trainer_D):
    """Update discriminator."""
    batch_size = X.shape[0]
    ones = np.ones((batch_size,), ctx=X.ctx)
    zeros = np.zeros((batch_size,), ctx=X.ctx)
    with autograd.record():
        real_Y = net_D(X)
        fake_X = net_G(Z)
        # Do not need to compute gradient for `net_G`, detach it from
        # computing gradients.
        fake_Y = net_D(fake_X.detach())
        loss_D = (loss(real_Y, ones) + loss(fake_Y, zeros)) / 2
    loss_D.backward()
    trainer_D.step(batch_size)
    return float(loss_D.sum())


def update_G(Z, net_D, net_G, loss, trainer_G):
    """Update generator."""
    batch_size = Z.shape[0]
    ones = np.ones((batch_size,), ctx=Z.ctx)
    with autograd.record():
        # We could reuse `fake_X` from `update_D` to save computation
        fake_X = net_G(Z)
        # Recomputing `fake_Y` is needed since `net_D` is changed
        fake_Y = net_D(fake_X)
        loss_G = loss(fake_Y, ones)
    loss_G.backward()
    trainer_G.step(batch_size)
    return float(loss_G.sum())


class Peer(BasePeer):
    mode = "peer-d2l"
    framework = "mxnet"
    seed_document = "seed 001: d2l 20.1 Generative Adversarial Networks, MXNet tab"
    g_forwards = 2

    def __init__(self, spec: GANSpec, batch_size: int, device: str, seed: int) -> None:
        self.ctx = mx.gpu(0) if is_gpu(device) else mx.cpu()
        self.batch_size = batch_size
        self.latent_dim = spec.latent_dim
        with _np_mode():
            mx.random.seed(seed)
            self.data_iter = load_array((np.array(gaussian_examples(spec, batch_size, seed)),), batch_size)
            self.net_G = nn.Sequential()
            self.net_G.add(nn.Dense(2))
            self.net_D = nn.Sequential()
            self.net_D.add(nn.Dense(5, activation='tanh'),
                           nn.Dense(3, activation='tanh'),
                           nn.Dense(1))
            self.loss = gluon.loss.SigmoidBCELoss()
            self.net_D.initialize(init=init.Normal(0.02), force_reinit=True, ctx=self.ctx)
            self.net_G.initialize(init=init.Normal(0.02), force_reinit=True, ctx=self.ctx)
            self.trainer_D = gluon.Trainer(self.net_D.collect_params(),
                                           'adam', {'learning_rate': spec.train.optim_D.lr})
            self.trainer_G = gluon.Trainer(self.net_G.collect_params(),
                                           'adam', {'learning_rate': spec.train.optim_G.lr})
        self.metric = [0.0, 0.0, 0.0]  # d2l.Accumulator(3)
        self._batches = iter(self.data_iter)

    def _next_batch(self):
        try:
            X = next(self._batches)
        except StopIteration:  # next epoch: `for X in data_iter` reshuffles
            self._batches = iter(self.data_iter)
            X = next(self._batches)
        return X.as_in_ctx(self.ctx)

    def train(self, n: int) -> None:
        with _np_mode():
            for _ in range(n):
                X = self._next_batch()
                batch_size = X.shape[0]
                Z = np.random.normal(0, 1, size=(batch_size, self.latent_dim), ctx=self.ctx)
                args = (update_D(X, Z, self.net_D, self.net_G, self.loss, self.trainer_D),
                        update_G(Z, self.net_D, self.net_G, self.loss, self.trainer_G),
                        batch_size)
                self.metric = [a + float(b) for a, b in zip(self.metric, args)]  # Accumulator.add

    def sample(self, n: int) -> None:
        with _np_mode():
            for _ in range(n):  # the per-epoch visualisation's forward, at the benchmark's batch size
                Z = np.random.normal(0, 1, size=(self.batch_size, self.latent_dim), ctx=self.ctx)
                self.net_G(Z).asnumpy()

    def sync(self) -> None:
        mx.nd.waitall()

    def versions(self) -> dict[str, str]:
        return {"mxnet": mx.__version__}

    def settings(self) -> dict[str, Any]:
        return {"seed_document": self.seed_document, "device": str(self.ctx),
                "data": "d2l.load_array: gluon DataLoader(ArrayDataset, shuffle=True)",
                "hybridized": False, "numpy_interface": True,
                "onednn_built": mx.runtime.Features().is_enabled("MKLDNN")}
