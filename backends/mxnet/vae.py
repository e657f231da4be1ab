"""MXNet Gluon primitives of the VAE template (common/vae_backend.py), in the template's order.

The seed's ``VAE`` module and loop body (seed 002, 8.1.3) on the GAN backend's pieces: the four nets
are ``models.build_net`` (``HybridSequential`` of nn.Dense / Activation, flatten=False, named so
``layout.module_key`` maps ``"E.0.weight"`` to Gluon's ``"E_0_weight"``), the one optimizer is
train.py's ``SpecAdam`` in a ``gluon.Trainer`` over E, mu, logvar, Dec, and the reconstruction
loss is PyTorch's ``F.binary_cross_entropy(..., reduction="sum")``, which Gluon does not have
(see :func:`_bce_sum`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon, nd

from gansuite.common.errors import GanSuiteError
from gansuite.common.protocol import BuildOptions
from gansuite.common.vae import VAE_NETS, VAESpec, vae_param_shapes
from gansuite.common.vae_backend import VAEBackendState, vae_layer_of

from . import layout
from .models import GANNet, build_net
from .train import _BACKWARD_EPS, _LOG_CLAMP, SpecAdam, make_adam


class _VAEForward(gluon.HybridBlock):
    """The seed's ``forward`` (encode, ``reparameterize`` with the given eps, decode) as ONE block
    over the four nets: imperative in parity mode, one hybridized graph in fast mode (what
    ``torch.compile(_vae_forward)`` is for the torch backend). The nets are registered as children
    after they were built outside this block's name scope, so their parameters keep the names
    build_net gave them (``"E_0_weight"``, ...): this block owns no parameter of its own."""

    def __init__(self, nets: dict[str, GANNet]) -> None:
        super().__init__(prefix="vae_")
        for name, net in nets.items():
            self.register_child(net, name)

    def hybrid_forward(self, F: Any, x: Any, eps: Any) -> tuple[Any, Any, Any]:
        # A GANNet returns (y, *BatchNorm running stats): a 1-tuple here (no BatchNorm in a VAE
        # net), a list when hybridized; [0] is the output either way.
        nets = self._children
        h = nets["E"](x)[0]
        mu, log_var = nets["mu"](h)[0], nets["logvar"](h)[0]
        # Python float scalars reach MXNet's scalar operators as doubles, so "/ 2" stays exact in
        # float64 (unlike a C++ float operator parameter: models.ExactLeakyReLU).
        std = F.exp(log_var / 2)
        z = mu + eps * std
        return nets["Dec"](z)[0], mu, log_var


@dataclass
class MxnetVAEState(VAEBackendState):
    nets: dict[str, GANNet]  # E, mu, logvar, Dec
    run: _VAEForward  # the seed's forward over the nets; hybridized in fast mode
    trainer: gluon.Trainer  # one SpecAdam over all four nets: the seed's Adam(model.parameters())
    params: dict[str, gluon.Parameter]  # canonical name -> Gluon Parameter, the seed's parameters() order


def create_state(spec: VAESpec, options: BuildOptions, dtype: type, device: mx.Context) -> MxnetVAEState:
    nets = {net: build_net(spec.net(net), net, dtype, options.mode) for net in VAE_NETS}
    for net in nets.values():
        # build_net casts before initialize, so the arrays are created in the dtype. The initializer
        # is irrelevant: the template overwrites every tensor from the canonical params next.
        net.initialize(mx.init.Zero(), ctx=device)
    params = {name: nets[name.split(".")[0]].collect_params()[layout.module_key(name, vae_layer_of(spec, name))]
              for name in vae_param_shapes(spec)}  # E, mu, logvar, Dec: fc1..fc5, the seed's order
    unmatched = {k for net in nets.values() for k in net.collect_params()} - {p.name for p in params.values()}
    if unmatched:
        raise GanSuiteError(f"mxnet: Gluon parameters without a canonical name: {sorted(unmatched)}")
    # MXNet's own Adam (fused adam_update) is the eps-hat form with float32 coefficients: SpecAdam
    # is the spec's form in double arithmetic (train.py). The Trainer's index i is params' i-th
    # tensor (make_adam keeps the order), and one optimizer means one step counter for all.
    trainer = make_adam(spec.train.optim, params.values(), options.mode)
    run = _VAEForward(nets)
    if options.mode == "fast":
        # Gluon's compiler, as the GAN fast mode: one cached graph (here the whole forward, the
        # four nets and the reparameterisation), memory planned once (static_alloc) for fixed
        # input shapes (static_shape; a short last batch is another shape, planned again). No
        # mx.random.seed: eps comes from the host, the VAE draws nothing on the device.
        run.hybridize(active=True, static_alloc=True, static_shape=True)
    return MxnetVAEState(spec, options, dtype, device, nets, run, trainer, params)


def write_tensor(state: MxnetVAEState, name: str, value: nd.NDArray) -> None:
    state.params[name].set_data(value)


def read_tensor(state: MxnetVAEState, name: str) -> nd.NDArray:
    return state.params[name].data(state.device)


def write_adam(state: MxnetVAEState, step: int, m: dict[str, nd.NDArray], v: dict[str, nd.NDArray]) -> None:
    # MXNet keeps the step count in the optimizer (num_update) and the moments in the Updater,
    # created lazily at the first update: SpecAdam.restore sets both before that update.
    opt: SpecAdam = state.trainer.optimizer
    opt.restore(step, {i: (m[k], v[k]) for i, k in enumerate(state.params)})


def read_adam(state: MxnetVAEState) -> tuple[int, dict[str, nd.NDArray], dict[str, nd.NDArray]]:
    opt: SpecAdam = state.trainer.optimizer
    m, v = {}, {}
    for i, (name, p) in enumerate(state.params.items()):
        # SpecAdam creates the moments lazily, at a parameter's first update: zeros before.
        zeros = nd.zeros(p.shape, state.device, dtype=state.dtype)
        m[name], v[name] = opt.moments.get(i, (zeros, zeros))
    return int(opt.num_update), m, v


def forward(state: MxnetVAEState, x: nd.NDArray, eps: nd.NDArray) -> tuple[nd.NDArray, ...]:
    # Outside autograd.record(): nothing is recorded (torch's no_grad), and no state changes.
    return tuple(state.run(x, eps))


def decode(state: MxnetVAEState, z: nd.NDArray) -> nd.NDArray:
    # The decoder alone, outside autograd.record() (torch's no_grad). In fast mode Dec was
    # hybridized with the whole forward (hybridize reaches every child), so called on its own it
    # runs as its own cached graph.
    return state.nets["Dec"](z)[0]


def _bce_sum(p: nd.NDArray, x: nd.NDArray) -> nd.NDArray:
    """PyTorch's ``F.binary_cross_entropy(p, x, reduction="sum")`` for soft targets ``x`` in [0, 1]:
    train._probability_bce (the GANs' ``loss.on="probabilities"``) with an array target.

    Value: ``sum(-(x max(log p, -100) + (1 - x) max(log1p(-p), -100)))``. Gradient: PyTorch's own
    ``(p - x) / max((1 - p) p, 1e-12)``, not autograd of the value, which is NaN (``0 * inf``)
    wherever p saturates to exactly 0 or 1. Gluon has no such loss: SigmoidBCELoss(from_sigmoid=True)
    adds 1e-12 inside each log instead of clamping, and its per-example means are no sum.

    The gradient is attached with native operators, as train.py does: ``value + (s - BlockGrad(s))``
    with ``s = sum(p * BlockGrad(g))`` is the value exactly and back-propagates ``g`` to p. Not an
    ``autograd.Function``: its Python backward can deadlock MXNet's threaded engine (train.py).
    """
    with autograd.pause():
        per = -(x * nd.maximum(nd.log(p), _LOG_CLAMP) + (1 - x) * nd.maximum(nd.log1p(-p), _LOG_CLAMP))
        value = per.sum()
        grad = (p - x) / nd.maximum((1 - p) * p, _BACKWARD_EPS)
    surrogate = (p * grad).sum()  # recorded: d/dp = grad (a constant, computed under pause)
    return value + (surrogate - nd.BlockGrad(surrogate))


def train_iteration(state: MxnetVAEState, x: nd.NDArray, eps: nd.NDArray,
                    with_grads: bool) -> tuple[dict[str, float], dict[str, nd.NDArray] | None]:
    with autograd.record():
        x_reconst, mu, log_var = state.run(x, eps)
        reconst_loss = _bce_sum(x_reconst, x)
        # The seed's KL line; mu.pow(2) as square (x * x, exact as torch's pow(x, 2)).
        kl_div = -0.5 * nd.sum(1 + log_var - nd.square(mu) - nd.exp(log_var))
        loss = reconst_loss + kl_div
    # grad_req='write': backward overwrites the last step's gradients, the seed's zero_grad().
    loss.backward()
    # Copies: the next backward overwrites p.grad() in place.
    grads = {name: p.grad().copy() for name, p in state.params.items()} if with_grads else None
    # step(1): rescale_grad = 1/1, the gradients as the summed loss gives them (Trainer.step(B),
    # MXNet's convention, would apply the batch mean's 1/B that the seed's sum does not have).
    state.trainer.step(1)
    # One host copy (the iteration's only sync) for the three losses, computed before the step.
    values = nd.concat(reconst_loss.reshape((1,)), kl_div.reshape((1,)), loss.reshape((1,)), dim=0)
    reconstruction, kl, total = (float(v) for v in values.asnumpy().astype(np.float64))
    return {"reconstruction": reconstruction, "kl": kl, "total": total}, grads
