"""TensorFlow / Keras 3 backend: the shared contract plus the TF/Keras traps, each shown with numbers.

Every trap test measures the stock Keras/TF behaviour against the float64 oracle (or the
spec's definition) AND shows that the backend's corrected version matches it.
"""

from __future__ import annotations

import os

# Before anything imports TensorFlow (common.registry imports it before the backend module):
# parity needs TF's oneDNN CPU kernels off (see backends/tensorflow/__init__.py).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from backend_contract import BackendContract  # noqa: E402

from gansuite.common import oracle_layers as L  # noqa: E402
from gansuite.common.layout import channels_last_shape, same_or_valid_conv, same_or_valid_conv_transpose  # noqa: E402
from gansuite.common.oracle import OracleBackend, adam_update  # noqa: E402
from gansuite.common.params import init_params, is_buffer  # noqa: E402
from gansuite.common.parity import rel_err  # noqa: E402
from gansuite.common.presets import preset  # noqa: E402
from gansuite.common.protocol import BuildOptions  # noqa: E402
from gansuite.common.spec import AdamSpec, BatchNorm, Conv2d, ConvTranspose2d, LossSpec  # noqa: E402
from gansuite.common.streams import Streams  # noqa: E402
from gansuite.common.tolerances import tolerance  # noqa: E402


class TestTensorflowBackend(BackendContract):
    backend_name = "tensorflow"


# TensorFlow is imported inside the tests, never at collection: where it is missing, tests/conftest.py
# turns every test of a class with backend_name = "tensorflow" into a skip (dev run) or a failure (tox).
tf = keras = None


def _tf():
    """The backend's modules, importing TensorFlow and Keras on first use."""
    global tf, keras
    import keras as _keras
    import tensorflow as _tf_mod

    from gansuite.backends.tensorflow import backend, layout, models, train

    tf, keras = _tf_mod, _keras
    return backend, layout, models, train


def _three_adam_steps(cfg: AdamSpec):
    """Three float64 steps of ``cfg``'s Adam from one start on gradients a decade apart (1e-9..1):
    ``(run, ref)``, where ``run(opt)`` is the per-element distance of a Keras optimiser's result from
    the oracle's ``adam_update`` (``ref``), in units of one nominal step (lr)."""
    p0 = np.random.default_rng(0).normal(0.0, 0.02, 9)
    scale = np.array([1e-9, -1e-8, 1e-7, -1e-6, 1e-5, -1e-4, 1e-3, -1e-2, 1.0])
    grads = [scale * (1 + 0.1 * t) for t in range(3)]
    ref, m, v = p0.copy(), np.zeros(9), np.zeros(9)
    for t, g in enumerate(grads, 1):
        ref, m, v = adam_update(ref, g, m, v, t, cfg)

    def run(opt) -> np.ndarray:
        var = keras.Variable(p0, dtype="float64")
        opt.build([var])
        for g in grads:
            opt.apply([tf.constant(g)], [var])
        return np.abs(var.numpy() - ref) / cfg.lr

    return run, ref


def _bn_case():
    rng = np.random.default_rng(1)
    # n = 4 examples (Bessel's factor 4/3), 3 channels, one with a tiny variance (eps matters).
    x = rng.normal(0.0, 1.0, (4, 3)) * np.array([1.0, 0.01, 3.0]) + np.array([0.5, -1.0, 2.0])
    layer = BatchNorm(3, eps=1e-5, momentum=0.1)
    p = {"weight": np.array([1.1, 0.9, 1.0]), "bias": np.array([0.1, -0.2, 0.0]),
         "running_mean": np.zeros(3), "running_var": np.ones(3)}
    y, cache = L.batch_norm_forward(layer, p, x)
    return x, layer, p, y, L.batch_norm_running_update(layer, p, cache)


def _keras_bn(bn, p, x, training: bool):
    bn.build((None, 3))
    bn.gamma.assign(p["weight"])
    bn.beta.assign(p["bias"])
    y = bn(tf.constant(x), training=training).numpy()
    return y, bn.moving_mean.numpy(), bn.moving_variance.numpy()


def _keras_layer_forward(layer, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, list[str]]:
    _, layout, models, _ = _tf()
    layers = models.build_layer(layer, x.shape[1:], "L.0", "float64", "parity")
    net = keras.Sequential([keras.Input(shape=channels_last_shape(x.shape[1:]), dtype="float64"), *layers])
    net.get_layer("L.0").kernel.assign(layout.param_to_framework("L.0.weight", w, layer, tf.float64, "/CPU:0"))
    y = net(layout.activations_to_framework(x, tf.float64, "/CPU:0"))
    return layout.activations_from_framework(y), [type(l).__name__ for l in layers]


def _run(be, spec, options: BuildOptions, n: int, host_noise: bool = True):
    st = be.build(spec, init_params(spec, 0), None, options)
    outs = [be.train_step(st, b.real, b.z if host_noise else None, with_grads=host_noise)
            for b in Streams(spec, 0).iterate(0, n)]
    return st, be.export_params(st)[0], outs


