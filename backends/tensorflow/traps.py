"""TensorFlow / Keras 3 defaults that break parity, each measured with the default left in place vs corrected.

Every trap is one function ``(default: bool) -> float`` (common/traps.py): one small experiment
with ONE setting put back to the framework's default (everything else as the backend has it), or
as the backend actually does it. Errors are max relative errors vs the float64 oracle
(common.parity.rel_err).

Not measured here: ``TF_ENABLE_ONEDNN_OPTS`` (oneDNN float32 CPU kernels, on by default). TF reads
it once, when it is imported, and this module is imported after TF (it lives in the backend
package, whose __init__ turns oneDNN off when it comes first), so both settings cannot be run in
one process; tests/test_backend_tensorflow.py::test_parity_refuses_onednn checks it in a fresh
interpreter, and backends/tensorflow/__init__.py records the measured effect (D's float32 forward
error 1.9e-6 with oneDNN vs 8.4e-7 without: about 2x, under this table's 10x bar anyway).
"""

from __future__ import annotations

from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from gansuite.common import oracle_layers as L
from gansuite.common.layout import channels_last_shape, layer_of
from gansuite.common.oracle import net_forward
from gansuite.common.params import Params, is_buffer
from gansuite.common.parity import rel_err
from gansuite.common.spec import AdamSpec, BatchNorm, GANSpec, LeakyReLU, NetSpec
from gansuite.common.traps import ADAM_MEASURED_ON, DCGAN_ADAM, Trap, adam_inputs, adam_reference, case, measure_all

from .backend import TensorflowBackend
from .layout import activations_from_framework, activations_to_framework, param_from_framework, param_to_framework
from .models import SpecBatchNorm, _canonical_variables, build_layer
from .train import SpecAdam, bce

# A swap returns the Keras layer to use for spec layer ``layer`` (named ``name``), or None for the backend's.
_Swap = Callable[[Any, str, str], "keras.layers.Layer | None"]


def _swapped_net(spec: GANSpec, net: str, params: Params, swap: _Swap, device: str) -> keras.Sequential:
    """models.build_net (float64) with some layers swapped for a Keras-default variant, params loaded."""
    net_spec: NetSpec = spec.generator if net == "G" else spec.discriminator
    shapes = [net_spec.input_shape, *net_spec.shapes()]
    layers: list[Any] = [keras.Input(shape=channels_last_shape(net_spec.input_shape), dtype="float64")]
    for i, layer in enumerate(net_spec.layers):
        name = f"{net}.{i}"
        swapped = swap(layer, name, "float64")
        layers += [swapped] if swapped is not None else build_layer(layer, shapes[i], name, "float64", "parity")
    model = keras.Sequential(layers, name=net)
    for name, var in _canonical_variables(spec, net, model).items():
        var.assign(param_to_framework(name, params[name], layer_of(spec, name), tf.float64, device))
    return model


def _running_stats_error(bn_swap: _Swap | None) -> float:
    """Worst BN running statistic of G after ONE train-mode forward (dcgan-tiny, float64) vs the oracle."""
    c = case(TensorflowBackend())
    if bn_swap is None:  # the backend's own G
        model, variables = c.state.G, c.state.G_vars
    else:
        model = _swapped_net(c.spec, "G", c.params,
                             lambda layer, name, dt: bn_swap(layer, name, dt) if isinstance(layer, BatchNorm) else None,
                             c.state.device)
        variables = _canonical_variables(c.spec, "G", model)
    model(activations_to_framework(c.z, tf.float64, c.state.device), training=True)
    ref = net_forward(c.spec.generator, c.params, "G", np.asarray(c.z, np.float64))[1].running
    return max(rel_err(param_from_framework(k, variables[k], layer_of(c.spec, k)), want)[1]
               for k, want in ref.items() if is_buffer(k))


