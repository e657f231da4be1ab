"""Seed 002's VAE (common/vae.py): the oracle's hand-written gradients against central finite
differences, its BCE and KL against direct formulas and the closed-form Gaussian KL, PyTorch's BCE
log clamp at -100, the [-1, 1] -> [0, 1] data mapping against ToTensor's u/255, the eps stream,
the spec's one-line validation errors, and one Adam step against a direct computation."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

import gansuite.common.vae as vae_module
from gansuite.common.data import Dataset, load_dataset
from gansuite.common.errors import GanSuiteError, SpecError
from gansuite.common.params import STREAM_PARAMS
from gansuite.common.spec import AdamSpec, BatchNorm, DataSpec, Dense, Init, NetInit, NetSpec, ReLU, Sigmoid, Tanh
from gansuite.common.streams import STREAM_ORDER
from gansuite.common.vae import (SEED_002_NAMES, STREAM_VAE_EPS, VAELossSpec, VAETrainSpec, init_vae_params,
                                 to_unit_range, vae_backward, vae_batch, vae_eps, vae_forward, vae_indices, vae_loss,
                                 vae_param_shapes, vae_preset, vae_state, vae_step, vae_tiny_preset)

RNG = np.random.default_rng(8001)

# Central differences in float64 of the summed loss (|f| ~ 8.8e3 on the tiny preset's batch of 16).
# Error of a probe: truncation h^2 f'''/6 plus roundoff ~ eps |f| / h (2e-6 at h = 1e-6). The
# tolerance is 1e-6 of the tensor's gradient scale (max |g|) plus 4 eps max(|f|, 1) / h. The ReLUs
# in E and Dec make f piecewise smooth: a probe whose +-h straddles a kink is off at that h, so
# each probe is tried at h = 1e-4, 1e-5, 1e-6 and must agree at one (a wrong gradient disagrees
# at all three). Measured (seed 0, iteration 0): the worst probe's error over every tensor is
# printed with -s: 1e-10 to 2.5e-9 of the scale per tensor, 400x inside the tolerance.
FD_RTOL = 1e-6
FD_STEPS = (1e-4, 1e-5, 1e-6)


def _fd_errors(f, x: np.ndarray, analytic: np.ndarray, idx: np.ndarray) -> float:
    """Assert ``analytic`` = df/dx at the flat indices ``idx``; return the worst error / scale."""
    flat, ana = x.reshape(-1), analytic.reshape(-1)
    assert np.shares_memory(flat, x)
    scale = max(np.abs(analytic).max(), 1e-12)
    worst = 0.0
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
            errors.append((abs(num - ana[i]), tol, num))
        assert any(e <= t for e, t, _ in errors), (int(i), ana[i], errors)
        worst = max(worst, min(e for e, _, _ in errors) / scale)
    return worst


@pytest.fixture(scope="module")
def tiny():
    spec = vae_tiny_preset()
    dataset = load_dataset(spec.data, 0)
    x, eps = vae_batch(spec, dataset, 0, 0)
    return spec, dataset, x, eps


def _probes(size: int, n: int = 24) -> np.ndarray:
    """Every entry of a small tensor, else ``n`` random ones."""
    return np.arange(size) if size <= 128 else RNG.choice(size, size=n, replace=False)


def test_every_gradient_matches_central_differences(tiny):
    spec, _, x, eps = tiny
    params = init_vae_params(spec, 0)
    grads = vae_backward(params, spec, x, eps)
    assert list(grads) == list(vae_param_shapes(spec))

    def f():
        return vae_loss(spec, vae_forward(params, spec, x, eps))[2]

    worst = {name: _fd_errors(f, params[name], g, _probes(g.size)) for name, g in grads.items()}
    print("VAE FD worst error / scale:", {k: f"{v:.1e}" for k, v in worst.items()})


def test_gradients_match_central_differences_when_the_kl_dominates(tiny):
    """The reconstruction term's gradients are ~100x the KL's on the preset: with the decoder
    scaled down 1e-3 and log_var pushed away from 0, the KL and reparameterisation paths carry
    the mu/logvar/E gradients and are checked on their own scale."""
    spec, _, x, eps = tiny
    params = init_vae_params(spec, 1)
    params["Dec.0.weight"] *= 1e-3
    params["logvar.0.bias"] += 1.5
    params["mu.0.bias"] += 0.7
    grads = vae_backward(params, spec, x[:4], eps[:4])

    def f():
        return vae_loss(spec, vae_forward(params, spec, x[:4], eps[:4]))[2]

    for name in ("E.0.weight", "E.0.bias", "mu.0.weight", "mu.0.bias", "logvar.0.weight", "logvar.0.bias",
                 "Dec.0.weight"):
        _fd_errors(f, params[name], grads[name], _probes(grads[name].size))


def test_forward_follows_the_seed_line_by_line(tiny):
    spec, _, x, eps = tiny
    p = init_vae_params(spec, 0)
    out = vae_forward(p, spec, x, eps)
    h = np.maximum(x @ p["E.0.weight"].T + p["E.0.bias"], 0)
    mu, lv = h @ p["mu.0.weight"].T + p["mu.0.bias"], h @ p["logvar.0.weight"].T + p["logvar.0.bias"]
    z = mu + eps * np.exp(lv / 2)
    logits = np.maximum(z @ p["Dec.0.weight"].T + p["Dec.0.bias"], 0) @ p["Dec.2.weight"].T + p["Dec.2.bias"]
    np.testing.assert_array_equal(out["mu"], mu)
    np.testing.assert_array_equal(out["log_var"], lv)
    np.testing.assert_array_equal(out["z"], z)
    np.testing.assert_allclose(out["x_reconst"], 1 / (1 + np.exp(-logits)), rtol=1e-15, atol=0)
    # image-shaped x is flattened as x.view(-1, image_size)
    out4 = vae_forward(p, spec, x.reshape(-1, 1, 28, 28), eps)
    np.testing.assert_array_equal(out4["x_reconst"], out["x_reconst"])


def test_kl_equals_the_closed_form_gaussian_kl(tiny):
    """KL(N(mu, sigma^2) || N(0, 1)) = sum(log(1/sigma) + (sigma^2 + mu^2)/2 - 1/2), written with sigma."""
    spec, _, x, eps = tiny
    params = init_vae_params(spec, 0)
    params["logvar.0.bias"] += RNG.normal(0, 1, spec.latent)
    out = vae_forward(params, spec, x, eps)
    sigma = out["std"]
    closed = np.sum(-np.log(sigma) + (sigma**2 + out["mu"] ** 2) / 2 - 0.5)
    _, kl, _ = vae_loss(spec, out)
    assert kl == pytest.approx(closed, rel=1e-12)
    assert kl > 0


def test_bce_is_the_summed_cross_entropy_not_divided_by_the_batch(tiny):
    spec, _, x, eps = tiny
    out = vae_forward(init_vae_params(spec, 0), spec, x, eps)
    p = out["x_reconst"]
    direct = -np.sum(x * np.log(p) + (1 - x) * np.log(1 - p))
    rec, kl, total = vae_loss(spec, out)
    assert rec == pytest.approx(direct, rel=1e-13)
    assert total == rec + kl
    half = vae_loss(spec, vae_forward(init_vae_params(spec, 0), spec, x[:8], eps[:8]))[0]
    assert half == pytest.approx(-np.sum(x[:8] * np.log(p[:8]) + (1 - x[:8]) * np.log(1 - p[:8])), rel=1e-13)


def test_bce_clamps_each_log_at_minus_100_where_the_reconstruction_saturates(tiny):
    """Dec.2 pre-activations of +-1000: sigmoid gives exactly 1.0 and 0.0 in float64. Where x
    disagrees, PyTorch's BCE is 100 per pixel (log 0 clamped at -100) and its gradient
    (p - x)/max(p(1-p), 1e-12) = +-1e12; through the saturated sigmoid (p(1-p) = 0) nothing
    reaches the parameters, which stay finite."""
    spec, _, _, eps = tiny
    params = init_vae_params(spec, 0)
    params["Dec.2.weight"][:] = 0.0
    sign = np.where(np.arange(spec.features) % 2 == 0, 1.0, -1.0)
    params["Dec.2.bias"][:] = 1000.0 * sign
    x = np.zeros((2, spec.features))
    x[0] = (sign < 0)  # row 0 disagrees everywhere: x = 0 where p = 1, x = 1 where p = 0
    x[1] = np.where(sign > 0, 0.25, 0.75)  # row 1: fractional pixels, 100 (1 - x) or 100 x
    out = vae_forward(params, spec, x, eps[:2])
    assert set(np.unique(out["x_reconst"])) == {0.0, 1.0}
    rec, _, _ = vae_loss(spec, out)
    assert rec == 100.0 * spec.features + 100.0 * 0.75 * spec.features
    grads = vae_backward(params, spec, x, eps[:2], out)
    assert all(np.isfinite(g).all() for g in grads.values())
    assert not grads["Dec.2.bias"].any() and not grads["Dec.2.weight"].any()
    from gansuite.common import oracle_layers as L
    _, d = L.bce_probabilities(out["x_reconst"][0], x[0], "sum")
    np.testing.assert_array_equal(d, np.where(sign > 0, 1.0, -1.0) / 1e-12)


def test_unit_range_is_totensors_u_over_255():
    """For every uint8 pixel u: data.py's [-1, 1] value mapped back is fl(u/255) exactly for
    u >= 64, within 2**-55 below, and ToTensor's float32(u)/255 after rounding to float32."""
    u = np.arange(256, dtype=np.uint8).reshape(256, 1, 1, 1)
    y = to_unit_range(Dataset(u, "all pixels").get(np.arange(256))).reshape(256)
    exact = np.arange(256) / 255.0
    assert np.abs(y - exact).max() <= 2.0**-55
    np.testing.assert_array_equal(y[64:], exact[64:])
    np.testing.assert_array_equal(y.astype(np.float32), np.arange(256, dtype=np.float32) / np.float32(255))
    assert y[0] == 0.0 and y[255] == 1.0


