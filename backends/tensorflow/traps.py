"""TensorFlow / Keras 3 defaults that break parity, each measured with the default left in place vs corrected.

Every row runs one small experiment twice: once with ONE setting put back to the framework's
default (everything else as the backend has it), once as the backend actually does it. Errors
are max relative errors vs the float64 oracle (common.parity.rel_err).

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
from gansuite.common.oracle import OracleBackend, adam_update, net_forward
from gansuite.common.params import Params, is_buffer
from gansuite.common.parity import parity_inputs, rel_err
from gansuite.common.presets import preset
from gansuite.common.protocol import BuildOptions
from gansuite.common.spec import AdamSpec, BatchNorm, GANSpec, LeakyReLU, NetSpec

from .backend import TensorflowBackend, TensorflowState
from .layout import (activations_from_framework, activations_to_framework, keras_shape, param_from_framework,
                     param_to_framework)
from .models import SpecBatchNorm, build_layer, canonical_variables
from .train import SpecAdam, bce

# A swap returns the Keras layer to use for spec layer ``layer`` (named ``name``), or None for the backend's.
Swap = Callable[[Any, str, str], "keras.layers.Layer | None"]

# DCGAN's Adam (both nets): the spec the optimizer rows are measured with.
_DCGAN_ADAM = AdamSpec(lr=2e-4, beta1=0.5, beta2=0.999, eps=1e-8)


def _tiny() -> tuple[GANSpec, TensorflowState, Params, np.ndarray, np.ndarray]:
    """dcgan-tiny (batch 16): spec, the backend's float64 parity state, canonical params, real batch, noise."""
    spec = preset("dcgan-tiny")
    params, real, z = parity_inputs(spec, 0)
    st = TensorflowBackend().build(spec, params, None, BuildOptions(dtype="float64"))
    return spec, st, params, real, z


def _swapped_net(spec: GANSpec, prefix: str, params: Params, swap: Swap) -> keras.Sequential:
    """models.build_net (float64) with some layers swapped for a Keras-default variant, params loaded."""
    net: NetSpec = spec.generator if prefix == "G" else spec.discriminator
    shapes = [net.input_shape, *net.shapes()]
    layers: list[Any] = [keras.Input(shape=keras_shape(net.input_shape), dtype="float64")]
    for i, layer in enumerate(net.layers):
        name = f"{prefix}.{i}"
        swapped = swap(layer, name, "float64")
        layers += [swapped] if swapped is not None else build_layer(layer, shapes[i], name, "float64")
    model = keras.Sequential(layers, name=prefix)
    for name, var in canonical_variables(spec, prefix, model).items():
        var.assign(param_to_framework(name, params[name], tf.float64))
    return model


def _running_stats_error(bn_swap: Swap | None) -> float:
    """Worst BN running statistic of G after ONE train-mode forward (dcgan-tiny, float64) vs the oracle."""
    spec, st, params, _, z = _tiny()
    if bn_swap is None:  # the backend's own G
        model, variables = st.G, st.G_vars
    else:
        model = _swapped_net(spec, "G", params,
                             lambda layer, name, dt: bn_swap(layer, name, dt) if isinstance(layer, BatchNorm) else None)
        variables = canonical_variables(spec, "G", model)
    model(activations_to_framework(z, tf.float64), training=True)
    ref = net_forward(spec.generator, params, "G", np.asarray(z, np.float64))[1].running
    return max(rel_err(param_from_framework(k, variables[k]), want)[1] for k, want in ref.items() if is_buffer(k))


def _bn_momentum_error(default: bool) -> float:
    # Keras's momentum is the weight on the OLD value (default 0.99); the spec's 0.1 is on the NEW one.
    # Only the momentum differs: the layer is the backend's (unbiased moving variance, eps 1e-5).
    def swap(layer: BatchNorm, name: str, dtype: str) -> keras.layers.Layer:
        return SpecBatchNorm(axis=-1, epsilon=layer.eps, name=name, dtype=dtype)  # momentum=0.99
    return _running_stats_error(swap if default else None)


def _bn_biased_var_error(default: bool) -> float:
    # Stock BatchNormalization, momentum and epsilon converted: its moving variance averages the BIASED
    # batch variance (PyTorch and the spec: the unbiased n / (n - 1) one).
    def swap(layer: BatchNorm, name: str, dtype: str) -> keras.layers.Layer:
        return keras.layers.BatchNormalization(axis=-1, momentum=1.0 - layer.momentum, epsilon=layer.eps,
                                               name=name, dtype=dtype)
    return _running_stats_error(swap if default else None)


