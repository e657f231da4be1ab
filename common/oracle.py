"""The float64 NumPy oracle: both models, forward, hand-written backward, Adam.

It implements the backend protocol (as backend ``oracle``), so the same loop,
traces and comparisons run on it. Everything is float64 whatever is asked;
it is the reference the framework backends are measured against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

import numpy as np

from . import oracle_layers as L
from .draws import Draws, check_draws, check_labels, pass_masks
from .params import OptState, Params, copy_opt_state, trainable_names, zero_opt_state
from .protocol import BuildOptions, GANProtocol, StepOutput
from .spec import (AdamSpec, BatchNorm, Conv2d, ConvTranspose2d, Dense, Dropout, EmbedConcat, Flatten, GANSpec,
                   LossSpec, NetSpec, Reshape)


def _layer_params(params: Params, prefix: str) -> dict[str, np.ndarray]:
    n = len(prefix)
    return {k[n:]: v for k, v in params.items() if k.startswith(prefix)}


@dataclass
class NetRun:
    """Caches of one forward pass, for the backward pass."""

    caches: list[Any] = field(default_factory=list)
    running: Params = field(default_factory=dict)  # updated running stats (canonical names)


def net_forward(net: NetSpec, params: Params, prefix: str, x: np.ndarray, bn: str = "batch",
                labels: np.ndarray | None = None, masks: dict[int, np.ndarray] | None = None) -> tuple[np.ndarray, NetRun]:
    """One forward pass. ``labels`` feed the net's embed_concat layer; ``masks`` (layer index ->
    pre-scaled keep mask, common/draws.py) its Dropout layers, which are the identity without one."""
    run = NetRun()
    masks = masks or {}
    for i, layer in enumerate(net.layers):
        lp = _layer_params(params, f"{prefix}.{i}.")
        if isinstance(layer, Dense):
            x, cache = L.dense_forward(layer, lp, x)
        elif isinstance(layer, Conv2d):
            x, cache = L.conv2d_forward(layer, lp, x)
        elif isinstance(layer, ConvTranspose2d):
            x, cache = L.conv_transpose2d_forward(layer, lp, x)
        elif isinstance(layer, BatchNorm):
            x, cache = L.batch_norm_forward(layer, lp, x, use_batch_stats=(bn == "batch"))
            if bn == "batch":
                for k, v in L.batch_norm_running_update(layer, lp, cache).items():
                    run.running[f"{prefix}.{i}.{k}"] = v
        elif isinstance(layer, (Flatten, Reshape)):
            x, cache = L.reshape_forward(x, layer.output_shape(x.shape[1:]))
        elif isinstance(layer, Dropout):
            x, cache = L.dropout_forward(x, masks.get(i))
        elif isinstance(layer, EmbedConcat):
            x, cache = L.embed_concat_forward(layer, lp, x, labels)
        else:
            x, cache = L.activation_forward(layer, x)
        run.caches.append(cache)
    return x, run


def net_backward(net: NetSpec, params: Params, prefix: str, run: NetRun, dy: np.ndarray) -> tuple[np.ndarray, Params]:
    grads: Params = {}
    for i in reversed(range(len(net.layers))):
        layer, cache = net.layers[i], run.caches[i]
        lp = _layer_params(params, f"{prefix}.{i}.")
        if isinstance(layer, Dense):
            dy, g = L.dense_backward(layer, lp, cache, dy)
        elif isinstance(layer, Conv2d):
            dy, g = L.conv2d_backward(layer, lp, cache, dy)
        elif isinstance(layer, ConvTranspose2d):
            dy, g = L.conv_transpose2d_backward(layer, lp, cache, dy)
        elif isinstance(layer, BatchNorm):
            dy, g = L.batch_norm_backward(layer, lp, cache, dy)
        elif isinstance(layer, (Flatten, Reshape)):
            dy, g = L.reshape_backward(cache, dy), {}
        elif isinstance(layer, Dropout):
            dy, g = L.dropout_backward(cache, dy), {}
        elif isinstance(layer, EmbedConcat):
            dy, g = L.embed_concat_backward(layer, lp, cache, dy)
        else:
            dy, g = L.activation_backward(layer, cache, dy), {}
        for k, v in g.items():
            grads[f"{prefix}.{i}.{k}"] = v
    return dy, grads


def bce(out: np.ndarray, target: float, loss: LossSpec) -> tuple[float, np.ndarray]:
    """The spec's BCE on D's output: with logits, or on D's Sigmoid output (``loss.on``)."""
    if loss.on == "probabilities":
        value, grad = L.bce_probabilities(out.reshape(out.shape[0]), target, loss.reduction)
        return value, grad.reshape(out.shape)
    return L.bce_with_logits(out, target, loss.reduction)


def probability(out: np.ndarray, loss: LossSpec) -> np.ndarray:
    """D's output as a probability: the sigmoid of a logit, or the output itself (``loss.on``)."""
    return out if loss.on == "probabilities" else L.sigmoid(out)


