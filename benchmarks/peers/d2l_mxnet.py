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

:class:`SeedPort` is the same code as a checked port (common/verify.py) of the preset
``gaussian-mxnet``: the book's nets (``nn.Sequential`` of ``nn.Dense``), ``SigmoidBCELoss``,
``gluon.Trainer(..., 'adam', {'learning_rate': lr})`` and ``update_D`` / ``update_G`` above,
verbatim, one call of each per ``train_step``. Replaced: the book's data loader and noise
(``load_array``, ``np.random.normal``) by the given ``real`` and ``z``, and
``init.Normal(0.02)``'s draws by the canonical tensors, written over the initialised
parameters (Gluon's Dense ``(units, in_units)`` weight is the canonical ``(out, in)``; the
canonical biases are the zeros Gluon leaves them at). ``dtype="float64"``: the nets are
initialised in float32 (as the seed), then ``cast('float64')`` and fed float64 batches.

What differs from the float64 oracle, measured (tests/test_backend_mxnet.py), and why:
MXNet's own Adam. ``mx.optimizer.Adam.update`` forms the step ``lr * sqrt(1 - b2^t) / (1 -
b1^t)`` in Python (float64) and hands it to the fused kernel ``adam_update``, whose
parameters ``lr``, ``beta1``, ``beta2``, ``epsilon``, ``rescale_grad`` are C++ ``float``s
(AdamParam), so in a float64 net the kernel runs with ``0.9f``, ``0.999f`` (``1.f - 0.999f =
0.000999987``: v 1.3e-5 off), ``1e-8f`` and the step rounded to float32 (~3e-8; parsed from its
string by dmlc's strtof, not always to the nearest float). The forward,
the gradients and the first loss_D are the oracle's to ~1e-16; the parameters after the
first iteration, and loss_G (computed through D after its Adam step), are off (measured,
float64: forward G 1.5e-16, D 1.0e-16; one iteration losses 2.6e-7, parameters 6.7e-6;
5 iterations: parameters 1.5e-4): a true property of the seed's code, not of the port. The
test reproduces the port with the oracle given a numpy model of the kernel's float
coefficients: <= 1e-12 after one iteration, <= 1e-10 over 20, which pins the cause.
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

import numpy as onp

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


def _seed_nets():
    """The book's ``net_G`` and ``net_D``, verbatim."""
    net_G = nn.Sequential()
    net_G.add(nn.Dense(2))
    net_D = nn.Sequential()
    net_D.add(nn.Dense(5, activation='tanh'),
              nn.Dense(3, activation='tanh'),
              nn.Dense(1))
    return net_G, net_D


#: canonical layer -> (net, index in the book's nn.Sequential): D's Tanh layers (spec layers 1
#: and 3) live inside the Dense blocks (activation='tanh').
_LAYERS = {"G.0": ("G", 0), "D.0": ("D", 0), "D.2": ("D", 1), "D.4": ("D", 2)}


class SeedPort:
    """d2l 20.1's MXNet tab as a port of ``gaussian-mxnet`` (see the module docstring)."""

    def __init__(self, spec: GANSpec, params: dict[str, onp.ndarray], dtype: str) -> None:
        self.ctx, self.dtype = mx.cpu(), dtype
        with _np_mode():
            self.net_G, self.net_D = _seed_nets()
            self.loss = gluon.loss.SigmoidBCELoss()
            self.net_D.initialize(init=init.Normal(0.02), force_reinit=True, ctx=self.ctx)
            self.net_G.initialize(init=init.Normal(0.02), force_reinit=True, ctx=self.ctx)
            # The deferred initialisation runs at the first forward, in the seed's float32
            # (init.Normal cannot fill a float64 array in numpy mode: _npi_normal's output is
            # float32). Then, not the seed's: the nets are cast to dtype, and every tensor is
            # overwritten with the canonical one.
            self.net_D(self.net_G(np.zeros((1, spec.latent_dim), ctx=self.ctx)))
            self.net_G.cast(dtype)
            self.net_D.cast(dtype)
            for name, value in params.items():
                self._param(name).set_data(np.array(value, dtype=dtype, ctx=self.ctx))
            self.trainer_D = gluon.Trainer(self.net_D.collect_params(),
                                           'adam', {'learning_rate': spec.train.optim_D.lr})
            self.trainer_G = gluon.Trainer(self.net_G.collect_params(),
                                           'adam', {'learning_rate': spec.train.optim_G.lr})

    def _param(self, name: str) -> gluon.Parameter:
        layer, tensor = name.rsplit(".", 1)
        net, index = _LAYERS[layer]
        return getattr((self.net_G if net == "G" else self.net_D)[index], tensor)

    def _array(self, x: onp.ndarray):
        return np.array(onp.ascontiguousarray(x), dtype=self.dtype, ctx=self.ctx)

    def generate(self, z: onp.ndarray) -> onp.ndarray:
        with _np_mode():
            return self.net_G(self._array(z)).asnumpy()

    def discriminate(self, x: onp.ndarray) -> onp.ndarray:
        with _np_mode():
            return self.net_D(self._array(x)).asnumpy().reshape(-1)

    def train_step(self, real: onp.ndarray, z: onp.ndarray) -> dict[str, float]:
        """One iteration of the book's loop body: ``update_D(X, Z, ...)``, ``update_G(Z, ...)``."""
        with _np_mode():
            X, Z = self._array(real), self._array(z)
            loss_D = update_D(X, Z, self.net_D, self.net_G, self.loss, self.trainer_D)
            loss_G = update_G(Z, self.net_D, self.net_G, self.loss, self.trainer_G)
        return {"loss_D": loss_D, "loss_G": loss_G}

    def export_params(self) -> dict[str, onp.ndarray]:
        with _np_mode():
            return {f"{layer}.{t}": self._param(f"{layer}.{t}").data().asnumpy()
                    for layer in _LAYERS for t in ("weight", "bias")}

    @staticmethod
    def versions() -> dict[str, str]:
        return {"mxnet": mx.__version__}