def test_batches_are_the_gan_streams_order_flattened_in_unit_range(tiny):
    spec, dataset, x, eps = tiny
    idx = vae_indices(spec, 0, 0, dataset.n)
    np.testing.assert_array_equal(idx, np.random.Generator(np.random.PCG64(
        np.random.SeedSequence([0, STREAM_ORDER, 0]))).permutation(dataset.n)[:16])
    np.testing.assert_array_equal(x, to_unit_range(dataset.get(idx)).reshape(16, 784))
    assert x.min() >= 0.0 and x.max() <= 1.0 and eps.shape == (16, 4)
    # 256 examples, batch 16: 16 iterations per epoch; iteration 16 starts epoch 1's permutation
    assert not np.array_equal(vae_indices(spec, 0, 16, dataset.n), idx)
    short = dataclasses.replace(spec, train=dataclasses.replace(spec.train, batch_size=100))
    assert len(vae_indices(short, 0, 2, dataset.n)) == 56  # the last batch is kept, short
    assert vae_batch(short, dataset, 0, 2)[1].shape == (56, 4)  # eps has the batch's rows


def _stream_ids_in_common() -> dict[int, list[str]]:
    """Every SeedSequence word used as a stream id in common/*.py (STREAM_* constants and literal
    ``SeedSequence([seed, N])``), by file."""
    ids: dict[int, list[str]] = {}
    for path in sorted(Path(vae_module.__file__).parent.glob("*.py")):
        text = path.read_text()
        found = re.findall(r"^STREAM_\w+ = (\d+)", text, re.M) + re.findall(r"SeedSequence\(\[[^,\]]+, (\d+)\]", text)
        for n in found:
            ids.setdefault(int(n), []).append(path.name)
    return ids