#: ``net_backward``'s signature: what ``d_grads``/``g_grads`` call (parity passes a memoising one).
Backward = Callable[[NetSpec, Params, str, NetRun, np.ndarray], tuple[np.ndarray, Params]]


def adam_update(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, step: int, opt: AdamSpec):
    """One Adam step in the spec's form.

    ``torch``: ``p -= lr * m_hat / (sqrt(v_hat) + eps)`` (eps AFTER bias correction);
    ``eps_hat`` (Keras, MXNet): ``p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``,
    the step size formed in float64 first, as MXNet's optimizer does in Python."""
    m = opt.beta1 * m + (1 - opt.beta1) * g
    v = opt.beta2 * v + (1 - opt.beta2) * g * g
    if opt.form == "eps_hat":
        alpha = opt.lr * np.sqrt(1 - opt.beta2**step) / (1 - opt.beta1**step)
        return p - alpha * m / (np.sqrt(v) + opt.eps), m, v
    m_hat = m / (1 - opt.beta1**step)
    v_hat = v / (1 - opt.beta2**step)
    return p - opt.lr * m_hat / (np.sqrt(v_hat) + opt.eps), m, v


@dataclass
class DStep:
    fake: np.ndarray
    run_g: NetRun  # G's forward caches, reused by the G step's backward
    loss_D: float
    D_x: float
    D_G_z1: float
    grads: Params
    # kept so the backward can be redone with other branches at kinks (common/kinks.py)
    run_real: NetRun = field(default_factory=NetRun)
    run_fake: NetRun = field(default_factory=NetRun)
    dlogits_real: np.ndarray | None = None
    dlogits_fake: np.ndarray | None = None


@dataclass
class GStep:
    loss_G: float
    D_G_z2: float
    grads: Params
    run_gen: NetRun = field(default_factory=NetRun)  # D (after its step) on the G step's fake
    dlogits_gen: np.ndarray | None = None
    run_g: NetRun = field(default_factory=NetRun)  # the G forward it back-propagates through


@dataclass
class OracleState:
    spec: GANSpec
    params: Params
    opt: OptState


