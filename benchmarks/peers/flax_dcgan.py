"""An idiomatic Flax DCGAN (flax.linen + optax) with the PyTorch tutorial's architecture.

Flax has no canonical DCGAN example; this is the way Flax users write one (the Flax docs'
"Dealing with batch norm" guide and the published Flax GAN loops follow it): ``nn.Module``
classes with ``@nn.compact``, NHWC (Flax's layout), one ``TrainState`` per net subclassed with a
``batch_stats`` field, ``jax.value_and_grad(loss_fn, has_aux=True)`` where the aux is the
updated ``batch_stats`` (``apply(..., mutable=["batch_stats"])``), ``state.apply_gradients``,
optax's ``adam`` and ``sigmoid_binary_cross_entropy`` on logits, and ONE ``jax.jit``-ed
``train_step`` doing D's update then G's, drawing its noise with ``jax.random`` inside (the key
is split in the step and handed back, so the Python loop does no device work of its own).

API: flax.linen, checked against flax 0.12.8 (``nn.ConvTranspose(features, kernel_size, strides,
padding, use_bias, kernel_init, transpose_kernel=False)``, ``nn.BatchNorm(use_running_average,
momentum, epsilon)``, ``flax.training.train_state.TrainState.create(apply_fn=, params=, tx=,
**extra_fields)``). The Flax docs now point new users to ``flax.nnx`` and say Linen "is not going
to be deprecated in the near future as most of Flax users still rely on this API". Linen is
chosen here because it is still what most Flax GAN code is written in (TrainState + batch_stats
is a Linen idiom), and because the suite's JAX backend is Linen too, so that this peer differs
from the backend in how the loop is written, not in the module system (``nnx.jit`` would add
its own per-call graph split/merge, a cost of its own to be measured separately).

The architecture is the tutorial's (``dcgan_sizes``): G is ConvTranspose(ngf*8, 4x4, stride 1,
``"VALID"``) on the 1x1 noise, then three ConvTranspose(4x4, stride 2, ``"SAME"``) + BatchNorm +
ReLU, ConvTranspose(nc, 4x4, stride 2, ``"SAME"``) + tanh; D is Conv(4x4, stride 2, ``"SAME"``)
with leaky_relu(0.2) and BatchNorm on the middle three, then Conv(1, 4x4, ``"VALID"``) to one
logit. All ``use_bias=False``. Padding: for a 4x4 kernel, stride 2 and even sizes, ``"SAME"``
pads 1 on each side in ``nn.Conv`` (PyTorch's ``padding=1``); in ``nn.ConvTranspose``
(``lax.conv_transpose``) ``"SAME"`` pads the stride-dilated input by (2, 2), which is exactly
what PyTorch's ``ConvTranspose2d(k=4, s=2, p=1)`` computes (``k - 1 - p = 2``): output 2x the
input, the same shapes and FLOPs. ``"VALID"`` on the 1x1 input gives 4x4 (PyTorch ``p=0``).
Flax's ``ConvTranspose`` (``transpose_kernel=False``) does not flip its kernel and stores it
``(kh, kw, in, out)``: the same operation up to a reparametrisation of the weights, the same
parameter count. BatchNorm momentum 0.9, epsilon 1e-5: PyTorch's BatchNorm2d defaults (0.1 of
the new batch) in Flax's convention (Flax's default momentum is 0.99). Kernels drawn N(0, 0.02)
(``nn.initializers.normal(0.02)``), as the tutorial's ``weights_init`` does for its convs; BN
scale 1, bias 0 (the tutorial draws its scale N(1, 0.02)). Adam(2e-4, b1=0.5) for both nets.

The loop body: G decodes the noise (outside D's ``loss_fn``: D's gradient does not reach G), D is
applied to the real batch and to the fake batch separately in train mode (its ``batch_stats``
threaded from the first call into the second, as PyTorch's running statistics advance twice),
``errD = bce(real, 1) + bce(fake, 0)``, D's update; then G's ``loss_fn`` draws FRESH noise and
decodes it again, because the first forward was not differentiated w.r.t. G's parameters (what
Flax users write: one ``loss_fn`` per net), D in train mode scores it with label 1, G's update.
So G runs forward twice per iteration (``g_forwards = 2``; the tutorial reuses ``fake``), and D's
``batch_stats`` advance a third time in G's step (the tutorial's ``netD(fake)`` in train mode does
too). No ``donate_argnums`` (users rarely write it; the backend's fast mode does).

Changed: random images in [-1, 1] (host numpy, NHWC) replace CelebA, iterated the way a numpy /
``tfds.as_numpy`` loader is (a fresh permutation each pass, full batches, each batch handed to
the jitted step as a numpy array: one host-to-device copy per step, as with such loaders).
Losses stay on the device during ``train(n)`` and are read to the host once at its end (Flax
users log accumulated metrics every so many steps, not per step; the tutorial reads per step).
Left out: logging, checkpoints, image grids. Also changed: the parameters are initialised from
an RBG key (``impl="rbg"``) instead of the default threefry key, because XLA:CPU compiles the
threefry draws of the 4-D kernels very slowly (see ``Peer.__init__``); the loop's noise keys are
JAX's default threefry keys.

``sample(n)``: a jitted ``G.apply(..., train=False)`` (BatchNorm on its running averages, what
Flax users write for sampling; the tutorial samples in train mode) on fixed noise, to the host
with ``np.asarray``. ``sync()``: ``jax.block_until_ready`` on both states (JAX dispatch is
asynchronous: after ``train(n)``'s loss read, the last step's parameter updates may still run).
"""