def test_eps_stream_id_is_used_nowhere_else_in_common():
    ids = _stream_ids_in_common()
    assert ids[STREAM_VAE_EPS] == ["vae.py"], ids
    assert STREAM_VAE_EPS not in (1, 2, 3, 4, 5, 6, 7, 8)


def test_eps_is_deterministic_standard_normal_and_independent_of_the_other_streams(tiny):
    spec = tiny[0]
    a = vae_eps(spec, 3, 5, 16)
    assert a.dtype == np.float64 and a.shape == (16, 4)
    np.testing.assert_array_equal(a, vae_eps(spec, 3, 5, 16))
    np.testing.assert_array_equal(a[:7], vae_eps(spec, 3, 5, 7))  # a short batch is a prefix
    assert not np.array_equal(a, vae_eps(spec, 3, 6, 16))
    assert not np.array_equal(a, vae_eps(spec, 4, 5, 16))
    for other in range(1, 9):  # the same (seed, iteration) words under every other stream id
        b = np.random.Generator(np.random.PCG64(np.random.SeedSequence([3, other, 5]))).standard_normal((16, 4))
        assert np.abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.6 and not np.isin(a, b).any()
    big = vae_eps(spec, 0, 0, 50000)
    assert abs(big.mean()) < 0.01 and abs(big.std() - 1) < 0.01  # 2e5 draws: sd of the mean 0.002