class TestTensorflowSpecifics:
    """TF/Keras traps with numbers. backend_name lets tests/conftest.py skip/fail them like the contract."""

    backend_name = "tensorflow"

    @pytest.fixture(autouse=True)
    def _import_tf(self):
        _tf()

    # -- Adam: epsilon placement, default epsilon, float32 hyper-parameters ---------------------

    def test_keras_adam_default_differs_from_spec_update(self):
        """Keras's Adam is not the spec's (PyTorch's): eps-hat placement, eps 1e-7, and in float64 its
        learning rate / betas pass through float32. Three steps, gradients 1e-9..1, lr and betas of DCGAN."""
        _, _, _, train = _tf()
        cfg = AdamSpec(lr=2e-4, beta1=0.5, beta2=0.999, eps=1e-8)
        run, ref = _three_adam_steps(cfg)
        keras_default = run(keras.optimizers.Adam(learning_rate=cfg.lr, beta_1=cfg.beta1))  # epsilon=1e-7
        keras_eps = run(keras.optimizers.Adam(learning_rate=cfg.lr, beta_1=cfg.beta1, beta_2=cfg.beta2, epsilon=cfg.eps))
        spec = run(train.SpecAdam(cfg, "spec"))
        # Default: the effective PyTorch-side eps is 1e-7 / sqrt(1 - 0.999^t) ~ 3e-6 at t=1: small-gradient
        # updates shrink (measured: up to 2.6 nominal steps off after 3 steps).
        assert keras_default.max() > 1.0, keras_default
        # Right eps, wrong placement: still 0.28..1.8 steps off where |g| <= 1e-6 (measured).
        assert keras_eps[:4].min() > 0.1, keras_eps
        # |g| = 1 (eps irrelevant): Keras casts beta_2 via float32 (0.9990000128746033) in its bias
        # correction: 2e-5 of a step (measured), 1e-7 of the parameter scale, >> the 1e-12 float64 tolerance.
        assert keras_eps[-1] > 1e-6, keras_eps
        assert spec.max() * cfg.lr / np.abs(ref).max() <= 1e-15, spec

    # -- BatchNorm: momentum, epsilon, biased moving variance, trainable=False ----------------------

    def test_keras_batchnorm_defaults_differ_from_spec(self):
        _, _, models, _ = _tf()
        x, _, p, y_ref, run_ref = _bn_case()

        # Stock defaults: epsilon=1e-3 (vs 1e-5) and momentum=0.99 on the OLD value (vs 0.1 on the new).
        y, mean, _ = _keras_bn(keras.layers.BatchNormalization(dtype="float64"), p, x, training=True)
        assert rel_err(y, y_ref)[1] > 1e-2  # the 0.01-std channel: eps 1e-3 vs its variance 1e-4
        np.testing.assert_allclose(mean, 0.01 * x.mean(0), rtol=1e-12)  # 10x too little of the batch mean
        assert rel_err(mean, run_ref["running_mean"])[1] > 0.8

        # momentum/epsilon converted: output and running mean match; the moving variance is BIASED:
        # off by exactly momentum * (unbiased - biased) = 0.1 * var / (n - 1).
        y, mean, var = _keras_bn(keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, dtype="float64"),
                                 p, x, training=True)
        # (tf.nn.batch_normalization computes x * inv + (beta - mean * inv): 1e-14, float64 roundoff)
        assert rel_err(y, y_ref)[1] <= 1e-13 and rel_err(mean, run_ref["running_mean"])[1] <= 1e-14
        np.testing.assert_allclose(run_ref["running_var"] - var, 0.1 * x.var(0) / 3, rtol=0, atol=1e-15)
        assert rel_err(var, run_ref["running_var"])[1] > 1e-2

        # The backend's layer: everything matches.
        y, mean, var = _keras_bn(models.SpecBatchNorm(momentum=0.9, epsilon=1e-5, dtype="float64"), p, x, training=True)
        for got, ref in ((y, y_ref), (mean, run_ref["running_mean"]), (var, run_ref["running_var"])):
            assert rel_err(got, ref)[1] <= 1e-13

    def test_keras_batchnorm_trainable_false_forces_inference_mode(self):
        """Keras: trainable=False on BatchNormalization also means INFERENCE mode, even with training=True
        (the combined-GAN trap). The backend never sets trainable=False."""
        x, _, p, y_batch, _ = _bn_case()
        frozen = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, dtype="float64")
        frozen.trainable = False
        y, mean, var = _keras_bn(frozen, p, x, training=True)
        y_inference = (x - 0.0) / np.sqrt(1.0 + 1e-5) * p["weight"] + p["bias"]  # running stats 0 / 1
        assert rel_err(y, y_inference)[1] <= 1e-14
        assert rel_err(y, y_batch)[1] > 0.5  # nowhere near batch-statistics normalisation
        assert np.array_equal(mean, np.zeros(3)) and np.array_equal(var, np.ones(3))  # and no update

        backend, _, _, _ = _tf()
        be = backend.TensorflowBackend()
        spec = preset("dcgan-tiny")
        st = be.build(spec, init_params(spec, 0), None, BuildOptions(dtype="float32"))
        assert all(layer.trainable for net in (st.G, st.D) for layer in net.layers)

    def test_running_statistics_in_eval_mode_match_oracle_after_training(self):
        """bn='running' after real updates (at init running stats are 0/1 and prove little): a 2-step
        oracle checkpoint, its eval-mode forwards and one more iteration's running stats, float64."""
        backend, _, _, _ = _tf()
        be, oracle = backend.TensorflowBackend(), OracleBackend()
        spec = preset("dcgan-tiny")
        streams = Streams(spec, 4)
        ref = oracle.build(spec, init_params(spec, 4), None, BuildOptions())
        for b in streams.iterate(0, 2):
            oracle.train_step(ref, b.real, b.z)
        params, opt = oracle.export_params(ref)
        assert np.abs(params["D.3.running_var"] - 1).max() > 1e-3  # running stats have moved
        st = be.build(spec, params, opt, BuildOptions(dtype="float64"))
        z, real = streams.noise(2, 4), streams.real(2)[:4]
        assert rel_err(be.generate(st, z, "running"), oracle.generate(ref, z, "running"))[1] <= 1e-12
        assert rel_err(be.discriminate(st, real, "running"), oracle.discriminate(ref, real, "running"))[1] <= 1e-12
        b = streams.batch(2)
        be.train_step(st, b.real, b.z)
        oracle.train_step(ref, b.real, b.z)
        p_tf, _ = be.export_params(st)
        p_ref, _ = oracle.export_params(ref)
        for k in p_ref:
            if is_buffer(k):
                assert rel_err(p_tf[k], p_ref[k])[1] <= 1e-12, k

    def test_batchnorm_centred_form_gradient_is_more_accurate(self):
        """SpecBatchNorm normalises as (x - mean) * inv_std (the oracle's form); Keras's
        tf.nn.batch_normalization folds the mean into the offset, x * inv + (beta - mean * inv), and the
        tape then forms inv's gradient from sum(dy * x) - mean * sum(dy): cancellation when |mean| >> std.
        float32, mean 2, std 0.1, 64 examples: the input gradient vs the oracle's backward."""
        _, _, models, _ = _tf()
        rng = np.random.default_rng(2)
        layer = BatchNorm(3, eps=1e-5, momentum=0.1)
        p = {"weight": np.array([1.1, 0.9, 1.0]), "bias": np.zeros(3), "running_mean": np.zeros(3),
             "running_var": np.ones(3)}
        for _ in range(1):  # the draws of the first, unmeasured case (mean 0, std 1): kept, as measured
            x, dy = rng.normal(0.0, 1.0, (64, 3)), rng.normal(0.0, 1.0, (64, 3))
        x, dy = rng.normal(2.0, 0.1, (64, 3)), rng.normal(0.0, 1.0, (64, 3))
        y_ref, cache = L.batch_norm_forward(layer, p, x)
        dx_ref, _ = L.batch_norm_backward(layer, p, cache, dy)

        def dx_error(bn) -> float:
            bn.build((None, 3))
            bn.gamma.assign(p["weight"])
            xt = tf.constant(x, tf.float32)
            with tf.GradientTape() as tape:
                tape.watch(xt)
                loss = tf.reduce_sum(bn(xt, training=True) * tf.constant(dy, tf.float32))
            return rel_err(tape.gradient(loss, xt).numpy(), dx_ref)[1]

        stock = dx_error(keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, dtype="float32"))
        ours = dx_error(models.SpecBatchNorm(momentum=0.9, epsilon=1e-5, dtype="float32"))
        # measured: stock 1.9e-6, ours 3.9e-7 (float32 roundoff of inputs scaled by 1/std = 10)
        assert ours <= 1e-6 and stock > 3 * ours, (stock, ours)

    def test_batchnorm_fix_gamma_and_biased_running_var(self):
        """MXNet's BatchNorm(fix_gamma=True) is Keras's scale=False (no gamma variable at all); the biased
        running variance is Keras's own update. float64, vs the oracle's layer."""
        _, _, models, _ = _tf()
        x, _, p, _, _ = _bn_case()
        layer = BatchNorm(3, eps=1e-5 + 1e-12, momentum=0.1, fix_gamma=True, running_var="biased")
        p = {k: v for k, v in p.items() if k != "weight"}
        y_ref, cache = L.batch_norm_forward(layer, p, x)
        run_ref = L.batch_norm_running_update(layer, p, cache)
        bn = models.build_layer(layer, (3,), "L.0", "float64", "parity")[0]
        bn.build((None, 3))
        assert bn.gamma is None and [w.name for w in bn.trainable_weights] == ["beta"]
        bn.beta.assign(p["bias"])
        y = bn(tf.constant(x), training=True).numpy()
        assert rel_err(y, y_ref)[1] <= 1e-13
        assert rel_err(bn.moving_variance.numpy(), run_ref["running_var"])[1] <= 1e-14
        np.testing.assert_allclose(run_ref["running_var"], 0.9 + 0.1 * x.var(0), rtol=1e-14)  # biased: var, not var * 4/3

    def test_spec_adam_eps_hat_form(self):
        """form="eps_hat" (Keras's and MXNet's placement) with exact float64 constants, vs common/oracle's
        adam_update; stock Keras Adam is the same form but with float32 betas in its bias corrections and
        (floatx float32) a float32 learning rate. d2l's D optimiser, three steps."""
        _, _, _, train = _tf()
        cfg = AdamSpec(lr=0.05, beta1=0.9, beta2=0.999, eps=1e-7, form="eps_hat")
        run, _ = _three_adam_steps(cfg)
        assert run(train.SpecAdam(cfg, "spec")).max() <= 1e-14
        stock = run(keras.optimizers.Adam(learning_rate=cfg.lr, beta_1=cfg.beta1, beta_2=cfg.beta2,
                                          epsilon=cfg.eps)).max()
        assert stock > 1e-6, stock  # measured: ~6e-6 of a step (float32 beta_2 in sqrt(1 - b2^t))

    # -- the seed's own code (seed 001, TensorFlow tab) as a checked port ---------------------------------

    def test_d2l_tensorflow_seed_port_against_the_oracle(self, monkeypatch):
        """benchmarks/peers/d2l_tensorflow.SeedPort vs the float64 oracle on gaussian-tensorflow, float64.

        The forward is the same arithmetic (<= 1e-12). The iteration is not, by a property of the seed's
        code: Keras's Adam casts beta_1/beta_2 through float32 in its bias corrections, which makes the
        first step 6e-6 relative smaller (measured: parameters 1.05e-5, losses 2.3e-7 after one
        iteration). Giving the oracle's Adam the same float32-rounded betas in the bias corrections,
        and nothing else, the seed's code agrees with it to the float64 tolerance: that is the whole
        difference."""
        _tf()
        from gansuite.benchmarks.peers.d2l_tensorflow import SeedPort
        from gansuite.common import oracle
        from gansuite.common.experiments import compare_spec
        from gansuite.common.verify import PortBackend, verify

        spec, port = compare_spec("gaussian-tensorflow"), PortBackend(SeedPort)
        checks = {(c.check.split(" (")[0], c.quantity): c for c in verify(port, spec, "float64", 3)}
        assert checks["forward", "G(z)"].passed and checks["forward", "D(x) logits"].passed, checks
        assert checks["forward", "G(z)"].rel_err <= 1e-15 and checks["forward", "D(x) logits"].rel_err <= 1e-15
        one_params, one_losses = checks["one iteration", "parameters"], checks["one iteration", "losses"]
        assert 1e-6 < one_params.rel_err < 3e-5 and 1e-8 < one_losses.rel_err < 1e-6, checks

        def keras_bias_corrections(p, g, m, v, step, opt):
            m = opt.beta1 * m + (1 - opt.beta1) * g
            v = opt.beta2 * v + (1 - opt.beta2) * g * g
            b1, b2 = float(np.float32(opt.beta1)), float(np.float32(opt.beta2))  # tf.cast(python float)
            alpha = opt.lr * np.sqrt(1 - b2**step) / (1 - b1**step)
            return p - alpha * m / (np.sqrt(v) + opt.eps), m, v

        monkeypatch.setattr(oracle, "adam_update", keras_bias_corrections)
        checks = verify(port, spec, "float64", 5)
        assert all(c.passed for c in checks), checks
        assert all(c.rel_err <= 1e-10 for c in checks), checks  # trajectory included (measured 7e-14)
        # the port leaves Keras's process-wide settings as it found them
        assert keras.config.floatx() == "float32" and keras.config.dtype_policy().name == "float32"

    # -- layers: padding, layouts, LeakyReLU, BCE ------------------------------------------------------

    @pytest.mark.parametrize("k,s,p,size,expect", [
        (4, 2, 1, 4, "same"),       # DCGAN G's upsampling layers
        (4, 1, 0, 1, "valid"),      # DCGAN G's first layer, 1x1 -> 4x4
        (4, 2, 0, 3, "valid"),
        (3, 2, 1, 4, "crop"),       # k - s odd: no Keras string crops 1 per side
        (5, 2, 1, 3, "crop"),
        (2, 3, 0, 3, "crop"),       # k < s: Keras 'valid' appends s - k rows
    ])
    def test_conv_transpose_padding_matches_scatter_definition(self, k, s, p, size, expect):
        layer = ConvTranspose2d(2, 3, k, s, p)
        mode, crop = same_or_valid_conv_transpose(layer)
        assert (mode if crop == (0, 0) else "crop") == expect
        rng = np.random.default_rng(k * 100 + s * 10 + p)
        x, w = rng.normal(size=(2, 2, size, size)), rng.normal(size=(2, 3, k, k))
        y_ref, _ = L.conv_transpose2d_forward(layer, {"weight": w}, x)
        y, _ = _keras_layer_forward(layer, x, w)
        assert y.shape == y_ref.shape and rel_err(y, y_ref)[1] <= 1e-14
        if expect == "crop":  # the naive mapping: Keras 'same' gives another size (n * s)
            naive = keras.layers.Conv2DTranspose(3, k, strides=s, padding="same", dtype="float64")
            assert naive(tf.zeros((1, size, size, 2), tf.float64)).shape[1] != y_ref.shape[2]

    @pytest.mark.parametrize("k,s,p,size,expect", [
        (4, 2, 1, 64, "same"),      # DCGAN D
        (4, 1, 0, 4, "valid"),      # DCGAN D's last layer
        (3, 2, 1, 7, "same"),
        (4, 2, 1, 7, "pad"),        # odd size: TF 'same' pads 1 before, 2 after and outputs 4, PyTorch 3
        (3, 1, 2, 5, "pad"),
    ])
    def test_conv_padding_matches_definition(self, k, s, p, size, expect):
        layer = Conv2d(2, 3, k, s, p)
        mode, pad = same_or_valid_conv(layer, size)
        assert (mode if pad == 0 else "pad") == expect
        rng = np.random.default_rng(k * 100 + s * 10 + p + size)
        x, w = rng.normal(size=(2, 2, size, size)), rng.normal(size=(3, 2, k, k))
        y_ref, _ = L.conv2d_forward(layer, {"weight": w}, x)
        y, kinds = _keras_layer_forward(layer, x, w)
        assert y.shape == y_ref.shape and rel_err(y, y_ref)[1] <= 1e-14
        assert ("ZeroPadding2D" in kinds) == (expect == "pad")

    def test_tf_cpu_conv_is_channels_last_only(self):
        """Why layout.py transposes activations: TF's CPU Conv2D kernel rejects NCHW."""
        if tf.config.list_physical_devices("GPU"):
            pytest.skip("a GPU is visible: NCHW convs may be placed there")
        with pytest.raises(tf.errors.UnimplementedError, match="NHWC"):
            keras.layers.Conv2D(4, 3, data_format="channels_first")(np.ones((2, 3, 8, 8), np.float32))

    def test_leaky_relu_slope_default_and_float32_attribute(self):
        _, _, models, _ = _tf()
        x = tf.constant([-1.0, 2.0], tf.float64)
        assert keras.layers.LeakyReLU()(x).numpy()[0] == -0.3  # Keras's default slope; the spec's is 0.2
        # tf.nn.leaky_relu's alpha is a 32-bit attribute: the slope is rounded even in float64.
        stock = keras.layers.LeakyReLU(negative_slope=0.2, dtype="float64")(x).numpy()[0]
        assert abs(stock + 0.2) / 0.2 > 1e-8  # measured 1.5e-8 (0.20000000298023224)
        ours = models.SpecLeakyReLU(negative_slope=0.2, dtype="float64")(x).numpy()
        assert ours[0] == -0.2 and ours[1] == 2.0

    def test_keras_bce_defaults_differ_from_spec_loss(self):
        _, _, _, train = _tf()
        logits = np.array([-20.0, -3.0, 0.5, 4.0, 30.0])
        ref_sum, _ = L.bce_with_logits(logits, 1.0, "sum")
        ref_mean, _ = L.bce_with_logits(logits, 1.0, "mean")
        ones, t = tf.ones((5, 1), tf.float64), tf.constant(logits[:, None])
        # Default from_logits=False reads logits as probabilities (clipped to [1e-7, 1 - 1e-7]).
        assert abs(float(keras.losses.BinaryCrossentropy()(ones, t)) - ref_mean) > 1.0
        # from_logits=True: computed in Keras's loss dtype, float32 (floatx) even for float64 inputs
        # (measured 8.7e-8 relative), and reduced to the mean ("sum_over_batch_size"), not d2l's 'sum'.
        keras_f32 = float(keras.losses.BinaryCrossentropy(from_logits=True)(ones, t))
        assert abs(keras_f32 - ref_mean) > 1e-8 * ref_mean
        keras_mean = float(keras.losses.BinaryCrossentropy(from_logits=True, dtype="float64")(ones, t))
        assert abs(keras_mean - ref_mean) <= 1e-14 * ref_mean and abs(keras_mean - ref_sum) > 1.0
        lg = tf.constant(logits)
        assert abs(float(train.bce(lg, 1.0, LossSpec(reduction="sum"))) - ref_sum) <= 1e-14 * ref_sum
        assert abs(float(train.bce(lg, 1.0, LossSpec(reduction="mean"))) - ref_mean) <= 1e-14 * ref_mean

    # -- graph mode, fast mode, settings, oneDNN ----------------------------------------------------

    def test_parity_graph_is_bit_identical_to_eager(self):
        """Parity runs the step as a tf.function (no XLA) with grappler's float rewrites off: bit-identical
        to eager. With grappler's defaults (fast mode without XLA) the same graph is NOT (measured)."""
        backend, _, _, _ = _tf()
        be, spec = backend.TensorflowBackend(), preset("dcgan-tiny")
        _, p_eager, o_eager = _run(be, spec, BuildOptions(dtype="float32", extra={"eager": True}), 2)
        st, p_graph, o_graph = _run(be, spec, BuildOptions(dtype="float32"), 2)
        assert st.graph and not st.jit_compile
        for a, b in zip(o_eager, o_graph):
            assert a.scalars() == b.scalars()
            for k in a.grads:
                np.testing.assert_array_equal(b.grads[k], a.grads[k], err_msg=k)
        for k in p_eager:
            np.testing.assert_array_equal(p_graph[k], p_eager[k], err_msg=k)

        gspec = preset("gaussian")
        _, p_e, _ = _run(be, gspec, BuildOptions(dtype="float32", extra={"eager": True}), 3)
        _, p_g, _ = _run(be, gspec, BuildOptions(dtype="float32", mode="fast", extra={"jit_compile": False}), 3)
        diff = max(rel_err(p_g[k], p_e[k])[1] for k in p_e)
        assert 0 < diff < 1e-4, diff  # grappler reassociates: roundoff-sized, but not bit-identical

    @pytest.mark.parametrize("jit", [True, False])
    @pytest.mark.parametrize("model,batch", [("gaussian-mxnet", None), ("dcgan-mnist-tiny", 4), ("dcgan-mxnet-tiny", 4)])
    def test_fast_mode_keeps_the_seed_options(self, model, batch, jit):
        """Fast mode (tf.function with XLA, or without: grappler on) keeps per_example's 1/B, D's
        fake-first order and two backward passes, fix_gamma / biased running variance, and a noise batch
        larger than the real one (dcgan-mnist-tiny: 4 real rows, 16 noise rows): float32, host noise,
        one iteration vs parity mode (whose numbers the contract holds to the oracle)."""
        backend, _, _, _ = _tf()
        be, spec = backend.TensorflowBackend(), preset(model)
        params = init_params(spec, 0)
        b = Streams(spec, 0).batch(0)
        real = b.real[:batch] if batch else b.real
        z = b.z[:spec.train.noise_rows(len(real))]
        outs, exported = {}, {}
        for mode, extra in (("parity", {}), ("fast", {"jit_compile": jit})):
            st = be.build(spec, params, None, BuildOptions(dtype="float32", mode=mode, extra=extra))
            outs[mode] = be.train_step(st, real, z, with_grads=True)
            exported[mode] = be.export_params(st)[0]
        fast, parity = outs["fast"], outs["parity"]
        for k in ("loss_D", "D_x", "D_G_z1", "loss_G", "D_G_z2"):
            assert abs(getattr(fast, k) - getattr(parity, k)) <= 1e-5 * max(1.0, abs(getattr(parity, k))), k
        for k, g in parity.grads.items():
            if k.endswith("weight"):  # gaussian-mxnet: D bias gradients are ill-conditioned sums at init
                assert rel_err(fast.grads[k], g)[1] <= 1e-4, k
        for k in exported["parity"]:  # XLA reorders the batch-mean reductions: measured up to 1.1e-5
            if is_buffer(k):
                assert rel_err(exported["fast"][k], exported["parity"][k])[1] <= 1e-4, k

    def test_fast_mode_device_noise_is_seeded_and_compile_time_recorded(self):
        backend, _, _, _ = _tf()
        be, spec = backend.TensorflowBackend(), preset("gaussian")
        runs = {}
        for seed, jit in ((0, True), (0, True), (1, True), (0, False)):
            st, p, outs = _run(be, spec, BuildOptions(dtype="float32", mode="fast", seed=seed,
                                                      extra={"jit_compile": jit}), 3, host_noise=False)
            s = be.settings(st)
            assert s["jit_compile"] is jit and s["tf_function"] is True
            assert 0 < s["trace_s"] <= s["compile_s"]
            runs.setdefault((seed, jit), []).append([o.scalars() for o in outs])
        assert runs[(0, True)][0] == runs[(0, True)][1]  # same seed: same device noise, same numbers
        assert runs[(0, True)][0] != runs[(1, True)][0]
        assert all(np.isfinite(list(o.values())).all() for o in runs[(0, False)][0])

    @pytest.mark.parametrize("mode,jit", [("parity", False), ("fast", False), ("fast", True)])
    def test_train_epoch_equals_as_many_train_steps(self, mode, jit):
        """The multi-step primitive: ``train_epoch`` (one tf.function, a tf.while_loop over the stacked
        batches) runs the same step as ``train_step``: float64, the Gaussian GAN, 6 iterations from host
        noise (parity) or the device generator (fast, with and without XLA): the same losses per
        iteration and the same parameters and Adam state after, to float64 round-off; a model that
        needs per-iteration draws is refused in parity mode in one line."""
        from gansuite.common.errors import GanSuiteError

        FP64 = tolerance("float64", "loss")  # the same step, traced in a loop: float64 round-off at most
        backend, _, _, _ = _tf()
        be, spec = backend.TensorflowBackend(), preset("gaussian")
        p, streams = init_params(spec, 0), Streams(spec, 0)
        reals = np.stack([streams.real(i) for i in range(6)])
        zs = np.stack([streams.noise(i) for i in range(6)]) if mode == "parity" else None
        opts = BuildOptions(dtype="float64", mode=mode, seed=7, extra={"jit_compile": jit} if mode == "fast" else {})
        stepped = be.build(spec, p, None, opts)
        steps = [be.train_step(stepped, r, None if zs is None else z).loss_D
                 for r, z in zip(reals, zs if zs is not None else [None] * 6)]
        epoch = be.build(spec, p, None, opts)
        out = be.train_epoch(epoch, reals, zs)
        assert set(out) == {"loss_D", "loss_G", "D_x", "D_G_z1", "D_G_z2"} and len(out["loss_D"]) == 6
        np.testing.assert_allclose(out["loss_D"], steps, rtol=FP64, atol=0)
        a, opt_a = be.export_params(stepped)
        b, opt_b = be.export_params(epoch)
        assert opt_a.G.step == opt_b.G.step == 6
        for k in a:
            assert rel_err(b[k], a[k])[1] <= FP64, k
        if mode == "parity":
            mlp = preset("mlp-gan-tiny")
            with pytest.raises(GanSuiteError, match="train_epoch: model 'mlp-gan-tiny' needs per-iteration draws"):
                st = be.build(mlp, init_params(mlp, 0), None, opts)
                be.train_epoch(st, np.stack([Streams(mlp, 0).real(0)]), np.stack([Streams(mlp, 0).noise(0)]))

    def test_parity_settings_are_recorded(self):
        backend, _, _, _ = _tf()
        be, spec = backend.TensorflowBackend(), preset("gaussian")
        st = be.build(spec, init_params(spec, 0), None, BuildOptions(dtype="float64"))
        b = Streams(spec, 0).batch(0)
        be.train_step(st, b.real, b.z)  # settings are re-asserted per step (process-wide flags)
        s = be.settings(st)
        assert (s["mode"], s["dtype"], s["device"]) == ("parity", "float64", "/CPU:0")
        assert s["tf32"] is False and s["determinism"] is True and s["onednn"] is False
        assert s["grappler_arithmetic_optimization"] is False and s["grappler_constant_folding"] is False
        assert s["jit_compile"] is False and set(be.versions()) == {"tensorflow", "keras", "numpy"}

    def test_parity_refuses_onednn(self):
        """TF_ENABLE_ONEDNN_OPTS is read once, at TF import: a process with oneDNN on gets a one-line
        error from a parity build (fresh interpreter, since this one has it off)."""
        code = textwrap.dedent("""
            import tensorflow  # as common.registry does, before the backend module
            from gansuite.common.errors import GanSuiteError
            from gansuite.common.params import init_params
            from gansuite.common.presets import preset
            from gansuite.common.protocol import BuildOptions
            from gansuite.common.registry import get_backend
            be, spec = get_backend("tensorflow"), preset("gaussian")
            try:
                be.build(spec, init_params(spec, 0), None, BuildOptions())
            except GanSuiteError as err:
                print("ERROR", err)
            st = be.build(spec, init_params(spec, 0), None, BuildOptions(extra={"allow_onednn": True}))
            print("ONEDNN", be.settings(st)["onednn"])
        """)
        env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                             cwd=Path(__file__).parent)
        assert out.returncode == 0, out.stderr[-2000:]
        lines = out.stdout.splitlines()
        assert any(l.startswith("ERROR TF_ENABLE_ONEDNN_OPTS: parity mode needs") for l in lines), out.stdout
        assert "ONEDNN True" in lines, out.stdout

    def test_fast_mode_on_cpu_is_a_plain_tf_function_and_correct_with_onednn(self):
        """Fast mode on a CPU: tf.function without XLA (train._fast_uses_xla; measured 61.2 img/s with
        oneDNN vs 44.9 under XLA, full-size DCGAN at batch 64), run the way the benchmark driver runs it,
        in a process with oneDNN on (benchmarks/drive.FAST_ENV): one full-size DCGAN iteration at batch
        4 from host noise, its losses and D outputs within the float32 loss tolerance of the oracle's
        (parity refuses oneDNN: its one-step bound is the stricter one on D(G(z)) after D's step)."""
        code = textwrap.dedent("""
            from gansuite.common.oracle import OracleBackend
            from gansuite.common.parity import parity_inputs
            from gansuite.common.presets import preset
            from gansuite.common.protocol import SCALARS, BuildOptions
            from gansuite.common.registry import get_backend
            be, spec = get_backend("tensorflow"), preset("dcgan")
            params, real, z = parity_inputs(spec, 0, 4)
            o = OracleBackend()
            ref = o.train_step(o.build(spec, params, None, BuildOptions(dtype="float64")), real, z)
            st = be.build(spec, params, None, BuildOptions(dtype="float32", mode="fast"))
            out = be.train_step(st, real, z)
            s = be.settings(st)
            print("SETTINGS", s["onednn"], s["jit_compile"], s["tf_function"])
            print("ERR", max(abs(getattr(out, k) - getattr(ref, k)) / abs(getattr(ref, k)) for k in SCALARS))
        """)
        env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600,
                             cwd=Path(__file__).parent)
        assert out.returncode == 0, out.stderr[-2000:]
        lines = dict(l.split(" ", 1) for l in out.stdout.splitlines() if l.startswith(("SETTINGS", "ERR")))
        assert lines["SETTINGS"] == "True False True", out.stdout
        assert float(lines["ERR"]) <= tolerance("float32", "loss"), out.stdout

    def test_fast_mode_on_cpu_compiles_dense_models_with_xla(self):
        """Fast mode's CPU default, by model kind (train._fast_uses_xla, measured): XLA for the
        models without a convolution (their step is per-op dispatch, which XLA fuses away), a plain
        tf.function for the DCGANs (oneDNN's convolutions beat XLA's); ``extra`` overrides either way
        (data-parallel training: tests/test_backend_tensorflow_dp.py)."""
        backend, _, _, _ = _tf()
        be = backend.TensorflowBackend()
        for model, jit in (("gaussian", True), ("mlp-gan-tiny", True), ("dcgan-tiny", False)):
            spec = preset(model)
            assert spec.convolutional is not jit
            for extra, expected in (({}, jit), ({"jit_compile": not jit}, not jit)):
                st = be.build(spec, init_params(spec, 0), None, BuildOptions(dtype="float32", mode="fast", extra=extra))
                assert be.settings(st)["jit_compile"] is expected, (model, extra)


