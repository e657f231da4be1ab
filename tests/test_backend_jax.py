"""JAX backend: the shared contract (tests/backend_contract.py) plus JAX/Flax/Optax specifics.

Each JAX-specific test measures one framework difference: the framework's default gives a
different number from the spec's (asserted to be far off), and the setting the backend uses gives
the oracle's number (asserted within the float64 tolerance). Small arrays, eager mode: seconds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from backend_contract import BackendContract
from gansuite.common import oracle_layers as L
from gansuite.common.oracle import adam_update
from gansuite.common.params import init_params, param_shapes
from gansuite.common.parity import rel_err
from gansuite.common.presets import preset
from gansuite.common.protocol import BuildOptions
from gansuite.common.spec import AdamSpec, BatchNorm, Conv2d, ConvTranspose2d
from gansuite.common.streams import Streams

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

        for model in ("gaussian", "dcgan-tiny"):
            spec = preset(model)
            params = init_params(spec, 0)
            st = backend.build(spec, params, None, BuildOptions(dtype="float64"))
            for net, ns in (("G", spec.generator), ("D", spec.discriminator)):
                module = build_net(ns, net, jnp.float64, "fast")
                x = jnp.zeros((2, *channels_last_shape(ns.input_shape)), jnp.float64)
                abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), x, use_running_average=False))
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
            value, grad = jax.value_and_grad(lambda o: bce(o, label, reduction))(jnp.asarray(logits))
            assert abs(float(value) - ref) <= FP64 * abs(ref) and rel_err(np.asarray(grad), dref)[1] <= FP64
        per = np.asarray(optax.sigmoid_binary_cross_entropy(jnp.asarray(logits), jnp.ones(5)))
        assert per.shape == (5,) and np.isfinite(per).all() and abs(per[0] - 40.0) <= FP64 * 40

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