def _bn_momentum(default: bool) -> float:
    # Keras's momentum is the weight on the OLD value (default 0.99); the spec's 0.1 is on the NEW one.
    # Only the momentum differs: the layer is the backend's (unbiased moving variance, eps 1e-5).
    def swap(layer: BatchNorm, name: str, dtype: str) -> keras.layers.Layer:
        return SpecBatchNorm(axis=-1, epsilon=layer.eps, name=name, dtype=dtype)  # momentum=0.99
    return _running_stats_error(swap if default else None)


def _bn_biased_var(default: bool) -> float:
    # Stock BatchNormalization, momentum and epsilon converted: its moving variance averages the BIASED
    # batch variance (PyTorch and the spec: the unbiased n / (n - 1) one).
    def swap(layer: BatchNorm, name: str, dtype: str) -> keras.layers.Layer:
        return keras.layers.BatchNormalization(axis=-1, momentum=1.0 - layer.momentum, epsilon=layer.eps,
                                               name=name, dtype=dtype)
    return _running_stats_error(swap if default else None)


def _forward_error(net: str, default: bool, swap: _Swap) -> float:
    """G(z) or D(x) of dcgan-tiny (float64, batch statistics) vs the oracle: the backend's net, or (default)
    the net with ``swap``'s Keras-default layers."""
    backend = TensorflowBackend()
    c = case(backend)
    x, ref = (c.z, c.oracle_G()) if net == "G" else (c.real, c.oracle_D())
    if not default:
        return rel_err(backend.generate(c.state, x) if net == "G" else backend.discriminate(c.state, x), ref)[1]
    y = _swapped_net(c.spec, net, c.params, swap, c.state.device)(
        activations_to_framework(x, tf.float64, c.state.device), training=True)
    return rel_err(activations_from_framework(y).reshape(ref.shape), ref)[1]


def _bn_epsilon(default: bool) -> float:
    """G(z) of dcgan-tiny, float64, with Keras BatchNormalization's default epsilon 1e-3 (spec 1e-5).
    At DCGAN's init (weights N(0, 0.02)) G's pre-BN activations have variances of order 1e-3, so
    the epsilon is not negligible against them."""
    def swap(layer: Any, name: str, dtype: str) -> keras.layers.Layer | None:
        if not isinstance(layer, BatchNorm):
            return None
        return SpecBatchNorm(axis=-1, momentum=1.0 - layer.momentum, name=name, dtype=dtype)  # epsilon=1e-3
    return _forward_error("G", default, swap)


def _leaky_relu_slope(default: bool) -> float:
    """D(x) of dcgan-tiny, float64, with keras.layers.LeakyReLU's default slope (0.3) instead of 0.2."""
    def swap(layer: Any, name: str, dtype: str) -> keras.layers.Layer | None:
        return keras.layers.LeakyReLU(name=name, dtype=dtype) if isinstance(layer, LeakyReLU) else None
    return _forward_error("D", default, swap)


def _bce_from_logits(default: bool) -> float:
    """errD_real (BCE of D's logits against label 1, mean over the batch, as the spec's DCGAN reduces)
    on dcgan-tiny's D(x), float64. keras.losses.BinaryCrossentropy() defaults to from_logits=False:
    it reads the logits as probabilities, clipped to [1e-7, 1 - 1e-7]. (Its default reduction,
    sum_over_batch_size, IS the spec's mean here, so only from_logits differs.)"""
    backend = TensorflowBackend()
    c = case(backend)
    loss = c.spec.loss
    logits = backend.discriminate(c.state, c.real)  # the same logits for all three
    ref, _ = L.bce_with_logits(logits, loss.real_label, loss.reduction)
    if default:
        got = keras.losses.BinaryCrossentropy()(tf.ones((len(logits), 1), tf.float64),
                                                tf.constant(logits[:, None], tf.float64))
    else:
        got = bce(tf.constant(logits, tf.float64), loss.real_label, loss)
    return rel_err(np.asarray(float(got)), np.asarray(ref))[1]


def _adam_change_error(opt: keras.optimizers.Optimizer, grads: list[np.ndarray], p0: np.ndarray,
                       cfg: AdamSpec) -> float:
    """Parameter change after len(grads) steps of ``opt`` (float64) vs the spec's Adam, in units of
    the largest reference change."""
    ref = adam_reference(p0, grads, cfg)
    var = keras.Variable(p0, dtype="float64")
    opt.build([var])
    for g in grads:
        opt.apply([tf.constant(g, tf.float64)], [var])
    return rel_err(var.numpy() - p0, ref - p0)[1]


