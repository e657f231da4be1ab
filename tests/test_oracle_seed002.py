"""Seed 002's layers and losses in the oracle (flatten/reshape, Sigmoid, Dropout with a given mask,
the label embedding + concatenation, PyTorch's clamped BCELoss) against finite differences and
their definitions; the MLP GAN and conditional GAN iterations against finite differences of
their own losses; the draws (labels, fresh noise, dropout masks) and their validation."""

from __future__ import annotations

import numpy as np
import pytest

from gansuite.common import oracle_layers as L
from gansuite.common.draws import check_labels, iteration_draws
from gansuite.common.errors import GanSuiteError, SpecError
from gansuite.common.oracle import OracleBackend, net_backward, net_forward
from gansuite.common.overrides import apply_overrides
from gansuite.common.params import init_params, trainable_names
from gansuite.common.presets import preset
from gansuite.common.protocol import BuildOptions
from gansuite.common.spec import Dense, EmbedConcat, Flatten, LeakyReLU, NetSpec, Reshape, Sigmoid, Dropout
from gansuite.common.streams import Streams

from test_oracle import _fd_check

RNG = np.random.default_rng(2002)


def _net_fd(net: NetSpec, x: np.ndarray, params: dict, labels=None, masks=None) -> None:
    """f = sum(w * net(x)); the analytic input and parameter gradients vs central differences."""
    out, run = net_forward(net, params, "N", x, "batch", labels, masks)
    w = RNG.normal(0, 1, out.shape)

    def f():
        return float(np.sum(w * net_forward(net, params, "N", x, "batch", labels, masks)[0]))

    dx, grads = net_backward(net, params, "N", run, w)
    _fd_check(f, x, dx)
    for name, g in grads.items():
        _fd_check(f, params[name], g)
    return out


def test_flatten_and_reshape_are_c_order_views_and_their_backward_is_the_inverse():
    net = NetSpec((2, 3, 4), (Flatten(), Dense(24, 6), Reshape((1, 2, 3))))
    x = RNG.normal(0, 1, (5, 2, 3, 4))
    params = {"N.1.weight": RNG.normal(0, 0.3, (6, 24)), "N.1.bias": RNG.normal(0, 0.3, (6,))}
    out = _net_fd(net, x, params)
    expect = (x.reshape(5, 24) @ params["N.1.weight"].T + params["N.1.bias"]).reshape(5, 1, 2, 3)
    np.testing.assert_array_equal(out, expect)


def test_sigmoid_backward_matches_finite_differences():
    _net_fd(NetSpec((4,), (Sigmoid(),)), RNG.normal(0, 2, (3, 4)), {})


def test_dropout_multiplies_by_the_given_mask_and_is_the_identity_without_one():
    net = NetSpec((6,), (Dropout(0.4),))
    x = RNG.normal(0, 1, (4, 6))
    mask = (RNG.random((4, 6)) >= 0.4) / 0.6
    out = _net_fd(net, x, {}, masks={0: mask})
    np.testing.assert_array_equal(out, x * mask)
    np.testing.assert_array_equal(net_forward(net, {}, "N", x)[0], x)


def test_embed_concat_puts_features_first_and_sums_repeated_labels():
    net = NetSpec((3,), (EmbedConcat(4, 2), Dense(5, 2), LeakyReLU(0.2)))
    x = RNG.normal(0, 1, (6, 3))
    labels = np.array([0, 2, 2, 3, 0, 2])
    params = {"N.0.weight": RNG.normal(0, 1, (4, 2)), "N.1.weight": RNG.normal(0, 0.5, (2, 5)),
              "N.1.bias": RNG.normal(0, 0.5, (2,))}
    _net_fd(net, x, params, labels=labels)
    cat = net_forward(NetSpec((3,), (EmbedConcat(4, 2),)), {"N.0.weight": params["N.0.weight"]}, "N", x, "batch",
                      labels)[0]
    np.testing.assert_array_equal(cat, np.concatenate([x, params["N.0.weight"][labels]], axis=1))
    # class 1 appears in no example: its row gets no gradient
    _, run = net_forward(net, params, "N", x, "batch", labels)
    _, grads = net_backward(net, params, "N", run, np.ones((6, 2)))
    assert not grads["N.0.weight"][1].any()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("target", [0.0, 1.0, "pixels"])
def test_bce_on_probabilities_backward_matches_finite_differences(reduction, target):
    p = RNG.uniform(0.05, 0.95, (7,))
    t = RNG.uniform(0, 1, (7,)) if target == "pixels" else target
    _, grad = L.bce_probabilities(p, t, reduction)
    _fd_check(lambda: L.bce_probabilities(p, t, reduction)[0], p, grad)


def test_bce_on_probabilities_clamps_each_log_at_minus_100_as_pytorch():
    """BCELoss(p=0, t=1) is 100, not inf; PyTorch's backward then divides by max(p(1-p), 1e-12)."""
    loss, grad = L.bce_probabilities(np.array([0.0, 1.0, 0.5]), 1.0, "sum")
    assert loss == pytest.approx(100.0 + 0.0 + np.log(2.0))
    assert grad[0] == -1.0 / 1e-12 and grad[1] == 0.0 and grad[2] == pytest.approx(-2.0)