def _bn_epsilon_error(default: bool) -> float:
    """G(z) of dcgan-tiny, float64, with Keras BatchNormalization's default epsilon 1e-3 (spec 1e-5).
    At DCGAN's init (weights N(0, 0.02)) G's pre-BN activations have variances of order 1e-3, so
    the epsilon is not negligible against them."""
    spec, st, params, _, z = _tiny()
    ref = OracleBackend().generate(OracleBackend().build(spec, params, None, BuildOptions()), z)
    if not default:
        return rel_err(TensorflowBackend().generate(st, z), ref)[1]

    def swap(layer: Any, name: str, dtype: str) -> keras.layers.Layer | None:
        if not isinstance(layer, BatchNorm):
            return None
        return SpecBatchNorm(axis=-1, momentum=1.0 - layer.momentum, name=name, dtype=dtype)  # epsilon=1e-3

    y = _swapped_net(spec, "G", params, swap)(activations_to_framework(z, tf.float64), training=True)
    return rel_err(activations_from_framework(y), ref)[1]


def _leaky_relu_error(default: bool) -> float:
    """D(x) of dcgan-tiny, float64, with keras.layers.LeakyReLU's default slope (0.3) instead of 0.2."""
    spec, st, params, real, _ = _tiny()
    ref = OracleBackend().discriminate(OracleBackend().build(spec, params, None, BuildOptions()), real)
    if not default:
        return rel_err(TensorflowBackend().discriminate(st, real), ref)[1]

    def swap(layer: Any, name: str, dtype: str) -> keras.layers.Layer | None:
        return keras.layers.LeakyReLU(name=name, dtype=dtype) if isinstance(layer, LeakyReLU) else None

    y = _swapped_net(spec, "D", params, swap)(activations_to_framework(real, tf.float64), training=True)
    return rel_err(activations_from_framework(y).reshape(-1), ref)[1]


def _bce_from_logits_error(default: bool) -> float:
    """errD_real (BCE of D's logits against label 1, mean over the batch, as the spec's DCGAN reduces)
    on dcgan-tiny's D(x), float64. keras.losses.BinaryCrossentropy() defaults to from_logits=False:
    it reads the logits as probabilities, clipped to [1e-7, 1 - 1e-7]. (Its default reduction,
    sum_over_batch_size, IS the spec's mean here, so only from_logits differs.)"""
    spec, st, params, real, _ = _tiny()
    logits = TensorflowBackend().discriminate(st, real)  # the same logits for all three
    ref, _ = L.bce_with_logits(logits, spec.loss.real_label, spec.loss.reduction)
    if default:
        got = keras.losses.BinaryCrossentropy()(tf.ones((len(logits), 1), tf.float64),
                                                tf.constant(logits[:, None], tf.float64))
    else:
        got = bce(tf.constant(logits, tf.float64), spec.loss.real_label, spec.loss.reduction)
    return rel_err(np.asarray(float(got)), np.asarray(ref))[1]


def _adam_change_error(opt: keras.optimizers.Optimizer, grads: list[np.ndarray], p0: np.ndarray,
                       cfg: AdamSpec) -> float:
    """Parameter change after len(grads) steps of ``opt`` (float64) vs the spec's Adam, in units of
    the largest reference change."""
    ref, m, v = p0, np.zeros_like(p0), np.zeros_like(p0)
    for t, g in enumerate(grads, 1):
        ref, m, v = adam_update(ref, g, m, v, t, cfg)
    var = keras.Variable(p0, dtype="float64")
    opt.build([var])
    for g in grads:
        opt.apply([tf.constant(g, tf.float64)], [var])
    return rel_err(var.numpy() - p0, ref - p0)[1]


def _adam_inputs(small: bool) -> tuple[np.ndarray, list[np.ndarray]]:
    """dcgan-tiny's initial D.0.weight and 3 gradients of random sign, magnitudes spread over 1e-9..1
    (``small``: where eps matters) or within 1..10 (no entry near 0, so eps moves no step by more than
    ~3e-7 of itself: Keras's effective eps is at most 1e-8 / sqrt(1 - 0.999) = 3.2e-7)."""
    p0 = parity_inputs(preset("dcgan-tiny"), 0)[0]["D.0.weight"].reshape(-1)
    rng = np.random.default_rng(5)
    lo, hi = (-9, 0) if small else (0, 1)
    return p0, [rng.choice([-1.0, 1.0], p0.size) * 10.0 ** rng.uniform(lo, hi, p0.size) for _ in range(3)]


