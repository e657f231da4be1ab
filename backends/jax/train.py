"""One training iteration in the tutorial's call order, with the spec's variants (see common/protocol.py).

JAX has no autograd tape and no optimizer objects holding state: the iteration is
a pure function ``(state, real, z) -> (new state, scalars, grads)``. Each forward
is a ``jax.vjp`` (the forward now, a pullback for later), which reproduces
PyTorch's autograd step by step: D's two forwards each get their own backward
and the gradients are summed (as ``.grad`` accumulates), and G's ONE forward is
pulled back once, in the G step, with the gradient that flows through the
updated D into the same ``fake``.

The spec's variants (the seeds'): D's passes real first or fake first (``d_order``: only the
order in which D's BN running statistics are threaded differs), one backward of the summed loss
or one per pass (``d_backward``: here one cotangent per pass either way, see ``_d_step``), the
per-example reduction (sum, then every gradient times 1/B before Adam), Adam in the eps-hat form
(``_eps_hat_adam``), and z with more rows than the real batch (each BCE reduces over its own
rows; jit compiles one executable per shape pair, and models._compiled keys on the shapes).

Seed 002's variants: BCE on D's Sigmoid output (``loss.on="probabilities"``, :func:`bce`), the G
step on a fresh z run through G again (``g_noise="fresh"``), and the iteration's draws
(common/draws.py: labels, fresh z, dropout masks), which are jit ARGUMENTS like real and z (a dict
pytree, never static: new labels or masks reuse the executable). In fast mode with no draws they
come from the state's threefry key inside the compiled step (:func:`_device_draws`).
"""

from __future__ import annotations

from typing import Any, Callable, TypedDict

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from gansuite.common.draws import mask_key, pass_masks, passes_of
from gansuite.common.errors import GanSuiteError
from gansuite.common.layout import channels_last_shape, layer_of
# PyTorch's binary_cross_entropy constants, as the oracle states them (the spec's BCELoss).
from gansuite.common.oracle_layers import BCE_BACKWARD_EPS, BCE_LOG_CLAMP
from gansuite.common.params import trainable_names
from gansuite.common.spec import AdamSpec, Dropout, GANSpec, LossSpec

from .layout import DTYPES, activations_to_framework, module_key
from .models import Net, StepConfig, _compiled


class TrainState(TypedDict):
    """The whole mutable state as one pytree (replaced, never mutated, by each compiled step)."""

    G: dict[str, Any]  # Flax variables {"params": ..., "batch_stats": ...}
    D: dict[str, Any]
    opt_G: Any  # optax.adam's state: (ScaleByAdamState, EmptyState); _eps_hat_adam keeps the same layout
    opt_D: Any
    key: jax.Array  # threefry key for fast mode's noise, seeded at build


def _eps_hat_adam(cfg: AdamSpec) -> optax.GradientTransformation:
    """Adam in the "eps-hat" form of Keras and MXNet (AdamSpec.form="eps_hat"):
    ``p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``.

    optax has no such switch: optax.adam adds eps to sqrt(v_hat), after the bias correction
    (rescaling eps by sqrt(1 - b2^t) per step is the same maths, not the same rounding). The
    moments are updated as the oracle writes them (``b1 m + (1 - b1) g``, ``b2 v + (1 - b2) g g``)
    and the step size is formed in float64 (x64 is on) from the step count, as MXNet's optimizer
    forms it in Python, then cast to the moments' dtype. The state is optax.adam's own layout,
    ``(ScaleByAdamState(count, mu, nu), EmptyState())`` with an int32 count, so backend.write_adam /
    read_adam (and so checkpoints) serve both forms unchanged.
    """
    b1, b2, lr, eps = cfg.beta1, cfg.beta2, cfg.lr, cfg.eps

    def init(params: Any) -> tuple[optax.ScaleByAdamState, optax.EmptyState]:
        return (optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=jax.tree.map(jnp.zeros_like, params),
                                       nu=jax.tree.map(jnp.zeros_like, params)), optax.EmptyState())

    def update(grads: Any, state: tuple[optax.ScaleByAdamState, optax.EmptyState],
               params: Any = None) -> tuple[Any, tuple[optax.ScaleByAdamState, optax.EmptyState]]:
        adam, rest = state
        count = optax.safe_increment(adam.count)
        mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, adam.mu, grads)
        nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, adam.nu, grads)
        t = count.astype(jnp.float64)
        alpha = lr * jnp.sqrt(1 - b2**t) / (1 - b1**t)  # the oracle's expression, float64
        # -(alpha m / (sqrt(v) + eps)): optax.apply_updates adds it, p + (-u) == p - u exactly.
        updates = jax.tree.map(lambda m, v: -(alpha.astype(m.dtype) * m / (jnp.sqrt(v) + eps)), mu, nu)
        return updates, (adam._replace(count=count, mu=mu, nu=nu), rest)

    return optax.GradientTransformation(init, update)


