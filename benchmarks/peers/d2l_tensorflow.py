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

``Peer`` is the speed reference (tests/test_bench.py). ``SeedPort`` is the same code as a port
(common/verify.py), held to the preset ``gaussian-tensorflow``: the tab's own nets, loss,
optimisers and ``update_D`` / ``update_G``, started from the canonical params. Replaced by
what the suite gives: the data (``for (X,) in data_iter`` -> ``real``), the noise
(``Z = tf.random.normal(...)`` -> ``z``) and the init (the ``w.assign(tf.random.normal(...))``
loop over ``net_D`` -> the canonical tensors; ``net_G`` is built by one forward first, as the
tab builds it at its first ``net_G(Z)``, and then loaded, Keras kernels ``(in, out)`` being the
canonical ``(out, in)`` weights transposed).

float64: the tab's code is run under Keras's global float64 settings, not edited:
``keras.config.set_floatx("float64")`` (the loss's dtype and the optimisers' learning-rate
variables are ``floatx()`` at construction) and ``keras.config.set_dtype_policy("float64")``
(the layers' dtype: Keras caches its default policy when the process builds its first layer,
after which ``set_floatx`` alone no longer reaches new layers). Both are set around each call
of the port and restored afterwards, so nothing else in the process changes.

The one difference from the float64 oracle, a property of the seed's code (Keras 3.15's
``Adam.update_step``): ``ops.cast(self.beta_1, dtype)`` and ``ops.cast(self.beta_2, dtype)`` are
``tf.cast`` of a Python float, which makes a float32 tensor first, so the bias corrections use
beta_1 = 0.8999999761581421 and beta_2 = 0.9990000128746033 even in float64. The step size
``alpha = lr * sqrt(1 - b2^t) / (1 - b1^t)`` is then too small by 6.68e-6 relative at t = 1
(``1 - beta_2`` is 1.29e-5 off, halved by the square root; ``1 - beta_1`` 2.4e-7), 6.12e-6 at
t = 100, 3.75e-6 at t = 1000, 1.44e-6 at t = 2500: every Adam step of both nets. Measured
(tests/test_backend_tensorflow.py; ``gansuite verify``), float64: forward 1.9e-16 / 0 (the same
arithmetic); one iteration, parameters 1.05e-5 and losses 2.3e-7 (loss_G is computed after D's
step); with the oracle's Adam given the same float32-rounded betas in its bias corrections and
nothing else changed, one iteration agrees to 7e-14 and 5 iterations to 7e-14: that rounding is
the whole difference. (Over d2l's 2500 iterations even that patched oracle drifts from the seed's
code: 3e-11 by iteration 500, 3e-7 by 1000, 2e-3 by 1500, measured with Keras's own moment form
``m += (g - m) * (1 - b1)`` as well: float64 roundoff of two implementations of the same
arithmetic, amplified by the GAN's dynamics and Adam's ``g / (sqrt(v) + eps)`` near zero gradients.)
The moments' ``1 - beta`` factors are Python floats (exact) and, with ``floatx`` float64, so is
the learning rate; left at float32 (the tab run with float64 layers only), its learning-rate variable would
add 0.05 -> 0.05000000074505806 (+1.5e-8) and 0.005 -> 0.004999999888241291 (-2.2e-8).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Iterator

import numpy as np
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


@contextlib.contextmanager
def _keras_float(dtype: str) -> Iterator[None]:
    """Keras's global float type for the port's calls (module docstring), restored afterwards."""
    import keras

    floatx, policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)
    try:
        yield
    finally:
        keras.config.set_floatx(floatx)
        keras.config.set_dtype_policy(policy)


def _seed_nets() -> tuple[tf.keras.layers.Layer, tf.keras.Model]:
    """The tab's ``net_G`` and ``net_D``, as written."""
    net_G = tf.keras.layers.Dense(2)
    with warnings.catch_warnings():  # Keras 3 prefers an Input layer to the book's input_shape
        warnings.filterwarnings("ignore", message="Do not pass an `input_shape`")
        net_D = tf.keras.models.Sequential([
            tf.keras.layers.Dense(5, activation="tanh", input_shape=(2,)),
            tf.keras.layers.Dense(3, activation="tanh"),
            tf.keras.layers.Dense(1)
        ])
    return net_G, net_D


