"""An idiomatic MXNet Gluon DCGAN (mxnet 1.9.1) with the PyTorch tutorial's architecture.

Written in the style of MXNet's own Gluon DCGAN, ``example/gluon/dc_gan/dcgan.py`` (read at tag
1.9.1 of apache/mxnet), which is itself a Gluon transcription of the PyTorch DCGAN:
``Conv2DTranspose`` / ``Conv2D`` with kernel 4 and ``use_bias=False``, Gluon's ``BatchNorm()``,
``Activation('relu')`` / ``LeakyReLU(0.2)`` / ``Activation('tanh')``, NCHW (MXNet's default),
``initialize(mx.init.Normal(0.02), ctx=ctx)``, ``gluon.Trainer(net.collect_params(), 'adam',
{'learning_rate': 2e-4, 'beta1': 0.5})`` per net, the classic ``mx.nd`` API, and its loop body:
``data.as_in_context(ctx)``, ``mx.nd.random.normal(0, 1, shape=(B, nz, 1, 1))``, D on the real
batch under one ``autograd.record()``, G and D on ``fake.detach()`` under a second one, ``errD =
errD_real + errD_fake``, ``errD.backward()``, ``trainerD.step(batch_size)``, then D on ``fake``
(the same fake, not detached: G runs forward once per iteration, as in the tutorial) under a
third ``record()``, ``errG.backward()``, ``trainerG.step(batch_size)``, and the logging line's
``mx.nd.mean(errD).asscalar()`` and ``mx.nd.mean(errG).asscalar()``: two host reads per
iteration, kept (they are what the example does; they also bound MXNet's asynchronous engine
queue to one iteration, as the tutorial's ``.item()`` calls do).

Gluon's ``BatchNorm()`` defaults (momentum 0.9, epsilon 1e-5) are PyTorch's BatchNorm2d defaults
(momentum 0.1, eps 1e-5) in MXNet's convention, so they stay as written. ``Conv2DTranspose(c, 4,
2, 1)`` is PyTorch's ``ConvTranspose2d(., c, 4, 2, 1)``: the same padding, shapes and FLOPs.
``mx.init.Normal(0.02)`` reaches the conv weights; BatchNorm's gamma keeps its own 'ones'
initialiser (the tutorial draws it N(1, 0.02)).

Changed from the example, and why:
* D ends in ``Conv2D(1, 4, 1, 0)``, the tutorial's single logit, scored with
  ``gluon.loss.SigmoidBinaryCrossEntropyLoss()`` (``from_sigmoid=False``: the sigmoid inside the
  loss, stable). The example ends in ``Conv2D(2, ...)`` with ``SoftmaxCrossEntropyLoss`` (a
  two-class head: twice the last layer's parameters, no longer the tutorial's model).
* ``nn.HybridSequential`` + ``hybridize()`` (MXNet's own docs' GAN tutorial, info_gan, does
  this; it is what Gluon users do for speed: one cached graph per net). The 1.9.1 example uses
  plain ``nn.Sequential`` without ``hybridize``; ``hybridize()`` is called with its defaults
  (no ``static_alloc`` / ``static_shape``). The suite's MXNet backend's fast mode sets both.
* The ``mx.metric.Accuracy`` updates are left out: with one logit they do not apply as written,
  and they would add two more host reads (``asnumpy`` of D's outputs) per iteration.
* Random images in [-1, 1] (NCHW, already normalised) in a ``gluon.data.ArrayDataset`` with dummy
  labels replace CIFAR-10 / MNIST and the ``transformer`` (resize, transpose, scale), behind the
  example's ``gluon.data.DataLoader(..., batch_size, shuffle=True, last_batch='discard')``.
* Left out: ``visual`` (image files), the inception score, logging and checkpoints.

``sample(n)``: ``netG(fixed_noise).asnumpy()`` outside ``autograd.record()``, i.e. Gluon's
inference mode (BatchNorm on its running statistics; the tutorial samples in train mode). The
example itself visualises the training iteration's ``fake`` and runs no separate forward.
``sync()``: ``mx.nd.waitall()`` (MXNet's engine is asynchronous; after the loss reads only the
last ``trainerG.step`` can still be queued).

oneDNN: this module does not touch ``MXNET_MKLDNN_ENABLED`` (the suite's MXNet backend defaults
it to 0 for parity, which a peer must not inherit); the driver sets it, ``settings()`` records it.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

with warnings.catch_warnings():
    # mxnet 1.9's import touches numpy aliases and distutils that numpy 1.23 deprecates.
    warnings.simplefilter("ignore", DeprecationWarning)
    import mxnet as mx
    from mxnet import autograd, gluon
    from mxnet.gluon import nn

import numpy as np

from gansuite.common.spec import GANSpec

from ..frameworks import is_gpu
from . import Peer as BasePeer
from . import dataset_size, dcgan_sizes

ENV_FLAGS = ("MXNET_MKLDNN_ENABLED", "MXNET_ENGINE_TYPE", "MXNET_CPU_WORKER_NTHREADS", "MXNET_SUBGRAPH_BACKEND",
             "MXNET_EXEC_BULK_EXEC_TRAIN", "OMP_NUM_THREADS")


def get_netG(nz: int, ngf: int, nc: int) -> nn.HybridSequential:
    """The tutorial's Generator in Gluon (NCHW): (B, nz, 1, 1) -> (B, nc, 64, 64)."""
    netG = nn.HybridSequential()
    with netG.name_scope():
        # input is Z, going into a convolution
        netG.add(nn.Conv2DTranspose(ngf * 8, 4, 1, 0, use_bias=False))
        netG.add(nn.BatchNorm())
        netG.add(nn.Activation('relu'))
        # state size. (ngf*8) x 4 x 4
        netG.add(nn.Conv2DTranspose(ngf * 4, 4, 2, 1, use_bias=False))
        netG.add(nn.BatchNorm())
        netG.add(nn.Activation('relu'))
        # state size. (ngf*4) x 8 x 8
        netG.add(nn.Conv2DTranspose(ngf * 2, 4, 2, 1, use_bias=False))
        netG.add(nn.BatchNorm())
        netG.add(nn.Activation('relu'))
        # state size. (ngf*2) x 16 x 16
        netG.add(nn.Conv2DTranspose(ngf, 4, 2, 1, use_bias=False))
        netG.add(nn.BatchNorm())
        netG.add(nn.Activation('relu'))
        # state size. (ngf) x 32 x 32
        netG.add(nn.Conv2DTranspose(nc, 4, 2, 1, use_bias=False))
        netG.add(nn.Activation('tanh'))
        # state size. (nc) x 64 x 64
    return netG