def make_adam(cfg: AdamSpec, params: Any, mode: str) -> optax.GradientTransformation:
    # form="torch": optax.adam is the spec's (PyTorch's) form: lr * m_hat / (sqrt(v_hat + eps_root) + eps),
    # with eps_root=0 (its default; set so nobody has to look it up). form="eps_hat" (Keras/MXNet put
    # eps before the bias correction): no optax equivalent, see _eps_hat_adam. No weight decay (that
    # is optax.adamw), no Nesterov, moments in the params' dtype (mu_dtype=None).
    # ``params`` and ``mode`` are unused: an optax transformation is not bound to parameters (its
    # state is, via tx.init), and both modes use the same Adam (XLA compiles it either way).
    if cfg.form == "eps_hat":
        return _eps_hat_adam(cfg)
    return optax.adam(learning_rate=cfg.lr, b1=cfg.beta1, b2=cfg.beta2, eps=cfg.eps, eps_root=0.0,
                      mu_dtype=None, nesterov=False)


def bce(out: jax.Array, label: float, loss: LossSpec) -> jax.Array:
    """The spec's BCE on D's output. On a logit: optax's BCE-with-logits. On D's Sigmoid output
    (``loss.on="probabilities"``, seed 002's ``nn.BCELoss()``): :func:`_bce_probabilities`, PyTorch's
    definition (optax has no BCE on probabilities). Both are per element (no reduction): the spec's
    reduction over the batch ('sum' in d2l, 'mean' in the tutorial) is applied here. "per_example"
    (MXNet's per-example loss + Trainer.step(B)) is differentiated as the SUM; its 1/B is applied to
    the parameter gradients afterwards (_rescale), as MXNet's rescale_grad."""
    target = jnp.full_like(out, label)
    if loss.on == "probabilities":
        per_example = _bce_probabilities(out, target)
    else:
        per_example = optax.sigmoid_binary_cross_entropy(out, target)
    return per_example.mean() if loss.reduction == "mean" else per_example.sum()


@jax.custom_vjp
def _bce_probabilities(p: jax.Array, t: jax.Array) -> jax.Array:
    """PyTorch's ``binary_cross_entropy`` per element: ``-(t max(log p, -100) + (1-t) max(log(1-p), -100))``.

    Written out, not with a framework loss: Keras's clips p to [1e-7, 1 - 1e-7] and optax has
    none. Its gradient is PyTorch's formula ``(p - t) / max((1 - p) p, 1e-12)`` (a custom VJP):
    autodiff of the clamped logs would give 0 where a log is clamped (PyTorch: the formula) and
    NaN at p = 0 or 1 (the 0 cotangent of the losing max branch times log's infinite derivative)."""
    return -(t * jnp.maximum(jnp.log(p), BCE_LOG_CLAMP) + (1 - t) * jnp.maximum(jnp.log1p(-p), BCE_LOG_CLAMP))


