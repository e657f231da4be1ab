"""JAX backend: the shared contract (tests/backend_contract.py) plus JAX/Flax/Optax specifics.

Each JAX-specific test measures one framework difference: the framework's default gives a
different number from the spec's (asserted to be far off), and the setting the backend uses gives
the oracle's number (asserted within the float64 tolerance). Small arrays, eager mode: seconds.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from backend_contract import BackendContract
from gansuite.common import oracle_layers as L
from gansuite.common.oracle import adam_update
from gansuite.common.params import init_params, param_shapes
from gansuite.common.oracle import OracleBackend
from gansuite.common.parity import check_one_step, failures, parity_inputs, rel_err
from gansuite.common.presets import preset
from gansuite.common.protocol import BuildOptions
from gansuite.common.spec import AdamSpec, BatchNorm, Conv2d, ConvTranspose2d, LossSpec
from gansuite.common.streams import Streams
from gansuite.common.tolerances import tolerance

FP64 = 1e-12  # common/tolerances.py, float64
WRONG = 1e-2  # "a different number": far above any roundoff


def _frameworks() -> tuple[Any, Any, Any, Any]:
    """jax, jax.numpy, flax.linen, optax: imported inside the tests (see the class docstring)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import optax

    return jax, jnp, nn, optax


def _nhwc(x: np.ndarray) -> Any:
    _, jnp, _, _ = _frameworks()
    return jnp.asarray(x.transpose(0, 2, 3, 1))


def _nchw(y: Any) -> np.ndarray:
    return np.asarray(y).transpose(0, 3, 1, 2)


