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

from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax import lax

from gansuite.common.spec import AdamSpec, GANSpec, LossSpec

from .layout import JAX_DTYPES, latent_shape_to_framework
from .models import Net, build_net

TrainState = dict[str, Any]  # {"G": {"params", "batch_stats"}, "D": {...}, "opt_G", "opt_D", "key"}


def make_adam(cfg: AdamSpec) -> optax.GradientTransformation:
    # optax.adam is the spec's (PyTorch's) form: lr * m_hat / (sqrt(v_hat + eps_root) + eps), with
    # eps_root=0 (its default; set so nobody has to look it up). Keras/MXNet put eps before the
    # bias correction instead. No weight decay (that is optax.adamw), no Nesterov, moments in the
    # params' dtype (mu_dtype=None).
    return optax.adam(learning_rate=cfg.lr, b1=cfg.beta1, b2=cfg.beta2, eps=cfg.eps, eps_root=0.0,
                      mu_dtype=None, nesterov=False)


def bce(logits: jax.Array, label: float, reduction: str) -> jax.Array:
    # BCE-with-logits on the raw logit. optax returns it per element (no reduction): apply the
    # spec's reduction over the batch ('sum' in d2l, 'mean' in the tutorial) here.
    per_example = optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, label))
    return per_example.mean() if reduction == "mean" else per_example.sum()


def train_forward(net: Net, stats: Any, x: jax.Array, flat: bool) -> Callable[[Any], tuple[jax.Array, Any]]:
    """``params -> (net(x), updated running stats)`` in train mode (BN: batch statistics)."""
    def f(params: Any) -> tuple[jax.Array, Any]:
        y, updated = net.apply({"params": params, "batch_stats": stats}, x, use_running_average=False,
                               mutable=["batch_stats"])
        return (y.reshape(-1) if flat else y), updated.get("batch_stats", stats)
    return f


def train_iteration(G: Net, D: Net, tx_G: optax.GradientTransformation, tx_D: optax.GradientTransformation,
                    state: TrainState, real: jax.Array, z: jax.Array, loss: LossSpec,
                    with_grads: bool = False) -> tuple[TrainState, dict[str, jax.Array], dict[str, Any] | None]:
    """D step then G step, exactly the tutorial's sequence. Returns device values (no sync)."""
    g_params, g_stats = state["G"]["params"], state["G"]["batch_stats"]
    d_params, d_stats = state["D"]["params"], state["D"]["batch_stats"]

    # -- D step: maximise log D(x) + log(1 - D(G(z))) --
    # Running statistics are threaded through each forward in call order: D(real), G(z), D(fake).
    out_real, pull_real, d_stats = jax.vjp(train_forward(D, d_stats, real, True), d_params, has_aux=True)
    fake, pull_G, g_stats = jax.vjp(train_forward(G, g_stats, z, False), g_params, has_aux=True)  # G's only forward
    # stop_gradient is `fake.detach()`; the vjp is w.r.t. D's params only, so it is documentation.
    out_fake, pull_fake, d_stats = jax.vjp(train_forward(D, d_stats, lax.stop_gradient(fake), True), d_params,
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
        return train_forward(D, d_stats, x, True)(d_params)

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


@dataclass(frozen=True)
class StepConfig:
    """Everything static about a compiled step (hashable: a jit static argument and cache key)."""

    spec: GANSpec
    dtype: str
    precision: lax.Precision | None  # per-layer dot/conv precision: HIGHEST (parity), None = DEFAULT (fast)

    def nets(self) -> tuple[Net, Net]:
        dt = JAX_DTYPES[self.dtype]
        return (build_net(self.spec.generator, dt, self.precision),
                build_net(self.spec.discriminator, dt, self.precision))

    def optimizers(self) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
        return make_adam(self.spec.train.optim_G), make_adam(self.spec.train.optim_D)


def draw_noise(cfg: StepConfig, state: TrainState, batch_size: int) -> tuple[TrainState, jax.Array]:
    """Latent noise from the state's key (fast mode: no host round trip), drawn in Flax's layout."""
    key, sub = jax.random.split(state["key"])
    shape = (batch_size, *latent_shape_to_framework(cfg.spec.latent_shape))
    # dtype explicit: with jax_enable_x64 on, jax.random.normal would default to float64.
    z = jax.random.normal(sub, shape, dtype=JAX_DTYPES[cfg.dtype])
    return {**state, "key": key}, z


def iteration(state: TrainState, real: jax.Array, z: jax.Array | None, cfg: StepConfig,
              with_grads: bool) -> tuple[TrainState, dict[str, jax.Array], dict[str, Any] | None]:
    """One whole iteration (D step + G step) as one function: jitted by the backend."""
    if z is None:
        state, z = draw_noise(cfg, state, real.shape[0])
    G, D = cfg.nets()
    tx_G, tx_D = cfg.optimizers()
    return train_iteration(G, D, tx_G, tx_D, state, real, z, cfg.spec.loss, with_grads)


def epoch(state: TrainState, reals: jax.Array, zs: jax.Array | None,
          cfg: StepConfig) -> tuple[TrainState, dict[str, jax.Array]]:
    """``lax.scan`` of :func:`iteration` over a stack of equal-size batches ``(n, B, ...)``."""
    def body(carry: TrainState, xs: tuple[jax.Array, jax.Array | None]):
        real, z = xs
        carry, scalars, _ = iteration(carry, real, z, cfg, False)
        return carry, scalars

    return lax.scan(body, state, (reals, zs))


def forward(state: TrainState, x: jax.Array, cfg: StepConfig, net: str, bn: str) -> jax.Array:
    """Pure forward of G or D: BN with batch ("batch", updates discarded) or running statistics."""
    G, D = cfg.nets()
    module = G if net == "G" else D
    variables = {"params": state[net]["params"], "batch_stats": state[net]["batch_stats"]}
    if bn == "batch":
        y, _ = module.apply(variables, x, use_running_average=False, mutable=["batch_stats"])  # discarded
    else:
        y = module.apply(variables, x, use_running_average=True)
    return y


# Parity: no donation (the caller may still hold the inputs); fast: the state's buffers are donated
# to the step, which writes the new state into them (no second copy of params and Adam moments).
ITERATION = {
    "parity": jax.jit(iteration, static_argnames=("cfg", "with_grads")),
    "fast": jax.jit(iteration, static_argnames=("cfg", "with_grads"), donate_argnames=("state",)),
}
EPOCH = {
    "parity": jax.jit(epoch, static_argnames=("cfg",)),
    "fast": jax.jit(epoch, static_argnames=("cfg",), donate_argnames=("state",)),
}
FORWARD = jax.jit(forward, static_argnames=("cfg", "net", "bn"))