class SeedPort:
    """The TensorFlow tab as a port (common/verify.py) of ``gaussian-tensorflow``: see the module docstring."""

    outputs = "logits"  # net_D ends in Dense(1); the tab's loss takes logits

    def __init__(self, spec: GANSpec, params: dict[str, np.ndarray], dtype: str = "float64") -> None:
        if (spec.generator.input_shape, spec.discriminator.input_shape) != ((2,), (2,)):
            raise ValueError(f"SeedPort is d2l 20.1's 2-D Gaussian GAN; {spec.name} is not")
        self.dtype = dtype
        self.latent_dim = spec.latent_dim
        with self._scope():
            self.net_G, self.net_D = _seed_nets()
            reduction = getattr(getattr(tf.keras.losses, "Reduction", None), "SUM", "sum")
            self.loss = tf.keras.losses.BinaryCrossentropy(from_logits=True, reduction=reduction)
            self.net_G(tf.zeros((1, self.latent_dim), dtype))  # built at its first forward, as in the tab
            # The tab's N(0, 0.02) init loop is replaced by the canonical params (G: Glorot, zero bias).
            for layer, (kernel, bias) in self._layers().items():
                layer.kernel.assign(np.asarray(params[kernel], dtype).T)  # Keras (in, out) = canonical (out, in).T
                layer.bias.assign(np.asarray(params[bias], dtype))
            self.optimizer_D = tf.keras.optimizers.Adam(learning_rate=spec.train.optim_D.lr)
            self.optimizer_G = tf.keras.optimizers.Adam(learning_rate=spec.train.optim_G.lr)

    @contextlib.contextmanager
    def _scope(self) -> Iterator[None]:
        with _keras_float(self.dtype), tf.device("/CPU:0"):
            yield

    def _layers(self) -> dict[Any, tuple[str, str]]:
        """Keras layer -> canonical (weight, bias) names: net_G is G.0; net_D's Dense layers are D.0, D.2,
        D.4 (the spec counts the Tanh activations as layers of their own)."""
        out = {self.net_G: ("G.0.weight", "G.0.bias")}
        for layer, i in zip(self.net_D.layers, (0, 2, 4)):
            out[layer] = (f"D.{i}.weight", f"D.{i}.bias")
        return out

    def generate(self, z: np.ndarray) -> np.ndarray:
        with self._scope():
            return self.net_G(tf.constant(z, self.dtype)).numpy()

    def discriminate(self, x: np.ndarray) -> np.ndarray:
        with self._scope():
            return tf.reshape(self.net_D(tf.constant(x, self.dtype)), [-1]).numpy()

    def train_step(self, real: np.ndarray, z: np.ndarray) -> dict[str, float]:
        """One pass of the tab's ``for (X,) in data_iter`` body, with X and Z given."""
        with self._scope():
            X, Z = tf.constant(real, self.dtype), tf.constant(z, self.dtype)
            loss_D = update_D(X, Z, self.net_D, self.net_G, self.loss, self.optimizer_D)
            loss_G = update_G(Z, self.net_D, self.net_G, self.loss, self.optimizer_G)
            return {"loss_D": float(loss_D), "loss_G": float(loss_G)}  # what metric.add reads

    def export_params(self) -> dict[str, np.ndarray]:
        out = {}
        for layer, (kernel, bias) in self._layers().items():
            out[kernel] = np.asarray(layer.kernel.numpy(), np.float64).T.copy()
            out[bias] = np.asarray(layer.bias.numpy(), np.float64)
        return out

    @staticmethod
    def versions() -> dict[str, str]:
        import keras

        return {"tensorflow": tf.__version__, "keras": keras.__version__}