from __future__ import annotations

import os
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from gansuite.common.spec import GANSpec

from ..frameworks import is_gpu
from . import Peer as BasePeer
from . import dataset_size, dcgan_sizes

conv_init = nn.initializers.normal(0.02)  # the tutorial's weights_init for conv kernels


def batch_norm(train: bool) -> nn.BatchNorm:
    # PyTorch's BatchNorm2d(momentum=0.1, eps=1e-5) in Flax's convention (old-average weight).
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)


class Generator(nn.Module):
    """The tutorial's Generator, NHWC: (B, nz) noise -> (B, 64, 64, nc) in [-1, 1]."""

    ngf: int
    nc: int

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = True) -> jax.Array:
        x = z.reshape((z.shape[0], 1, 1, z.shape[-1]))  # the tutorial's (nz, 1, 1), channels last
        x = nn.ConvTranspose(self.ngf * 8, (4, 4), strides=(1, 1), padding="VALID", use_bias=False,
                             kernel_init=conv_init)(x)
        x = nn.relu(batch_norm(train)(x))  # 4x4
        for mult in (4, 2, 1):  # 8x8, 16x16, 32x32
            x = nn.ConvTranspose(self.ngf * mult, (4, 4), strides=(2, 2), padding="SAME", use_bias=False,
                                 kernel_init=conv_init)(x)
            x = nn.relu(batch_norm(train)(x))
        x = nn.ConvTranspose(self.nc, (4, 4), strides=(2, 2), padding="SAME", use_bias=False,
                             kernel_init=conv_init)(x)
        return jnp.tanh(x)  # 64x64


class Discriminator(nn.Module):
    """The tutorial's Discriminator, NHWC, ending in the logit (the Sigmoid lives in the loss)."""

    ndf: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        x = nn.Conv(self.ndf, (4, 4), strides=(2, 2), padding="SAME", use_bias=False, kernel_init=conv_init)(x)
        x = nn.leaky_relu(x, 0.2)  # 32x32
        for mult in (2, 4, 8):  # 16x16, 8x8, 4x4
            x = nn.Conv(self.ndf * mult, (4, 4), strides=(2, 2), padding="SAME", use_bias=False,
                        kernel_init=conv_init)(x)
            x = nn.leaky_relu(batch_norm(train)(x), 0.2)
        x = nn.Conv(1, (4, 4), strides=(1, 1), padding="VALID", use_bias=False, kernel_init=conv_init)(x)
        return x.reshape((x.shape[0],))  # 1x1 logit


class TrainState(train_state.TrainState):
    batch_stats: Any


