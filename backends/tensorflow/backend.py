"""TensorFlow / Keras 3 primitives of the backend template (common/protocol.py), in the template's order."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from gansuite.common.errors import GanSuiteError
from gansuite.common.layout import channels_last_shape, net_of
from gansuite.common.params import is_buffer
from gansuite.common.protocol import (MIXED_BF16, Backend, BackendState, BuildOptions, device_unavailable,
                                      mixed_precision)
from gansuite.common.spec import GANSpec

from . import MIXED_POLICY, device_name, grappler_rewrites_on, onednn_enabled, op_determinism_enabled
from .models import SpecNet, _canonical_variables, build_net
from .layout import activations_to_framework
from .train import SpecAdam, _make_draws, _make_noise, _make_step, _train_epoch, make_adam


@dataclass
class TensorflowState(BackendState):
    G: SpecNet  # keras.Sequential whose run() also takes labels and dropout masks
    D: SpecNet
    G_vars: dict[str, keras.Variable]  # canonical name -> variable (parameters, BN buffers, embedding tables)
    D_vars: dict[str, keras.Variable]
    G_params: dict[str, keras.Variable]  # the trainable ones, canonical order: what Adam and the tapes see
    D_params: dict[str, keras.Variable]
    opt_G: SpecAdam
    opt_D: SpecAdam
    step_fn: Callable  # the iteration: tf.function (XLA in fast mode) or plain eager
    rng: tf.random.Generator  # device RNG for fast-mode noise, labels and dropout masks
    noise_fn: Callable[[int], tf.Tensor]  # batch size -> noise from rng (XLA-compiled with the step)
    draws_fn: Callable[[int, int, tuple[str, ...]], dict[str, tf.Tensor]]  # fast mode's missing draws from rng
    jit_compile: bool
    graph: bool  # step_fn is a tf.function
    compile_s: float | None = None  # first call of step_fn: tracing + (XLA) compilation + one step
    trace_s: float | None = None  # tracing alone (get_concrete_function), part of compile_s
    traced: set[tuple] = field(default_factory=set)  # input signatures step_fn has seen
    epoch_fns: dict[tuple, Callable] = field(default_factory=dict)  # train_epoch's tf.function per stack shape


class TensorflowBackend(Backend):
    name = "tensorflow"
    packages = ("tensorflow", "keras", "numpy")

    def framework_device(self, kind: str) -> str:
        """A TF device string, "/CPU:0" or "/GPU:0"."""
        if kind == "cuda" and not tf.config.list_physical_devices("GPU"):
            raise device_unavailable("tensorflow", kind, ["cpu"])
        return "/GPU:0" if kind == "cuda" else "/CPU:0"

    def configure(self, device: str, options: BuildOptions) -> None:
        parity = options.mode == "parity"
        if (parity and options.dtype == "float32" and device == "/CPU:0" and onednn_enabled()
                and not options.extra.get("allow_onednn", False)):
            # See __init__.py: oneDNN's float32 CPU convolutions miss the parity tolerance (it has no
            # float64 kernels), and the switch is read once, when TensorFlow is imported.
            raise GanSuiteError("TF_ENABLE_ONEDNN_OPTS: parity mode needs TensorFlow's oneDNN CPU kernels off; "
                                "set TF_ENABLE_ONEDNN_OPTS=0 in the environment before TensorFlow is imported "
                                "(or pass extra={'allow_onednn': True} to accept its float32 error)")
        mixed_precision(options)  # one line for a value, mode or dtype that has no mixed path
        # Process-wide flags (as PyTorch's), re-asserted before each call (the template's contract).
        # TF32: TF enables it by default for float32 matmuls/convs on Ampere+ GPUs; parity needs true
        # float32. No effect on CPU; recorded in settings().
        if tf.config.experimental.tensor_float_32_execution_enabled() == parity:
            tf.config.experimental.enable_tensor_float_32_execution(not parity)
        # Grappler, TF's graph optimiser, rewrites float arithmetic in a tf.function: its arithmetic
        # optimiser and its constant folding (which pushes constants through mul/add chains) reassociate
        # sums and products, so a graph would no longer compute what eager computes (measured: gradients
        # a few ulps apart on gaussian, running_var on dcgan-tiny). Parity turns both off: then the
        # graph is bit-identical to eager (tested). Read when a function is first run; fast mode
        # restores the defaults (XLA does its own rewriting anyway).
        if grappler_rewrites_on() == parity:
            tf.config.optimizer.set_experimental_options(
                {"arithmetic_optimization": not parity, "constant_folding": not parity})
        # Op determinism (run-to-run reproducibility) for parity mode. TF 2.21 exports only the switch
        # ON (tf.config.experimental.enable_op_determinism); once a parity state is built it stays on for
        # the process, fast mode included. settings() records the actual value.
        if parity and not op_determinism_enabled():
            tf.config.experimental.enable_op_determinism()

    def create_state(self, spec: GANSpec, options: BuildOptions, dtype: tf.dtypes.DType,
                     device: str) -> TensorflowState:
        # Mixed precision (fast mode, a benchmark setting: benchmarks/mixed.py): Keras's dtype policy
        # "mixed_bfloat16" on the layers that multiply (models.build_layer), float32 everywhere else.
        net_dtype = MIXED_POLICY if mixed_precision(options) == MIXED_BF16 else dtype
        with tf.device(device):
            G = build_net(spec.generator, "G", net_dtype, options.mode)
            D = build_net(spec.discriminator, "D", net_dtype, options.mode)
            G_vars, D_vars = _canonical_variables(spec, "G", G), _canonical_variables(spec, "D", D)
            G_params, D_params = ({k: v for k, v in vs.items() if not is_buffer(k)} for vs in (G_vars, D_vars))
            opt_G = make_adam(spec.train.optim_G, list(G_params.values()), options.mode)
            opt_D = make_adam(spec.train.optim_D, list(D_params.values()), options.mode)
            # Device-side noise (device_noise) and fast mode's labels and dropout masks (train._make_draws):
            # TF's counter-based Philox generator, seeded here.
            rng = tf.random.Generator.from_seed(options.seed, alg="philox")
        step_fn, jit, graph = _make_step(options, spec, G, D, G_params, D_params, opt_G, opt_D)
        noise_fn = _make_noise(rng, channels_last_shape(spec.latent_shape), dtype, jit)
        draws_fn = _make_draws(rng, spec, dtype, jit)
        return TensorflowState(spec, options, dtype, device, G, D, G_vars, D_vars, G_params, D_params, opt_G, opt_D,
                               step_fn, rng, noise_fn, draws_fn, jit, graph)

    def write_tensor(self, state: TensorflowState, name: str, value: tf.Tensor) -> None:
        self.read_tensor(state, name).assign(value)

    def read_tensor(self, state: TensorflowState, name: str) -> keras.Variable:
        return (state.G_vars if net_of(name) == "G" else state.D_vars)[name]

    def write_adam(self, state: TensorflowState, net: str, step: int, m: dict[str, tf.Tensor],
                   v: dict[str, tf.Tensor]) -> None:
        opt, params = (state.opt_G, state.G_params) if net == "G" else (state.opt_D, state.D_params)
        # Keras keeps ONE step counter per optimiser (`iterations`), as the canonical state does.
        opt.iterations.assign(int(step))
        for name, var in params.items():
            m_var, v_var = opt.moments(var)
            m_var.assign(m[name])
            v_var.assign(v[name])

    def read_adam(self, state: TensorflowState, net: str) -> tuple[int, dict[str, keras.Variable],
                                                                    dict[str, keras.Variable]]:
        opt, params = (state.opt_G, state.G_params) if net == "G" else (state.opt_D, state.D_params)
        m, v = {}, {}
        for name, var in params.items():
            m[name], v[name] = opt.moments(var)  # built by make_adam: zeros before the first step
        return int(opt.iterations.numpy()), m, v

    def device_noise(self, state: TensorflowState, batch_size: int) -> tf.Tensor:
        with tf.device(state.device):
            return state.noise_fn(batch_size)

    def settings(self, state: TensorflowState) -> dict[str, Any]:
        grappler = tf.config.optimizer.get_experimental_options()
        return {
            "mode": state.options.mode,
            "dtype": state.options.dtype,
            "device": state.device,
            "device_name": device_name(state.device),
            "tf_function": state.graph,
            "mixed_precision": state.options.extra.get("mixed_precision"),
            "jit_compile": state.jit_compile,
            "tf32": tf.config.experimental.tensor_float_32_execution_enabled(),
            "determinism": op_determinism_enabled(),
            "grappler_arithmetic_optimization": grappler.get("arithmetic_optimization", True),
            "grappler_constant_folding": grappler.get("constant_folding", True),
            "onednn": onednn_enabled(),
            "threads_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),  # 0: TF picks (all cores)
            "threads_inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
            "cpu_count": os.cpu_count(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
            "trace_s": state.trace_s,
            "compile_s": state.compile_s,
        }

    def sync(self, state: TensorflowState) -> None:
        # Eager CPU ops have finished when they return; GPU kernels are queued asynchronously.
        if state.device.startswith("/GPU"):
            tf.test.experimental.sync_devices()

    # -- extra (not part of the protocol; tests/test_backend_signatures.py FRAMEWORK_EXTRAS) ------

    def train_epoch(self, state: TensorflowState, reals: np.ndarray,
                    zs: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """``len(reals)`` iterations as ONE call of a tf.function (a ``tf.while_loop`` over a stack of
        equal-size batches; JAX's is a ``lax.scan``).

        ``reals``: ``(n, B, *example_shape)`` canonical. ``zs``: ``(n, B, *latent_shape)`` host
        noise, or None to draw it on the device (fast mode). Returns each scalar per iteration.
        """
        self.configure(state.device, state.options)
        return _train_epoch(state, _stack(state, reals), None if zs is None else _stack(state, zs))


def _stack(state: TensorflowState, stack: np.ndarray) -> tf.Tensor:
    """``(n, B, ...)`` canonical -> ``(n, B, ...)`` in this backend's layout (NHWC), one transfer."""
    stack = np.asarray(stack)
    flat = activations_to_framework(stack.reshape(-1, *stack.shape[2:]), state.dtype, state.device)
    with tf.device(state.device):
        return tf.reshape(flat, [stack.shape[0], stack.shape[1], *flat.shape[1:]])
