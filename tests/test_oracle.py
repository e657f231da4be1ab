"""The oracle's hand-written backward passes vs central finite differences, every layer kind
and both models; BatchNorm running statistics and Adam against their definitions."""

from __future__ import annotations

import numpy as np
import pytest

from gansuite.common import oracle_layers as L
from gansuite.common.oracle import OracleBackend, adam_update, net_backward, net_forward
from gansuite.common.params import init_params, trainable_names
from gansuite.common.presets import preset
from gansuite.common.protocol import BuildOptions
from gansuite.common.spec import (AdamSpec, BatchNorm, Conv2d, ConvTranspose2d, Dense, LeakyReLU, NetSpec, ReLU,
                                  Tanh)

# Central differences in float64: truncation error O(h^2 f'''') plus roundoff ~ eps |f| / h.
# The tolerance is 1e-6 of the gradient's scale plus that roundoff bound. ReLU/LeakyReLU
# kinks make the loss non-smooth: a probe whose +-h interval straddles a kink is off at
# that h, so each probe is tried at h = 1e-6, 1e-7 and 1e-8 and must agree at one of them
# (a wrong analytic gradient disagrees at all three). Measured why three: on seed 003's glyph
# batch a LeakyReLU kink lies within 1e-7 of D.0.weight[125] (dcgan-mnist-tiny): errors 6.5e-5
# and 2.2e-5 at 1e-6 and 1e-7, 1e-11 at 1e-8, where the roundoff bound is still 1e-7 |f|.
FD_RTOL = 1e-6
FD_STEPS = (1e-6, 1e-7, 1e-8)
RNG = np.random.default_rng(1234)


def _fd_check(f, x: np.ndarray, analytic: np.ndarray, n_probe: int = 12) -> None:
    """Compare ``analytic`` (df/dx) with central differences at ``n_probe`` random entries."""
    flat = x.reshape(-1)
    assert np.shares_memory(flat, x)
    idx = RNG.choice(flat.size, size=min(n_probe, flat.size), replace=False)
    scale = max(np.abs(analytic).max(), 1e-12)
    for i in idx:
        old, errors = flat[i], []
        for h in FD_STEPS:
            flat[i] = old + h
            fp = f()
            flat[i] = old - h
            fm = f()
            flat[i] = old
            num = (fp - fm) / (2 * h)
            tol = FD_RTOL * scale + 4 * np.finfo(np.float64).eps * max(abs(fp), abs(fm), 1.0) / h
            errors.append((abs(num - analytic.reshape(-1)[i]), tol, num))
        assert any(e <= t for e, t, _ in errors), (i, analytic.reshape(-1)[i], errors)


LAYER_CASES = [
    (Dense(5, 3), (4, 5)),
    (Dense(3, 2, bias=False), (4, 3)),
    (Conv2d(3, 4, 4, 2, 1), (2, 3, 8, 8)),
    (Conv2d(2, 3, 3, 1, 0, bias=True), (2, 2, 5, 5)),
    (Conv2d(4, 1, 4, 1, 0), (3, 4, 4, 4)),
    (ConvTranspose2d(3, 2, 4, 2, 1), (2, 3, 4, 4)),
    (ConvTranspose2d(5, 3, 4, 1, 0), (2, 5, 1, 1)),
    (ConvTranspose2d(2, 2, 3, 2, 0, bias=True), (2, 2, 3, 3)),
    (BatchNorm(3), (5, 3, 2, 2)),
    (BatchNorm(4), (6, 4)),
    (BatchNorm(3, fix_gamma=True), (5, 3, 2, 2)),  # MXNet's fix_gamma: no weight, no weight gradient
    (ReLU(), (3, 4)),
    (LeakyReLU(0.2), (3, 4)),
    (Tanh(), (3, 4)),
]