class OracleBackend(GANProtocol):
    name = "oracle"

    def versions(self) -> dict[str, str]:
        return {"numpy": np.__version__}

    def build(self, spec: GANSpec, params: Params, opt_state: OptState | None, options: BuildOptions) -> OracleState:
        params = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
        opt = copy_opt_state(opt_state if opt_state is not None else zero_opt_state(spec), np.float64)
        return OracleState(spec, params, opt)

    def generate(self, state: OracleState, z: np.ndarray, bn: str = "batch",
                 labels: np.ndarray | None = None) -> np.ndarray:
        labels = check_labels(labels, state.spec, len(z))
        return net_forward(state.spec.generator, state.params, "G", np.asarray(z, np.float64), bn, labels)[0]

    def discriminate(self, state: OracleState, x: np.ndarray, bn: str = "batch",
                     labels: np.ndarray | None = None) -> np.ndarray:
        labels = check_labels(labels, state.spec, len(x))
        out = net_forward(state.spec.discriminator, state.params, "D", np.asarray(x, np.float64), bn, labels)[0]
        return out.reshape(out.shape[0])

    def train_step(self, state: OracleState, real: np.ndarray, z: np.ndarray | None, with_grads: bool = False,
                   draws: Draws | None = None) -> StepOutput:
        if z is None:
            raise ValueError("the oracle has no device RNG: pass z (parity mode)")
        d = self.d_step(state, real, z, draws)
        self.adam_step(state, "D", d.grads)
        g = self.g_step(state, d, draws)
        self.adam_step(state, "G", g.grads)
        return StepOutput(
            loss_D=d.loss_D, loss_G=g.loss_G, D_x=d.D_x, D_G_z1=d.D_G_z1, D_G_z2=g.D_G_z2,
            grads={**g.grads, **d.grads} if with_grads else None,
        )

    def d_step(self, state: OracleState, real: np.ndarray, z: np.ndarray, draws: Draws | None = None) -> "DStep":
        """D(real), G(z), D(fake.detach()) -- or, with ``d_order="fake_first"`` (seed 004), G(z),
        D(fake), D(real); running stats advance after each forward. No Adam. ``draws``: labels and
        dropout masks (common/draws.py) for a conditional GAN or one with dropout."""
        spec, p, loss = state.spec, state.params, state.spec.loss
        G, D = spec.generator, spec.discriminator
        draws = check_draws(spec, draws, len(real), len(z))
        real = np.asarray(real, np.float64)

        def real_pass() -> tuple[np.ndarray, NetRun]:
            out, run = net_forward(D, p, "D", real, "batch", draws.get("labels"), pass_masks(draws, "real", "D"))
            p.update(run.running)
            return out, run

        if spec.train.d_order == "real_first":
            out_real, run_real = real_pass()
        fake_labels = draws.get("fake_labels")
        fake, run_g = net_forward(G, p, "G", np.asarray(z, np.float64), "batch", fake_labels,
                                  pass_masks(draws, "fake", "G"))
        p.update(run_g.running)
        out_fake, run_fake = net_forward(D, p, "D", fake, "batch", fake_labels, pass_masks(draws, "fake", "D"))
        p.update(run_fake.running)
        if spec.train.d_order == "fake_first":
            out_real, run_real = real_pass()
        l_real, d_real = bce(out_real, loss.real_label, loss)
        l_fake, d_fake = bce(out_fake, loss.fake_label, loss)
        d = DStep(
            fake=fake, run_g=run_g,
            loss_D=loss.d_loss_scale * (l_real + l_fake),
            D_x=float(probability(out_real, loss).mean()), D_G_z1=float(probability(out_fake, loss).mean()),
            grads={}, run_real=run_real, run_fake=run_fake,
            dlogits_real=loss.d_loss_scale * d_real, dlogits_fake=loss.d_loss_scale * d_fake,
        )
        d.grads = self.d_grads(state, d)
        return d

    def d_grads(self, state: OracleState, d: "DStep", backward: Backward = net_backward) -> Params:
        """D's gradients from the D step's forward caches, with D's weights as they were at the D
        step (redone by common/parity.py after a kink flip, with a memoising ``backward``)."""
        g_real, g_fake = self.d_grad_parts(state, d, backward)
        # The two passes' gradients are summed whether one backward or two produced them
        # (train.d_backward): the sum is the same numbers, real + fake.
        return {k: g_real[k] + g_fake[k] for k in g_real}

    def d_grad_parts(self, state: OracleState, d: "DStep", backward: Backward = net_backward) -> tuple[Params, Params]:
        """D's gradients from the real and from the fake pass, each already rescaled as the spec's
        reduction says (common/parity.py measures D gradients against the size of these terms)."""
        D, p, reduction = state.spec.discriminator, state.params, state.spec.loss.reduction
        _, g_real = backward(D, p, "D", d.run_real, d.dlogits_real)
        _, g_fake = backward(D, p, "D", d.run_fake, d.dlogits_fake)
        return (L.rescale(g_real, reduction, len(d.dlogits_real)), L.rescale(g_fake, reduction, len(d.dlogits_real)))

    def g_step(self, state: OracleState, d: "DStep", draws: Draws | None = None) -> "GStep":
        """D (as it is now, i.e. after its step) on the D step's fake, or with ``g_noise="fresh"``
        (seed 002) on G of a new z and new fake labels; gradient through D into G. No Adam."""
        spec, p, loss = state.spec, state.params, state.spec.loss
        draws = check_draws(spec, draws, None, len(d.fake))
        if spec.train.g_noise == "fresh":
            labels = draws.get("fake_labels_gen")
            fake, run_g = net_forward(spec.generator, p, "G", draws["z_gen"], "batch", labels,
                                      pass_masks(draws, "gen", "G"))
            p.update(run_g.running)
        else:
            fake, run_g, labels = d.fake, d.run_g, draws.get("fake_labels")
        out_gen, run_gen = net_forward(spec.discriminator, p, "D", fake, "batch", labels, pass_masks(draws, "gen", "D"))
        p.update(run_gen.running)
        l_gen, d_gen = bce(out_gen, loss.real_label, loss)
        g = GStep(loss_G=l_gen, D_G_z2=float(probability(out_gen, loss).mean()), grads={}, run_gen=run_gen,
                  dlogits_gen=d_gen, run_g=run_g)
        g.grads = self.g_grads(state, d, g)
        return g

    def g_grads(self, state: OracleState, d: "DStep", g: "GStep", backward: Backward = net_backward) -> Params:
        """G's gradients through D (after its step) and the G step's G forward caches."""
        spec, p = state.spec, state.params
        d_fake_img, _ = backward(spec.discriminator, p, "D", g.run_gen, g.dlogits_gen)
        _, grads_G = backward(spec.generator, p, "G", g.run_g, d_fake_img)
        return L.rescale(grads_G, spec.loss.reduction, len(g.dlogits_gen))

    def adam_step(self, state: OracleState, net: str, grads: Params) -> None:
        cfg = state.spec.train.optim_G if net == "G" else state.spec.train.optim_D
        adam = state.opt[net]
        adam.step += 1
        for name in trainable_names(state.spec, net):
            state.params[name], adam.m[name], adam.v[name] = adam_update(
                state.params[name], grads[name], adam.m[name], adam.v[name], adam.step, cfg
            )

    def export_params(self, state: OracleState) -> tuple[Params, OptState]:
        return {k: v.copy() for k, v in state.params.items()}, copy_opt_state(state.opt)
