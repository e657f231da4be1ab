"""MXNet Gluon implementation of the backend protocol (common/protocol.py)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import mxnet as mx
import numpy as np
from mxnet import gluon, nd

from gansuite.common.errors import GanSuiteError
from gansuite.common.params import AdamState, OptState, Params, net_spec, param_shapes, trainable_names
from gansuite.common.protocol import Backend, BuildOptions, StepOutput
from gansuite.common.spec import GANSpec

from . import ENV_FLAGS, onednn_enabled
from .layout import (MX_DTYPES, activations_from_framework, activations_to_framework, module_key,
                     param_from_framework, param_to_framework)
from .models import GANNet, build_net
from .train import SpecAdam, make_adam, train_iteration


@dataclass
class MxnetState:
    spec: GANSpec
    options: BuildOptions
    dtype: type
    ctx: mx.Context
    G: GANNet
    D: GANNet
    trainer_G: gluon.Trainer
    trainer_D: gluon.Trainer
    params: dict[str, gluon.Parameter]  # canonical name -> Gluon Parameter (buffers included)
    trainable: dict[str, dict[str, gluon.Parameter]]  # "G"/"D" -> canonical name -> Parameter, Adam's order
    # Fast mode: wall time of the first train_step (graph building, memory planning and that
    # iteration itself); a benchmark subtracts a steady-state step to get the build cost.
    compile_s: float | None = None
    steps: int = 0  # train_step calls on this state


def _context(device: str) -> mx.Context:
    if device in ("cuda", "gpu"):
        if mx.context.num_gpus() == 0:
            raise GanSuiteError("device: 'cuda' asked for but this MXNet build sees no GPU; allowed here: cpu")
        return mx.gpu(0)
    if device != "cpu":
        raise GanSuiteError(f"device: unknown device {device!r}; allowed: cpu, cuda")
    return mx.cpu()


def _check_numerics(mode: str) -> None:
    # MXNet reads MXNET_MKLDNN_ENABLED once, at the first operator that asks, and then never
    # again: it cannot be switched per build as torch.backends.mkldnn can. __init__.py sets it
    # to 0 unless the user chose; a parity build under oneDNN is refused (see __init__.py).
    if mode == "parity" and onednn_enabled():
        raise GanSuiteError(
            "mxnet: parity mode needs oneDNN off (MXNET_MKLDNN_ENABLED=0 before mxnet runs its first "
            "operator); this process has it on. Unset MXNET_MKLDNN_ENABLED or set it to 0.")


class MxnetBackend(Backend):
    name = "mxnet"

    def versions(self) -> dict[str, str]:
        return {"mxnet": mx.__version__, "numpy": np.__version__}

    def build(self, spec: GANSpec, params: Params, opt_state: OptState | None, options: BuildOptions) -> MxnetState:
        _check_numerics(options.mode)
        ctx = _context(options.device)
        if options.dtype not in MX_DTYPES:
            raise GanSuiteError(f"dtype: {options.dtype!r} is not supported; allowed: {', '.join(MX_DTYPES)}")
        dtype = MX_DTYPES[options.dtype]
        nets = {"G": build_net(spec.generator, "G"), "D": build_net(spec.discriminator, "D")}
        by_name: dict[str, gluon.Parameter] = {}
        for net_name, net in nets.items():
            # cast before initialize: the arrays are created in the dtype. The initializer is
            # irrelevant: every tensor is overwritten from the canonical params below, and one
            # without a canonical name is an error. (d2l's MXNet tab relies on init.Normal, which
            # reaches weights only, not biases; Gluon's default is Uniform(0.07).)
            net.cast(dtype)
            net.initialize(mx.init.Zero(), ctx=ctx)
            gluon_params = net.collect_params()
            for i, layer in enumerate(net_spec(spec, net_name).layers):
                for name in param_shapes(spec):
                    if name.startswith(f"{net_name}.{i}."):
                        by_name[name] = gluon_params[module_key(name, layer)]
            unmatched = set(gluon_params.keys()) - {p.name for p in by_name.values()}
            if unmatched:
                raise GanSuiteError(f"mxnet: Gluon parameters without a canonical name: {sorted(unmatched)}")
        missing = set(param_shapes(spec)) - set(params)
        if missing:
            raise GanSuiteError(f"params: do not match the spec (missing {sorted(missing)})")
        for name, p in by_name.items():
            value = np.asarray(params[name])
            if tuple(value.shape) != tuple(p.shape):
                raise GanSuiteError(f"params: {name} has shape {value.shape}, the spec needs {p.shape}")
            p.set_data(param_to_framework(name, value, dtype, ctx))

        trainers = {}
        for net_name in ("G", "D"):
            names = trainable_names(spec, net_name)
            adam = opt_state[net_name] if opt_state is not None else AdamState()
            moments = {i: (param_to_framework(k, adam.m[k], dtype, ctx), param_to_framework(k, adam.v[k], dtype, ctx))
                       for i, k in enumerate(names)} if adam.step > 0 else None
            cfg = spec.train.optim_G if net_name == "G" else spec.train.optim_D
            trainers[net_name] = make_adam([by_name[k] for k in names], cfg, adam.step, moments)

        if options.mode == "fast":
            # Gluon's compiler: one cached graph per net, memory planned once (static_alloc) for
            # fixed input shapes (static_shape). Built at the first call: see compile_s.
            for net in nets.values():
                net.hybridize(active=True, static_alloc=True, static_shape=True)
            # Device-side noise: MXNet's RNG is one generator per device, process-wide (not per
            # state): two fast-mode states in one process draw from the same stream.
            mx.random.seed(options.seed, ctx=ctx)
        trainable = {net: {k: by_name[k] for k in trainable_names(spec, net)} for net in ("G", "D")}
        return MxnetState(spec, options, dtype, ctx, nets["G"], nets["D"], trainers["G"], trainers["D"], by_name,
                          trainable)

    def generate(self, state: MxnetState, z: np.ndarray, bn: str = "batch") -> np.ndarray:
        return self._forward(state, state.G, z, bn)

    def discriminate(self, state: MxnetState, x: np.ndarray, bn: str = "batch") -> np.ndarray:
        out = self._forward(state, state.D, x, bn)
        return out.reshape(out.shape[0])

    def train_step(self, state: MxnetState, real: np.ndarray, z: np.ndarray | None, with_grads: bool = False) -> StepOutput:
        first = state.steps == 0 and state.options.mode == "fast"
        t0 = time.perf_counter()
        report, grads = self._step(state, real, z, with_grads)
        values = report.asnumpy().astype(np.float64)  # the one host sync of the iteration
        if first:
            state.compile_s = time.perf_counter() - t0
        state.steps += 1
        logits = values[2:].reshape(3, -1)  # D(x), D(G(z)) before and after D's step
        D_x, D_G_z1, D_G_z2 = (float(_sigmoid(row).mean()) for row in logits)
        out = StepOutput(float(values[0]), float(values[1]), D_x, D_G_z1, D_G_z2)
        if grads is not None:
            out.grads = {k: param_from_framework(k, v) for k, v in grads.items()}
        return out

    def export_params(self, state: MxnetState) -> tuple[Params, OptState]:
        params = {name: param_from_framework(name, state.params[name].data(state.ctx)) for name in param_shapes(state.spec)}
        return params, OptState(_export_adam(state, "G"), _export_adam(state, "D"))

    def settings(self, state: MxnetState) -> dict[str, Any]:
        features = mx.runtime.Features()
        return {
            "mode": state.options.mode,
            "dtype": state.options.dtype,
            "device": str(state.ctx),
            "hybridized": state.options.mode == "fast",
            "static_alloc": state.options.mode == "fast",
            "onednn_built": features.is_enabled("MKLDNN"),
            "onednn_enabled": onednn_enabled(),
            "cuda_built": features.is_enabled("CUDA"),
            "env": {k: os.environ.get(k) for k in ENV_FLAGS},
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "cpu_count": os.cpu_count(),
            "compile_s": state.compile_s,
            "adam": "SpecAdam: the spec's (PyTorch's) eps placement, one CachedOp per net and step",
            "trainer_step_batch_size": 1,
        }

    def sync(self, state: MxnetState) -> None:
        nd.waitall()

    # -- helpers (not part of the protocol) ------------------------------------

    def _step(self, state: MxnetState, real: np.ndarray, z: np.ndarray | None, with_grads: bool):
        real_a = activations_to_framework(real, state.dtype, state.ctx)
        if z is None:  # fast mode: noise from the device RNG, no host round trip
            z_a = nd.random.normal(0.0, 1.0, shape=(real_a.shape[0], *state.spec.latent_shape),
                                   ctx=state.ctx, dtype=state.dtype)
        else:
            z_a = activations_to_framework(z, state.dtype, state.ctx)
        return train_iteration(state.G, state.D, state.trainer_G, state.trainer_D, state.trainable["G"],
                               state.trainable["D"], real_a, z_a, state.spec.loss, with_grads)

    def _forward(self, state: MxnetState, net: GANNet, x: np.ndarray, bn: str) -> np.ndarray:
        # Outside autograd.record(): nothing is recorded and no running statistic is committed
        # (only train.py commits them), so this changes no state.
        y = net.forward_pure(activations_to_framework(x, state.dtype, state.ctx), bn)
        return activations_from_framework(y)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """exp(-log(1 + exp(-x))): no overflow for any logit."""
    return np.exp(-np.logaddexp(0.0, -x))


def _export_adam(state: MxnetState, net: str) -> AdamState:
    trainer = state.trainer_G if net == "G" else state.trainer_D
    opt: SpecAdam = trainer.optimizer  # the instance make_adam gave it
    adam = AdamState(step=int(opt.num_update))
    for i, name in enumerate(trainable_names(state.spec, net)):
        if i in opt.moments:
            m, v = opt.moments[i]
            adam.m[name], adam.v[name] = param_from_framework(name, m), param_from_framework(name, v)
        else:  # no update yet: zeros, the canonical initial state
            shape = tuple(state.params[name].shape)
            adam.m[name] = np.zeros(shape, dtype=state.dtype)
            adam.v[name] = np.zeros(shape, dtype=state.dtype)
    return adam