def _adam_epsilon(default: bool) -> float:
    # Stock Keras Adam, only lr and beta_1 given (beta_2's default 0.999 is the spec's): epsilon=1e-7
    # added to sqrt(v) AFTER folding the bias corrections into the step size (the paper's eps-hat),
    # i.e. an effective PyTorch-side eps of 1e-7 / sqrt(1 - 0.999^t), ~3e-6 at t=1.
    cfg = DCGAN_ADAM
    p0, grads = adam_inputs(small=True)
    opt = keras.optimizers.Adam(learning_rate=cfg.lr, beta_1=cfg.beta1) if default else SpecAdam(cfg, "spec")
    return _adam_change_error(opt, grads, p0, cfg)


def _adam_beta_cast(default: bool) -> float:
    # Stock Keras Adam with every hyper-parameter the spec's (epsilon 1e-8 included), on gradients of
    # magnitude 1..10 so that where eps is added hardly matters (<= 3e-7 of a step: Keras's effective
    # eps is at most 1e-8 / sqrt(1 - 0.999) = 3.2e-7). What remains: Keras's
    # ops.cast(self.beta_2, float64) goes through a float32 tensor (0.999 -> 0.9990000128746033) in the
    # bias correction but not in the v update, 6e-6 of the step at t=1; plus its float32
    # learning-rate variable (2e-4 -> 2.0000000949949026e-4, 5e-8).
    cfg = DCGAN_ADAM
    p0, grads = adam_inputs(small=False)
    opt = (keras.optimizers.Adam(learning_rate=cfg.lr, beta_1=cfg.beta1, beta_2=cfg.beta2, epsilon=cfg.eps)
           if default else SpecAdam(cfg, "spec"))
    return _adam_change_error(opt, grads, p0, cfg)


_TINY_G_BN = "G's BN moving mean/var after one training=True forward, dcgan-tiny, batch 16, float64"

TRAPS = [
    Trap("Keras Adam default epsilon=1e-7, added after the bias correction is folded into "
         "the step (eps-hat); spec (PyTorch) eps=1e-8 added to sqrt(v_hat)",
         f"{ADAM_MEASURED_ON}, gradients 1e-9..1; in units of the largest reference change (~3 lr)", _adam_epsilon),
    Trap("Keras Adam casts beta_2 through float32 in its bias correction (0.999 -> "
         "0.9990000128746033) and keeps lr in a float32 variable; spec: exact float64",
         f"{ADAM_MEASURED_ON}, |gradients| 1..10 (eps placement negligible); in units of the "
         "largest reference change (~3 lr)", _adam_beta_cast),
    Trap("Keras BatchNormalization default momentum 0.99 (weight on the OLD value); spec 0.1 "
         "on the new = Keras 0.9", _TINY_G_BN, _bn_momentum),
    Trap("Keras BatchNormalization default epsilon 1e-3; spec 1e-5",
         "G(z) (batch statistics), dcgan-tiny, batch 16, float64", _bn_epsilon),
    Trap("Keras BatchNormalization moving variance averages the BIASED batch variance; spec "
         "(PyTorch) the unbiased n/(n-1) one", _TINY_G_BN, _bn_biased_var),
    Trap("keras.layers.LeakyReLU default negative_slope 0.3; spec 0.2",
         "D(x), dcgan-tiny, batch 16, float64", _leaky_relu_slope),
    Trap("keras.losses.BinaryCrossentropy default from_logits=False (logits read as "
         "probabilities, clipped to [1e-7, 1-1e-7]); spec: BCE with logits",
         "errD_real (label 1, batch mean) on D(x) logits, dcgan-tiny, batch 16, float64", _bce_from_logits),
]


def run_traps() -> list[dict[str, Any]]:
    return measure_all(TRAPS, TensorflowBackend.name)
