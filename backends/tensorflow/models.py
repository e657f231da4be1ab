"""Build G and D from the spec as a ``keras.Sequential`` (:class:`SpecNet`) whose ``run`` also carries the
labels and dropout masks, every default set explicitly; the pure forward."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import keras
import tensorflow as tf

from gansuite.common.layout import channels_last_shape, layer_of, same_or_valid_conv, same_or_valid_conv_transpose
from gansuite.common.params import is_buffer, param_shapes
from gansuite.common.spec import (BatchNorm, Conv2d, ConvTranspose2d, Dense, Dropout, EmbedConcat, Flatten, GANSpec,
                                  Layer, LeakyReLU, NetSpec, ReLU, Reshape, Sigmoid, Tanh)

from . import MIXED_POLICY
from .layout import module_key

# Keras initialisers are never used: every tensor is loaded from the canonical params
# (drawn once in NumPy). "zeros" only avoids drawing random numbers nobody reads.
_UNUSED_INIT = "zeros"


class SpecBatchNorm(keras.layers.BatchNormalization):
    """Keras BatchNormalization with the spec's running-variance update (``running_var``).

    Stock Keras (keras/src/layers/normalization/batch_normalization.py, 3.15) updates
    ``moving_variance`` with the BIASED batch variance; PyTorch stores the UNBIASED
    one (``var * n / (n - 1)``, the spec's default ``running_var="unbiased"``). MXNet's CPU
    BatchNorm keeps the biased one, as Keras does (``running_var="biased"``, seed 004); the
    update below is then Keras's own formula. The normalisation itself is the same in all
    (biased variance), so only the training branch's running-stat update is rewritten; the
    inference branch (``bn="running"``) is Keras's own.

    ``scale=False`` (Keras: no ``gamma`` variable at all) is MXNet's ``fix_gamma=True``: the
    scale is the constant 1, never trained, and not a canonical tensor (common/params.py).

    Deliberately NOT Keras's ``training and self.trainable`` test: in Keras,
    ``trainable=False`` on a BatchNormalization layer also forces INFERENCE mode
    (the classic combined-GAN trap, eriklindernoren/Keras-GAN#252). This backend
    never sets ``trainable=False``; it picks the variables to differentiate instead.

    ``synchronized`` (Keras's own argument, False here; the data-parallel backend,
    backends/tensorflow/data_parallel.py, sets it to True for synchronised BatchNorm): inside
    ``strategy.run`` the batch statistics are those of the GLOBAL batch (:meth:`_moments`), and
    the Bessel factor counts the global batch. Outside a replica context it is the plain layer.
    """

    def __init__(self, *, running_var: str = "unbiased", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.running_var = running_var

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "running_var": self.running_var}

    def call(self, inputs: tf.Tensor, training: bool | None = None, mask: tf.Tensor | None = None) -> tf.Tensor:
        if not training:
            return super().call(inputs, training=False, mask=mask)
        mean, variance = self._moments(inputs, mask)  # biased, over every axis but channels
        stat = variance
        if self.running_var == "unbiased":
            # Bessel's factor n / (n - 1), one float64 constant from the static shape. The count is
            # per call: D(real) and D(fake) may see different batch sizes (train.noise_batch); under
            # synchronised BatchNorm it is the global batch's (_replicas).
            if inputs.shape.is_fully_defined():
                count = inputs.shape.num_elements() // inputs.shape[self.axis] * self._replicas()
                bessel = tf.constant(count / max(count - 1, 1), inputs.dtype)
            else:  # a function traced for any batch size
                n = tf.cast(tf.size(inputs) // tf.shape(inputs)[self.axis] * self._replicas(), inputs.dtype)
                bessel = n / tf.maximum(n - 1, 1)
            stat = variance * bessel
        # Keras's momentum is the weight on the OLD value (= 1 - spec.momentum, set in build_layer).
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + stat * (1.0 - self.momentum))
        # The normalisation in the centred form, xhat = (x - mean) / sqrt(var + eps), y = xhat * gamma + beta
        # (the oracle's, and PyTorch's native kernel's), not keras.ops.batch_normalization's
        # tf.nn.batch_normalization, which folds the mean into the offset: x * inv + (beta - mean * inv).
        # Differentiated by the tape, that fold forms the gradient of inv as sum(dy * x) - mean * sum(dy),
        # an uncentred difference that cancels when |mean| >> std. Measured on dcgan-mnist-tiny, float32:
        # D's input gradient 5e-7 off the oracle, which G's last bias gradient (a sum over 65,536 pixels,
        # 900x smaller than the sum of their magnitudes) turns into 1.3e-5 relative, over the 1e-5
        # tolerance. Same function, same running statistics; only the rounding differs.
        inv_std = 1.0 / tf.sqrt(variance + tf.constant(self.epsilon, inputs.dtype))
        xhat = (inputs - mean) * inv_std
        # self.gamma does not exist with scale=False (fix_gamma): the scale is the constant 1.
        return (xhat * self.gamma if self.scale else xhat) + self.beta

    def _replicas(self) -> int:
        """Replicas whose shards this layer's batch statistics span: tf.distribute's replicas in sync
        when ``synchronized`` and called inside ``strategy.run``; 1 otherwise (one worker, a pure
        forward, or per-replica statistics)."""
        ctx = tf.distribute.get_replica_context()  # None in a strategy's cross-replica context
        return ctx.num_replicas_in_sync if self.synchronized and ctx is not None else 1

    def _moments(self, inputs: tf.Tensor, mask: tf.Tensor | None) -> tuple[tf.Tensor, tf.Tensor]:
        """Biased batch mean and variance over every axis but the channels; with ``synchronized``
        inside ``strategy.run``, those of the global batch, from each replica's sums all-reduced.

        Keras 3.15's own synchronised moments (keras/src/backend/tensorflow/nn.py,
        ``_compute_moments_sync``, reached from BatchNormalization._moments) all-reduce the local sum,
        the local sum of squares and the count, then take var = E(x^2) - E(x)^2: the uncentred form,
        which cancels catastrophically when |mean| >> std, where the single worker's tf.nn.moments is
        centred (the mean of (x - mean)^2, mean under stop_gradient). It also takes that form for ONE
        replica, so it would change a single worker's numbers too. Here the same engine collective
        (``ReplicaContext.all_reduce``, whose gradient is an all-reduce of the gradients) in the
        centred two-pass form: all-reduce the sums -> global mean; all-reduce the sums of squared
        deviations from it -> global biased variance. The count is static: the data-parallel backend
        splits every batch into equal shards (common.data_parallel.shard), so it is the local count
        times the replicas (Keras all-reduces it because its shards may be uneven)."""
        if not self.synchronized:
            return super()._moments(inputs, mask)  # Keras's: tf.nn.moments
        replicas = self._replicas()
        if replicas == 1:  # outside strategy.run (a pure forward): Keras's unsynchronised moments, as above
            return keras.ops.moments(inputs, axes=self._reduction_axes)  # mask: SpecNet.run never gives one
        ctx, axes = tf.distribute.get_replica_context(), self._reduction_axes
        if inputs.shape.is_fully_defined():
            count = tf.constant(inputs.shape.num_elements() // inputs.shape[self.axis] * replicas, inputs.dtype)
        else:
            count = tf.cast(tf.size(inputs) // tf.shape(inputs)[self.axis] * replicas, inputs.dtype)
        total = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(inputs, axes, keepdims=True))
        mean = total / count
        deviations = tf.math.squared_difference(inputs, tf.stop_gradient(mean))
        squares = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(deviations, axes, keepdims=True))
        variance = squares / count
        return tf.squeeze(mean, axes), tf.squeeze(variance, axes)


class SpecLeakyReLU(keras.layers.LeakyReLU):
    """``keras.layers.LeakyReLU`` with the slope applied in the input's dtype.

    Keras (keras/src/backend/tensorflow/nn.py) calls ``tf.nn.leaky_relu(x, alpha)``, and
    the LeakyRelu op's ``alpha`` is a 32-bit float attribute: in float64 the slope 0.2
    becomes 0.20000000298023224 (7.6e-9 relative error in D's float64 output, measured).
    Same function otherwise, gradient included: ``dy`` where ``x > 0``, else ``slope * dy``.
    """

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return tf.where(inputs > 0, inputs, inputs * tf.constant(self.negative_slope, inputs.dtype))


class SpecDropout(keras.layers.Layer):
    """``nn.Dropout(p)`` as a multiply by a given keep mask, pre-scaled ``keep / (1 - p)`` (common/draws.py):
    in parity mode every backend multiplies by the same host mask, so the four frameworks drop the same
    units; in fast mode the mask is drawn on the device from the backend's seeded Philox generator
    (train._make_draws); no mask (the pure forwards, eval semantics) is the identity.

    Not ``keras.layers.Dropout``: its mask cannot be given, and its default ``seed=None`` seeds its own
    SeedGenerator from Python's ``random`` (a second, unseeded RNG beside the backend's). Its arithmetic
    would be the same: ``tf.nn.experimental.stateless_dropout`` computes ``x * (1 / (1 - p))`` times
    the 0/1 keep mask, i.e. per element exactly ``x * mask`` with this pre-scaled mask."""

    def __init__(self, rate: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rate = float(rate)  # the spec's p; the masks carry it already (kept for get_config/readers)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rate": self.rate}

    def call(self, inputs: tf.Tensor, keep: tf.Tensor | None = None) -> tf.Tensor:
        # The argument is not called ``mask``: Keras's Layer.__call__ treats that name as its masking API.
        return inputs if keep is None else inputs * keep


class SpecEmbedConcat(keras.layers.Embedding):
    """Seed 002's ``label_emb = nn.Embedding(k, d)`` and ``torch.cat([x, label_emb(labels)], 1)``: the
    features first, then the label's row of the table. The table is Keras's own ``embeddings`` variable
    ``(k, d)``, already PyTorch's (canonical) layout; Embedding.call is ``tf.gather`` on it (ops.take).

    Keras defaults set against the spec: ``embeddings_initializer="uniform"`` (U(-0.05, 0.05); unused:
    the table is loaded), ``mask_zero=False`` (True would make label 0 a padding mask), no LoRA, no
    regulariser or constraint. The tape's gradient of the table is ``tf.IndexedSlices`` (one row per
    example); train.py densifies it, each class's rows summed as the oracle's ``np.add.at``.

    The labels are a second input, which ``keras.Sequential`` cannot route: :meth:`SpecNet.run` passes
    them. ``compute_output_shape`` lets the Sequential build its graph symbolically without them."""

    def __init__(self, num_classes: int, dim: int, **kwargs: Any) -> None:
        super().__init__(input_dim=num_classes, output_dim=dim, embeddings_initializer=_UNUSED_INIT,
                         embeddings_regularizer=None, embeddings_constraint=None, mask_zero=False,
                         lora_rank=None, **kwargs)

    def call(self, inputs: tf.Tensor, labels: tf.Tensor | None = None) -> tf.Tensor:  # type: ignore[override]
        if labels is None:
            raise ValueError(f"{self.name}: a conditional net needs labels (embed_concat)")
        return tf.concat([inputs, super().call(labels)], axis=-1)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], input_shape[-1] + self.output_dim)

    def compute_output_spec(self, inputs: Any, labels: Any = None) -> keras.KerasTensor:
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), dtype=self.compute_dtype)

    def compute_mask(self, inputs: Any, mask: Any = None) -> None:
        return None


class SpecNet(keras.Sequential):
    """``keras.Sequential`` (layer i of the spec named ``"<net>.<i>"``) plus :meth:`run`, the forward that
    also routes the labels to the embed_concat layer and each Dropout layer's mask to it, as torch's
    SpecNet.forward. ``run`` calls the layers in order, exactly as Sequential's own call does, passing
    ``training`` to BatchNorm (the only layer here that reads it)."""

    def run(self, x: tf.Tensor, training: bool, labels: tf.Tensor | None = None,
            masks: dict[int, tf.Tensor] | None = None) -> tf.Tensor:
        masks = masks or {}
        for layer in self.layers:  # Sequential.layers excludes the InputLayer
            if isinstance(layer, SpecEmbedConcat):
                x = layer(x, labels)
            elif isinstance(layer, SpecDropout):
                x = layer(x, masks.get(int(layer.name.rsplit(".", 1)[1])))
            elif isinstance(layer, keras.layers.BatchNormalization):
                x = layer(x, training=training)
            else:
                x = layer(x)
        return x



def _variable_dtype(dtype: tf.dtypes.DType | str) -> tf.dtypes.DType | str:
    """The variables' dtype of a net built with ``dtype``: float32 under the mixed policy."""
    return "float32" if dtype == MIXED_POLICY else dtype