def bce(logits: jax.Array, label: float) -> jax.Array:
    """Mean BCE on logits (nn.BCELoss of nn.Sigmoid, computed stably)."""
    return optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, label)).mean()


def make_train_step(nz: int) -> Callable[..., tuple[TrainState, TrainState, jax.Array, dict[str, jax.Array]]]:
    @jax.jit
    def train_step(g_state: TrainState, d_state: TrainState, real: jax.Array, key: jax.Array):
        key, d_key, g_key = jax.random.split(key, 3)
        batch = real.shape[0]
        # (1) D: maximise log D(x) + log(1 - D(G(z)))
        z = jax.random.normal(d_key, (batch, nz))
        fake, g_vars = g_state.apply_fn({"params": g_state.params, "batch_stats": g_state.batch_stats}, z,
                                        train=True, mutable=["batch_stats"])
        g_state = g_state.replace(batch_stats=g_vars["batch_stats"])

        def d_loss_fn(params):
            logits_real, d_vars = d_state.apply_fn({"params": params, "batch_stats": d_state.batch_stats}, real,
                                                   train=True, mutable=["batch_stats"])
            logits_fake, d_vars = d_state.apply_fn({"params": params, "batch_stats": d_vars["batch_stats"]}, fake,
                                                   train=True, mutable=["batch_stats"])
            return bce(logits_real, 1.0) + bce(logits_fake, 0.0), d_vars["batch_stats"]

        (d_loss, d_stats), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d_state.params)
        d_state = d_state.apply_gradients(grads=d_grads, batch_stats=d_stats)

        # (2) G: maximise log D(G(z)), on fresh noise (G's own loss_fn decodes it again)
        z = jax.random.normal(g_key, (batch, nz))

        def g_loss_fn(params):
            fake, g_vars = g_state.apply_fn({"params": params, "batch_stats": g_state.batch_stats}, z,
                                            train=True, mutable=["batch_stats"])
            logits, d_vars = d_state.apply_fn({"params": d_state.params, "batch_stats": d_state.batch_stats}, fake,
                                              train=True, mutable=["batch_stats"])
            return bce(logits, 1.0), (g_vars["batch_stats"], d_vars["batch_stats"])

        (g_loss, (g_stats, d_stats)), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(g_state.params)
        g_state = g_state.apply_gradients(grads=g_grads, batch_stats=g_stats)
        d_state = d_state.replace(batch_stats=d_stats)
        return g_state, d_state, key, {"d_loss": d_loss, "g_loss": g_loss}

    return train_step


@jax.jit
def generate(g_state: TrainState, z: jax.Array) -> jax.Array:
    return g_state.apply_fn({"params": g_state.params, "batch_stats": g_state.batch_stats}, z, train=False)


def create_state(module: nn.Module, key: jax.Array, example: jax.Array, lr: float) -> TrainState:
    # Jitted, as Flax's examples initialise (one compile instead of one per eager op).
    variables = jax.jit(module.init, static_argnames="train")(key, example, train=False)
    return TrainState.create(apply_fn=module.apply, params=variables["params"],
                             batch_stats=variables["batch_stats"], tx=optax.adam(lr, b1=0.5))


