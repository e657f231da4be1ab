"""JAX / Flax / Optax defaults that break parity, each measured with the default left in place vs corrected.

Every trap is one function ``(default: bool) -> float`` (common/traps.py), run twice: once with ONE
setting put back to the framework's default (everything else as the backend has it), once as the
backend actually does it. Errors are max relative errors vs the float64 oracle (common.parity.rel_err).

Differences deliberately not measured here (no same-shaped error to report):

* Flax Conv's default ``padding='SAME'``: for D's k4 s2 p1 layers on even inputs it pads (1, 1),
  i.e. it IS PyTorch's p=1 (an error of exactly 0); for D's last k4 s1 p0 layer it returns 4x4
  instead of 1x1, a shape error, not a numerical one (tests/test_backend_jax.py shows both).
  The same holds for Flax ConvTranspose's default 'SAME' (right for k4 s2 p1, a 1x1 instead of a
  4x4 output for G's first layer), so the ConvTranspose row keeps the pads and changes the kernel.
* ``lax.Precision.DEFAULT`` (TF32 on Ampere+ GPUs): XLA:CPU computes float32 dots and convs in
  float32 at any precision, so on CPU default and HIGHEST are bit-identical (models._precision).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gansuite.common import oracle_layers as L
from gansuite.common.layout import conv_transpose_input_padding, layer_of
from gansuite.common.oracle import net_forward
from gansuite.common.parity import parity_inputs, rel_err
from gansuite.common.presets import preset
from gansuite.common.spec import BatchNorm, ConvTranspose2d, Layer, LeakyReLU
from gansuite.common.traps import DCGAN_ADAM, Trap, adam_reference, case, measure_all

from .backend import JaxBackend
from .layout import activations_from_framework, activations_to_framework, module_key, param_to_framework
from .models import Net, TorchBatchNorm, build_layer, build_net
from .train import _train_forward, make_adam

# A swap returns the Flax layer to use for spec layer ``layer`` (named ``name``), or None for the backend's.
_Swap = Callable[[Any, Any, str], Any]


class _Net(Net):
    """models.Net with some layers swapped for a framework-default variant (same variable tree).
    The other layers are the backend's, built with ``mode`` "parity" (per-layer precision HIGHEST:
    no effect on CPU, the same graph)."""

    swap: _Swap

    def layer(self, layer: Layer, input_shape: tuple[int, ...], name: str) -> Callable[..., jax.Array]:
        return self.swap(layer, self.dtype, name) or super().layer(layer, input_shape, name)


def _running_stats_error(bn_swap: _Swap | None) -> float:
    """Worst BN running statistic of G after ONE train-mode forward (dcgan-tiny, float64) vs the oracle."""
    c = case(JaxBackend())
    variables = c.state.train["G"]
    if bn_swap is None:  # the backend's own G
        module: nn.Module = build_net(c.spec.generator, "G", jnp.float64, "parity")
    else:
        module = _Net(c.spec.generator, jnp.float64, "parity",
                      lambda layer, dt, name: bn_swap(layer, dt, name) if isinstance(layer, BatchNorm) else None)
    z_j = activations_to_framework(c.z, jnp.float64, c.state.device)
    _, stats = _train_forward(module, variables["batch_stats"], z_j, False)(variables["params"])
    ref = net_forward(c.spec.generator, c.params, "G", np.asarray(c.z, np.float64))[1].running
    errs = []
    for name, want in ref.items():
        _, mod, var = module_key(name, layer_of(c.spec, name))
        errs.append(rel_err(np.asarray(stats[mod][var]), want)[1])
    return max(errs)


def _bn_momentum(default: bool) -> float:
    # Flax's momentum is the weight on the OLD value (default 0.99); the spec's 0.1 is on the NEW one.
    # Only the momentum differs: the layer is the backend's (unbiased running var, two-pass variance).
    def swap(layer: BatchNorm, dtype: Any, name: str) -> Any:
        return TorchBatchNorm(axis=-1, momentum=0.99, epsilon=layer.eps, use_fast_variance=False,
                              force_float32_reductions=False, dtype=dtype, param_dtype=dtype, name=name)
    return _running_stats_error(swap if default else None)


def _bn_biased_var(default: bool) -> float:
    # Stock nn.BatchNorm, momentum converted: its running var averages the BIASED batch variance.
    def swap(layer: BatchNorm, dtype: Any, name: str) -> Any:
        return nn.BatchNorm(axis=-1, momentum=1.0 - layer.momentum, epsilon=layer.eps, use_fast_variance=False,
                            force_float32_reductions=False, dtype=dtype, param_dtype=dtype, name=name)
    return _running_stats_error(swap if default else None)


def _conv_transpose_kernel(default: bool) -> float:
    """G(z) of dcgan-tiny, float64, with Flax ConvTranspose's default transpose_kernel=False and
    PyTorch's (in, out, kh, kw) weight moved to the (kh, kw, in, out) that layout asks for, unflipped.
    The pads stay k - 1 - p (see the module docstring: Flax's 'SAME' is a shape error on layer 0)."""
    backend = JaxBackend()
    c = case(backend)
    if not default:
        return rel_err(backend.generate(c.state, c.z), c.oracle_G())[1]

    def swap(layer: Any, dtype: Any, name: str) -> Any:
        if not isinstance(layer, ConvTranspose2d):
            return None
        pad = conv_transpose_input_padding(layer)
        return nn.ConvTranspose(layer.out_channels, (layer.kernel, layer.kernel), strides=(layer.stride,) * 2,
                                padding=((pad, pad), (pad, pad)), use_bias=layer.bias, dtype=dtype,
                                param_dtype=dtype, precision=jax.lax.Precision.HIGHEST,
                                name=name)  # transpose_kernel=False

    variables = jax.tree.map(lambda a: a, c.state.train["G"])  # a new tree: the state's is left alone
    for i, layer in enumerate(c.spec.generator.layers):
        if isinstance(layer, ConvTranspose2d):
            # (in, out, kh, kw) -> (kh, kw, in, out), no flip (common.layout has only the flipped form)
            w = c.params[f"G.{i}.weight"].transpose(2, 3, 0, 1)
            variables["params"][str(i)]["kernel"] = jnp.asarray(w, jnp.float64)
    z_j = activations_to_framework(c.z, jnp.float64, c.state.device)
    y, _ = _Net(c.spec.generator, jnp.float64, "parity", swap).apply(variables, z_j, use_running_average=False,
                                                                     mutable=["batch_stats"])
    return rel_err(activations_from_framework(y), c.oracle_G())[1]


def _leaky_relu_slope(default: bool) -> float:
    """D(x) of dcgan-tiny, float64, with jax.nn.leaky_relu's default slope (0.01) instead of 0.2."""
    backend = JaxBackend()
    c = case(backend)
    if not default:
        return rel_err(backend.discriminate(c.state, c.real), c.oracle_D())[1]

    def swap(layer: Any, dtype: Any, name: str) -> Any:
        return nn.leaky_relu if isinstance(layer, LeakyReLU) else None  # negative_slope=0.01

    x = activations_to_framework(c.real, jnp.float64, c.state.device)
    net = _Net(c.spec.discriminator, jnp.float64, "parity", swap)
    y, _ = net.apply(c.state.train["D"], x, use_running_average=False, mutable=["batch_stats"])
    return rel_err(activations_from_framework(y).reshape(-1), c.oracle_D())[1]


def _x64(default: bool) -> float:
    """D(x) of dcgan-tiny asked for in float64. jax_enable_x64 is off by default: every float64
    array is then silently created as float32 (a warning, no error). backends/jax/__init__.py turns
    it on at import; here it is switched off for this one forward (a scoped config context)."""
    backend = JaxBackend()
    c = case(backend)
    if not default:
        return rel_err(backend.discriminate(c.state, c.real), c.oracle_D())[1]
    with jax.enable_x64(False), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "float64 ... will be truncated to dtype float32"
        variables: dict[str, Any] = {"params": {}, "batch_stats": {}}
        for name, value in c.params.items():
            if name.startswith("D."):
                layer = layer_of(c.spec, name)
                coll, mod, var = module_key(name, layer)
                variables[coll].setdefault(mod, {})[var] = param_to_framework(name, value, layer, jnp.float64,
                                                                               c.state.device)
        x = activations_to_framework(c.real, jnp.float64, c.state.device)  # the trap itself: a float32 array
        y, _ = build_net(c.spec.discriminator, "D", jnp.float64, "parity").apply(
            variables, x, use_running_average=False, mutable=["batch_stats"])
        out = activations_from_framework(y).reshape(-1)
    return rel_err(out, c.oracle_D())[1]


def _fast_variance(default: bool) -> float:
    """One BatchNorm layer's train-mode output, float32, on activations whose mean (300) is large
    against their spread (1): Flax's default use_fast_variance=True computes E[x^2] - E[x]^2 and
    cancels; the backend's two-pass E[(x - E[x])^2] does not."""
    rng = np.random.default_rng(3)
    x = (300.0 + rng.standard_normal((64, 4))).astype(np.float32)
    spec_layer = BatchNorm(4)
    p = {"weight": np.ones(4), "bias": np.zeros(4), "running_mean": np.zeros(4), "running_var": np.ones(4)}
    ref, _ = L.batch_norm_forward(spec_layer, p, x.astype(np.float64))
    if default:  # everything else the backend's: momentum 1 - 0.1, eps 1e-5 (neither affects the output)
        layer = nn.BatchNorm(axis=-1, momentum=0.9, epsilon=spec_layer.eps, force_float32_reductions=False,
                             dtype=jnp.float32, param_dtype=jnp.float32)
    else:
        layer = build_layer(spec_layer, (4,), "0", jnp.float32, "parity")
    variables = {"params": {"scale": jnp.ones(4, jnp.float32), "bias": jnp.zeros(4, jnp.float32)},
                 "batch_stats": {"mean": jnp.zeros(4, jnp.float32), "var": jnp.ones(4, jnp.float32)}}
    y, _ = layer.apply(variables, jnp.asarray(x), use_running_average=False, mutable=["batch_stats"])
    return rel_err(np.asarray(y), ref)[1]


def _adamw(default: bool) -> float:
    """Parameter change after 3 steps of DCGAN's Adam (lr 2e-4, betas 0.5/0.999), float64, on
    dcgan-tiny's initial D.0.weight with gradients spread over 1e-6..1: optax.adamw (default
    weight_decay=1e-4, decoupled) vs the backend's optax.adam. Error in units of the largest
    reference change (about 3 lr)."""
    # Its own inputs (default_rng(4), normal gradients scaled by 1e-6..1), not common.traps.adam_inputs
    # (default_rng(5), random signs, 1e-9..1): the row's numbers were measured on these.
    p0 = parity_inputs(preset("dcgan-tiny"), 0)[0]["D.0.weight"].reshape(-1)
    rng = np.random.default_rng(4)
    scale = 10.0 ** rng.uniform(-6, 0, p0.size)
    grads = [scale * rng.standard_normal(p0.size) for _ in range(3)]
    ref = adam_reference(p0, grads)
    cfg = DCGAN_ADAM
    p = jnp.asarray(p0, jnp.float64)
    tx = optax.adamw(cfg.lr, cfg.beta1, cfg.beta2, cfg.eps) if default else make_adam(cfg, p, "parity")
    state = tx.init(p)
    for g in grads:
        upd, state = tx.update(jnp.asarray(g, jnp.float64), state, p)
        p = optax.apply_updates(p, upd)
    return rel_err(np.asarray(p) - p0, ref - p0)[1]


TRAPS = [
    Trap("Flax ConvTranspose default transpose_kernel=False (no flip, no in/out swap) with "
         "PyTorch's weight copied as (kh, kw, in, out); backend: transpose_kernel=True",
         "G(z), dcgan-tiny, batch 16, float64 (pads k-1-p in both)", _conv_transpose_kernel),
    Trap("Flax BatchNorm default momentum 0.99 (weight on the OLD value); spec 0.1 on the new = Flax 0.9",
         "G's BN running mean/var after one train-mode forward, dcgan-tiny, batch 16, float64", _bn_momentum),
    Trap("Flax BatchNorm running var averages the BIASED batch variance; spec (PyTorch) the unbiased n/(n-1) one",
         "G's BN running mean/var after one train-mode forward, dcgan-tiny, batch 16, float64", _bn_biased_var),
    Trap("Flax BatchNorm default use_fast_variance=True (E[x^2]-E[x]^2); spec two-pass E[(x-E[x])^2]",
         "BN train-mode output, one layer, 64x4 activations of mean 300 and std 1, float32", _fast_variance),
    Trap("jax_enable_x64 default False: float64 arrays silently become float32; backend turns it on",
         "D(x), dcgan-tiny, batch 16, float64 asked for", _x64),
    Trap("jax.nn.leaky_relu default negative_slope 0.01; spec 0.2",
         "D(x), dcgan-tiny, batch 16, float64", _leaky_relu_slope),
    Trap("optax.adamw default weight_decay=1e-4 (decoupled); spec Adam has none (optax.adam)",
         "parameter change after 3 Adam steps (lr 2e-4, betas 0.5/0.999), dcgan-tiny D.0.weight, "
         "gradients 1e-6..1, float64; in units of the largest reference change", _adamw),
]


def run_traps() -> list[dict[str, Any]]:
    return measure_all(TRAPS, JaxBackend.name)