def get_netD(ndf: int) -> nn.HybridSequential:
    """The tutorial's Discriminator in Gluon (NCHW), ending in one logit per image."""
    netD = nn.HybridSequential()
    with netD.name_scope():
        # input is (nc) x 64 x 64
        netD.add(nn.Conv2D(ndf, 4, 2, 1, use_bias=False))
        netD.add(nn.LeakyReLU(0.2))
        # state size. (ndf) x 32 x 32
        netD.add(nn.Conv2D(ndf * 2, 4, 2, 1, use_bias=False))
        netD.add(nn.BatchNorm())
        netD.add(nn.LeakyReLU(0.2))
        # state size. (ndf*2) x 16 x 16
        netD.add(nn.Conv2D(ndf * 4, 4, 2, 1, use_bias=False))
        netD.add(nn.BatchNorm())
        netD.add(nn.LeakyReLU(0.2))
        # state size. (ndf*4) x 8 x 8
        netD.add(nn.Conv2D(ndf * 8, 4, 2, 1, use_bias=False))
        netD.add(nn.BatchNorm())
        netD.add(nn.LeakyReLU(0.2))
        # state size. (ndf*8) x 4 x 4
        netD.add(nn.Conv2D(1, 4, 1, 0, use_bias=False))
        # state size. 1 x 1 x 1 (the example: Conv2D(2, ...) for a softmax head)
    return netD


def onednn_enabled() -> bool:
    """oneDNN built into the wheel and not switched off by MXNET_MKLDNN_ENABLED (read at the first operator)."""
    off = os.environ.get("MXNET_MKLDNN_ENABLED", "1").strip().lower() in ("0", "false")
    return mx.runtime.Features().is_enabled("MKLDNN") and not off


