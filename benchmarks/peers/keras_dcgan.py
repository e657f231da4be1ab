"""An idiomatic Keras 3 DCGAN (TensorFlow backend) with the PyTorch tutorial's architecture.

What a Keras user writes for a DCGAN is keras-io's "DCGAN to generate face images"
(``examples/generative/dcgan_overriding_train_step.py``), built on the "GAN overriding
``Model.train_step``" pattern: a ``keras.Model`` subclass holding ``generator`` and
``discriminator`` ``keras.Sequential`` nets, a ``compile(d_optimizer, g_optimizer, loss_fn)``
override, a ``train_step`` with one ``tf.GradientTape`` for D then one for G, ``keras.metrics.Mean``
trackers for the two losses (listed in ``metrics``, so ``fit`` resets them each epoch), noise from
``keras.random.normal(..., seed=SeedGenerator)`` and the whole thing driven by ``fit``.

Kept from keras-io: everything just listed; NHWC (TF's ``channels_last`` default); the latent
input as a flat ``(nz,)`` vector (``keras.Input(shape=(latent_dim,))``), reshaped to 1x1 here
where keras-io uses a ``Dense``; D ending in a sigmoid with ``keras.losses.BinaryCrossentropy()``
on probabilities (``from_logits=False``, keras-io's choice and the tutorial's Sigmoid + BCELoss;
Keras's TF backend recovers the logit from the Sigmoid op for a stable BCE); G run under the D
tape's reach but outside it (keras-io decodes the fake images before ``with tf.GradientTape()``)
and again, on FRESH noise, under the G tape: keras-io's G step draws new latent vectors and
recomputes ``generator(z)`` because the first forward was not taped. So this loop runs G forward
twice per iteration (``g_forwards = 2``); the tutorial reuses ``fake`` (one G forward).
Keras's defaults where keras-io uses them: Glorot-uniform kernels (the tutorial draws N(0, 0.02)
in ``weights_init``; initialisation does not change the throughput), ``jit_compile="auto"``
(``compile`` resolves it: XLA on a GPU, off on a CPU-only machine; recorded in ``settings()``),
``steps_per_execution=1``.

From the tutorial (its architecture, which keras-io's nets do not have): ``Conv2DTranspose`` /
``Conv2D`` with kernel 4, strides 1 then 2, ``use_bias=False``; ``padding="valid"`` for G's first
layer (1x1 -> 4x4) and D's last (4x4 -> 1x1) and ``"same"`` elsewhere, which for kernel 4,
stride 2 and even sizes pads 1 on each side: exactly PyTorch's ``padding=1`` (same shapes,
same FLOPs). ``BatchNormalization(momentum=0.9, epsilon=1e-5)``: PyTorch's BatchNorm2d defaults
(momentum 0.1 of the new batch, eps 1e-5) in Keras's convention (momentum = weight of the old
average); Keras's defaults would be 0.99 and 1e-3. ReLU in G, ``LeakyReLU(negative_slope=0.2)``
in D, Tanh out of G, Adam(2e-4, beta_1=0.5) for both nets, labels real = 1 and fake = 0 and
``errD = errD_real + errD_fake`` (two BCE means, D on the real and on the fake batch separately).

Changed from keras-io, and why: (1) every net call passes ``training=True`` in ``train_step``:
keras-io's nets have no BatchNorm, but Keras 3 does NOT infer training mode for a layer called
inside a custom ``train_step`` (``fit`` sets no call context; ``BatchNormalization.call``'s
``training=None`` default means inference), so without it BN would normalise with its (never
updated) moving statistics. (2) D sees the real and the fake batch separately, as the tutorial
does, where keras-io concatenates them into one batch of 2B: with BatchNorm in D that would mix
real and fake statistics (a different model); the FLOPs are the same. (3) No label noise
(keras-io's "important trick", ``labels += 0.05 * uniform``): it changes the loss, not the
speed. (4) Random images in [-1, 1] in a ``tf.data.Dataset`` (``from_tensor_slices``, shuffled,
batched with ``drop_remainder``, repeated, prefetched with AUTOTUNE) replace
``image_dataset_from_directory`` over CelebA: no download, no JPEG decoding (as the tutorial peer).
Left out: the ``GANMonitor`` callback's image files and the plots.

``train(n)`` is ``fit(dataset, epochs=1, steps_per_epoch=n, verbose=0)``: what Keras users call.
Keras 3 caches ``train_function`` on the model (``make_train_function`` returns the cached
``tf.function`` unless ``compile`` is called again), and a new ``fit`` call's iterator has the
same type spec, so later ``fit`` calls do not retrace (measured: see :data:`FIT_CALL`). What one
``fit`` call costs besides its steps: a new ``TFEpochIterator`` over the repeated dataset (its
prefetch buffer restarts), the ``CallbackList`` (``History``; its per-batch hooks run on a thread
pool that ``fit`` starts and stops) and the epoch-end read of the metrics to the host
(``pythonify_logs``). Per step, Keras reads the loss metrics to the host on that pool thread.

``sample(n)``: keras-io's ``GANMonitor`` calls ``self.model.generator(random_latent_vectors)``
with no ``training`` argument, i.e. inference mode (BatchNorm on its moving statistics), on fresh
noise, then ``.numpy()``; here ``generator(z, training=False)`` says so. The tutorial samples in
train mode (batch statistics); the FLOPs are the same up to BN's mean/variance reduction.

``sync()``: on a CPU, nothing: eager TF ops on the CPU have finished when they return, and
``fit`` has read the epoch's metrics to the host before returning; on a GPU,
``tf.test.experimental.sync_devices()`` (as the d2l TensorFlow peer).
"""

