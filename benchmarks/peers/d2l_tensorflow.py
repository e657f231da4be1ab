"""d2l 20.1 (seed 001), TensorFlow tab: the Gaussian GAN's training loop as the book writes it.

Kept from the seed: ``load_array`` (``tf.data`` with ``shuffle(buffer_size=1000)`` and
``batch``), ``net_G = Dense(2)`` and the Keras ``Sequential`` discriminator, the
re-initialisation by ``assign(tf.random.normal(...))`` (which reaches only built layers:
``net_G`` is built at its first call, so the book's loop keeps its Glorot init, as here),
``BinaryCrossentropy(from_logits=True, reduction=SUM)``, Keras Adam with the book's
learning rates, ``update_D`` / ``update_G`` verbatim (eager ``GradientTape``, no
``tf.function``) and the ``Accumulator`` that reads each loss as a float every iteration.
Left out: the Animator and the per-epoch scatter plot. On a GPU the loop runs under
``tf.device('/GPU:0')``; on the CPU under ``/CPU:0``.
"""

from __future__ import annotations

import warnings
from typing import Any

import tensorflow as tf

from gansuite.common.spec import GANSpec

from ..frameworks import is_gpu
from . import Peer as BasePeer
from . import gaussian_examples


def load_array(data_arrays, batch_size, is_train=True):  # d2l.load_array (tensorflow)
    dataset = tf.data.Dataset.from_tensor_slices(data_arrays)
    if is_train:
        dataset = dataset.shuffle(buffer_size=1000)
    return dataset.batch(batch_size)


def update_D(X, Z, net_D, net_G, loss, optimizer_D):
    """Update discriminator."""
    batch_size = X.shape[0]
    ones = tf.ones((batch_size,))  # Labels corresponding to real data
    zeros = tf.zeros((batch_size,))  # Labels corresponding to fake data
    # Do not need to compute gradient for `net_G`, so it is outside GradientTape
    fake_X = net_G(Z)
    with tf.GradientTape() as tape:
        real_Y = net_D(X)
        fake_Y = net_D(fake_X)
        # We multiply the loss by batch_size to match PyTorch's BCEWithLogitsLoss
        loss_D = (loss(ones, tf.squeeze(real_Y)) + loss(
            zeros, tf.squeeze(fake_Y))) * batch_size / 2
    grads_D = tape.gradient(loss_D, net_D.trainable_variables)
    optimizer_D.apply_gradients(zip(grads_D, net_D.trainable_variables))
    return loss_D


def update_G(Z, net_D, net_G, loss, optimizer_G):
    """Update generator."""
    batch_size = Z.shape[0]
    ones = tf.ones((batch_size,))
    with tf.GradientTape() as tape:
        # We could reuse `fake_X` from `update_D` to save computation
        fake_X = net_G(Z)
        # Recomputing `fake_Y` is needed since `net_D` is changed
        fake_Y = net_D(fake_X)
        # We multiply the loss by batch_size to match PyTorch's BCEWithLogits loss
        loss_G = loss(ones, tf.squeeze(fake_Y)) * batch_size
    grads_G = tape.gradient(loss_G, net_G.trainable_variables)
    optimizer_G.apply_gradients(zip(grads_G, net_G.trainable_variables))
    return loss_G


class Peer(BasePeer):
    mode = "peer-d2l"
    framework = "tensorflow"
    seed_document = "seed 001: d2l 20.1 Generative Adversarial Networks, TensorFlow tab"
    g_forwards = 2

    def __init__(self, spec: GANSpec, batch_size: int, device: str, seed: int) -> None:
        self.place = "/GPU:0" if is_gpu(device) else "/CPU:0"
        tf.random.set_seed(seed)
        self.batch_size = batch_size
        self.latent_dim = spec.latent_dim
        with tf.device(self.place):
            self.data_iter = load_array((gaussian_examples(spec, batch_size, seed),), batch_size)
            self.net_G = tf.keras.layers.Dense(2)
            with warnings.catch_warnings():  # Keras 3 prefers an Input layer to the book's input_shape
                warnings.filterwarnings("ignore", message="Do not pass an `input_shape`")
                self.net_D = tf.keras.models.Sequential([
                    tf.keras.layers.Dense(5, activation="tanh", input_shape=(2,)),
                    tf.keras.layers.Dense(3, activation="tanh"),
                    tf.keras.layers.Dense(1)
                ])
            # Keras 3 keeps the legacy enum the book uses; its string form is the same reduction.
            reduction = getattr(getattr(tf.keras.losses, "Reduction", None), "SUM", "sum")
            self.loss = tf.keras.losses.BinaryCrossentropy(from_logits=True, reduction=reduction)
            for w in self.net_D.trainable_variables:
                w.assign(tf.random.normal(mean=0, stddev=0.02, shape=w.shape))
            for w in self.net_G.trainable_variables:  # empty: net_G is not built yet (as in the book)
                w.assign(tf.random.normal(mean=0, stddev=0.02, shape=w.shape))
            self.optimizer_D = tf.keras.optimizers.Adam(learning_rate=spec.train.optim_D.lr)
            self.optimizer_G = tf.keras.optimizers.Adam(learning_rate=spec.train.optim_G.lr)
        self.metric = [0.0, 0.0, 0.0]  # d2l.Accumulator(3)
        self._batches = iter(self.data_iter)

    def _next_batch(self):
        try:
            (X,) = next(self._batches)
        except StopIteration:  # next epoch: `for (X,) in data_iter` reshuffles
            self._batches = iter(self.data_iter)
            (X,) = next(self._batches)
        return X

    def train(self, n: int) -> None:
        with tf.device(self.place):
            for _ in range(n):
                X = self._next_batch()
                batch_size = X.shape[0]
                Z = tf.random.normal(mean=0, stddev=1, shape=(batch_size, self.latent_dim))
                args = (update_D(X, Z, self.net_D, self.net_G, self.loss, self.optimizer_D),
                        update_G(Z, self.net_D, self.net_G, self.loss, self.optimizer_G),
                        batch_size)
                self.metric = [a + float(b) for a, b in zip(self.metric, args)]  # Accumulator.add

    def sample(self, n: int) -> None:
        with tf.device(self.place):
            for _ in range(n):  # the per-epoch visualisation's forward, at the benchmark's batch size
                Z = tf.random.normal(mean=0, stddev=1, shape=(self.batch_size, self.latent_dim))
                self.net_G(Z).numpy()

    def sync(self) -> None:
        if self.place.startswith("/GPU"):
            tf.test.experimental.sync_devices()

    def versions(self) -> dict[str, str]:
        return {"tensorflow": tf.__version__, "keras": tf.keras.__version__ if hasattr(tf.keras, "__version__")
                else "bundled"}

    def settings(self) -> dict[str, Any]:
        return {"seed_document": self.seed_document, "device": self.place,
                "data": "d2l.load_array: tf.data from_tensor_slices, shuffle(buffer_size=1000), batch",
                "tf_function": False, "tf32": tf.config.experimental.tensor_float_32_execution_enabled(),
                "threads_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                "threads_inter_op": tf.config.threading.get_inter_op_parallelism_threads()}