@pytest.mark.parametrize("layer,shape", LAYER_CASES, ids=lambda v: type(v).__name__ if not isinstance(v, tuple) else str(v))
def test_layer_backward_matches_finite_differences(layer, shape):
    net = NetSpec(shape[1:], (layer,))
    params = {}
    for name, pshape in _net_param_shapes(net).items():
        params[name] = RNG.normal(1.0 if name.endswith("weight") and isinstance(layer, BatchNorm) else 0.0, 0.5, pshape)
    x = RNG.normal(0, 1, shape)
    x[np.abs(x) < 1e-3] = 0.5  # keep ReLU kinks away from the probe step
    out, run = net_forward(net, params, "N", x)
    w = RNG.normal(0, 1, out.shape)  # random projection: f = sum(w * out)

    def f():
        return float(np.sum(w * net_forward(net, params, "N", x)[0]))

    dx, grads = net_backward(net, params, "N", run, w)
    _fd_check(f, x, dx)
    for name, g in grads.items():
        _fd_check(f, params[name], g)


def _net_param_shapes(net: NetSpec) -> dict[str, tuple]:
    out = {}
    for i, layer in enumerate(net.layers):
        if isinstance(layer, Dense):
            out[f"N.{i}.weight"] = (layer.out_features, layer.in_features)
            if layer.bias:
                out[f"N.{i}.bias"] = (layer.out_features,)
        elif isinstance(layer, Conv2d):
            out[f"N.{i}.weight"] = (layer.out_channels, layer.in_channels, layer.kernel, layer.kernel)
            if layer.bias:
                out[f"N.{i}.bias"] = (layer.out_channels,)
        elif isinstance(layer, ConvTranspose2d):
            out[f"N.{i}.weight"] = (layer.in_channels, layer.out_channels, layer.kernel, layer.kernel)
            if layer.bias:
                out[f"N.{i}.bias"] = (layer.out_channels,)
        elif isinstance(layer, BatchNorm):
            for k in ("bias",) if layer.fix_gamma else ("weight", "bias"):
                out[f"N.{i}.{k}"] = (layer.num_features,)
            out[f"N.{i}.running_mean"] = (layer.num_features,)
            out[f"N.{i}.running_var"] = (layer.num_features,)
    return out


def test_conv_transpose_is_the_adjoint_of_conv():
    """<convT(x), y> == <x, conv(y)> with the same weight: the scatter definition is right."""
    ct = ConvTranspose2d(3, 2, 4, 2, 1)
    cv = Conv2d(2, 3, 4, 2, 1)
    w = RNG.normal(0, 1, (3, 2, 4, 4))  # ConvT (in=3, out=2) == Conv (out=3, in=2) weight
    x = RNG.normal(0, 1, (2, 3, 5, 5))
    y = RNG.normal(0, 1, (2, 2, 10, 10))
    ct_x, _ = L.conv_transpose2d_forward(ct, {"weight": w}, x)
    cv_y, _ = L.conv2d_forward(cv, {"weight": w}, y)
    assert ct_x.shape == y.shape and cv_y.shape == x.shape
    assert np.isclose(np.sum(ct_x * y), np.sum(x * cv_y), rtol=1e-12)


def test_conv2d_matches_direct_loop():
    layer = Conv2d(2, 3, 3, 2, 1, bias=True)
    p = {"weight": RNG.normal(0, 1, (3, 2, 3, 3)), "bias": RNG.normal(0, 1, 3)}
    x = RNG.normal(0, 1, (1, 2, 5, 5))
    y, _ = L.conv2d_forward(layer, p, x)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for o in range(3):
        for i in range(3):
            for j in range(3):
                direct = np.sum(xp[0, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3] * p["weight"][o]) + p["bias"][o]
                assert np.isclose(y[0, o, i, j], direct, rtol=1e-13)


def test_batch_norm_running_stats_use_unbiased_variance():
    layer = BatchNorm(2, eps=1e-5, momentum=0.1)
    x = RNG.normal(3, 2, (4, 2, 3, 3))
    p = {"weight": np.ones(2), "bias": np.zeros(2), "running_mean": np.zeros(2), "running_var": np.ones(2)}
    y, cache = L.batch_norm_forward(layer, p, x)
    new = L.batch_norm_running_update(layer, p, cache)
    flat = x.transpose(1, 0, 2, 3).reshape(2, -1)
    np.testing.assert_allclose(new["running_mean"], 0.1 * flat.mean(1), rtol=1e-14)
    np.testing.assert_allclose(new["running_var"], 0.9 + 0.1 * flat.var(1, ddof=1), rtol=1e-14)
    # the output is normalised with the BIASED variance
    np.testing.assert_allclose(y.transpose(1, 0, 2, 3).reshape(2, -1).var(1), 1 / (1 + 1e-5 / flat.var(1)), rtol=1e-10)