class TestJaxBackend(BackendContract):
    """The JAX-specific tests are methods of this class too, so tests/conftest.py skips them (no
    jax here, GANSUITE_BACKENDS unset) or fails them (jax env) exactly like the contract's. They
    import JAX after the ``backend`` fixture has imported the backend (jax_enable_x64 on)."""

    backend_name = "jax"

    # -- layouts ------------------------------------------------------------------------------

    @pytest.mark.parametrize("k,s,p,size", [(4, 1, 0, 1), (4, 2, 1, 5)])  # G's first and inner layers
    def test_conv_transpose_pytorch_weight_needs_flip_and_padding(self, backend, k, s, p, size):
        """Flax ConvTranspose with its defaults and PyTorch's weight copied in does not compute
        PyTorch's ConvTranspose2d; transpose_kernel=True + pads k-1-p does (the backend's choice)."""
        jax, jnp, nn, _ = _frameworks()
        from gansuite.backends.jax.layout import param_to_framework
        from gansuite.backends.jax.models import build_layer

        layer = ConvTranspose2d(3, 2, k, s, p)
        rng = np.random.default_rng(0)
        w = rng.standard_normal((3, 2, k, k))  # PyTorch (in, out, kh, kw)
        x = rng.standard_normal((2, 3, size, size))
        ref, _ = L.conv_transpose2d_forward(layer, {"weight": w}, x)

        def flax(kernel: np.ndarray, **kw: Any) -> np.ndarray:
            m = nn.ConvTranspose(2, (k, k), strides=(s, s), use_bias=False, param_dtype=jnp.float64, **kw)
            return _nchw(m.apply({"params": {"kernel": jnp.asarray(kernel)}}, _nhwc(x)))

        verbatim = w.transpose(2, 3, 0, 1)  # the (kh, kw, in, out) Flax's default asks for, no flip
        default = flax(verbatim)  # padding='SAME', transpose_kernel=False
        if s == 1:  # k4 s1 p0: 1x1 -> 4x4 in PyTorch; 'SAME' keeps 1x1
            assert default.shape != ref.shape
        else:  # k4 s2 p1: 'SAME' gives the right shape (in * s) but not PyTorch's numbers
            assert default.shape == ref.shape and rel_err(default, ref)[1] > WRONG
        # PyTorch's p passed as Flax pads: Flax pads the dilated input, so even the shape is wrong.
        assert flax(verbatim, padding=((p, p), (p, p))).shape != ref.shape
        pads = ((k - 1 - p, k - 1 - p),) * 2
        no_flip = flax(verbatim, padding=pads)  # right pads, kernel not flipped: wrong numbers
        assert no_flip.shape == ref.shape and rel_err(no_flip, ref)[1] > WRONG
        # The two correct conversions: flip by hand, or the backend's transpose_kernel=True.
        assert rel_err(flax(np.flip(w, (2, 3)).transpose(2, 3, 0, 1), padding=pads), ref)[1] <= FP64
        ours = build_layer(layer, (3, size, size), "0", jnp.float64, "parity")
        kernel = param_to_framework("G.0.weight", w, layer, np.float64, jax.devices("cpu")[0])
        assert rel_err(_nchw(ours.apply({"params": {"kernel": kernel}}, _nhwc(x))), ref)[1] <= FP64

    def test_conv_default_same_padding(self, backend):
        """Flax Conv defaults to padding='SAME'. For D's k4 s2 p1 on an even input that happens to
        equal PyTorch's p=1; on an odd input, and for D's last k4 s1 p0 layer, it does not."""
        _, jnp, nn, _ = _frameworks()
        rng = np.random.default_rng(1)
        w = rng.standard_normal((2, 3, 4, 4))  # OIHW
        kernel = jnp.asarray(w.transpose(2, 3, 1, 0))  # HWIO

        def same(x: np.ndarray, stride: int) -> np.ndarray:
            m = nn.Conv(2, (4, 4), strides=(stride, stride), use_bias=False, param_dtype=jnp.float64)
            return _nchw(m.apply({"params": {"kernel": kernel}}, _nhwc(x)))

        even = rng.standard_normal((2, 3, 8, 8))
        ref, _ = L.conv2d_forward(Conv2d(3, 2, 4, 2, 1), {"weight": w}, even)
        assert rel_err(same(even, 2), ref)[1] <= FP64  # coincidence: 'SAME' pads (1, 1) here
        odd = rng.standard_normal((2, 3, 7, 7))
        ref, _ = L.conv2d_forward(Conv2d(3, 2, 4, 2, 1), {"weight": w}, odd)
        assert same(odd, 2).shape != ref.shape  # 'SAME' pads (1, 2): 4x4 vs PyTorch's 3x3
        last = rng.standard_normal((2, 3, 4, 4))
        ref, _ = L.conv2d_forward(Conv2d(3, 2, 4, 1, 0), {"weight": w}, last)
        assert ref.shape[2:] == (1, 1) and same(last, 1).shape[2:] == (4, 4)

    def test_variables_have_exactly_the_tree_flax_init_creates(self, backend):
        """layout.py + models.py: converted canonical params form the tree (names, shapes) that
        Flax's own init creates -- nothing missing, nothing extra -- and convert back bit-exactly."""
        jax, jnp, _, _ = _frameworks()
        from gansuite.backends.jax.models import build_net
        from gansuite.common.layout import channels_last_shape

        # dcgan-mxnet-tiny: fix_gamma, no `scale`; cgan-tiny: nn.Embed's `embedding` tables
        for model in ("gaussian", "dcgan-tiny", "dcgan-mxnet-tiny", "mlp-gan-tiny", "cgan-tiny"):
            spec = preset(model)
            params = init_params(spec, 0)
            st = backend.build(spec, params, None, BuildOptions(dtype="float64"))
            labels = jnp.zeros(2, jnp.int32) if spec.conditional else None
            for net, ns in (("G", spec.generator), ("D", spec.discriminator)):
                module = build_net(ns, net, jnp.float64, "fast")
                x = jnp.zeros((2, *channels_last_shape(ns.input_shape)), jnp.float64)
                abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), x, use_running_average=False,
                                                              labels=labels))
                want = {c: v for c, v in abstract.items() if v}
                have = {c: v for c, v in st.train[net].items() if v}
                assert jax.tree.structure(have) == jax.tree.structure(want), net
                assert jax.tree.map(lambda a: a.shape, have) == jax.tree.map(lambda a: a.shape, want), net
            back, _ = backend.export_params(st)
            assert list(back) == list(param_shapes(spec))
            for k in params:
                np.testing.assert_array_equal(back[k], params[k], err_msg=k)

    # -- batch norm -----------------------------------------------------------------------------

    def test_batchnorm_momentum_and_unbiased_running_var(self, backend):
        """Flax's BatchNorm normalises exactly like PyTorch, but its default momentum (0.99 on the
        OLD value) and its BIASED running variance give running statistics other than the spec's."""
        _, jnp, nn, _ = _frameworks()
        from gansuite.backends.jax.models import build_layer

        layer = BatchNorm(3, eps=1e-5, momentum=0.1)
        rng = np.random.default_rng(2)
        x = 2.0 + 3.0 * rng.standard_normal((4, 3))  # n = 4: unbiased / biased = 4/3
        p = {"weight": 1 + 0.1 * rng.standard_normal(3), "bias": 0.1 * rng.standard_normal(3),
             "running_mean": rng.standard_normal(3), "running_var": 1 + rng.random(3)}
        y_ref, cache = L.batch_norm_forward(layer, p, x)
        run_ref = L.batch_norm_running_update(layer, p, cache)
        variables = {"params": {"scale": jnp.asarray(p["weight"]), "bias": jnp.asarray(p["bias"])},
                     "batch_stats": {"mean": jnp.asarray(p["running_mean"]), "var": jnp.asarray(p["running_var"])}}

        def run(module: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
            y, upd = module.apply(variables, jnp.asarray(x), use_running_average=False, mutable=["batch_stats"])
            return np.asarray(y), {k: np.asarray(v) for k, v in upd["batch_stats"].items()}

        y, default = run(nn.BatchNorm(epsilon=1e-5, param_dtype=jnp.float64, force_float32_reductions=False))
        assert rel_err(y, y_ref)[1] <= FP64  # the normalised output agrees...
        assert rel_err(default["mean"], run_ref["running_mean"])[1] > WRONG  # ...momentum 0.99 does not
        _, converted = run(nn.BatchNorm(epsilon=1e-5, momentum=0.9, use_fast_variance=False,
                                        param_dtype=jnp.float64, force_float32_reductions=False))
        assert rel_err(converted["mean"], run_ref["running_mean"])[1] <= FP64  # 1 - momentum: mean right
        assert rel_err(converted["var"], run_ref["running_var"])[1] > WRONG  # var: biased, short by 1/(n-1)
        y, ours = run(build_layer(layer, (3,), "0", jnp.float64, "fast"))  # models.TorchBatchNorm
        assert rel_err(y, y_ref)[1] <= FP64
        assert rel_err(ours["mean"], run_ref["running_mean"])[1] <= FP64
        assert rel_err(ours["var"], run_ref["running_var"])[1] <= FP64

    def test_batchnorm_fix_gamma_and_biased_running_var(self, backend):
        """Seed 004's BatchNorm (MXNet fix_gamma=True, biased running variance, eps 1e-5 + 1e-12):
        use_scale=False creates no `scale` and gives the oracle's output with gamma = 1; the running
        variance is the biased one, which the spec's default (unbiased) misses by n / (n - 1)."""
        jax, jnp, _, _ = _frameworks()
        from gansuite.backends.jax.models import build_layer

        layer = BatchNorm(3, eps=1e-5 + 1e-12, momentum=0.1, fix_gamma=True, running_var="biased")
        rng = np.random.default_rng(6)
        x = 2.0 + 3.0 * rng.standard_normal((4, 3))  # n = 4
        p = {"bias": 0.1 * rng.standard_normal(3), "running_mean": rng.standard_normal(3),
             "running_var": 1 + rng.random(3)}
        y_ref, cache = L.batch_norm_forward(layer, p, x)
        run_ref = L.batch_norm_running_update(layer, p, cache)
        variables = {"params": {"bias": jnp.asarray(p["bias"])},
                     "batch_stats": {"mean": jnp.asarray(p["running_mean"]), "var": jnp.asarray(p["running_var"])}}
        ours = build_layer(layer, (3,), "0", jnp.float64, "parity")
        created = jax.eval_shape(lambda: ours.init(jax.random.key(0), jnp.asarray(x), use_running_average=False))
        assert set(created["params"]) == {"bias"}  # no scale: nothing to train, no canonical weight
        y, upd = ours.apply(variables, jnp.asarray(x), use_running_average=False, mutable=["batch_stats"])
        assert rel_err(np.asarray(y), y_ref)[1] <= FP64
        assert rel_err(np.asarray(upd["batch_stats"]["mean"]), run_ref["running_mean"])[1] <= FP64
        assert rel_err(np.asarray(upd["batch_stats"]["var"]), run_ref["running_var"])[1] <= FP64
        unbiased = build_layer(dataclasses.replace(layer, running_var="unbiased"), (3,), "0", jnp.float64, "parity")
        _, upd = unbiased.apply(variables, jnp.asarray(x), use_running_average=False, mutable=["batch_stats"])
        assert rel_err(np.asarray(upd["batch_stats"]["var"]), run_ref["running_var"])[1] > WRONG

    def test_batchnorm_fast_variance_cancels_in_float32(self, backend):
        """Flax's default use_fast_variance=True computes E[x^2] - E[x]^2: in float32, for activations
        whose mean is large against their spread, that cancels; the two-pass form does not."""
        _, jnp, nn, _ = _frameworks()
        rng = np.random.default_rng(3)
        x = (300.0 + rng.standard_normal((64, 4))).astype(np.float32)
        ref = x.astype(np.float64).var(axis=0)

        def batch_var(fast: bool) -> np.ndarray:
            bn = nn.BatchNorm(momentum=0.0, use_fast_variance=fast, param_dtype=jnp.float32)
            v = {"params": {"scale": jnp.ones(4, jnp.float32), "bias": jnp.zeros(4, jnp.float32)},
                 "batch_stats": {"mean": jnp.zeros(4, jnp.float32), "var": jnp.ones(4, jnp.float32)}}
            _, upd = bn.apply(v, jnp.asarray(x), use_running_average=False, mutable=["batch_stats"])
            return np.asarray(upd["batch_stats"]["var"])  # momentum 0: the batch variance itself

        assert rel_err(batch_var(True), ref)[1] > 1e-3
        assert rel_err(batch_var(False), ref)[1] <= 1e-6

    # -- activations, loss, optimizer -------------------------------------------------------------

    def test_leaky_relu_default_slope(self, backend):
        jax, jnp, _, _ = _frameworks()
        x = jnp.asarray([-2.0, -0.5, 1.5])
        expect = np.asarray([-0.4, -0.1, 1.5])  # the spec's slope, 0.2
        assert rel_err(np.asarray(jax.nn.leaky_relu(x)), expect)[1] > WRONG  # default 0.01
        assert rel_err(np.asarray(jax.nn.leaky_relu(x, negative_slope=0.2)), expect)[1] <= FP64

    @pytest.mark.parametrize("reduction", ["sum", "mean"])
    def test_bce_reduction_and_large_logits(self, backend, reduction):
        """optax's BCE is per element (the reduction is the backend's); stable for |logit| >> 16."""
        jax, jnp, _, optax = _frameworks()
        from gansuite.backends.jax.train import bce

        logits = np.asarray([-40.0, -3.0, 0.5, 2.0, 40.0])
        for label in (0.0, 1.0):
            ref, dref = L.bce_with_logits(logits, label, reduction)
            value, grad = jax.value_and_grad(lambda o: bce(o, label, LossSpec(reduction=reduction)))(jnp.asarray(logits))
            assert abs(float(value) - ref) <= FP64 * abs(ref) and rel_err(np.asarray(grad), dref)[1] <= FP64
        per = np.asarray(optax.sigmoid_binary_cross_entropy(jnp.asarray(logits), jnp.ones(5)))
        assert per.shape == (5,) and np.isfinite(per).all() and abs(per[0] - 40.0) <= FP64 * 40

    def test_bce_on_probabilities_is_pytorchs(self, backend):
        """loss.on="probabilities" (seed 002's BCELoss): the value and PyTorch's gradient formula, the
        oracle's to roundoff, including p = 0 and 1 exactly (log clamped at -100). Autodiff of the
        clamped logs -- what the formula would give without the custom VJP -- is NaN there."""
        jax, jnp, _, _ = _frameworks()
        from gansuite.backends.jax.train import bce

        p = np.asarray([0.0, 1e-30, 0.2, 0.5, 0.9, 1.0 - 1e-12, 1.0])
        for reduction in ("mean", "sum"):
            loss = LossSpec(reduction=reduction, on="probabilities")
            for label in (0.0, 1.0):
                ref, dref = L.bce_probabilities(p, label, reduction)
                value, grad = jax.value_and_grad(lambda o: bce(o, label, loss))(jnp.asarray(p))
                assert abs(float(value) - ref) <= FP64 * abs(ref) and rel_err(np.asarray(grad), dref)[1] <= FP64

        def autodiff(o: Any) -> Any:
            return -jnp.maximum(jnp.log(o), -100.0).sum()  # label 1, no custom VJP
        assert np.isnan(np.asarray(jax.grad(autodiff)(jnp.asarray(p)))[0])

    def test_flatten_and_reshape_are_c_major_over_nchw(self, backend):
        """Flax activations are NHWC: a plain reshape flattens H-major, not PyTorch's x.view(B, -1) of
        NCHW (equal for one channel only, as in seed 002's 1x28x28). models' Flatten/Reshape transpose."""
        _, jnp, _, _ = _frameworks()
        from gansuite.backends.jax.models import build_layer
        from gansuite.common.spec import Flatten, Reshape

        x = np.random.default_rng(8).standard_normal((2, 3, 4, 5))  # NCHW, 3 channels
        flat = build_layer(Flatten(), (3, 4, 5), "0", jnp.float64, "parity")
        assert rel_err(np.asarray(_nhwc(x).reshape(2, -1)), x.reshape(2, -1))[1] > WRONG  # plain reshape
        np.testing.assert_array_equal(np.asarray(flat(_nhwc(x))), x.reshape(2, -1))
        back = build_layer(Reshape((3, 4, 5)), (60,), "1", jnp.float64, "parity")
        np.testing.assert_array_equal(_nchw(back(jnp.asarray(x.reshape(2, -1)))), x)

    def test_train_epoch_draws_on_the_device_and_refuses_what_it_cannot_feed(self, backend):
        """mlp-gan-tiny (the G step's fresh z) in fast mode: the scan draws z and z_gen from the key
        as train_step does. A conditional GAN (real labels come with the data) and a parity run of a
        model with draws are refused in one line."""
        from gansuite.common.errors import GanSuiteError

        spec = preset("mlp-gan-tiny")
        p = init_params(spec, 0)
        streams = Streams(spec, 0)
        reals = np.stack([streams.real(i) for i in range(3)])
        opts = BuildOptions(dtype="float64", mode="fast", seed=5)
        stepped = backend.build(spec, p, None, opts)
        steps = [backend.train_step(stepped, r, None).loss_D for r in reals]
        scanned = backend.build(spec, p, None, opts)
        np.testing.assert_allclose(backend.train_epoch(scanned, reals)["loss_D"], steps, rtol=FP64, atol=0)
        with pytest.raises(GanSuiteError, match="parity mode"):
            backend.train_epoch(backend.build(spec, p, None, BuildOptions(dtype="float64")), reals)
        cspec = preset("cgan-tiny")
        creals = np.stack([Streams(cspec, 0).real(0)])
        with pytest.raises(GanSuiteError, match="labels"):
            backend.train_epoch(backend.build(cspec, init_params(cspec, 0), None, opts), creals)

    def test_optax_adam_is_pytorchs_and_its_neighbours_are_not(self, backend):
        """optax.adam(eps, eps_root=0) is the spec's Adam (eps after the bias correction) to roundoff
        over several steps with gradients near eps; adamw (default weight decay 1e-4) and eps moved
        inside the root (eps_root) are not."""
        _, jnp, _, optax = _frameworks()
        from gansuite.backends.jax.train import make_adam

        cfg = AdamSpec(lr=0.05, beta1=0.5, beta2=0.999, eps=1e-8)
        rng = np.random.default_rng(4)
        p0 = rng.standard_normal(6)
        grads = [1e-8 * rng.standard_normal(6) for _ in range(3)]  # |g| ~ eps: where eps placement matters

        def run(tx: Any) -> np.ndarray:
            p, state = jnp.asarray(p0), tx.init(jnp.asarray(p0))
            for g in grads:
                upd, state = tx.update(jnp.asarray(g), state, p)
                p = optax.apply_updates(p, upd)
            return np.asarray(p)

        ref, m, v = p0, np.zeros(6), np.zeros(6)
        for t, g in enumerate(grads, 1):
            ref, m, v = adam_update(ref, g, m, v, t, cfg)
        assert rel_err(run(make_adam(cfg, jnp.asarray(p0), "parity")), ref)[1] <= FP64
        assert rel_err(run(optax.adamw(cfg.lr, cfg.beta1, cfg.beta2, cfg.eps)), ref)[1] > 1e-6
        assert rel_err(run(optax.adam(cfg.lr, cfg.beta1, cfg.beta2, eps=0.0, eps_root=cfg.eps)), ref)[1] > 1e-3

    def test_eps_hat_adam_matches_oracle_and_optax_adam_does_not(self, backend):
        """AdamSpec.form="eps_hat" (Keras, MXNet; seeds 001 MXNet/TF tabs, 004): make_adam's own
        transformation is the oracle's update to roundoff, with gradients near eps (where the eps
        placement matters); optax.adam (PyTorch's form) is not. Its state has optax.adam's layout
        (ScaleByAdamState count/mu/nu, EmptyState), which backend.write_adam / read_adam rely on."""
        jax, jnp, _, optax = _frameworks()
        from gansuite.backends.jax.train import make_adam

        cfg = AdamSpec(lr=0.05, beta1=0.9, beta2=0.999, eps=1e-8, form="eps_hat")
        rng = np.random.default_rng(7)
        p0 = rng.standard_normal(6)
        grads = [1e-8 * rng.standard_normal(6) for _ in range(3)]

        def run(tx: Any) -> np.ndarray:
            p, state = jnp.asarray(p0), tx.init(jnp.asarray(p0))
            for g in grads:
                upd, state = jax.jit(tx.update)(jnp.asarray(g), state, p)
                p = optax.apply_updates(p, upd)
            return np.asarray(p)

        ref, m, v = p0, np.zeros(6), np.zeros(6)
        for t, g in enumerate(grads, 1):
            ref, m, v = adam_update(ref, g, m, v, t, cfg)
        ours = make_adam(cfg, jnp.asarray(p0), "parity")
        assert rel_err(run(ours), ref)[1] <= FP64
        assert rel_err(run(optax.adam(cfg.lr, cfg.beta1, cfg.beta2, eps=cfg.eps)), ref)[1] > 1e-6
        theirs = optax.adam(cfg.lr).init(jnp.asarray(p0))
        mine = ours.init(jnp.asarray(p0))
        assert jax.tree.structure(mine) == jax.tree.structure(theirs)
        assert mine[0].count.dtype == theirs[0].count.dtype

    def test_spec_variants_in_combination_match_oracle(self, backend):
        """The options no preset combines: fake-first D passes with ONE joint backward, the
        per-example reduction (1/B on the gradients) and eps-hat Adam on the tutorial's nets."""
        base = preset("dcgan-tiny")
        spec = dataclasses.replace(
            base, loss=dataclasses.replace(base.loss, reduction="per_example"),
            train=dataclasses.replace(base.train, d_order="fake_first", d_backward="joint",
                                      optim_D=dataclasses.replace(base.train.optim_D, form="eps_hat")))
        msg = failures(check_one_step(backend, spec, "float64", batch_size=4))
        assert not msg, "\n" + msg

    # -- fast mode: transposed convolutions as sub-pixel convolutions ------------------------------

    @pytest.mark.parametrize("dtype", ["float64", "float32"])
    @pytest.mark.parametrize("k,s,p,bias", [(4, 2, 1, False), (4, 2, 1, True), (8, 4, 2, False)])
    def test_subpixel_transposed_conv_equals_lhs_dilated_and_oracle(self, backend, dtype, k, s, p, bias):
        """Fast mode builds ConvTranspose2d(k = 2s, p = s/2) as the sub-pixel form (models.
        _SubPixelConvTranspose; parity keeps nn.ConvTranspose). Same variables, same maths: its forward
        and its autodiff gradients w.r.t. the input and the kernel (and bias) equal the lhs-dilated
        nn.ConvTranspose's (what parity mode runs) and the float64 oracle layer's, to the dtype's
        forward / gradient tolerance. A non-square input catches an H/W mix-up."""
        jax, jnp, nn, _ = _frameworks()
        from gansuite.backends.jax.layout import param_to_framework
        from gansuite.backends.jax.models import _SubPixelConvTranspose, build_layer

        layer = ConvTranspose2d(6, 5, k, s, p, bias)
        dt = {"float64": jnp.float64, "float32": jnp.float32}[dtype]
        rng = np.random.default_rng(11)
        x = rng.standard_normal((3, 6, 5, 4))  # NCHW, H != W
        w = rng.standard_normal((6, 5, k, k))  # PyTorch (in, out, kh, kw)
        canon = {"weight": w, **({"bias": rng.standard_normal(5)} if bias else {})}
        ref, cache = L.conv_transpose2d_forward(layer, canon, x)
        dy = rng.standard_normal(ref.shape)
        ref_dx, ref_grads = L.conv_transpose2d_backward(layer, canon, cache, dy)

        fast = build_layer(layer, (6, 5, 4), "0", dt, "fast")
        parity = build_layer(layer, (6, 5, 4), "0", dt, "parity")
        assert type(fast) is _SubPixelConvTranspose and type(parity) is nn.ConvTranspose
        cpu = jax.devices("cpu")[0]
        params = {("kernel" if n == "weight" else n): param_to_framework(f"G.0.{n}", v, layer, np.dtype(dtype), cpu)
                  for n, v in canon.items()}
        xj, dyj = jnp.asarray(_nhwc(x), dt), jnp.asarray(_nhwc(dy), dt)

        def run(module: Any) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
            y, vjp = jax.vjp(lambda pr, xx: module.apply({"params": pr}, xx), params, xj)
            d_params, dx = vjp(dyj)
            return _nchw(y), _nchw(dx), {n: np.asarray(g) for n, g in d_params.items()}

        y_fast, dx_fast, g_fast = run(fast)
        y_old, dx_old, g_old = run(parity)
        fwd, grad = tolerance(dtype, "forward"), tolerance(dtype, "grad")
        assert rel_err(y_fast, y_old)[1] <= fwd and rel_err(y_fast, ref)[1] <= fwd
        assert rel_err(dx_fast, dx_old)[1] <= grad and rel_err(dx_fast, ref_dx)[1] <= grad
        ref_kernel = param_to_framework("G.0.weight", ref_grads["weight"], layer, np.float64, cpu)
        assert rel_err(g_fast["kernel"], g_old["kernel"])[1] <= grad
        assert rel_err(g_fast["kernel"], np.asarray(ref_kernel))[1] <= grad
        if bias:
            assert rel_err(g_fast["bias"], g_old["bias"])[1] <= grad
            assert rel_err(g_fast["bias"], ref_grads["bias"])[1] <= grad

    @pytest.mark.parametrize("k,s,p", [(4, 2, 1), (6, 2, 2), (5, 3, 1), (2, 2, 0), (3, 1, 1)])
    def test_subpixel_phase_taps_general(self, backend, k, s, p):
        """models._conv_transpose_subpixel for any k - 2p = s (zero taps where a phase has fewer: k5 s3
        p1), float64, equals lax.conv_transpose with PyTorch's pads; k4 s2 p1's phase taps are the
        derivation's: y = 2m uses ky 3, 1 on input rows m - 1, m; y = 2m + 1 uses ky 2, 0 on m, m + 1."""
        jax, jnp, _, _ = _frameworks()
        from gansuite.backends.jax.models import _conv_transpose_subpixel, _subpixel_taps

        if (k, s, p) == (4, 2, 1):
            assert _subpixel_taps(4, 2, 1) == ([(1, 0), (0, 1)], [[3, 1], [2, 0]])
        rng = np.random.default_rng(12)
        x = jnp.asarray(rng.standard_normal((2, 4, 3, 3)))  # NHWC
        kernel = jnp.asarray(rng.standard_normal((k, k, 2, 3)))  # (kh, kw, out, in), transpose_kernel=True
        pad = k - 1 - p
        ref = jax.lax.conv_transpose(x, kernel, (s, s), ((pad, pad), (pad, pad)), transpose_kernel=True)
        out = _conv_transpose_subpixel(x, kernel, s, p, None)
        assert out.shape == ref.shape == (2, 4 * s, 3 * s, 2)
        assert rel_err(np.asarray(out), np.asarray(ref))[1] <= FP64

    def test_subpixel_only_in_fast_mode_for_k_2s(self, backend):
        """Which layers take the sub-pixel form: fast mode's k = 2s, p = s/2 transposed convs only.
        G's first layer (k4 s1 p0) and every parity-mode layer stay nn.ConvTranspose."""
        _, jnp, nn, _ = _frameworks()
        from gansuite.backends.jax.models import _SubPixelConvTranspose, build_layer

        def kind(layer: ConvTranspose2d, mode: str) -> type:
            return type(build_layer(layer, (3, 4, 4), "0", jnp.float32, mode))

        for layer in (ConvTranspose2d(3, 2, 4, 1, 0), ConvTranspose2d(3, 2, 3, 2, 1), ConvTranspose2d(3, 2, 4, 2, 0)):
            assert kind(layer, "fast") is nn.ConvTranspose
        for layer in (ConvTranspose2d(3, 2, 4, 2, 1), ConvTranspose2d(3, 2, 8, 4, 2)):
            assert kind(layer, "fast") is _SubPixelConvTranspose and kind(layer, "parity") is nn.ConvTranspose

    @pytest.mark.parametrize("dtype", ["float64", "float32"])
    def test_fast_mode_generator_matches_oracle(self, backend, dtype):
        """dcgan-mnist-tiny's G (four k4 s2 p1 layers, the last with a bias) in fast mode, BatchNorm on
        batch statistics: G(z) within the dtype's forward tolerance of the oracle, as parity's."""
        spec = preset("dcgan-mnist-tiny")
        params, _, z = parity_inputs(spec, 0, 4)
        st = backend.build(spec, params, None, BuildOptions(dtype=dtype, mode="fast"))
        ref = OracleBackend()
        want = ref.generate(ref.build(spec, params, None, BuildOptions()), z)
        assert rel_err(backend.generate(st, z), want)[1] <= tolerance(dtype, "forward")

    # -- dtypes, compilation, fast mode -------------------------------------------------------------

    @pytest.mark.parametrize("dtype", ["float32", "float64"])
    def test_x64_on_and_every_leaf_in_the_state_dtype(self, backend, dtype):
        """jax_enable_x64 is on (float64 parity) and does not leak float64 into a float32 state:
        params, running stats and Adam moments all stay in the asked dtype through a step."""
        jax, jnp, _, _ = _frameworks()
        assert jax.config.jax_enable_x64
        spec = preset("gaussian")
        st = backend.build(spec, init_params(spec, 0), None, BuildOptions(dtype=dtype))
        b = Streams(spec, 0).batch(0)
        backend.train_step(st, b.real, b.z)
        floats = {str(leaf.dtype) for leaf in jax.tree.leaves(st.train) if jnp.issubdtype(leaf.dtype, jnp.floating)}
        assert floats == {dtype}
        assert backend.generate(st, b.z).dtype == np.float64

    def test_settings_record_precision_and_mode(self, backend):
        spec = preset("gaussian")
        p = init_params(spec, 0)
        parity = backend.settings(backend.build(spec, p, None, BuildOptions(dtype="float32")))
        fast = backend.settings(backend.build(spec, p, None, BuildOptions(dtype="float32", mode="fast")))
        assert parity["layer_precision"] == "highest" and fast["layer_precision"] == "default"
        assert parity["x64"] and parity["jit"] and not parity["donation"] and fast["donation"]
        assert {"device", "device_name", "xla_flags", "compile_s"} <= set(parity)

    def test_bf16_mixed_fast_step_stays_near_the_oracle(self, backend):
        """Fast mode's bf16 mixed precision (extra={"mixed_precision": "mixed_bfloat16"}, the benchmark's
        bf16-mixed rows): Flax's dtype=bfloat16 with param_dtype=float32 on Dense/Conv/ConvTranspose,
        each output cast to float32, so BatchNorm and the nets' outputs are float32. Every variable,
        running statistic and Adam moment stays float32 through a step; one dcgan-tiny iteration's
        losses are within MIXED_BF16_LOSS of the float64 oracle and further from it than float32's
        1e-5 (the bf16 layers took); the setting is refused in parity mode and for float64 in one line."""
        jax, jnp, _, _ = _frameworks()
        from gansuite.backends.jax.layout import activations_to_framework
        from gansuite.common.errors import GanSuiteError
        from gansuite.common.protocol import MIXED_BF16
        from gansuite.common.tolerances import MIXED_BF16_LOSS

        spec = preset("dcgan-tiny")
        params, batch = init_params(spec, 0), Streams(spec, 0).batch(0)
        oracle = OracleBackend()
        ref = oracle.train_step(oracle.build(spec, params, None, BuildOptions()), batch.real, batch.z)
        mixed = {"mixed_precision": MIXED_BF16}
        st = backend.build(spec, params, None, BuildOptions(dtype="float32", mode="fast", extra=mixed))
        assert backend.settings(st)["mixed_precision"] == MIXED_BF16

        G, _ = st.cfg.nets()  # layer 0: ConvTranspose2d, 1: BatchNorm, ..., last: Tanh
        z = activations_to_framework(batch.z, jnp.float32, st.device)
        y, seen = G.apply({"params": st.train["G"]["params"], "batch_stats": st.train["G"]["batch_stats"]}, z,
                          use_running_average=False, capture_intermediates=True, mutable=["batch_stats", "intermediates"])
        inter = seen["intermediates"]
        assert inter["0"]["__call__"][0].dtype == jnp.bfloat16  # the transposed conv computed in bf16
        assert inter["1"]["__call__"][0].dtype == jnp.float32 and y.dtype == jnp.float32  # BatchNorm, G(z)

        out = backend.train_step(st, batch.real, batch.z)
        floats = {str(leaf.dtype) for leaf in jax.tree.leaves(st.train) if jnp.issubdtype(leaf.dtype, jnp.floating)}
        assert floats == {"float32"}  # variables, running statistics and Adam moments
        errs = {k: abs(getattr(out, k) - getattr(ref, k)) / max(1.0, abs(getattr(ref, k)))
                for k in ("loss_D", "D_x", "D_G_z1", "loss_G", "D_G_z2")}
        assert max(errs.values()) <= MIXED_BF16_LOSS, errs
        assert max(errs.values()) > tolerance("float32", "loss"), errs
        for options in (BuildOptions(dtype="float32", mode="parity", extra=mixed),
                        BuildOptions(dtype="float64", mode="fast", extra=mixed),
                        BuildOptions(dtype="float32", mode="fast", extra={"mixed_precision": "bfloat16"})):
            with pytest.raises(GanSuiteError, match=r"^extra.mixed_precision: .*allowed: 'mixed_bfloat16'"):
                backend.build(spec, params, None, options)

    def test_fast_step_donates_and_train_epoch_equals_steps(self, backend):
        """Fast mode: one executable per iteration with the state donated (the old buffers are gone),
        device noise from the build seed, compile time recorded once per signature. ``train_epoch``
        (one lax.scan) draws the same noise and gives the same result as as many ``train_step``s."""
        spec = preset("gaussian")
        p = init_params(spec, 0)
        streams = Streams(spec, 0)
        reals = np.stack([streams.real(i) for i in range(6)])
        opts = BuildOptions(dtype="float64", mode="fast", seed=7)

        stepped = backend.build(spec, p, None, opts)
        old_leaf = stepped.train["G"]["params"]["0"]["kernel"]
        steps = [backend.train_step(stepped, r, None).loss_D for r in reals]
        assert old_leaf.is_deleted()  # donated to the compiled step
        scanned = backend.build(spec, p, None, opts)
        out = backend.train_epoch(scanned, reals)
        assert scanned.compile_log.get("epoch", 0.0) > 0.0 and "iteration" not in scanned.compile_log
        np.testing.assert_allclose(out["loss_D"], steps, rtol=FP64, atol=0)
        a, opt_a = backend.export_params(stepped)
        b, opt_b = backend.export_params(scanned)
        assert opt_a.G.step == opt_b.G.step == 6
        for k in a:
            assert rel_err(b[k], a[k])[1] <= FP64, k
        again = backend.build(spec, p, None, BuildOptions(dtype="float64", mode="fast", seed=8))
        other = [backend.train_step(again, r, None).loss_D for r in reals]
        assert again.compile_s == 0.0  # same signature as `stepped`: executable reused, nothing compiled
        assert not np.allclose(other, steps)  # another seed, other noise

    def test_fast_mode_noise_rows_differ_from_real_rows(self, backend):
        """Seed 003's short last batch (dcgan-mnist-tiny: 4 real rows, 16 noise rows): the compiled
        step with host noise matches the oracle; device noise has train.noise_rows rows; each
        (real, z) shape pair is its own compile-cache entry (a full batch compiles again, a second
        short one does not); train_epoch's scan draws the same 16-row noise as train_step."""
        from gansuite.backends.jax import models

        spec = preset("dcgan-mnist-tiny")
        params, real, z = parity_inputs(spec, 0, 4)
        assert real.shape[0] == 4 and z.shape[0] == 16
        opts = BuildOptions(dtype="float64", mode="fast", seed=3)
        st = backend.build(spec, params, None, opts)
        out = backend.train_step(st, real, z)
        ref = OracleBackend()
        ref_out = ref.train_step(ref.build(spec, params, None, BuildOptions()), real, z)
        for k in ("loss_D", "loss_G", "D_x", "D_G_z1", "D_G_z2"):
            assert abs(getattr(out, k) - getattr(ref_out, k)) <= FP64 * max(1.0, abs(getattr(ref_out, k))), k
        keys = set(models._COMPILED)
        streams = Streams(spec, 0)
        full = streams.real(0)
        backend.train_step(st, full, streams.noise(0, 16))  # (16, 16): another signature
        assert len(set(models._COMPILED) - keys) == 1
        keys = set(models._COMPILED)
        backend.train_step(st, real, z)  # (4, 16) again: cached
        assert set(models._COMPILED) == keys

        reals = np.stack([streams.real(i)[:4] for i in range(3)])
        stepped = backend.build(spec, params, None, opts)
        assert backend.device_noise(backend.build(spec, params, None, opts), 16).shape[0] == 16
        steps = [backend.train_step(stepped, r, None).loss_D for r in reals]
        scanned = backend.build(spec, params, None, opts)
        np.testing.assert_allclose(backend.train_epoch(scanned, reals)["loss_D"], steps, rtol=FP64, atol=0)
