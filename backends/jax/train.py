"""One training iteration in the tutorial's call order (see common/protocol.py).

JAX has no autograd tape and no optimizer objects holding state: the iteration is
a pure function ``(state, real, z) -> (new state, scalars, grads)``. Each forward
is a ``jax.vjp`` (the forward now, a pullback for later), which reproduces
PyTorch's autograd step by step: D's two forwards each get their own backward
and the gradients are summed (as ``.grad`` accumulates), and G's ONE forward is
pulled back once, in the G step, with the gradient that flows through the
updated D into the same ``fake``.
"""

from __future__ import annotations

from typing import Any, Callable, TypedDict

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from gansuite.common.layout import channels_last_shape, layer_of
from gansuite.common.params import trainable_names
from gansuite.common.spec import AdamSpec, LossSpec

from .layout import DTYPES, activations_to_framework, module_key
from .models import Net, StepConfig, _compiled


class TrainState(TypedDict):
    """The whole mutable state as one pytree (replaced, never mutated, by each compiled step)."""

    G: dict[str, Any]  # Flax variables {"params": ..., "batch_stats": ...}
    D: dict[str, Any]
    opt_G: Any  # optax.adam's state: (ScaleByAdamState, EmptyState)
    opt_D: Any
    key: jax.Array  # threefry key for fast mode's noise, seeded at build


def make_adam(cfg: AdamSpec, params: Any, mode: str) -> optax.GradientTransformation:
    # optax.adam is the spec's (PyTorch's) form: lr * m_hat / (sqrt(v_hat + eps_root) + eps), with
    # eps_root=0 (its default; set so nobody has to look it up). Keras/MXNet put eps before the
    # bias correction instead. No weight decay (that is optax.adamw), no Nesterov, moments in the
    # params' dtype (mu_dtype=None).
    # ``params`` and ``mode`` are unused: an optax transformation is not bound to parameters (its
    # state is, via tx.init), and both modes use the same Adam (XLA compiles it either way).
    return optax.adam(learning_rate=cfg.lr, b1=cfg.beta1, b2=cfg.beta2, eps=cfg.eps, eps_root=0.0,
                      mu_dtype=None, nesterov=False)


def bce(logits: jax.Array, label: float, reduction: str) -> jax.Array:
    # BCE-with-logits on the raw logit. optax returns it per element (no reduction): apply the
    # spec's reduction over the batch ('sum' in d2l, 'mean' in the tutorial) here.
    per_example = optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, label))
    return per_example.mean() if reduction == "mean" else per_example.sum()


def _train_forward(net: Net, stats: Any, x: jax.Array, flat: bool) -> Callable[[Any], tuple[jax.Array, Any]]:
    """``params -> (net(x), updated running stats)`` in train mode (BN: batch statistics)."""
    def f(params: Any) -> tuple[jax.Array, Any]:
        y, updated = net.apply({"params": params, "batch_stats": stats}, x, use_running_average=False,
                               mutable=["batch_stats"])
        return (y.reshape(-1) if flat else y), updated.get("batch_stats", stats)
    return f


def _iteration(G: Net, D: Net, tx_G: optax.GradientTransformation, tx_D: optax.GradientTransformation,
               state: TrainState, real: jax.Array, z: jax.Array, loss: LossSpec,
               with_grads: bool = False) -> tuple[TrainState, dict[str, jax.Array], dict[str, Any] | None]:
    """D step then G step, exactly the tutorial's sequence, as a pure function (traced by _step).
    Returns device values (no sync)."""
    g_params, g_stats = state["G"]["params"], state["G"]["batch_stats"]
    d_params, d_stats = state["D"]["params"], state["D"]["batch_stats"]

    # -- D step: maximise log D(x) + log(1 - D(G(z))) --
    # Running statistics are threaded through each forward in call order: D(real), G(z), D(fake).
    out_real, pull_real, d_stats = jax.vjp(_train_forward(D, d_stats, real, True), d_params, has_aux=True)
    fake, pull_G, g_stats = jax.vjp(_train_forward(G, g_stats, z, False), g_params, has_aux=True)  # G's only forward
    # stop_gradient is `fake.detach()`; the vjp is w.r.t. D's params only, so it is documentation.
    out_fake, pull_fake, d_stats = jax.vjp(_train_forward(D, d_stats, lax.stop_gradient(fake), True), d_params,
                                           has_aux=True)

    def loss_D_of(o_real: jax.Array, o_fake: jax.Array) -> jax.Array:
        return loss.d_loss_scale * (bce(o_real, loss.real_label, loss.reduction)
                                    + bce(o_fake, loss.fake_label, loss.reduction))

    loss_D, (dl_real, dl_fake) = jax.value_and_grad(loss_D_of, argnums=(0, 1))(out_real, out_fake)
    (grads_real,), (grads_fake,) = pull_real(dl_real), pull_fake(dl_fake)
    grads_D = jax.tree.map(jnp.add, grads_real, grads_fake)  # PyTorch accumulates .grad over both paths
    updates, opt_D = tx_D.update(grads_D, state["opt_D"], d_params)
    d_params = optax.apply_updates(d_params, updates)

    # -- G step: maximise log D(G(z)), through the updated D, same fake --
    def D_on(x: jax.Array) -> tuple[jax.Array, Any]:
        return _train_forward(D, d_stats, x, True)(d_params)

    out_gen, pull_gen, d_stats = jax.vjp(D_on, fake, has_aux=True)  # gradient w.r.t. fake only: D unchanged
    loss_G, dl_gen = jax.value_and_grad(lambda o: bce(o, loss.real_label, loss.reduction))(out_gen)
    (d_fake,) = pull_gen(dl_gen)
    (grads_G,) = pull_G(d_fake)  # back through G's one forward (its saved batch statistics)
    updates, opt_G = tx_G.update(grads_G, state["opt_G"], g_params)
    g_params = optax.apply_updates(g_params, updates)

    new_state = {
        "G": {"params": g_params, "batch_stats": g_stats},
        "D": {"params": d_params, "batch_stats": d_stats},
        "opt_G": opt_G, "opt_D": opt_D, "key": state["key"],
    }
    scalars = {
        "loss_D": loss_D,
        "loss_G": loss_G,
        "D_x": jax.nn.sigmoid(out_real).mean(),
        "D_G_z1": jax.nn.sigmoid(out_fake).mean(),
        "D_G_z2": jax.nn.sigmoid(out_gen).mean(),
    }
    grads = {"G": grads_G, "D": grads_D} if with_grads else None
    return new_state, scalars, grads