def test_params_use_the_suites_init_machinery_in_canonical_order():
    spec = vae_preset()
    shapes = vae_param_shapes(spec)
    assert shapes == {"E.0.weight": (400, 784), "E.0.bias": (400,), "mu.0.weight": (20, 400), "mu.0.bias": (20,),
                      "logvar.0.weight": (20, 400), "logvar.0.bias": (20,), "Dec.0.weight": (400, 20),
                      "Dec.0.bias": (400,), "Dec.2.weight": (784, 400), "Dec.2.bias": (784,)}
    assert list(SEED_002_NAMES) == list(shapes)
    assert list(SEED_002_NAMES.values())[::2] == [f"fc{i}.weight" for i in range(1, 6)]
    p = init_vae_params(spec, 7)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([7, STREAM_PARAMS])))
    for name, shape in shapes.items():
        net, i, kind = name.split(".")
        bound = 1 / np.sqrt(shape[1] if kind == "weight" else spec.net(net).layers[int(i)].in_features)
        expect = rng.uniform(-bound, bound, size=shape)  # PyTorch's default: U(+-1/sqrt(fan_in)) both
        np.testing.assert_array_equal(p[name], expect)
    f32 = init_vae_params(spec, 7, "float32")
    assert all(f32[k].dtype == np.float32 and np.array_equal(f32[k], p[k].astype(np.float32)) for k in p)


def test_one_adam_step_against_a_direct_computation(tiny):
    """PyTorch's Adam at step 1 from zero moments: m = 0.1 g, v = 0.001 g^2, m_hat = g,
    v_hat = g^2, p -= lr g / (|g| + eps); at step 2 with the second gradient too. The losses
    reported are those before the step."""
    spec, dataset, x, eps = tiny
    p0 = init_vae_params(spec, 0)
    st = vae_state(spec, p0)
    g1 = vae_backward(p0, spec, x, eps)
    out1 = vae_step(st, x, eps, with_grads=True)
    assert (out1.reconstruction, out1.kl, out1.total) == vae_loss(spec, vae_forward(p0, spec, x, eps))
    lr, b1, b2, e = 1e-3, 0.9, 0.999, 1e-8
    assert st.spec.train.optim == AdamSpec(lr=lr, beta1=b1, beta2=b2, eps=e)
    for k in p0:
        np.testing.assert_array_equal(out1.grads[k], g1[k])
        # |update| <= lr: both sides round it (ulp 2.2e-19 at 1e-3), and where p ~ update the
        # difference cancels, so the bound is relative plus a few ulp of lr.
        np.testing.assert_allclose(st.params[k], p0[k] - lr * g1[k] / (np.abs(g1[k]) + e), rtol=1e-15, atol=1e-18)
    assert st.opt.step == 1
    p1 = {k: v.copy() for k, v in st.params.items()}
    x2, eps2 = vae_batch(spec, dataset, 0, 1)
    g2 = vae_backward(p1, spec, x2, eps2)
    vae_step(st, x2, eps2)
    for k in p0:
        m = b1 * (1 - b1) * g1[k] + (1 - b1) * g2[k]
        v = b2 * (1 - b2) * g1[k] ** 2 + (1 - b2) * g2[k] ** 2
        expect = p1[k] - lr * (m / (1 - b1**2)) / (np.sqrt(v / (1 - b2**2)) + e)
        np.testing.assert_allclose(st.params[k], expect, rtol=1e-13, atol=1e-18)
    assert st.opt.step == 2
    assert not np.shares_memory(st.params["E.0.weight"], p0["E.0.weight"])  # the state copies params


def test_training_lowers_the_loss_on_one_batch(tiny):
    spec, _, x, eps = tiny
    st = vae_state(spec, init_vae_params(spec, 0))
    losses = [vae_step(st, x, eps).total for _ in range(10)]
    assert losses[-1] < losses[0] - 100


