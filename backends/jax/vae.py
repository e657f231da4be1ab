"""JAX primitives of the VAE template (common/vae_backend.py), in the template's order.

backends/torch/vae.py side by side, the framework differences: JAX is functional, so the state is
one pytree, ``JaxVAEState.train`` (each net's Flax variables and the one optax Adam state), which
every step replaces; there is no autograd tape, so the seed's ``zero_grad(); loss.backward()`` is
``jax.value_and_grad`` of the total w.r.t. all four nets' params at once (fresh gradients every
call: nothing accumulates, so no zero_grad is needed); and both modes run jitted (the GAN path's
rule, models._compiled: parity under HIGHEST matmul precision and without donation, fast with the
state's buffers donated).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gansuite.common.protocol import BuildOptions
from gansuite.common.vae import VAE_NETS, VAESpec, vae_param_shapes
from gansuite.common.vae_backend import VAEBackendState, vae_layer_of

from . import layout
from .layout import DTYPES
from .models import Net, _compiled, build_net
# The GAN path's BCE on probabilities (loss.on="probabilities"): elementwise in an ARRAY target
# already (the GAN passes a full_like label), with PyTorch's backward (p - t) / max(p (1 - p), 1e-12)
# as a custom VJP, so the VAE's soft targets x in [0, 1] use it unchanged.
from .train import _bce_probabilities, make_adam


@dataclass
class JaxVAEState(VAEBackendState):
    # {"E" | "mu" | "logvar" | "Dec": Flax variables {"params": ...}, "opt": optax Adam state}: the
    # whole mutable state as one pytree, replaced (never mutated) by each compiled step.
    train: dict[str, Any]
    cfg: "_VAEConfig"
    compile_s: float = 0.0  # seconds spent compiling for this state (models._compiled writes it)
    compile_log: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _VAEConfig:
    """Everything static about a compiled VAE function (hashable: a jit static argument and a
    models._compiled cache key); the VAE's models.StepConfig."""

    spec: VAESpec
    dtype: str
    mode: str  # per-layer dot precision (models._precision): HIGHEST (parity), DEFAULT (fast)

    def nets(self) -> dict[str, Net]:
        return {net: build_net(self.spec.net(net), net, DTYPES[self.dtype], self.mode) for net in VAE_NETS}


def _params(train: dict[str, Any]) -> dict[str, Any]:
    """The one Adam's parameter tree: all four nets' "params" (the seed's ``model.parameters()``;
    optax is elementwise per leaf, so the pytree's key order does not change a number)."""
    return {net: train[net]["params"] for net in VAE_NETS}