# -- compiled entry points ----------------------------------------------------------------------


def _optimizers(cfg: StepConfig) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    return (make_adam(cfg.spec.train.optim_G, None, cfg.mode), make_adam(cfg.spec.train.optim_D, None, cfg.mode))


def _draw_noise(train: TrainState, shape: tuple[int, ...], dtype: Any) -> tuple[TrainState, jax.Array]:
    """Latent noise from the state's key, in Flax's layout: backend.device_noise (eager, before each
    fast step) and the epoch scan (traced) draw it the same way."""
    key, sub = jax.random.split(train["key"])
    # dtype explicit: with jax_enable_x64 on, jax.random.normal would default to float64.
    return {**train, "key": key}, jax.random.normal(sub, shape, dtype=dtype)


def _step(train: TrainState, real: jax.Array, z: jax.Array | None, cfg: StepConfig,
          with_grads: bool) -> tuple[TrainState, dict[str, jax.Array], dict[str, Any] | None]:
    """One whole iteration (D step + G step) as one function: jitted. ``z`` None (the epoch scan
    only): noise from the state's key, drawn inside the compiled function (no host round trip)."""
    if z is None:
        train, z = _draw_noise(train, (real.shape[0], *channels_last_shape(cfg.spec.latent_shape)),
                               DTYPES[cfg.dtype])
    G, D = cfg.nets()
    tx_G, tx_D = _optimizers(cfg)
    return _iteration(G, D, tx_G, tx_D, train, real, z, cfg.spec.loss, with_grads)


def _epoch(train: TrainState, reals: jax.Array, zs: jax.Array | None,
           cfg: StepConfig) -> tuple[TrainState, dict[str, jax.Array]]:
    """``lax.scan`` of :func:`_step` over a stack of equal-size batches ``(n, B, ...)``."""
    def body(carry: TrainState, xs: tuple[jax.Array, jax.Array | None]):
        real, z = xs
        carry, scalars, _ = _step(carry, real, z, cfg, False)
        return carry, scalars

    return lax.scan(body, train, (reals, zs))


# Parity: no donation (the caller may still hold the inputs); fast: the state's buffers are donated
# to the step, which writes the new state into them (no second copy of params and Adam moments).
_ITERATION = {
    "parity": jax.jit(_step, static_argnames=("cfg", "with_grads")),
    "fast": jax.jit(_step, static_argnames=("cfg", "with_grads"), donate_argnames=("train",)),
}
_EPOCH = {
    "parity": jax.jit(_epoch, static_argnames=("cfg",)),
    "fast": jax.jit(_epoch, static_argnames=("cfg",), donate_argnames=("train",)),
}


def train_iteration(state: Any, real: jax.Array, z: jax.Array,
                    with_grads: bool) -> tuple[dict[str, Any], dict[str, jax.Array] | None]:
    """D step then G step (one compiled call), replacing ``state.train``. Returns the scalars on the
    host (one transfer for all five) and, if asked, the gradients keyed by canonical name."""
    # Parity always returns the gradients (they are computed for Adam anyway): one executable
    # serves both with_grads values. Fast mode compiles them out unless asked for.
    compiled_grads = with_grads or state.options.mode == "parity"
    run = _compiled(state, "iteration", _ITERATION[state.options.mode], (state.train, real, z),
                    {"cfg": state.cfg, "with_grads": compiled_grads})
    state.train, scalars, grads = run(state.train, real, z)
    if not with_grads:
        return jax.device_get(scalars), None
    out = {}
    for net in ("G", "D"):  # D's from the D step, G's from the G step (_iteration)
        for name in trainable_names(state.spec, net):
            _, mod, var = module_key(name, layer_of(state.spec, name))  # gradients mirror "params"
            out[name] = grads[net][mod][var]
    return jax.device_get(scalars), out


def _train_epoch(state: Any, reals: np.ndarray, zs: np.ndarray | None) -> dict[str, np.ndarray]:
    """backend.train_epoch: ``len(reals)`` iterations as ONE compiled ``lax.scan``, replacing ``state.train``."""
    reals_j, zs_j = _stack(state, reals), None if zs is None else _stack(state, zs)
    run = _compiled(state, "epoch", _EPOCH[state.options.mode], (state.train, reals_j, zs_j), {"cfg": state.cfg})
    state.train, scalars = run(state.train, reals_j, zs_j)
    return {k: np.asarray(v, dtype=np.float64) for k, v in jax.device_get(scalars).items()}


def _stack(state: Any, stack: np.ndarray) -> jax.Array:
    """``(n, B, ...)`` canonical -> ``(n, B, ...)`` in Flax's layout, one transfer."""
    stack = np.asarray(stack)
    flat = activations_to_framework(stack.reshape(-1, *stack.shape[2:]), state.dtype, state.device)
    return flat.reshape(stack.shape[0], stack.shape[1], *flat.shape[1:])