@pytest.mark.parametrize("model", ["mlp-gan-tiny", "cgan-tiny"])
def test_seed002_gan_gradients_match_finite_differences(model):
    """dloss_D/dD and dloss_G/dG of the oracle's iteration (fresh G noise, labels, the same
    dropout masks in every evaluation) vs finite differences of the same losses."""
    spec = preset(model)
    params = init_params(spec, 0)
    b = Streams(spec, 0).batch(0).cut(4, 4)
    oracle = OracleBackend()
    st = oracle.build(spec, params, None, BuildOptions())
    d = oracle.d_step(st, b.real, b.z, b.draws)

    def loss_d():
        return oracle.d_step(oracle.build(spec, params, None, BuildOptions()), b.real, b.z, b.draws).loss_D

    for name in trainable_names(spec, "D"):
        _fd_check(loss_d, params[name], d.grads[name], n_probe=4)

    g = oracle.g_step(st, d, b.draws)

    def loss_g():
        s = oracle.build(spec, params, None, BuildOptions())
        return oracle.g_step(s, oracle.d_step(s, b.real, b.z, b.draws), b.draws).loss_G

    for name in trainable_names(spec, "G"):
        _fd_check(loss_g, params[name], g.grads[name], n_probe=4)


def test_fresh_g_noise_runs_g_on_the_draws_z_gen():
    """seed 002's G step: D(G(z_gen)), not D(fake of the D step)."""
    spec = preset("mlp-gan-tiny")
    params = init_params(spec, 0)
    b = Streams(spec, 0).batch(0)
    oracle = OracleBackend()
    st = oracle.build(spec, params, None, BuildOptions())
    d = oracle.d_step(st, b.real, b.z, b.draws)
    g = oracle.g_step(st, d, b.draws)
    fake_gen = oracle.generate(oracle.build(spec, params, None, BuildOptions()), b.draws["z_gen"])
    out = oracle.discriminate(st, fake_gen)  # D as it is in st: unchanged, no Adam step was taken
    assert g.loss_G == pytest.approx(float(np.mean(-np.log(out))), rel=1e-12)


def test_draws_are_reproducible_per_iteration_and_masks_keep_one_minus_p():
    spec = preset("cgan")
    s = Streams(spec, 3)
    a, b = s.batch(5).draws, Streams(spec, 3).batch(5).draws
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["mask/real/D.4"], s.batch(6).draws["mask/real/D.4"])
    assert not np.array_equal(a["mask/real/D.4"], a["mask/fake/D.4"])
    mask = a["mask/real/D.4"]
    assert set(np.unique(mask)) == {0.0, 1.0 / 0.6}
    assert abs((mask > 0).mean() - 0.6) < 0.01  # 64 x 1024 draws: binomial sd 0.002
    assert a["fake_labels"].min() >= 0 and a["fake_labels"].max() <= 9
    np.testing.assert_array_equal(a["labels"], s.dataset.labels[s.indices(5)])


def test_unconditional_gan_without_dropout_draws_nothing():
    assert Streams(preset("dcgan-tiny"), 0).batch(0).draws == {}


def test_conditional_gan_needs_labelled_data():
    spec = apply_overrides(preset("cgan-tiny"), ["data.kind=shapes"])
    with pytest.raises(GanSuiteError, match="data: model 'cgan-tiny' is conditional"):
        Streams(spec, 0).batch(0)


@pytest.mark.parametrize("labels,match", [(None, "is conditional"), (np.array([0, 10]), r"integers in 0\.\.9"),
                                          (np.array([0.0, 1.0]), r"integers in 0\.\.9"), (np.array([1]), "2 integers")])
def test_bad_labels_get_one_line_errors(labels, match):
    with pytest.raises(GanSuiteError, match=match) as err:
        check_labels(labels, preset("cgan-tiny"), 2)
    assert "\n" not in str(err.value) and str(err.value).startswith("labels:")


def test_labels_for_an_unconditional_model_are_refused():
    with pytest.raises(GanSuiteError, match="not conditional"):
        OracleBackend().generate(OracleBackend().build(preset("mlp-gan-tiny"), init_params(preset("mlp-gan-tiny"), 0),
                                                       None, BuildOptions()), np.zeros((2, 16)), "batch", np.array([1, 2]))


def test_missing_draws_are_named():
    spec = preset("cgan-tiny")
    b = Streams(spec, 0).batch(0)
    oracle = OracleBackend()
    with pytest.raises(GanSuiteError, match="draws: model 'cgan-tiny' needs fake_labels"):
        oracle.train_step(oracle.build(spec, init_params(spec, 0), None, BuildOptions()), b.real, b.z)


@pytest.mark.parametrize("override,match", [
    (["loss.on=logits"], "loss.on: is 'logits' but the discriminator ends in a sigmoid"),
    (["train.g_noise=again"], "g_noise: must be one of reuse, fresh"),
])
def test_spec_validation_of_seed002_options(override, match):
    with pytest.raises(SpecError, match=match):
        apply_overrides(preset("mlp-gan-tiny"), override)


def test_layer_shape_rules_give_one_line_errors():
    with pytest.raises(SpecError, match="embed_concat"):
        NetSpec((1, 4, 4), (EmbedConcat(10, 2),))
    with pytest.raises(SpecError, match=r"shape: \(1, 5, 5\) needs a flat input of 25 features"):
        NetSpec((24,), (Reshape((1, 5, 5)),))
    with pytest.raises(SpecError, match=r"p: must be in \[0, 1\)"):
        Dropout(1.0)


def test_iteration_draws_without_labels_for_a_conditional_model_fail():
    with pytest.raises(GanSuiteError, match="has no labels"):
        iteration_draws(preset("cgan-tiny"), 0, 0, None, 4)