def test_bf16_mixed_fast_step_stays_near_the_oracle():
    """Fast mode's bf16 mixed precision (extra={"mixed_precision": "mixed_bfloat16"}, the benchmark's
    bf16-mixed rows): Keras's policy on Dense/Conv2D/Conv2DTranspose, float32 variables, and the
    nets' outputs cast to float32 by a final Identity layer. One dcgan-tiny iteration's losses are within MIXED_BF16_LOSS of the float64 oracle
    and further from it than float32's 1e-5 (the policy took); the setting is refused in parity
    mode and for float64 with one line."""
    from gansuite.common.errors import GanSuiteError
    from gansuite.common.registry import get_backend
    from gansuite.common.tolerances import MIXED_BF16_LOSS

    backend, spec = get_backend("tensorflow"), preset("dcgan-tiny")
    params, batch = init_params(spec, 0), Streams(spec, 0).batch(0)
    oracle = OracleBackend()
    ref = oracle.train_step(oracle.build(spec, params, None, BuildOptions()), batch.real, batch.z)
    mixed = {"mixed_precision": "mixed_bfloat16"}
    st = backend.build(spec, params, None, BuildOptions(dtype="float32", mode="fast", extra=mixed))
    assert backend.settings(st)["mixed_precision"] == "mixed_bfloat16"
    assert st.G.get_layer("G.0").compute_dtype == "bfloat16" and st.G.get_layer("G.0").kernel.dtype == "float32"
    assert st.D.layers[-1].name == "D.float32" and st.D.layers[-1].compute_dtype == "float32"  # the logit
    out = backend.train_step(st, batch.real, batch.z)
    errs = {k: abs(getattr(out, k) - getattr(ref, k)) / max(1.0, abs(getattr(ref, k)))
            for k in ("loss_D", "D_x", "D_G_z1", "loss_G", "D_G_z2")}
    assert max(errs.values()) <= MIXED_BF16_LOSS, errs
    assert max(errs.values()) > tolerance("float32", "loss"), errs
    for options in (BuildOptions(dtype="float32", mode="parity", extra=mixed),
                    BuildOptions(dtype="float64", mode="fast", extra=mixed)):
        with pytest.raises(GanSuiteError, match=r"^extra.mixed_precision: .*allowed: 'mixed_bfloat16'"):
            backend.build(spec, params, None, options)