from __future__ import annotations

import os
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from gansuite.common.spec import GANSpec

from ..frameworks import is_gpu
from . import Peer as BasePeer
from . import dataset_size, dcgan_sizes

#: How a later ``fit`` call relates to the first (measured, see the module docstring).
FIT_CALL = "fit(steps_per_epoch=n): train_function cached by Keras across fit calls (no retrace)"


def bn() -> layers.BatchNormalization:
    # PyTorch's BatchNorm2d(momentum=0.1, eps=1e-5) in Keras's convention (old-average weight).
    return layers.BatchNormalization(momentum=0.9, epsilon=1e-5)


def make_generator(nz: int, ngf: int, nc: int) -> keras.Sequential:
    """The tutorial's Generator in Keras (NHWC): (nz,) -> (64, 64, nc) in [-1, 1]."""
    return keras.Sequential(
        [
            keras.Input(shape=(nz,)),
            layers.Reshape((1, 1, nz)),  # the tutorial's (nz, 1, 1) noise, channels last
            layers.Conv2DTranspose(ngf * 8, kernel_size=4, strides=1, padding="valid", use_bias=False),
            bn(),
            layers.ReLU(),
            # 4x4
            layers.Conv2DTranspose(ngf * 4, kernel_size=4, strides=2, padding="same", use_bias=False),
            bn(),
            layers.ReLU(),
            # 8x8
            layers.Conv2DTranspose(ngf * 2, kernel_size=4, strides=2, padding="same", use_bias=False),
            bn(),
            layers.ReLU(),
            # 16x16
            layers.Conv2DTranspose(ngf, kernel_size=4, strides=2, padding="same", use_bias=False),
            bn(),
            layers.ReLU(),
            # 32x32
            layers.Conv2DTranspose(nc, kernel_size=4, strides=2, padding="same", use_bias=False),
            layers.Activation("tanh"),
            # 64x64
        ],
        name="generator",
    )


def make_discriminator(ndf: int, nc: int) -> keras.Sequential:
    """The tutorial's Discriminator in Keras (NHWC): (64, 64, nc) -> (1,) probability."""
    return keras.Sequential(
        [
            keras.Input(shape=(64, 64, nc)),
            layers.Conv2D(ndf, kernel_size=4, strides=2, padding="same", use_bias=False),
            layers.LeakyReLU(negative_slope=0.2),
            # 32x32
            layers.Conv2D(ndf * 2, kernel_size=4, strides=2, padding="same", use_bias=False),
            bn(),
            layers.LeakyReLU(negative_slope=0.2),
            # 16x16
            layers.Conv2D(ndf * 4, kernel_size=4, strides=2, padding="same", use_bias=False),
            bn(),
            layers.LeakyReLU(negative_slope=0.2),
            # 8x8
            layers.Conv2D(ndf * 8, kernel_size=4, strides=2, padding="same", use_bias=False),
            bn(),
            layers.LeakyReLU(negative_slope=0.2),
            # 4x4
            layers.Conv2D(1, kernel_size=4, strides=1, padding="valid", use_bias=False, activation="sigmoid"),
            layers.Flatten(),  # (B, 1, 1, 1) -> (B, 1), keras-io's Dense(1, activation="sigmoid") shape
        ],
        name="discriminator",
    )


