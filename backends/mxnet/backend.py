"""MXNet Gluon primitives of the backend template (common/protocol.py), in the template's order."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import mxnet as mx
import numpy as np
from mxnet import gluon, nd

from gansuite.common.errors import GanSuiteError
from gansuite.common.layout import layer_of, net_of
from gansuite.common.params import param_shapes, trainable_names
from gansuite.common.protocol import (MIXED_BF16, Backend, BackendState, BuildOptions, device_unavailable,
                                      mixed_precision)
from gansuite.common.spec import GANSpec

from . import ENV_FLAGS, layout, onednn_bf16_refusal, onednn_enabled
from .epoch import multi_step_refusal, train_epoch as _train_epoch
from .models import GANNet, _use_amp_bf16, build_net
from .train import SpecAdam, make_adam


@dataclass
class MxnetState(BackendState):
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
    # train_epoch's compiled graphs, per (real batch shape, z shape, host noise) (epoch.py)
    epoch_graphs: dict = field(default_factory=dict)


class MxnetBackend(Backend):
    name = "mxnet"
    # numpy too: MXNet 1.9.1 imports only under numpy < 1.24, so this env's numpy differs from the others'.
    packages = ("mxnet", "numpy")

    def framework_device(self, kind: str) -> mx.Context:
        # The pip wheel "mxnet" is CPU-only (GPU builds are separate wheels: mxnet-cu112).
        if kind == "cuda" and mx.context.num_gpus() == 0:
            raise device_unavailable("MXNet", kind, ["cpu"])
        return mx.gpu(0) if kind == "cuda" else mx.cpu()

    def configure(self, device: mx.Context, options: BuildOptions) -> None:
        # bf16 mixed precision (fast mode, a benchmark setting: benchmarks/mixed.py) is MXNet's AMP
        # (models._bf16_symbol), whose bfloat16 kernels on CPU are oneDNN's only: MXNet 1.9.1's native
        # Convolution on a bfloat16 input fails in the engine with "MXNetError: Unknown type enum 12"
        # (12: mshadow's kBfloat16; FullyConnected: "Unsupported type 12"; measured in
        # tests/test_backend_mxnet.py). Refused here in one line, not at the first step.
        if mixed_precision(options) == MIXED_BF16 and not onednn_enabled():
            raise GanSuiteError(
                f"extra.mixed_precision: {MIXED_BF16!r} needs oneDNN (MXNET_MKLDNN_ENABLED=1 before mxnet runs "
                "its first operator); this process has it off, and MXNet 1.9.1's native CPU Convolution fails "
                "on bfloat16 with 'MXNetError: Unknown type enum 12'")
        # oneDNN on, but a CPU without AVX-512 has no oneDNN bf16 kernels (onednn_bf16_error): refused
        # here in one line, with the CPU named as the reason (common/protocol.NO_BF16_KERNELS).
        if mixed_precision(options) == MIXED_BF16 and (refusal := onednn_bf16_refusal()) is not None:
            raise GanSuiteError(f"extra.mixed_precision: {MIXED_BF16!r}: {refusal}; allowed here: none, run float32")
        # MXNet reads MXNET_MKLDNN_ENABLED once, at the first operator that asks, and then never
        # again: it cannot be switched per build as torch.backends.mkldnn can. __init__.py sets it
        # to 0 unless the user chose; parity under oneDNN is refused, at build and every call after.
        if options.mode == "parity" and onednn_enabled():
            raise GanSuiteError(
                "mxnet: parity mode needs oneDNN off (MXNET_MKLDNN_ENABLED=0 before mxnet runs its first "
                "operator); this process has it on. Unset MXNET_MKLDNN_ENABLED or set it to 0.")

    def create_state(self, spec: GANSpec, options: BuildOptions, dtype: type, device: mx.Context) -> MxnetState:
        nets = {"G": build_net(spec.generator, "G", dtype, options.mode),
                "D": build_net(spec.discriminator, "D", dtype, options.mode)}
        for net in nets.values():
            # Cast in build_net, before initialize: the arrays are created in the dtype. The
            # initializer is irrelevant: every tensor is overwritten from the canonical params
            # next, and one without a canonical name is an error. (d2l's MXNet tab relies on
            # init.Normal, which reaches weights only, not biases; Gluon's default is Uniform(0.07).)
            net.initialize(mx.init.Zero(), ctx=device)
        by_name = {name: nets[net_of(name)].collect_params()[layout.module_key(name, layer_of(spec, name))]
                   for name in param_shapes(spec)}
        # A fix_gamma BatchNorm's gamma is Gluon's, never read nor trained, and not canonical (models.py).
        fixed = {k for net in nets.values() for bn in net.batch_norms() for k in bn.fixed_gamma}
        unmatched = ({k for net in nets.values() for k in net.collect_params()} - {p.name for p in by_name.values()}
                     - fixed)
        if unmatched:
            raise GanSuiteError(f"mxnet: Gluon parameters without a canonical name: {sorted(unmatched)}")
        trainable = {net: {k: by_name[k] for k in trainable_names(spec, net)} for net in ("G", "D")}
        trainer_G = make_adam(spec.train.optim_G, trainable["G"].values(), options.mode)
        trainer_D = make_adam(spec.train.optim_D, trainable["D"].values(), options.mode)
        if options.mode == "fast":
            # float32 through MXNet's fused adam_update, made the spec's (SpecAdam._fused_update: the
            # graph's 15 passes per tensor cost 119 ms a step on full-size dcgan, the kernel 12 ms).
            # Parity mode keeps the exact graph (float64 bit for bit with the oracle).
            for trainer in (trainer_G, trainer_D):
                trainer.optimizer._use_fused_kernel()
        if options.mode == "fast":
            # Gluon's compiler: one cached graph per net, memory planned once (static_alloc) for
            # fixed input shapes (static_shape). Built at the first call: see compile_s.
            for net in nets.values():
                net.hybridize(active=True, static_alloc=True, static_shape=True)
                if mixed_precision(options) == MIXED_BF16:
                    # MXNet's AMP pass on the traced graph: Dense and Conv2D in bfloat16 (Conv2DTranspose
                    # float32: models._bf16_symbol says why), everything else, the parameters, Adam and
                    # the outputs float32 (models._AmpGraph).
                    _use_amp_bf16(net)
            # Device-side noise: MXNet's RNG is one generator per device, process-wide (not per
            # state): two fast-mode states in one process draw from the same stream.
            mx.random.seed(options.seed, ctx=device)
        return MxnetState(spec, options, dtype, device, nets["G"], nets["D"], trainer_G, trainer_D, by_name,
                          trainable)

    def write_tensor(self, state: MxnetState, name: str, value: nd.NDArray) -> None:
        state.params[name].set_data(value)

    def read_tensor(self, state: MxnetState, name: str) -> nd.NDArray:
        return state.params[name].data(state.device)

    def write_adam(self, state: MxnetState, net: str, step: int, m: dict[str, nd.NDArray],
                   v: dict[str, nd.NDArray]) -> None:
        # The Trainer's index i is the net's i-th trainable tensor (make_adam keeps the order).
        opt: SpecAdam = (state.trainer_G if net == "G" else state.trainer_D).optimizer
        opt.restore(step, {i: (m[k], v[k]) for i, k in enumerate(state.trainable[net])})

    def read_adam(self, state: MxnetState, net: str) -> tuple[int, dict[str, nd.NDArray], dict[str, nd.NDArray]]:
        opt: SpecAdam = (state.trainer_G if net == "G" else state.trainer_D).optimizer
        m, v = {}, {}
        for i, (name, p) in enumerate(state.trainable[net].items()):
            # SpecAdam creates the moments lazily, at a parameter's first update: zeros before.
            zeros = nd.zeros(p.shape, state.device, dtype=state.dtype)
            m[name], v[name] = opt._canonical_moments(i) or (zeros, zeros)
        return int(opt.num_update), m, v

    def device_noise(self, state: MxnetState, batch_size: int) -> nd.NDArray:
        return nd.random.normal(0.0, 1.0, shape=(batch_size, *state.spec.latent_shape), ctx=state.device,
                                dtype=state.dtype)

    def settings(self, state: MxnetState) -> dict[str, Any]:
        features = mx.runtime.Features()
        return {
            "mode": state.options.mode,
            "dtype": state.options.dtype,
            "device": str(state.device),
            "hybridized": state.options.mode == "fast",
            "static_alloc": state.options.mode == "fast",
            "onednn_built": features.is_enabled("MKLDNN"),
            "onednn_enabled": onednn_enabled(),
            "cuda_built": features.is_enabled("CUDA"),
            "env": {k: os.environ.get(k) for k in ENV_FLAGS},
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "cpu_count": os.cpu_count(),
            "compile_s": state.compile_s,
            # bf16 mixed precision: MXNet AMP's graph pass, Convolution and FullyConnected in bfloat16 (models.py)
            "mixed_precision": state.options.extra.get("mixed_precision"),
            "adam": {net: f"SpecAdam, form {cfg.form!r}, " + (
                         "MXNet's fused adam_update per tensor, coefficients made the spec's"
                         if trainer.optimizer._scaled(state.dtype) else "one CachedOp per net and step")
                     for net, cfg, trainer in (("G", state.spec.train.optim_G, state.trainer_G),
                                               ("D", state.spec.train.optim_D, state.trainer_D))},
            # Trainer.step(B) (rescale_grad 1/B) for the per_example reduction, else step(1).
            "trainer_step_batch_size": "B" if state.spec.loss.reduction == "per_example" else 1,
        }

    def sync(self, state: MxnetState) -> None:
        nd.waitall()

    # -- extra (not part of the protocol; tests/test_backend_signatures.py FRAMEWORK_EXTRAS) ------

    def train_epoch(self, state: MxnetState, reals: np.ndarray, zs: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """``len(reals)`` iterations through bound executors of unrolled iterations (epoch.py: MXNet
        has no symbolic gradient, so their backward is written out by hand), ``epoch.CHUNK`` per
        executor call, for nets of dense layers and activations in fast mode (:meth:`train_epoch_refusal`).

        ``reals``: ``(n, B, *example_shape)`` canonical. ``zs``: ``(n, B, *latent_shape)`` host
        noise, or None to draw it in the graph from the device RNG (the same numbers as n
        consecutive ``device_noise`` calls). Returns each scalar per iteration.
        """
        self.configure(state.device, state.options)
        refusal = multi_step_refusal(state.spec, state.options)
        if refusal is not None:
            raise GanSuiteError(refusal)
        return _train_epoch(state, np.asarray(reals), None if zs is None else np.asarray(zs))

    def train_epoch_refusal(self, spec: GANSpec, options: BuildOptions) -> str | None:
        """Why :meth:`train_epoch` cannot run ``spec`` under ``options`` (one line), or None."""
        return multi_step_refusal(spec, options)