def build_layer(layer: Layer, input_shape: tuple[int, ...], name: str, dtype: tf.dtypes.DType | str,
                mode: str) -> list[keras.layers.Layer]:
    """One spec layer -> the Keras layer holding its weights (named ``name``, ``"G.3"``), plus any explicit
    pad/crop. ``dtype``: a Keras dtype (``tf.float64`` or ``"float64"``), or the policy ``"mixed_bfloat16"``
    (fast mode's mixed precision): then the layers that multiply (Dense, Conv2D, Conv2DTranspose and
    their pad/crop) take it (float32 variables, bfloat16 compute, as torch.autocast runs matmuls and
    convolutions) and every other layer is float32, Keras casting each input to the layer's compute
    dtype. ``mode`` is unused: TF32, grappler and XLA are per process or per function (backend.py)."""
    heavy, dtype = dtype, _variable_dtype(dtype)
    if isinstance(layer, Dense):
        return [keras.layers.Dense(layer.out_features, use_bias=layer.bias, activation=None,
                                   kernel_initializer=_UNUSED_INIT, name=name, dtype=heavy)]
    if isinstance(layer, Conv2d):
        # channels_last everywhere: TF's CPU Conv2D has no NCHW kernel (layout.py transposes).
        modes = {same_or_valid_conv(layer, size) for size in input_shape[1:]}
        padding, pad = modes.pop() if len(modes) == 1 else ("valid", layer.padding)
        conv = keras.layers.Conv2D(layer.out_channels, layer.kernel, strides=layer.stride, padding=padding,
                                   data_format="channels_last", dilation_rate=1, use_bias=layer.bias,
                                   kernel_initializer=_UNUSED_INIT, name=name, dtype=heavy)
        if not pad:
            return [conv]
        return [keras.layers.ZeroPadding2D(pad, data_format="channels_last", name=f"{name}.pad", dtype=heavy), conv]
    if isinstance(layer, ConvTranspose2d):
        # Keras has no PyTorch-style crop p: 'same'/'valid' where they coincide, else an explicit crop.
        padding, (before, after) = same_or_valid_conv_transpose(layer)
        deconv = keras.layers.Conv2DTranspose(layer.out_channels, layer.kernel, strides=layer.stride,
                                              padding=padding, output_padding=None, data_format="channels_last",
                                              dilation_rate=1, use_bias=layer.bias, kernel_initializer=_UNUSED_INIT,
                                              name=name, dtype=heavy)
        if not (before or after):
            return [deconv]
        return [deconv, keras.layers.Cropping2D(((before, after), (before, after)), data_format="channels_last",
                                                name=f"{name}.crop", dtype=heavy)]
    if isinstance(layer, BatchNorm):
        # Keras defaults are momentum=0.99 on the OLD value and epsilon=1e-3; the spec's momentum
        # (PyTorch's, 0.1) is the weight on the NEW value => Keras momentum = 1 - spec.momentum.
        # axis=-1 is the channel axis of NHWC and of (N, F). fix_gamma (MXNet) is Keras's scale=False:
        # Keras then creates no gamma (MXNet keeps a gamma array held at 1; neither trains it).
        # epsilon is added in the layer's dtype (SpecBatchNorm's training path, and the inference
        # path's tf.nn.batch_normalization), so seed 004's 1e-5 + 1e-12 reaches a float64 net exactly.
        return [SpecBatchNorm(axis=-1, momentum=1.0 - layer.momentum, epsilon=layer.eps, center=True,
                              scale=not layer.fix_gamma, running_var=layer.running_var, name=name, dtype=dtype)]
    if isinstance(layer, ReLU):
        return [keras.layers.ReLU(max_value=None, negative_slope=0.0, threshold=0.0, name=name, dtype=dtype)]
    if isinstance(layer, LeakyReLU):
        # keras.layers.LeakyReLU defaults to 0.3 (keras.activations.leaky_relu to 0.2, PyTorch 0.01).
        return [SpecLeakyReLU(negative_slope=layer.slope, name=name, dtype=dtype)]
    if isinstance(layer, Tanh):
        return [keras.layers.Activation("tanh", name=name, dtype=dtype)]
    if isinstance(layer, Sigmoid):
        return [keras.layers.Activation("sigmoid", name=name, dtype=dtype)]  # tf.nn.sigmoid
    if isinstance(layer, Flatten):
        # x.view(B, -1) flattens NCHW C-major (the canonical order: the next Dense's weight columns);
        # Keras's activations are NHWC, whose flatten is H-major. So NHWC -> NCHW first (Permute's dims
        # are 1-based, batch excluded). NOT keras.layers.Flatten(data_format="channels_first"): that
        # transposes the other way (channels_first input to channels-last order before flattening).
        flatten = keras.layers.Flatten(data_format="channels_last", name=name, dtype=dtype)
        if len(input_shape) != 3:  # a flat (or non-image) input has the same layout in both conventions
            return [flatten]
        return [keras.layers.Permute((3, 1, 2), name=f"{name}.nchw", dtype=dtype), flatten]
    if isinstance(layer, Reshape):
        # out.view(B, *shape): the flat vector read C-major into the canonical (C, H, W), then to NHWC.
        reshape = keras.layers.Reshape(layer.shape, name=name, dtype=dtype)
        if len(layer.shape) != 3:
            return [reshape]
        return [reshape, keras.layers.Permute((2, 3, 1), name=f"{name}.nhwc", dtype=dtype)]
    if isinstance(layer, Dropout):
        return [SpecDropout(layer.p, name=name, dtype=dtype)]
    if isinstance(layer, EmbedConcat):
        return [SpecEmbedConcat(layer.num_classes, layer.dim, name=name, dtype=dtype)]
    raise TypeError(f"unsupported layer {layer!r}")