class GAN(keras.Model):
    """keras-io's ``GAN(keras.Model)``: compile(d_optimizer, g_optimizer, loss_fn) and train_step."""

    def __init__(self, discriminator: keras.Model, generator: keras.Model, latent_dim: int, seed: int) -> None:
        super().__init__()
        self.discriminator = discriminator
        self.generator = generator
        self.latent_dim = latent_dim
        self.seed_generator = keras.random.SeedGenerator(seed)

    def compile(self, d_optimizer: keras.optimizers.Optimizer, g_optimizer: keras.optimizers.Optimizer,
                loss_fn: keras.losses.Loss) -> None:
        super().compile()
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        self.loss_fn = loss_fn
        self.d_loss_metric = keras.metrics.Mean(name="d_loss")
        self.g_loss_metric = keras.metrics.Mean(name="g_loss")

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.d_loss_metric, self.g_loss_metric]

    def train_step(self, real_images: tf.Tensor) -> dict[str, tf.Tensor]:
        # Sample random points in the latent space
        batch_size = ops.shape(real_images)[0]
        random_latent_vectors = keras.random.normal(shape=(batch_size, self.latent_dim), seed=self.seed_generator)
        # Decode them to fake images (outside the tape: D's gradient does not reach G).
        # training=True throughout: Keras 3 does not put a layer called here in training mode.
        generated_images = self.generator(random_latent_vectors, training=True)
        real_labels = ops.ones((batch_size, 1))
        fake_labels = ops.zeros((batch_size, 1))
        # Train the discriminator: the real and the fake batch apart (BatchNorm per batch, as the tutorial)
        with tf.GradientTape() as tape:
            d_loss = (self.loss_fn(real_labels, self.discriminator(real_images, training=True))
                      + self.loss_fn(fake_labels, self.discriminator(generated_images, training=True)))
        grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_weights))
        # Sample random points in the latent space (keras-io: new noise for G's step)
        random_latent_vectors = keras.random.normal(shape=(batch_size, self.latent_dim), seed=self.seed_generator)
        # Train the generator (note that we should *not* update the weights of the discriminator)!
        with tf.GradientTape() as tape:
            predictions = self.discriminator(self.generator(random_latent_vectors, training=True), training=True)
            g_loss = self.loss_fn(real_labels, predictions)  # "all real": fake labels are real for G's cost
        grads = tape.gradient(g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_weights))
        # Update metrics
        self.d_loss_metric.update_state(d_loss)
        self.g_loss_metric.update_state(g_loss)
        return {"d_loss": self.d_loss_metric.result(), "g_loss": self.g_loss_metric.result()}