def test_batch_norm_running_var_biased_option_is_mxnets():
    layer = BatchNorm(2, momentum=0.1, running_var="biased", fix_gamma=True)
    x = RNG.normal(3, 2, (4, 2, 3, 3))
    p = {"bias": np.zeros(2), "running_mean": np.zeros(2), "running_var": np.ones(2)}
    y, cache = L.batch_norm_forward(layer, p, x)
    flat = x.transpose(1, 0, 2, 3).reshape(2, -1)
    np.testing.assert_allclose(L.batch_norm_running_update(layer, p, cache)["running_var"], 0.9 + 0.1 * flat.var(1),
                               rtol=1e-14)
    # gamma fixed at 1: the output is xhat + beta
    np.testing.assert_allclose(y.transpose(1, 0, 2, 3).reshape(2, -1).var(1), 1 / (1 + 1e-5 / flat.var(1)), rtol=1e-10)


def test_bce_with_logits_is_stable_and_correct():
    x = np.array([[-50.0], [-1.0], [0.0], [2.0], [60.0]])
    loss, grad = L.bce_with_logits(x, 1.0, "sum")
    p = 1 / (1 + np.exp(-x[:, 0]))
    expect = -np.log(p[1:4]).sum() + 50.0 + np.log1p(np.exp(-50.0)) + np.log1p(np.exp(-60.0))
    assert np.isclose(loss, expect, rtol=1e-14)
    np.testing.assert_allclose(grad[:, 0], L.sigmoid(x[:, 0]) - 1.0, rtol=1e-14)
    loss_mean, grad_mean = L.bce_with_logits(x, 0.0, "mean")
    assert np.isfinite(loss_mean) and np.allclose(grad_mean * 5, L.sigmoid(x))


def test_adam_is_pytorch_form():
    """Step 1: m_hat = g, v_hat = g^2, so the update is lr * g / (|g| + eps) exactly."""
    cfg = AdamSpec(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)
    g = np.array([1e-9, -3.0, 0.5])
    p, m, v = adam_update(np.zeros(3), g, np.zeros(3), np.zeros(3), 1, cfg)
    np.testing.assert_allclose(p, -0.1 * g / (np.abs(g) + 1e-8), rtol=1e-12)
    np.testing.assert_allclose(m, 0.1 * g)
    np.testing.assert_allclose(v, 0.001 * g * g)


def test_adam_eps_hat_form_is_keras_and_mxnet():
    """Step 1 of the eps-hat form: lr * sqrt(1 - b2) / (1 - b1) * m / (sqrt(v) + eps) with m = (1 - b1) g,
    v = (1 - b2) g^2, i.e. lr * g / (|g| + eps / sqrt(1 - b2)): eps is 31.6x larger on PyTorch's side."""
    cfg = AdamSpec(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-7, form="eps_hat")
    g = np.array([1e-9, -3.0, 0.5])
    p, m, v = adam_update(np.zeros(3), g, np.zeros(3), np.zeros(3), 1, cfg)
    np.testing.assert_allclose(p, -0.1 * g / (np.abs(g) + 1e-7 / np.sqrt(0.001)), rtol=1e-12)
    np.testing.assert_allclose(v, 0.001 * g * g)
    # and over 3 steps, Keras 3's update written out (keras/src/optimizers/adam.py, its op order)
    p3, m3, v3 = np.zeros(3), np.zeros(3), np.zeros(3)
    pk, mk, vk = np.zeros(3), np.zeros(3), np.zeros(3)
    for t in (1, 2, 3):
        p3, m3, v3 = adam_update(p3, g * t, m3, v3, t, cfg)
        mk = mk + (g * t - mk) * (1 - 0.9)
        vk = vk + (np.square(g * t) - vk) * (1 - 0.999)
        alpha = 0.1 * np.sqrt(1 - 0.999**t) / (1 - 0.9**t)
        pk = pk - (mk * alpha) / (np.sqrt(vk) + 1e-7)
    np.testing.assert_allclose(p3, pk, rtol=1e-13)