# -- validation ------------------------------------------------------------------


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("change,match", [
    (lambda s: dataclasses.replace(s, name=""), r"^name: must not be empty$"),
    (lambda s: dataclasses.replace(s, latent=0), r"^latent: must be a positive integer, got 0$"),
    (lambda s: dataclasses.replace(s, latent=8), r"^decoder\.input_shape: is \(4,\) but latent is 8$"),
    (lambda s: dataclasses.replace(s, decoder=NetSpec((4,), (Dense(4, 32), ReLU(), Dense(32, 784), Tanh()))),
     r"^decoder\.layers: must end in a sigmoid .* ends in tanh$"),
    (lambda s: dataclasses.replace(s, decoder=NetSpec((4,), (Dense(4, 100), Sigmoid()))),
     r"^decoder\.layers: output \(100,\) but the encoder takes \(784,\)$"),
    (lambda s: dataclasses.replace(s, encoder=NetSpec((784,), (Dense(784, 32), BatchNorm(32), ReLU()))),
     r"^encoder\.layers\[1\]: a batch_norm layer is not supported in a VAE; allowed: dense, relu, leaky_relu, "
     r"tanh, sigmoid$"),
    (lambda s: dataclasses.replace(s, encoder=NetSpec((1, 28, 28), (Sigmoid(),))),
     r"^encoder\.input_shape: must be flat"),
    (lambda s: dataclasses.replace(s, data=DataSpec(kind="glyphs", image_size=32, channels=1)),
     r"^data: examples have shape \(1, 32, 32\) \(1024 values\) but the encoder takes 784$"),
    (lambda s: dataclasses.replace(s, data=DataSpec(kind="gaussian")), r"^data\.kind: a VAE reconstructs images"),
    (lambda s: VAELossSpec(reconstruction="mse"), r"^reconstruction: must be one of bce_sum; got 'mse'$"),
    (lambda s: VAELossSpec(kl="mean"), r"^kl: must be one of sum; got 'mean'$"),
    (lambda s: VAETrainSpec(batch_size=0, epochs=1, optim=AdamSpec(1e-3)), r"^batch_size: must be a positive integer"),
    (lambda s: VAETrainSpec(batch_size=8, epochs=1, optim=1e-3), r"^optim: must be an AdamSpec, got float$"),
    (lambda s: VAETrainSpec(batch_size=8, epochs=1, optim=AdamSpec(1e-3), shuffle="yes"),
     r"^shuffle: must be true or false"),
    (lambda s: AdamSpec(lr=-1.0), r"^lr: must be a positive number"),
    (lambda s: NetInit(bias=Init("glorot_uniform")), r"^bias\.scheme: glorot_uniform is a weight init"),
])
def test_spec_errors_are_one_line_naming_the_field(change, match):
    with pytest.raises(SpecError, match=match) as err:
        change(vae_tiny_preset())
    _one_line(err)


def test_presets_are_the_seeds_numbers():
    s = vae_preset()
    assert (s.features, s.hidden, s.latent) == (784, 400, 20)
    assert (s.train.batch_size, s.train.epochs, s.train.optim) == (128, 30, AdamSpec(lr=0.001))
    assert s.train.shuffle and not s.train.drop_last
    assert (s.loss.reconstruction, s.loss.kl) == ("bce_sum", "sum")
    assert s.init.weight.scheme == s.init.bias.scheme == "torch_default"
    assert "seed 002" in s.source and "002_6c513667f1584e7e" in vae_preset.__doc__
    t = vae_tiny_preset()
    assert (t.features, t.hidden, t.latent, t.train.batch_size, t.data.n_examples) == (784, 32, 4, 16, 256)
    assert s.to_dict()["model"] == "vae" and '"latent": 20' in s.to_json()


@pytest.mark.parametrize("call,match", [
    (lambda s, p, x, e: vae_forward(p, s, x[:, :100], e), r"^x: must be \(batch, 784\)"),
    (lambda s, p, x, e: vae_forward(p, s, x, e[:3]), r"^eps: must have shape \(16, 4\)"),
    (lambda s, p, x, e: vae_state(s, {k: v for k, v in p.items() if k != "mu.0.bias"}), r"^params: missing mu\.0\.bias"),
    (lambda s, p, x, e: vae_state(s, {**p, "Dec.0.bias": np.zeros(3)}), r"^params\.Dec\.0\.bias: must have shape"),
    (lambda s, p, x, e: vae_eps(s, 0, 0, 0), r"^rows: must be a positive integer"),
    (lambda s, p, x, e: s.net("G"), r"^net: unknown VAE net 'G'; allowed: E, mu, logvar, Dec$"),
])
def test_bad_inputs_get_one_line_errors(tiny, call, match):
    spec, _, x, eps = tiny
    with pytest.raises(GanSuiteError, match=match) as err:
        call(spec, init_vae_params(spec, 0), x, eps)
    _one_line(err)