def onednn_enabled() -> bool:
    """Whether TF's oneDNN CPU kernels are on (fixed at import by TF_ENABLE_ONEDNN_OPTS)."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


class Peer(BasePeer):
    mode = "peer-idiomatic"
    framework = "tensorflow"
    seed_document = ("keras-io: DCGAN to generate face images (GAN overriding Model.train_step), "
                     "with the PyTorch DCGAN tutorial's architecture")
    g_forwards = 2  # keras-io's G step decodes fresh noise under its tape
    includes = ("one fit(steps_per_epoch=n) per train(n): Keras's epoch iterator over the tf.data pipeline, "
                "its callbacks (per-step async metric read, epoch-end read), train_step's noise draws")
    sampling_what = ("generator(z, training=False) on fresh keras.random noise, .numpy() "
                     "(keras-io's GANMonitor; BatchNorm on its moving statistics)")
    BATCHES_PER_EPOCH = 8  # as the tutorial peer: random images, a small dataset repeated

    def __init__(self, spec: GANSpec, batch_size: int, device: str, seed: int) -> None:
        self.place = "/GPU:0" if is_gpu(device) else "/CPU:0"
        keras.utils.set_random_seed(seed)
        sizes = dcgan_sizes(spec)
        self.nz, self.batch_size = sizes["nz"], batch_size
        n = dataset_size(batch_size, batch_size * self.BATCHES_PER_EPOCH)
        rng = np.random.default_rng(seed)
        images = rng.uniform(-1.0, 1.0, size=(n, 64, 64, sizes["nc"])).astype(np.float32)  # NHWC in [-1, 1]
        with tf.device(self.place):
            self.dataset = (tf.data.Dataset.from_tensor_slices(images)
                            .shuffle(n, seed=seed, reshuffle_each_iteration=True)
                            .batch(batch_size, drop_remainder=True)
                            .repeat()
                            .prefetch(tf.data.AUTOTUNE))
            self.gan = GAN(make_discriminator(sizes["ndf"], sizes["nc"]),
                           make_generator(sizes["nz"], sizes["ngf"], sizes["nc"]), sizes["nz"], seed)
            lr_d, lr_g = spec.train.optim_D.lr, spec.train.optim_G.lr  # 2e-4 both
            self.gan.compile(d_optimizer=keras.optimizers.Adam(learning_rate=lr_d, beta_1=0.5),
                             g_optimizer=keras.optimizers.Adam(learning_rate=lr_g, beta_1=0.5),
                             loss_fn=keras.losses.BinaryCrossentropy())
        self.D_losses: list[float] = []
        self.G_losses: list[float] = []

    def train(self, n: int) -> None:
        with tf.device(self.place):
            # shuffle=False: fit's flag does not apply to a tf.data.Dataset (it is shuffled above);
            # left at True, Keras 3.15 warns so at every call.
            history = self.gan.fit(self.dataset, epochs=1, steps_per_epoch=n, verbose=0, shuffle=False)
        # The epoch's means of the Mean trackers (fit resets them at each epoch's start).
        self.D_losses += history.history["d_loss"]
        self.G_losses += history.history["g_loss"]

    def sample(self, n: int) -> None:
        with tf.device(self.place):
            for _ in range(n):  # keras-io's GANMonitor: fresh latent vectors, generator(...), .numpy()
                z = keras.random.normal(shape=(self.batch_size, self.nz), seed=self.gan.seed_generator)
                self.gan.generator(z, training=False).numpy()

    def sync(self) -> None:
        if self.place.startswith("/GPU"):
            tf.test.experimental.sync_devices()

    def trainable_counts(self) -> dict[str, int]:
        """Trainable scalars per net ("G", "D"): the tutorial's conv weights and BN gamma/beta."""
        return {"G": int(sum(np.prod(w.shape) for w in self.gan.generator.trainable_weights)),
                "D": int(sum(np.prod(w.shape) for w in self.gan.discriminator.trainable_weights))}

    def versions(self) -> dict[str, str]:
        return {"tensorflow": tf.__version__, "keras": keras.__version__}

    def settings(self) -> dict[str, Any]:
        return {"seed_document": self.seed_document, "device": self.place,
                "data": "tf.data from_tensor_slices(random NHWC images), shuffle, batch(drop_remainder), "
                        f"repeat, prefetch(AUTOTUNE); {self.BATCHES_PER_EPOCH} batches per pass",
                "driver": FIT_CALL, "layout": "NHWC",
                "loss": "BinaryCrossentropy() on D's sigmoid output (from_logits=False, as keras-io)",
                "jit_compile": self.gan.jit_compile, "run_eagerly": self.gan.run_eagerly,
                "steps_per_execution": self.gan.steps_per_execution,
                "tf32": tf.config.experimental.tensor_float_32_execution_enabled(),
                "onednn": onednn_enabled(), "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
                "tf_xla_flags": os.environ.get("TF_XLA_FLAGS"),
                "threads_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),  # 0: TF picks
                "threads_inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "cpu_count": os.cpu_count()}
