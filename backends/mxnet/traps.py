"""MXNet Gluon defaults that break parity, each measured with the default left in place vs corrected.

Every trap is one function ``(default: bool) -> float`` (common/traps.py): one small experiment
run with ONE setting put back to the framework's default (everything else as the backend has
it), or as the backend actually does it. Errors are max relative errors vs the float64 oracle
(common.parity.rel_err). The experiments are the ones tests/test_backend_mxnet.py asserts on,
run on the presets' own parameters.

Differences deliberately not measured here:

* ``MXNET_MKLDNN_ENABLED`` (oneDNN float32 CPU kernels, on by default in the pip wheel). MXNet
  reads it once per process, at the first operator that asks, and this module is imported
  after the backend package switched it off (backends/mxnet/__init__.py), so both settings
  cannot be run in one process. tests/test_backend_mxnet.py measures it in a fresh interpreter:
  full-size DCGAN D logits, float32, 4.2e-6 with oneDNN vs 1.3e-6 native, about 3x, under this
  table's 10x bar anyway.
* ``SigmoidBCELoss``'s ``from_sigmoid`` defaults to False: it takes logits, as the spec does
  (no trap). Its mean over the non-batch axes is the identity on D's (B, 1) / (B, 1, 1, 1)
  logits (one element per example); what does matter is that it does no batch reduction at
  all, measured below.
* ``nn.Dense``'s default ``flatten=True`` only changes shapes (inputs of rank > 2), and Gluon's
  default initialiser is irrelevant: build() overwrites every tensor from the canonical params.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon, nd
from mxnet.gluon import nn

from gansuite.common.layout import layer_of, net_of
from gansuite.common.oracle import OracleBackend, net_forward
from gansuite.common.params import Params, is_buffer, param_shapes, trainable_names
from gansuite.common.parity import rel_err
from gansuite.common.protocol import BuildOptions
from gansuite.common.spec import AdamSpec, BatchNorm, GANSpec, LeakyReLU
from gansuite.common.traps import ADAM_MEASURED_ON, DCGAN_ADAM, Trap, adam_inputs, adam_reference, case, measure_all

from .backend import MxnetBackend
from .layout import activations_from_framework, activations_to_framework, module_key, param_to_framework
from .models import GANNet, TorchBatchNorm, build_layer
from .train import SpecAdam, bce

# A swap returns the Gluon block to use for spec layer ``layer`` (prefix ``prefix``), or None for the backend's.
_Swap = Callable[[Any, int, str], "nn.HybridBlock | None"]

_CTX = mx.cpu()


def _swapped_net(spec: GANSpec, prefix: str, params: Params, swap: _Swap) -> GANNet:
    """models.build_net (float64) with some layers swapped for a Gluon-default variant, params loaded.

    Same prefixes as build_net, so layout.module_key names every tensor of the swapped blocks too
    (stock nn.BatchNorm has the same gamma/beta/running_mean/running_var as TorchBatchNorm).
    """
    net = spec.generator if prefix == "G" else spec.discriminator
    shapes = [net.input_shape, *net.shapes()]
    model = GANNet(prefix=f"{prefix}_")
    with model.name_scope():
        for i, layer in enumerate(net.layers):
            block = swap(layer, len(shapes[i]), f"{i}_")
            model.add(block if block is not None else build_layer(layer, shapes[i], f"{prefix}.{i}", np.float64,
                                                                  "parity"))
    model.cast(np.float64)  # the swapped-in stock blocks (build_layer casts its own)
    model.initialize(mx.init.Zero(), ctx=_CTX)
    gluon_params = model.collect_params()
    for name in param_shapes(spec):
        if net_of(name) == prefix:
            layer = layer_of(spec, name)
            gluon_params[module_key(name, layer)].set_data(param_to_framework(name, params[name], layer, np.float64,
                                                                              _CTX))
    return model


# -- optimizer ---------------------------------------------------------------------------------


def _spec_adam(p0: np.ndarray, grads: list[np.ndarray], cfg: AdamSpec) -> np.ndarray:
    """The backend's SpecAdam, through MXNet's own Updater (what gluon.Trainer calls), float64."""
    return _run_updater(SpecAdam(cfg), p0, grads)


def _run_updater(optimizer: mx.optimizer.Optimizer, p0: np.ndarray, grads: list[np.ndarray]) -> np.ndarray:
    updater = mx.optimizer.get_updater(optimizer)
    w = nd.array(p0, ctx=_CTX, dtype=np.float64)
    for g in grads:
        updater(0, nd.array(g, ctx=_CTX, dtype=np.float64), w)
    return w.asnumpy()


def _adam_eps_hat_error(default: bool) -> float:
    # Stock mx.optimizer.Adam with every hyper-parameter the spec's (its default epsilon 1e-8 is
    # the spec's too): the fused kernel adds epsilon to sqrt(v) BEFORE the bias correction, which
    # is folded into the step size (eps-hat), i.e. an effective PyTorch-side eps of
    # 1e-8 * sqrt(1 - 0.999^t), 3.2e-10 at t=1: steps on tiny gradients come out ~lr, not ~0.1 lr.
    cfg = DCGAN_ADAM
    p0, grads = adam_inputs(small=True)
    ref = adam_reference(p0, grads, cfg)
    if default:
        p = _run_updater(mx.optimizer.Adam(learning_rate=cfg.lr, beta1=cfg.beta1, beta2=cfg.beta2,
                                           epsilon=cfg.eps), p0, grads)
    else:
        p = _spec_adam(p0, grads, cfg)
    return rel_err(p - p0, ref - p0)[1]


def _adam_kernel_float32_error(default: bool) -> float:
    # The algebraic fix of eps-hat with the fused kernel kept: nd.adam_update with the per-step
    # epsilon eps * sqrt(1 - b2^t) and step size lr * sqrt(1 - b2^t) / (1 - b1^t), on float64
    # weights. What remains is the kernel's float32 parameters: it forms 1 - beta2 from 0.999f
    # (0.000999987, so v is 1.3e-5 off) and rounds lr and epsilon to float32. Gradients 1..10, so
    # where eps is added does not matter here.
    cfg = DCGAN_ADAM
    p0, grads = adam_inputs(small=False)
    ref = adam_reference(p0, grads, cfg)
    if not default:
        return rel_err(_spec_adam(p0, grads, cfg) - p0, ref - p0)[1]
    w = nd.array(p0, ctx=_CTX, dtype=np.float64)
    m, v = nd.zeros(p0.shape, _CTX, dtype=np.float64), nd.zeros(p0.shape, _CTX, dtype=np.float64)
    for t, g in enumerate(grads, 1):
        c1, c2 = 1 - cfg.beta1**t, 1 - cfg.beta2**t
        nd.adam_update(w, nd.array(g, ctx=_CTX, dtype=np.float64), m, v, out=w, lr=cfg.lr * math.sqrt(c2) / c1,
                       beta1=cfg.beta1, beta2=cfg.beta2, epsilon=cfg.eps * math.sqrt(c2), wd=0.0, rescale_grad=1.0)
    return rel_err(w.asnumpy() - p0, ref - p0)[1]


# -- loss reduction and Trainer.step -----------------------------------------------------------


def _applied_d_gradient_error(model: str, per_example_loss: bool, step_batch_size: bool) -> float:
    """Worst D gradient AS THE OPTIMISER APPLIES IT after one D loss backward + Trainer.step, float64.

    The optimiser is plain SGD (lr 1, no momentum, no weight decay), so each weight moves by exactly
    the gradient it was handed, rescale_grad included. ``per_example_loss``: Gluon's
    SigmoidBCELoss() returned as is (one value per example; backward() of that vector
    back-propagates its SUM), as d2l's MXNet tab does; else the backend's bce with the spec's
    explicit batch reduction. ``step_batch_size``: Trainer.step(batch_size) (rescale_grad = 1/B)
    instead of the backend's step(1).
    """
    c = case(MxnetBackend(), model)
    spec, st, params, real, z = c.spec, c.state, c.params, c.real, c.z
    loss_spec = spec.loss
    real_a = activations_to_framework(real, st.dtype, st.device)
    # G(z) outside autograd: D's step does not reach G (the tutorial's fake.detach()).
    fake_a = st.G.forward_pure(activations_to_framework(z, st.dtype, st.device), "batch")
    stock_loss = gluon.loss.SigmoidBCELoss()  # defaults: from_sigmoid=False (logits), batch_axis=0
    with autograd.record():
        out_real, out_fake = st.D(real_a)[0], st.D(fake_a)[0]  # D's raw logits, (B, 1) or (B, 1, 1, 1)
        if per_example_loss:
            loss = loss_spec.d_loss_scale * (stock_loss(out_real, nd.full(out_real.shape, loss_spec.real_label,
                                                                           _CTX, dtype=st.dtype))
                                             + stock_loss(out_fake, nd.full(out_fake.shape, loss_spec.fake_label,
                                                                            _CTX, dtype=st.dtype)))
        else:
            loss = loss_spec.d_loss_scale * (bce(out_real.reshape(-1), loss_spec.real_label, loss_spec)
                                             + bce(out_fake.reshape(-1), loss_spec.fake_label, loss_spec))
    loss.backward()
    trainable = st.trainable["D"]
    before = {k: p.data().asnumpy() for k, p in trainable.items()}
    trainer = gluon.Trainer(list(trainable.values()), "sgd", {"learning_rate": 1.0, "momentum": 0.0, "wd": 0.0},
                            kvstore=None, update_on_kvstore=False)
    trainer.step(len(real) if step_batch_size else 1)
    oracle = OracleBackend()
    ref = oracle.d_step(oracle.build(spec, params, None, BuildOptions()), real, z).grads
    return max(rel_err(before[k] - trainable[k].data().asnumpy(), ref[k])[1] for k in trainable_names(spec, "D"))


def _trainer_step_error(default: bool) -> float:
    # d2l's MXNet tab: per-example loss + trainer.step(batch_size), i.e. the batch MEAN; the
    # Gaussian GAN's spec (d2l's PyTorch tab) SUMS over the batch: gradients 1/B of the spec's.
    return _applied_d_gradient_error("gaussian", per_example_loss=default, step_batch_size=default)


def _per_example_loss_error(default: bool) -> float:
    # The tutorial's BCELoss takes the batch MEAN; Gluon's loss leaves the batch unreduced and
    # backward() of the vector sums it: with the backend's step(1), gradients B times the spec's.
    return _applied_d_gradient_error("dcgan-tiny", per_example_loss=default, step_batch_size=False)


# -- BatchNorm -----------------------------------------------------------------------------------


def _running_stats_error(bn_swap: _Swap | None) -> float:
    """Worst BN running statistic of G after ONE train-mode forward + backward (dcgan-tiny, float64).

    The backend's G commits its running statistics right after the forward (train.py); a stock
    Gluon BatchNorm updates its own inside the backward pass, so both get a forward under
    autograd.record() and a backward, and are read after it.
    """
    c = case(MxnetBackend())
    spec, st, params = c.spec, c.state, c.params
    z_a = activations_to_framework(c.z, st.dtype, st.device)
    if bn_swap is None:  # the backend's own G
        model = st.G
    else:
        model = _swapped_net(spec, "G", params,
                             lambda layer, rank, prefix: bn_swap(layer, rank, prefix)
                             if isinstance(layer, BatchNorm) else None)
    with autograd.record():
        y, *stats = model(z_a)
        if stats:  # only TorchBatchNorm returns its updated statistics (train._forward does the same)
            with autograd.pause():
                model.commit_running_stats(stats)
    y.backward()
    got = {p.name: p.data().asnumpy() for p in model.collect_params().values()}
    ref = net_forward(spec.generator, params, "G", np.asarray(c.z, np.float64))[1].running
    return max(rel_err(got[module_key(k, layer_of(spec, k))], want)[1] for k, want in ref.items() if is_buffer(k))


def _bn_momentum_error(default: bool) -> float:
    # Gluon's momentum is the weight on the OLD value (its default 0.9 IS the spec's 0.1 on the
    # new one); PyTorch's momentum=0.1 copied verbatim weights the new statistic 0.9. Only the
    # momentum differs: the block is the backend's TorchBatchNorm (unbiased running variance,
    # updated after the forward) given the verbatim convention.
    def swap(layer: BatchNorm, rank: int, prefix: str) -> nn.HybridBlock:
        return TorchBatchNorm(dataclasses.replace(layer, momentum=1.0 - layer.momentum), rank, prefix)
    return _running_stats_error(swap if default else None)


def _bn_biased_var_error(default: bool) -> float:
    # Stock nn.BatchNorm with its defaults (momentum 0.9 on the old value and epsilon 1e-5: both
    # the spec's): its op updates the running statistics in the BACKWARD pass with the BIASED
    # batch variance; the spec (PyTorch) after the forward with the unbiased n/(n-1) one.
    def swap(layer: BatchNorm, rank: int, prefix: str) -> nn.HybridBlock:
        return nn.BatchNorm(in_channels=layer.num_features, prefix=prefix)  # axis=1 (NCHW), defaults
    return _running_stats_error(swap if default else None)


# -- LeakyReLU -----------------------------------------------------------------------------------


def _leaky_relu_error(default: bool) -> float:
    """D(x) of dcgan-tiny, float64, with stock nn.LeakyReLU(alpha=0.2): its LeakyReLU operator keeps
    the slope as a C++ float, so it acts as 0.200000003 (nn.LeakyReLU has no default alpha at all)."""
    backend = MxnetBackend()
    c = case(backend)
    ref = c.oracle_D()
    if not default:
        return rel_err(backend.discriminate(c.state, c.real), ref)[1]

    def swap(layer: Any, rank: int, prefix: str) -> nn.HybridBlock | None:
        return nn.LeakyReLU(alpha=layer.slope, prefix=prefix) if isinstance(layer, LeakyReLU) else None

    net = _swapped_net(c.spec, "D", c.params, swap)
    y = net.forward_pure(activations_to_framework(c.real, c.state.dtype, c.state.device), "batch")
    return rel_err(activations_from_framework(y).reshape(-1), ref)[1]


_RUNNING = "G's BN running mean/var after one train-mode forward + backward, dcgan-tiny, batch 16, float64"

TRAPS = [
    Trap("mx.optimizer.Adam (fused adam_update) adds epsilon to sqrt(v) before the bias correction, folded into "
         "the step size (eps-hat); spec (PyTorch): eps added to sqrt(v_hat)",
         f"{ADAM_MEASURED_ON}, gradients 1e-9..1; in units of the largest reference change (~3 lr)",
         _adam_eps_hat_error),
    Trap("nd.adam_update (even with eps and lr corrected per step) keeps lr, betas and epsilon as float32 "
         "(1 - 0.999f = 0.000999987) for float64 weights; spec: exact float64",
         f"{ADAM_MEASURED_ON}, |gradients| 1..10 (eps placement negligible); in units of the largest "
         "reference change (~3 lr)", _adam_kernel_float32_error),
    Trap("Trainer.step(batch_size) rescales every gradient by 1/batch_size (d2l's MXNet tab: per-example loss + "
         "step(B) = batch mean); spec sums over the batch: backend step(1)",
         "D gradients as applied by the optimiser (SGD, lr 1), one D step, gaussian, batch 8, float64",
         _trainer_step_error),
    Trap("gluon.loss.SigmoidBCELoss returns one loss per example (no batch reduction; backward() of the vector = "
         "of its SUM); spec (the tutorial's BCELoss): batch mean",
         "D gradients as applied by the optimiser (SGD, lr 1, step(1)), one D step, dcgan-tiny, batch 16, float64",
         _per_example_loss_error),
    Trap("Gluon BatchNorm momentum is the weight on the OLD value (default 0.9 = spec's 0.1); PyTorch's "
         "momentum=0.1 copied verbatim weights the new statistic 0.9", _RUNNING, _bn_momentum_error),
    Trap("Gluon BatchNorm (defaults) updates running stats in backward with the BIASED batch variance; spec "
         "(PyTorch): after the forward, unbiased n/(n-1)", _RUNNING, _bn_biased_var_error),
    Trap("nn.LeakyReLU (no default alpha; spec's 0.2 passed) keeps the slope as a C++ float: 0.2 -> 0.200000003 "
         "in float64; backend: ExactLeakyReLU max(x, 0.2 x)", "D(x), dcgan-tiny, batch 16, float64",
         _leaky_relu_error),
]


def run_traps() -> list[dict[str, Any]]:
    return measure_all(TRAPS, MxnetBackend.name)