def _adam_epsilon_error(default: bool) -> float:
    # Stock Keras Adam, only lr and beta_1 given (beta_2's default 0.999 is the spec's): epsilon=1e-7
    # added to sqrt(v) AFTER folding the bias corrections into the step size (the paper's eps-hat),
    # i.e. an effective PyTorch-side eps of 1e-7 / sqrt(1 - 0.999^t), ~3e-6 at t=1.
    cfg = _DCGAN_ADAM
    p0, grads = _adam_inputs(small=True)
    opt = keras.optimizers.Adam(learning_rate=cfg.lr, beta_1=cfg.beta1) if default else SpecAdam(cfg, "spec")
    return _adam_change_error(opt, grads, p0, cfg)


def _adam_beta_cast_error(default: bool) -> float:
    # Stock Keras Adam with every hyper-parameter the spec's (epsilon 1e-8 included), on gradients of
    # magnitude 1..10 so that where eps is added hardly matters (<= 3e-7 of a step). What remains: Keras's
    # ops.cast(self.beta_2, float64) goes through a float32 tensor (0.999 -> 0.9990000128746033) in the
    # bias correction but not in the v update, 6e-6 of the step at t=1; plus its float32
    # learning-rate variable (2e-4 -> 2.0000000949949026e-4, 5e-8).
    cfg = _DCGAN_ADAM
    p0, grads = _adam_inputs(small=False)
    opt = (keras.optimizers.Adam(learning_rate=cfg.lr, beta_1=cfg.beta1, beta_2=cfg.beta2, epsilon=cfg.eps)
           if default else SpecAdam(cfg, "spec"))
    return _adam_change_error(opt, grads, p0, cfg)


def run_traps() -> list[dict[str, Any]]:
    adam = "parameter change after 3 Adam steps (lr 2e-4, betas 0.5/0.999), dcgan-tiny D.0.weight, float64"
    return [
        {"difference": "Keras Adam default epsilon=1e-7, added after the bias correction is folded into "
                       "the step (eps-hat); spec (PyTorch) eps=1e-8 added to sqrt(v_hat)",
         "err_default": _adam_epsilon_error(True), "err_corrected": _adam_epsilon_error(False),
         "measured_on": f"{adam}, gradients 1e-9..1; in units of the largest reference change (~3 lr)"},
        {"difference": "Keras Adam casts beta_2 through float32 in its bias correction (0.999 -> "
                       "0.9990000128746033) and keeps lr in a float32 variable; spec: exact float64",
         "err_default": _adam_beta_cast_error(True), "err_corrected": _adam_beta_cast_error(False),
         "measured_on": f"{adam}, |gradients| 1..10 (eps placement negligible); in units of the "
                        "largest reference change (~3 lr)"},
        {"difference": "Keras BatchNormalization default momentum 0.99 (weight on the OLD value); spec 0.1 "
                       "on the new = Keras 0.9",
         "err_default": _bn_momentum_error(True), "err_corrected": _bn_momentum_error(False),
         "measured_on": "G's BN moving mean/var after one training=True forward, dcgan-tiny, batch 16, float64"},
        {"difference": "Keras BatchNormalization default epsilon 1e-3; spec 1e-5",
         "err_default": _bn_epsilon_error(True), "err_corrected": _bn_epsilon_error(False),
         "measured_on": "G(z) (batch statistics), dcgan-tiny, batch 16, float64"},
        {"difference": "Keras BatchNormalization moving variance averages the BIASED batch variance; spec "
                       "(PyTorch) the unbiased n/(n-1) one",
         "err_default": _bn_biased_var_error(True), "err_corrected": _bn_biased_var_error(False),
         "measured_on": "G's BN moving mean/var after one training=True forward, dcgan-tiny, batch 16, float64"},
        {"difference": "keras.layers.LeakyReLU default negative_slope 0.3; spec 0.2",
         "err_default": _leaky_relu_error(True), "err_corrected": _leaky_relu_error(False),
         "measured_on": "D(x), dcgan-tiny, batch 16, float64"},
        {"difference": "keras.losses.BinaryCrossentropy default from_logits=False (logits read as "
                       "probabilities, clipped to [1e-7, 1-1e-7]); spec: BCE with logits",
         "err_default": _bce_from_logits_error(True), "err_corrected": _bce_from_logits_error(False),
         "measured_on": "errD_real (label 1, batch mean) on D(x) logits, dcgan-tiny, batch 16, float64"},
    ]