@pytest.mark.parametrize("model", ["gaussian-tensorflow", "dcgan-mnist-tiny"])
def test_init_schemes_draw_within_their_bounds(model):
    """torch_default: U(+-1/sqrt(fan_in)) with torch's fan_in (ConvTranspose: out * k * k);
    glorot_uniform: U(+-sqrt(6 / (fan_in + fan_out)))."""
    from gansuite.common.layout import layer_of
    from gansuite.common.params import glorot_fans, torch_fan_in

    spec = preset(model)
    params = init_params(spec, 0)
    for name, value in params.items():
        layer, net_init = layer_of(spec, name), (spec.init.G if name[0] == "G" else spec.init.D)
        if isinstance(layer, BatchNorm):
            continue
        scheme = (net_init.weight if name.endswith("weight") else net_init.bias).scheme
        if scheme == "torch_default":
            bound = 1 / np.sqrt(torch_fan_in(layer))
        elif scheme == "glorot_uniform":
            bound = np.sqrt(6 / sum(glorot_fans(layer)))
        else:
            continue
        assert np.abs(value).max() <= bound and np.abs(value).max() > 0.5 * bound, (name, scheme)


@pytest.mark.parametrize("model,batch", [("gaussian", 6), ("dcgan-tiny", 3), ("gaussian-mxnet", 6),
                                         ("gaussian-tensorflow", 6), ("dcgan-mnist-tiny", 3), ("dcgan-mxnet-tiny", 3)])
def test_model_gradients_match_finite_differences(model, batch):
    """Whole-model check: dloss_D/dD and dloss_G/dG of the oracle's iteration vs finite
    differences of the same losses (BatchNorm in train mode, the spec's order). With the
    per-example reduction the reported loss is the batch sum and the gradient is rescaled by
    1/B, so the finite differences are divided by B."""
    spec = preset(model)
    params = init_params(spec, 0)
    from gansuite.common.streams import Streams

    b = Streams(spec, 0).batch(0)
    real, z = b.real[:batch], b.z[:batch]
    oracle = OracleBackend()
    st = oracle.build(spec, params, None, BuildOptions())
    d = oracle.d_step(st, real, z)

    def loss_d():
        s = oracle.build(spec, params, None, BuildOptions())
        return oracle.d_step(s, real, z).loss_D

    scale = batch if spec.loss.reduction == "per_example" else 1
    for name in trainable_names(spec, "D")[:4]:
        _fd_check(loss_d, params[name], scale * d.grads[name], n_probe=4)

    g = oracle.g_step(st, d)  # D unchanged here (no Adam step): d loss_G / d G at the start params

    def loss_g():
        s = oracle.build(spec, params, None, BuildOptions())
        return oracle.g_step(s, oracle.d_step(s, real, z)).loss_G

    for name in trainable_names(spec, "G")[:4]:
        _fd_check(loss_g, params[name], scale * g.grads[name], n_probe=4)


def _iteration_with_bn_roundoff(spec, eps: float, seed: int, batch: int | None = None) -> tuple[dict, dict]:
    """The oracle's first iteration with every BatchNorm output perturbed by ``eps`` of its scale:
    (gradients, parameters after Adam)."""
    from gansuite.common.parity import parity_inputs

    params, real, z = parity_inputs(spec, 0, batch)
    rng, clean = np.random.default_rng(seed), L.batch_norm_forward

    def perturbed(layer, p, x, *, use_batch_stats=True):
        y, cache = clean(layer, p, x, use_batch_stats=use_batch_stats)
        return y + eps * np.abs(y).max() * rng.standard_normal(y.shape), cache

    oracle = OracleBackend()
    state = oracle.build(spec, params, None, BuildOptions())
    L.batch_norm_forward = perturbed
    try:
        grads = oracle.train_step(state, real, z, with_grads=True).grads
    finally:
        L.batch_norm_forward = clean
    return grads, oracle.export_params(state)[0]