def _vae_forward(nets: dict[str, Net], params: dict[str, Any], x: jax.Array,
                 eps: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The seed's ``forward``: encode, ``reparameterize`` with the given eps, decode. No BatchNorm
    or Dropout in a VAE (common/vae.py VAE_LAYERS), so train and eval mode are the same net."""
    def run(net: str, a: jax.Array) -> jax.Array:
        return nets[net].apply({"params": params[net]}, a, use_running_average=False)

    h = run("E", x)
    mu, log_var = run("mu", h), run("logvar", h)
    std = jnp.exp(log_var / 2)
    z = mu + eps * std
    return run("Dec", z), mu, log_var


def _losses(nets: dict[str, Net], params: dict[str, Any], x: jax.Array,
            eps: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """``total, (reconstruction, kl)``: the seed's BCE sum (reduction="sum" of the per-element
    clamped BCE) and its KL line verbatim."""
    x_reconst, mu, log_var = _vae_forward(nets, params, x, eps)
    reconst_loss = _bce_probabilities(x_reconst, x).sum()
    # mu ** 2 traces to lax.integer_pow (mu * mu, exact), as torch's mu.pow(2).
    kl_div = -0.5 * jnp.sum(1 + log_var - mu**2 - jnp.exp(log_var))
    return reconst_loss + kl_div, (reconst_loss, kl_div)


def _run_forward(train: dict[str, Any], x: jax.Array, eps: jax.Array,
                 cfg: _VAEConfig) -> tuple[jax.Array, jax.Array, jax.Array]:
    return _vae_forward(cfg.nets(), _params(train), x, eps)


def _run_decode(train: dict[str, Any], z: jax.Array, cfg: _VAEConfig) -> jax.Array:
    return cfg.nets()["Dec"].apply({"params": train["Dec"]["params"]}, z, use_running_average=False)


def _step(train: dict[str, Any], x: jax.Array, eps: jax.Array, cfg: _VAEConfig,
          with_grads: bool) -> tuple[dict[str, Any], dict[str, jax.Array], dict[str, Any] | None]:
    """The seed's loop body as a pure function: forward + loss, the gradient of the total w.r.t.
    every net's params (jax.value_and_grad: the losses are those at the params before the step),
    one Adam step over all of them (one count)."""
    params = _params(train)
    (total, (reconst_loss, kl_div)), grads = jax.value_and_grad(
        lambda p: _losses(cfg.nets(), p, x, eps), has_aux=True)(params)
    tx = make_adam(cfg.spec.train.optim, None, cfg.mode)
    updates, opt = tx.update(grads, train["opt"], params)
    new = optax.apply_updates(params, updates)
    new_train = {**{net: {"params": new[net]} for net in VAE_NETS}, "opt": opt}
    scalars = {"reconstruction": reconst_loss, "kl": kl_div, "total": total}
    return new_train, scalars, grads if with_grads else None


# JAX has no eager mode that keeps the per-layer precision of a compiled one, so parity jits too
# (as the GAN path, train._ITERATION); no donation there (the caller may still hold the inputs).
# Fast: the state's buffers are donated to the step, which writes the new state into them.
_FORWARD = jax.jit(_run_forward, static_argnames=("cfg",))
_DECODE = jax.jit(_run_decode, static_argnames=("cfg",))
_ITERATION = {
    "parity": jax.jit(_step, static_argnames=("cfg", "with_grads")),
    "fast": jax.jit(_step, static_argnames=("cfg", "with_grads"), donate_argnames=("train",)),
}


def create_state(spec: VAESpec, options: BuildOptions, dtype: Any, device: jax.Device) -> JaxVAEState:
    # Zeros of the right (Flax-layout) shapes and dtype (the GAN backend's create_state); the
    # template writes the values next. Flax's Net.init is never called.
    train: dict[str, Any] = {net: {"params": {}} for net in VAE_NETS}
    for name, shape in vae_param_shapes(spec).items():
        coll, mod, var = layout.module_key(name, vae_layer_of(spec, name))
        train[name.split(".")[0]][coll].setdefault(mod, {})[var] = layout.param_to_framework(
            name, np.zeros(shape), vae_layer_of(spec, name), dtype, device)
    # ONE optax Adam over E, mu, logvar, Dec (torch: Adam(model.parameters())): init gives zero
    # moments and count 0, the canonical fresh state. Its one `count` is the canonical step.
    train["opt"] = make_adam(spec.train.optim, _params(train), options.mode).init(_params(train))
    return JaxVAEState(spec, options, dtype, device, train, _VAEConfig(spec, options.dtype, options.mode))


def _key(state: JaxVAEState, name: str) -> tuple[str, str, str, str]:
    """``"E.0.weight"`` -> (net, collection, module, variable): layout.module_key of the GANs (layer
    i is Flax submodule ``str(i)``, a Dense's weight its ``kernel``), under that net's variables."""
    coll, mod, var = layout.module_key(name, vae_layer_of(state.spec, name))
    return name.split(".")[0], coll, mod, var


def write_tensor(state: JaxVAEState, name: str, value: jax.Array) -> None:
    net, coll, mod, var = _key(state, name)
    state.train[net][coll][mod][var] = value


def read_tensor(state: JaxVAEState, name: str) -> jax.Array:
    net, coll, mod, var = _key(state, name)
    return state.train[net][coll][mod][var]


def write_adam(state: JaxVAEState, step: int, m: dict[str, jax.Array], v: dict[str, jax.Array]) -> None:
    # optax.adam's state is (ScaleByAdamState(count, mu, nu), EmptyState) (train._eps_hat_adam keeps
    # that layout); mu / nu mirror the params tree, here {net: {module: {variable}}}. One `count`
    # for all parameters (PyTorch keeps a step per parameter; the canonical state has one).
    adam, *rest = state.train["opt"]
    mu: dict[str, Any] = {net: {} for net in VAE_NETS}
    nu: dict[str, Any] = {net: {} for net in VAE_NETS}
    for name in vae_param_shapes(state.spec):
        net, _, mod, var = _key(state, name)
        mu[net].setdefault(mod, {})[var], nu[net].setdefault(mod, {})[var] = m[name], v[name]
    count = jax.device_put(jnp.asarray(step, dtype=adam.count.dtype), state.device)
    state.train["opt"] = (adam._replace(count=count, mu=mu, nu=nu), *rest)


def read_adam(state: JaxVAEState) -> tuple[int, dict[str, jax.Array], dict[str, jax.Array]]:
    adam = state.train["opt"][0]  # optax creates the moments at init (zeros): no lazy state as torch
    keys = {name: _key(state, name) for name in vae_param_shapes(state.spec)}
    return (int(jax.device_get(adam.count)), {k: adam.mu[net][mod][var] for k, (net, _, mod, var) in keys.items()},
            {k: adam.nu[net][mod][var] for k, (net, _, mod, var) in keys.items()})


def forward(state: JaxVAEState, x: jax.Array, eps: jax.Array) -> tuple[jax.Array, ...]:
    # Pure: nothing is written back (torch needs no_grad; JAX computes no gradient unless asked).
    run = _compiled(state, "vae_forward", _FORWARD, (state.train, x, eps), {"cfg": state.cfg})
    return run(state.train, x, eps)


def decode(state: JaxVAEState, z: jax.Array) -> jax.Array:
    # The seed's model.decode(z) (sampled grids); pure, like forward (torch: under no_grad).
    run = _compiled(state, "vae_decode", _DECODE, (state.train, z), {"cfg": state.cfg})
    return run(state.train, z)


def train_iteration(state: JaxVAEState, x: jax.Array, eps: jax.Array,
                    with_grads: bool) -> tuple[dict[str, float], dict[str, jax.Array] | None]:
    # Parity always returns the gradients (computed for Adam anyway): one executable serves both
    # with_grads values, as the GAN path; fast mode compiles them out unless asked for.
    compiled_grads = with_grads or state.options.mode == "parity"
    run = _compiled(state, "vae_iteration", _ITERATION[state.options.mode], (state.train, x, eps),
                    {"cfg": state.cfg, "with_grads": compiled_grads})
    state.train, scalars, grads = run(state.train, x, eps)
    scalars = {k: float(v) for k, v in jax.device_get(scalars).items()}  # one transfer for all three
    if not with_grads:
        return scalars, None
    out = {}
    for name in vae_param_shapes(state.spec):  # gradients mirror the params tree
        net, _, mod, var = _key(state, name)
        out[name] = grads[net][mod][var]
    return scalars, out