class Peer(BasePeer):
    mode = "peer-idiomatic"
    framework = "jax"
    seed_document = ("Flax linen + optax DCGAN (TrainState with batch_stats, one jitted step), "
                     "the PyTorch tutorial's architecture")
    g_forwards = 2  # G's loss_fn decodes fresh noise
    includes = ("the jitted step (D then G update, noise drawn inside), the numpy loader's batch and its "
                "host-to-device copy, one device_get of the losses per train(n) call")
    sampling_what = "jitted G.apply(train=False) on fixed noise to the host (BatchNorm on its running averages)"
    BATCHES_PER_EPOCH = 8  # as the tutorial peer

    def __init__(self, spec: GANSpec, batch_size: int, device: str, seed: int) -> None:
        self.device = jax.devices("gpu")[0] if is_gpu(device) else jax.devices("cpu")[0]
        sizes = dcgan_sizes(spec)
        self.nz, self.batch_size = sizes["nz"], batch_size
        n = dataset_size(batch_size, batch_size * self.BATCHES_PER_EPOCH)
        self.rng = np.random.default_rng(seed)
        self.images = self.rng.uniform(-1.0, 1.0, size=(n, 64, 64, sizes["nc"])).astype(np.float32)
        with jax.default_device(self.device):
            key, z_key = jax.random.split(jax.random.key(seed))  # threefry (JAX's default) for the loop
            # The init key is an RBG key (jax.random.key(..., impl="rbg")): XLA:CPU (jaxlib 0.10.2)
            # takes ~20 s of CPU to compile the default threefry draw of each net's 4-D kernels
            # (measured, dcgan nz=16 ngf=ndf=8: init G 20.5 s, D 20.2 s; with an RBG key 4.0 s and
            # 2.8 s). Only the initial values' stream differs; the training step is not affected.
            g_key, d_key = jax.random.split(jax.random.key(seed, impl="rbg"))
            self.g_state = create_state(Generator(sizes["ngf"], sizes["nc"]), g_key,
                                        jnp.zeros((1, self.nz)), spec.train.optim_G.lr)
            self.d_state = create_state(Discriminator(sizes["ndf"]), d_key,
                                        jnp.zeros((1, 64, 64, sizes["nc"])), spec.train.optim_D.lr)
            self.key = key
            self.fixed_noise = jax.random.normal(z_key, (batch_size, self.nz))
        self.train_step = make_train_step(self.nz)
        self.D_losses: list[float] = []
        self.G_losses: list[float] = []
        self._batches = self._epoch()

    def _epoch(self):
        order = self.rng.permutation(len(self.images))  # shuffle each pass, full batches only
        for i in range(len(order) // self.batch_size):
            yield self.images[order[i * self.batch_size:(i + 1) * self.batch_size]]

    def _next_batch(self) -> np.ndarray:
        try:
            return next(self._batches)
        except StopIteration:
            self._batches = self._epoch()
            return next(self._batches)

    def train(self, n: int) -> None:
        metrics = []
        for _ in range(n):
            self.g_state, self.d_state, self.key, m = self.train_step(self.g_state, self.d_state,
                                                                      self._next_batch(), self.key)
            metrics.append(m)
        for m in jax.device_get(metrics):  # one host read per call, like a periodic log line
            self.D_losses.append(float(m["d_loss"]))
            self.G_losses.append(float(m["g_loss"]))

    def sample(self, n: int) -> None:
        for _ in range(n):
            np.asarray(generate(self.g_state, self.fixed_noise))

    def sync(self) -> None:
        jax.block_until_ready((self.g_state, self.d_state, self.key))

    def trainable_counts(self) -> dict[str, int]:
        """Trainable scalars per net ("G", "D"): conv kernels and BN scale/bias (not batch_stats)."""
        return {net: int(sum(x.size for x in jax.tree_util.tree_leaves(state.params)))
                for net, state in (("G", self.g_state), ("D", self.d_state))}

    def versions(self) -> dict[str, str]:
        import jaxlib

        return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
                "optax": optax.__version__}

    def settings(self) -> dict[str, Any]:
        return {"seed_document": self.seed_document, "device": f"{self.device.platform}:{self.device.id}",
                "device_name": self.device.device_kind, "layout": "NHWC", "api": "flax.linen",
                "data": f"numpy random images, a permutation per pass, {self.BATCHES_PER_EPOCH} batches per pass, "
                        "host batch -> jitted step",
                "loss": "optax.sigmoid_binary_cross_entropy on D's logit, mean",
                "jit": "one jax.jit train_step (D then G update); jitted generate", "donation": False,
                "losses_to_host": "once per train(n) call (jax.device_get)",
                "x64": bool(jax.config.jax_enable_x64),
                "default_matmul_precision": str(jax.config.jax_default_matmul_precision),
                "xla_flags": os.environ.get("XLA_FLAGS"), "jax_platforms": os.environ.get("JAX_PLATFORMS"),
                "xla_python_client_preallocate": os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE"),
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "cpu_count": os.cpu_count()}