def build_net(net: NetSpec, name: str, dtype: tf.dtypes.DType | str, mode: str) -> SpecNet:
    """Layer i of the spec is the Keras layer named ``"<name>.<i>"`` (``"D.3"``), as nn.Sequential's child ``"3"``.

    A float64 ``dtype`` gives float64 variables AND computations (Keras's dtype policy);
    the default policy would be float32.
    """
    shapes = [net.input_shape, *net.shapes()]
    layers: list = [keras.Input(shape=channels_last_shape(net.input_shape), dtype=_variable_dtype(dtype),
                                name=f"{name}.input")]
    for i, layer in enumerate(net.layers):
        layers += build_layer(layer, shapes[i], f"{name}.{i}", dtype, mode)
    if dtype == MIXED_POLICY:  # the output in float32 (D's logit comes from a bfloat16 Conv2D), as Keras's guide does
        layers.append(keras.layers.Identity(dtype="float32", name=f"{name}.float32"))
    return SpecNet(layers, name=name)


def _canonical_variables(spec: GANSpec, net: str, model: keras.Sequential) -> dict[str, keras.Variable]:
    """Canonical name -> the Keras variable holding it, in canonical order (parameters and BN buffers)."""
    out: dict[str, keras.Variable] = {}
    for name in param_shapes(spec):
        if name.startswith(net + "."):
            layer_name, attr = module_key(name, layer_of(spec, name))
            out[name] = getattr(model.get_layer(layer_name), attr)
    return out


@contextlib.contextmanager
def _frozen_running_stats(variables: dict[str, keras.Variable]) -> Iterator[None]:
    """A training=True forward updates BN moving statistics (our SpecBatchNorm, like Keras's): undo that."""
    saved = {k: tf.identity(v.value) for k, v in variables.items() if is_buffer(k)}
    try:
        yield
    finally:
        for k, v in saved.items():
            variables[k].assign(v)


def forward(state: Any, net: str, x: tf.Tensor, bn: str, labels: tf.Tensor | None) -> tf.Tensor:
    """Net ``net`` on ``x`` (and ``labels``): BatchNorm on batch ("batch") or running ("running")
    statistics, Dropout off (no masks); no state change.

    Keras's ``training`` argument is per call (no mode to restore afterwards, unlike PyTorch's ``.train()``)."""
    model, variables = (state.G, state.G_vars) if net == "G" else (state.D, state.D_vars)
    with tf.device(state.device), _frozen_running_stats(variables):
        return model.run(x, bn == "batch", labels)