def _bce_probabilities_fwd(p: jax.Array, t: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return _bce_probabilities(p, t), (p, t)


def _bce_probabilities_bwd(res: tuple[jax.Array, jax.Array], g: jax.Array) -> tuple[jax.Array, jax.Array]:
    p, t = res
    return g * ((p - t) / jnp.maximum((1 - p) * p, BCE_BACKWARD_EPS)), jnp.zeros_like(t)  # t: a constant


_bce_probabilities.defvjp(_bce_probabilities_fwd, _bce_probabilities_bwd)


def _probability(out: jax.Array, loss: LossSpec) -> jax.Array:
    """D's output as a probability, for the D(x) / D(G(z)) scalars."""
    return out if loss.on == "probabilities" else jax.nn.sigmoid(out)


def _rescale(grads: Any, reduction: str, batch: int) -> Any:
    """per_example: every parameter gradient times 1/B before Adam (optax's losses are per element
    and its optimizers have no rescale_grad; MXNet's Trainer.step(B) / Module do this)."""
    if reduction != "per_example":
        return grads
    scale = 1.0 / batch  # a Python float, formed in float64 (the oracle's common.oracle_layers.rescale)
    return jax.tree.map(lambda g: g * scale, grads)


def _needed_draws(spec: GANSpec) -> list[str]:
    """The common/draws.py keys one iteration of ``spec`` reads (empty for the DCGANs and d2l)."""
    fresh = spec.train.g_noise == "fresh"
    need = (["labels", "fake_labels"] + (["fake_labels_gen"] if fresh else [])) if spec.conditional else []
    need += ["z_gen"] if fresh else []
    for net, net_spec in (("G", spec.generator), ("D", spec.discriminator)):
        need += [mask_key(p, net, i) for i, layer in enumerate(net_spec.layers) if isinstance(layer, Dropout)
                 for p in passes_of(spec, net)]
    return need


def _device_draws(train: TrainState, cfg: StepConfig, draws: dict[str, jax.Array],
                  rows: int) -> tuple[TrainState, dict[str, jax.Array], dict[str, jax.Array]]:
    """Fast mode with device noise (``train_step(z=None)``: the template passes only the real batch's
    labels): the other draws from the state's key, traced in the compiled step -- the fake labels
    (uniform over the classes), the G step's z, and one key per (pass, net) for Flax's own Dropout
    (models.Net's ``own_dropout``) unless host masks were given. Draws the host gave are kept.
    Returns the new state, the draws and the dropout keys."""
    spec = cfg.spec
    names = [k for k in _needed_draws(spec) if k not in draws and not k.startswith(("mask/", "labels"))]
    own = spec.has_dropout and not any(k.startswith("mask/") for k in draws)
    passes = [f"{p}/{net}" for net in ("G", "D") for p in passes_of(spec, net)] if own else []
    if not names and not passes:  # host-fed, or a plain GAN: the key is left exactly as it was
        return train, draws, {}
    key, *subs = jax.random.split(train["key"], 1 + len(names) + len(passes))
    draws = dict(draws)
    for name, sub in zip(names, subs):
        if name == "z_gen":  # dtype explicit: with jax_enable_x64 on, normal would default to float64
            shape = (rows, *channels_last_shape(spec.latent_shape))
            draws[name] = jax.random.normal(sub, shape, dtype=DTYPES[cfg.dtype])
        else:  # fake labels, as layout.labels_to_framework gives labels: int32
            draws[name] = jax.random.randint(sub, (rows,), 0, spec.num_classes, dtype=jnp.int32)
    return {**train, "key": key}, draws, dict(zip(passes, subs[len(names):]))


def _train_forward(net: Net, stats: Any, x: jax.Array, flat: bool, labels: jax.Array | None = None,
                   masks: dict[int, jax.Array] | None = None,
                   rng: jax.Array | None = None) -> Callable[[Any], tuple[jax.Array, Any]]:
    """``params -> (net(x), updated running stats)`` in train mode (BN: batch statistics), with the
    pass's labels and dropout masks, or (``rng``) Flax's own dropout drawn from that key."""
    def f(params: Any) -> tuple[jax.Array, Any]:
        y, updated = net.apply({"params": params, "batch_stats": stats}, x, use_running_average=False,
                               labels=labels, masks=masks, own_dropout=rng is not None,
                               rngs=None if rng is None else {"dropout": rng}, mutable=["batch_stats"])
        return (y.reshape(-1) if flat else y), updated.get("batch_stats", stats)
    return f


def _d_step(G: Net, D: Net, state: TrainState, real: jax.Array, z: jax.Array, spec: GANSpec,
            draws: dict[str, jax.Array], rngs: dict[str, jax.Array]) -> dict[str, Any]:
    """D's two passes and their pullbacks, as ``train.d_order`` and ``train.d_backward`` say.

    Order: D(real), G(z), D(fake.detach()) (the tutorial, "real_first") or G(z), D(fake), D(real)
    (seed 004, "fake_first"): D's running statistics are threaded through the forwards in that
    order, which is all the order changes. G runs once; its pullback is kept for the G step.
    Backward: "joint" differentiates the summed loss (one value_and_grad w.r.t. both passes' logits),
    "separate" each pass's own loss (the tutorial's errD_real.backward(); errD_fake.backward()). Each
    pass has its own pullback either way (jax.vjp), and the two gradients are summed as PyTorch
    accumulates .grad: the same numbers, as in the oracle. z may have more rows than real
    (train.noise_batch="batch_size"): each BCE reduces over its own rows. A conditional GAN: D(real)
    sees the batch's labels, G and D(fake) the fake labels; each pass its own dropout masks.
    """
    loss, train = spec.loss, spec.train
    g_params, g_stats = state["G"]["params"], state["G"]["batch_stats"]
    d_params, d_stats = state["D"]["params"], state["D"]["batch_stats"]
    out: dict[str, Any] = {}

    def real_pass(stats: Any) -> Any:
        forward = _train_forward(D, stats, real, True, draws.get("labels"), pass_masks(draws, "real", "D"),
                                 rngs.get("real/D"))
        out["real"], out["pull_real"], stats = jax.vjp(forward, d_params, has_aux=True)
        return stats

    def fake_pass(stats: Any) -> Any:
        labels = draws.get("fake_labels")
        forward_G = _train_forward(G, g_stats, z, False, labels, pass_masks(draws, "fake", "G"), rngs.get("fake/G"))
        # G's only forward in the D step (reused by a "reuse" G step)
        out["fake_img"], out["pull_G"], out["g_stats"] = jax.vjp(forward_G, g_params, has_aux=True)
        # stop_gradient is `fake.detach()`; the vjp is w.r.t. D's params only, so it is documentation.
        forward = _train_forward(D, stats, lax.stop_gradient(out["fake_img"]), True, labels,
                                 pass_masks(draws, "fake", "D"), rngs.get("fake/D"))
        out["fake"], out["pull_fake"], stats = jax.vjp(forward, d_params, has_aux=True)
        return stats

    for run in ((real_pass, fake_pass) if train.d_order == "real_first" else (fake_pass, real_pass)):
        d_stats = run(d_stats)

    def bce_real(o: jax.Array) -> jax.Array:
        return bce(o, loss.real_label, loss)

    def bce_fake(o: jax.Array) -> jax.Array:
        return bce(o, loss.fake_label, loss)

    if train.d_backward == "joint":
        def loss_D_of(o_real: jax.Array, o_fake: jax.Array) -> jax.Array:
            return loss.d_loss_scale * (bce_real(o_real) + bce_fake(o_fake))

        loss_D, (dl_real, dl_fake) = jax.value_and_grad(loss_D_of, argnums=(0, 1))(out["real"], out["fake"])
    else:  # "separate": one backward per pass, of d_loss_scale * that pass's BCE
        def scaled(f: Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
            def pass_loss(o: jax.Array) -> tuple[jax.Array, jax.Array]:
                unscaled = f(o)
                return loss.d_loss_scale * unscaled, unscaled  # (what is differentiated, the BCE itself)
            return pass_loss

        (_, l_real), dl_real = jax.value_and_grad(scaled(bce_real), has_aux=True)(out["real"])
        (_, l_fake), dl_fake = jax.value_and_grad(scaled(bce_fake), has_aux=True)(out["fake"])
        loss_D = loss.d_loss_scale * (l_real + l_fake)  # reported as the tutorial's errD_real + errD_fake
    (grads_real,), (grads_fake,) = out["pull_real"](dl_real), out["pull_fake"](dl_fake)
    grads_D = jax.tree.map(jnp.add, grads_real, grads_fake)  # PyTorch accumulates .grad over both paths
    out.update(loss_D=loss_D, d_stats=d_stats, grads_D=_rescale(grads_D, loss.reduction, real.shape[0]))
    return out


def _iteration(G: Net, D: Net, tx_G: optax.GradientTransformation, tx_D: optax.GradientTransformation,
               state: TrainState, real: jax.Array, z: jax.Array, spec: GANSpec, draws: dict[str, jax.Array],
               rngs: dict[str, jax.Array],
               with_grads: bool = False) -> tuple[TrainState, dict[str, jax.Array], dict[str, Any] | None]:
    """D step then G step, exactly the tutorial's sequence (with the spec's variants), as a pure
    function (traced by _step). ``draws``: common/draws.py's (labels, z_gen, masks); ``rngs``: the
    dropout keys of fast mode's own dropout (else empty). Returns device values (no sync)."""
    loss = spec.loss

    # -- D step: maximise log D(x) + log(1 - D(G(z))) --
    d = _d_step(G, D, state, real, z, spec, draws, rngs)
    g_params, d_params = state["G"]["params"], state["D"]["params"]
    d_stats, g_stats = d["d_stats"], d["g_stats"]
    grads_D = d["grads_D"]  # B = the real batch for D's step (per_example); what Adam sees
    updates, opt_D = tx_D.update(grads_D, state["opt_D"], d_params)
    d_params = optax.apply_updates(d_params, updates)

    # -- G step: maximise log D(G(z)), through the updated D: the same fake, or G on a new z --
    if spec.train.g_noise == "fresh":  # seed 002: z = torch.randn(...); fake_images = G(z), G's BN advances again
        labels = draws.get("fake_labels_gen")
        forward_G = _train_forward(G, g_stats, draws["z_gen"], False, labels, pass_masks(draws, "gen", "G"),
                                   rngs.get("gen/G"))
        fake, pull_G, g_stats = jax.vjp(forward_G, g_params, has_aux=True)
    else:  # back through the D step's G forward (its saved batch statistics)
        labels, fake, pull_G = draws.get("fake_labels"), d["fake_img"], d["pull_G"]

    def D_on(x: jax.Array) -> tuple[jax.Array, Any]:
        return _train_forward(D, d_stats, x, True, labels, pass_masks(draws, "gen", "D"), rngs.get("gen/D"))(d_params)

    out_gen, pull_gen, d_stats = jax.vjp(D_on, fake, has_aux=True)  # gradient w.r.t. fake only: D unchanged
    loss_G, dl_gen = jax.value_and_grad(lambda o: bce(o, loss.real_label, loss))(out_gen)
    (d_fake,) = pull_gen(dl_gen)
    (grads_G,) = pull_G(d_fake)
    grads_G = _rescale(grads_G, loss.reduction, out_gen.shape[0])  # B = the G step's rows (per_example)
    updates, opt_G = tx_G.update(grads_G, state["opt_G"], g_params)
    g_params = optax.apply_updates(g_params, updates)

    new_state = {
        "G": {"params": g_params, "batch_stats": g_stats},
        "D": {"params": d_params, "batch_stats": d_stats},
        "opt_G": opt_G, "opt_D": opt_D, "key": state["key"],
    }
    scalars = {
        "loss_D": d["loss_D"],
        "loss_G": loss_G,
        "D_x": _probability(d["real"], loss).mean(),  # over the real rows
        "D_G_z1": _probability(d["fake"], loss).mean(),  # over z's rows
        "D_G_z2": _probability(out_gen, loss).mean(),
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


def _step(train: TrainState, real: jax.Array, z: jax.Array | None, draws: dict[str, jax.Array], cfg: StepConfig,
          with_grads: bool) -> tuple[TrainState, dict[str, jax.Array], dict[str, Any] | None]:
    """One whole iteration (D step + G step) as one function: jitted. ``z`` None (the epoch scan
    only): noise from the state's key, drawn inside the compiled function (no host round trip).
    Fast mode: the draws the host did not give from the same key (:func:`_device_draws`)."""
    if z is None:  # z's rows: train.noise_rows (seed 003's fixed-size noise may exceed the real batch)
        rows = cfg.spec.train.noise_rows(real.shape[0])
        train, z = _draw_noise(train, (rows, *channels_last_shape(cfg.spec.latent_shape)), DTYPES[cfg.dtype])
    rngs: dict[str, jax.Array] = {}
    if cfg.mode == "fast":  # which draws are missing is static (the dict's structure), not traced
        train, draws, rngs = _device_draws(train, cfg, draws, z.shape[0])
    G, D = cfg.nets()
    tx_G, tx_D = _optimizers(cfg)
    return _iteration(G, D, tx_G, tx_D, train, real, z, cfg.spec, draws, rngs, with_grads)


def _epoch(train: TrainState, reals: jax.Array, zs: jax.Array | None,
           cfg: StepConfig) -> tuple[TrainState, dict[str, jax.Array]]:
    """``lax.scan`` of :func:`_step` over a stack of equal-size batches ``(n, B, ...)``. No host
    draws: a model that needs them runs in fast mode only, on device draws (_train_epoch)."""
    def body(carry: TrainState, xs: tuple[jax.Array, jax.Array | None]):
        real, z = xs
        carry, scalars, _ = _step(carry, real, z, {}, cfg, False)
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


def train_iteration(state: Any, real: jax.Array, z: jax.Array, with_grads: bool,
                    draws: dict[str, jax.Array]) -> tuple[dict[str, Any], dict[str, jax.Array] | None]:
    """D step then G step (one compiled call), replacing ``state.train``. Returns the scalars on the
    host (one transfer for all five) and, if asked, the gradients keyed by canonical name. ``draws``
    (labels, z_gen, masks: framework arrays, checked by the template) are traced arguments; in fast
    mode with device noise only the real labels come (the rest: :func:`_device_draws`)."""
    return _run_iteration(state, _ITERATION[state.options.mode], real, z, with_grads, draws)


def _run_iteration(state: Any, jitted: Any, real: jax.Array, z: jax.Array, with_grads: bool,
                   draws: dict[str, jax.Array]) -> tuple[dict[str, Any], dict[str, jax.Array] | None]:
    """:func:`train_iteration` with the jitted iteration given: ``_ITERATION``'s, or data_parallel.py's
    (:func:`_step` jitted with the batch split over a device mesh, or its per-device shard_map form)."""
    # Parity always returns the gradients (they are computed for Adam anyway): one executable
    # serves both with_grads values. Fast mode compiles them out unless asked for.
    compiled_grads = with_grads or state.options.mode == "parity"
    run = _compiled(state, "iteration", jitted, (state.train, real, z, draws),
                    {"cfg": state.cfg, "with_grads": compiled_grads})
    state.train, scalars, grads = run(state.train, real, z, draws)
    if not with_grads:
        return jax.device_get(scalars), None
    out = {}
    for net in ("G", "D"):  # D's from the D step, G's from the G step (_iteration)
        for name in trainable_names(state.spec, net):
            _, mod, var = module_key(name, layer_of(state.spec, name))  # gradients mirror "params"
            out[name] = grads[net][mod][var]
    return jax.device_get(scalars), out


def _train_epoch(state: Any, reals: np.ndarray, zs: np.ndarray | None) -> dict[str, np.ndarray]:
    """backend.train_epoch: ``len(reals)`` iterations as ONE compiled ``lax.scan``, replacing ``state.train``.
    It takes no draws: a model that needs some (fresh z, dropout) runs in fast mode only, on device
    draws; parity mode, and a conditional GAN (its real labels come with the data), are refused."""
    spec = state.spec
    if spec.conditional or (state.options.mode == "parity" and _needed_draws(spec)):
        raise GanSuiteError(f"train_epoch: model {spec.name!r} needs per-iteration draws (" +
                            ("the real batch's labels" if spec.conditional else "fresh z, dropout masks") +
                            "), which train_epoch does not take" + ("" if spec.conditional else " in parity mode") +
                            "; use train_step" + ("" if spec.conditional else ", or fast mode (device draws)"))
    reals_j, zs_j = _stack(state, reals), None if zs is None else _stack(state, zs)
    run = _compiled(state, "epoch", _EPOCH[state.options.mode], (state.train, reals_j, zs_j), {"cfg": state.cfg})
    state.train, scalars = run(state.train, reals_j, zs_j)
    return {k: np.asarray(v, dtype=np.float64) for k, v in jax.device_get(scalars).items()}


def _stack(state: Any, stack: np.ndarray) -> jax.Array:
    """``(n, B, ...)`` canonical -> ``(n, B, ...)`` in Flax's layout, one transfer."""
    stack = np.asarray(stack)
    flat = activations_to_framework(stack.reshape(-1, *stack.shape[2:]), state.dtype, state.device)
    return flat.reshape(stack.shape[0], stack.shape[1], *flat.shape[1:])