def _g_grads_with_bn_roundoff(model: str, eps: float, seed: int, batch: int | None = None) -> dict:
    """The comparison's spec, or the preset cut to ``batch`` (the backend tests' case)."""
    from gansuite.common.experiments import compare_spec

    spec = compare_spec(model) if batch is None else preset(model)
    return _iteration_with_bn_roundoff(spec, eps, seed, batch)[0]


@pytest.mark.parametrize("model,batch,ill_conditioned", [("dcgan-mnist", None, True), ("dcgan-mnist-tiny", 4, True),
                                                         ("dcgan", None, False)])
def test_seed003_init_makes_float32_g_gradients_ill_conditioned(model, batch, ill_conditioned):
    """Why common/tolerances.ILL_CONDITIONED lists dcgan-mnist in float32: float32 roundoff (6e-8
    of a BatchNorm output's scale) moves the float64 oracle's own G gradients by >1e-2 with seed
    003's gamma ~ N(0, 0.02), and by three orders of magnitude less with the tutorial's gamma ~
    N(1, 0.02): measured 1.8e-6..3.0e-6 on the comparison's batch (shapes; 1.5e-5 on the first
    batch of glyph digits), against 4.6e-2..7.6e-2. The worst of two roundoff draws: at test size
    (dcgan-mnist-tiny, batch 4 of glyphs) one draw moves G's gradients by 2.8e-6, the other by
    1.2e-2 (G.7.bias), which is why TensorFlow's float32 G.12.bias gradient was 1.4e-5 off there."""
    from gansuite.common.parity import rel_err

    ref = _g_grads_with_bn_roundoff(model, 0.0, 0, batch)
    worst = max(rel_err(moved[k], ref[k])[1] for moved in (_g_grads_with_bn_roundoff(model, 6e-8, draw, batch)
                                                          for draw in (1, 2)) for k in ref if k.startswith("G."))
    assert (worst > 1e-2) if ill_conditioned else (worst < 1e-5), worst


@pytest.mark.parametrize("kind,above", [("glyphs", True), ("shapes", False)])
def test_adam_first_step_turns_float64_roundoff_into_1e10_on_the_glyph_batch(kind, above):
    """Why seed 000's code vs dcgan on JAX, float64, was 2.0e-10 (> SEED_CODE) on the first glyph
    batch: not a port difference but Adam's first step ``lr g / (|g| + eps)`` on a gradient near eps.
    On that batch D.6.bias[239]'s gradient is -2.70e-8 (2.7 eps), what is left of a real-pass part
    -8.786856e-3 and a fake-pass part +8.786828e-3 (sum of |terms| 0.315, so float64 roundoff ~3e-17);
    Adam's sensitivity there, lr eps / (|g| + eps)^2 = 1.46e3, is 7.3e6 in units of the tensor's scale
    (lr: each element is ~ +-lr after one step), so a gradient 1.4e-17 off is 1e-10 off. Measured
    against the oracle: JAX's gradient 6.6e-17 off (params 4.8e-10), torch's 4.5e-17 (3.3e-10), the
    seed-000 transcription's 3.8e-17 (2.8e-10); JAX vs torch 1.5e-10, torch vs seed 5.1e-11. Here
    the oracle's own BatchNorm outputs perturbed by float64 roundoff (1.1e-16 of their scale): its
    parameters after one iteration move by 3.2e-10 and 1.2e-10 (two draws) on the glyph batch, by
    8.1e-12 and 4.2e-12 on the shapes batch the comparison uses (common/experiments.COMPARE_DATA)."""
    from gansuite.common.overrides import apply_overrides
    from gansuite.common.parity import rel_err
    from gansuite.common.tolerances import SEED_CODE

    spec = apply_overrides(preset("dcgan"), ["train.batch_size=8", f"data.kind={kind}", "data.n_examples=256"])
    _, ref = _iteration_with_bn_roundoff(spec, 0.0, 0)
    worst = max(rel_err(moved[k], ref[k])[1] for moved in (_iteration_with_bn_roundoff(spec, 1.1e-16, draw)[1]
                                                          for draw in (1, 2)) for k in ref)
    assert (worst > SEED_CODE) if above else (worst < SEED_CODE / 5), worst