class Peer(BasePeer):
    mode = "peer-idiomatic"
    framework = "mxnet"
    seed_document = "MXNet example/gluon/dc_gan/dcgan.py (1.9.1), with the PyTorch DCGAN tutorial's architecture"
    g_forwards = 1  # errG reuses the D step's fake, as the example and the tutorial do
    includes = ("the example's loop body as written (hybridized nets): its DataLoader, noise draw and the "
                "two asscalar loss reads per iteration")
    sampling_what = ("netG(fixed_noise).asnumpy() outside autograd.record() "
                     "(Gluon's inference mode: BatchNorm on its running statistics)")
    BATCHES_PER_EPOCH = 8  # as the tutorial peer

    def __init__(self, spec: GANSpec, batch_size: int, device: str, seed: int) -> None:
        self.ctx = mx.gpu(0) if is_gpu(device) else mx.cpu()
        mx.random.seed(seed)
        sizes = dcgan_sizes(spec)
        self.nz, self.batch_size = sizes["nz"], batch_size
        n = dataset_size(batch_size, batch_size * self.BATCHES_PER_EPOCH)
        rng = np.random.default_rng(seed)
        images = rng.uniform(-1.0, 1.0, size=(n, sizes["nc"], 64, 64)).astype(np.float32)  # NCHW in [-1, 1]
        dataset = gluon.data.ArrayDataset(mx.nd.array(images), np.zeros(n, dtype=np.float32))
        self.train_data = gluon.data.DataLoader(dataset, batch_size, shuffle=True, last_batch='discard')
        self.netG = get_netG(sizes["nz"], sizes["ngf"], sizes["nc"])
        self.netD = get_netD(sizes["ndf"])
        # The example's get_configurations (with the tutorial's single-logit loss)
        self.loss = gluon.loss.SigmoidBinaryCrossEntropyLoss()
        self.netG.initialize(mx.init.Normal(0.02), ctx=self.ctx)
        self.netD.initialize(mx.init.Normal(0.02), ctx=self.ctx)
        self.netG.hybridize()
        self.netD.hybridize()
        self.trainerG = gluon.Trainer(self.netG.collect_params(), 'adam',
                                      {'learning_rate': spec.train.optim_G.lr, 'beta1': 0.5})
        self.trainerD = gluon.Trainer(self.netD.collect_params(), 'adam',
                                      {'learning_rate': spec.train.optim_D.lr, 'beta1': 0.5})
        # set labels
        self.real_label = mx.nd.ones((batch_size,), ctx=self.ctx)
        self.fake_label = mx.nd.zeros((batch_size,), ctx=self.ctx)
        self.fixed_noise = mx.nd.random.normal(0, 1, shape=(batch_size, self.nz, 1, 1), ctx=self.ctx)
        self.D_losses: list[float] = []
        self.G_losses: list[float] = []
        self._batches = iter(self.train_data)

    def _next_batch(self) -> mx.nd.NDArray:
        try:
            data, _ = next(self._batches)
        except StopIteration:  # the next epoch: `for data, _ in train_data` reshuffles
            self._batches = iter(self.train_data)
            data, _ = next(self._batches)
        return data

    def train(self, n: int) -> None:
        netD, netG, loss, ctx, batch_size = self.netD, self.netG, self.loss, self.ctx, self.batch_size
        real_label, fake_label = self.real_label, self.fake_label
        for _ in range(n):
            ############################
            # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
            ###########################
            # train with real_t
            data = self._next_batch().as_in_context(ctx)
            noise = mx.nd.random.normal(0, 1, shape=(batch_size, self.nz, 1, 1), ctx=ctx)
            with autograd.record():
                output = netD(data)
                # reshape output from (batch_size, 1, 1, 1) to (batch_size, 1)
                output = output.reshape((batch_size, -1))
                errD_real = loss(output, real_label)
            with autograd.record():
                fake = netG(noise)
                output = netD(fake.detach())
                output = output.reshape((batch_size, -1))
                errD_fake = loss(output, fake_label)
                errD = errD_real + errD_fake
            errD.backward()
            self.trainerD.step(batch_size)
            ############################
            # (2) Update G network: maximize log(D(G(z)))
            ###########################
            with autograd.record():
                output = netD(fake)
                output = output.reshape((-1, 1))
                errG = loss(output, real_label)
            errG.backward()
            self.trainerG.step(batch_size)
            # the example's logging line reads both losses to the host every iteration
            self.D_losses.append(float(mx.nd.mean(errD).asscalar()))
            self.G_losses.append(float(mx.nd.mean(errG).asscalar()))

    def sample(self, n: int) -> None:
        for _ in range(n):  # G(fixed_noise) to the host, outside autograd.record(): inference mode
            self.netG(self.fixed_noise).asnumpy()

    def sync(self) -> None:
        mx.nd.waitall()

    def trainable_counts(self) -> dict[str, int]:
        """Trainable scalars per net ("G", "D"): conv weights, BN gamma/beta (running stats have
        grad_req 'null'). Gluon infers shapes at the first forward, so call after ``train``."""
        return {net: int(sum(p.data().size for p in block.collect_params().values() if p.grad_req != 'null'))
                for net, block in (("G", self.netG), ("D", self.netD))}

    def versions(self) -> dict[str, str]:
        return {"mxnet": mx.__version__}

    def settings(self) -> dict[str, Any]:
        features = mx.runtime.Features()
        return {"seed_document": self.seed_document, "device": str(self.ctx), "layout": "NCHW", "api": "mx.nd + gluon",
                "data": "gluon DataLoader(ArrayDataset(random NCHW images), shuffle=True, last_batch='discard'), "
                        f"{self.BATCHES_PER_EPOCH} batches per epoch",
                "loss": "SigmoidBinaryCrossEntropyLoss() on D's logit; trainer.step(batch_size) (rescale 1/B)",
                "hybridized": True, "static_alloc": False, "static_shape": False,
                "losses_to_host": "mx.nd.mean(errD/errG).asscalar() every iteration (the example's logging line)",
                "onednn_built": features.is_enabled("MKLDNN"), "onednn_enabled": onednn_enabled(),
                "cuda_built": features.is_enabled("CUDA"),
                "env": {k: os.environ.get(k) for k in ENV_FLAGS}, "cpu_count": os.cpu_count()}
