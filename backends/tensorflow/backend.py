"""TensorFlow / Keras 3 implementation of the backend protocol (common/protocol.py)."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import keras
import numpy as np
import tensorflow as tf

from gansuite.common.errors import GanSuiteError
from gansuite.common.params import AdamState, OptState, Params, is_buffer, param_shapes
from gansuite.common.protocol import Backend, BuildOptions, StepOutput
from gansuite.common.spec import GANSpec

from .layout import (TF_DTYPES, activations_from_framework, activations_to_framework, keras_shape,
                     param_from_framework, param_to_framework)
from .models import build_net, canonical_variables
from .train import SpecAdam, make_adam, train_iteration


@dataclass
class TensorflowState:
    spec: GANSpec
    options: BuildOptions
    dtype: tf.dtypes.DType
    device: str  # a TF device string, "/CPU:0" or "/GPU:0"
    G: keras.Sequential
    D: keras.Sequential
    G_vars: dict[str, keras.Variable]  # canonical name -> variable (parameters and BN buffers)
    D_vars: dict[str, keras.Variable]
    opt_G: SpecAdam
    opt_D: SpecAdam
    step_fn: Callable  # the iteration: tf.function (XLA in fast mode) or plain eager
    rng: tf.random.Generator
    jit_compile: bool
    graph: bool  # step_fn is a tf.function
    compile_s: float | None = None  # first call of step_fn: tracing + (XLA) compilation + one step
    trace_s: float | None = None  # tracing alone (get_concrete_function), part of compile_s
    traced: set[tuple] = field(default_factory=set)  # input signatures step_fn has seen


def _configure_numerics(mode: str) -> None:
    # Process-wide flags (as PyTorch's), set at build and re-asserted before each step so a
    # parity state keeps its settings when a fast one was built in between.
    # TF32: TF enables it by default for float32 matmuls/convs on Ampere+ GPUs; parity needs true
    # float32. No effect on CPU; recorded in settings().
    parity = mode == "parity"
    if tf.config.experimental.tensor_float_32_execution_enabled() == parity:
        tf.config.experimental.enable_tensor_float_32_execution(not parity)
    # Grappler, TF's graph optimiser, rewrites float arithmetic in a tf.function: its arithmetic
    # optimiser and its constant folding (which pushes constants through mul/add chains) reassociate
    # sums and products, so a graph would no longer compute what eager computes (measured: gradients
    # a few ulps apart on gaussian, running_var on dcgan-tiny). Parity turns both off: then the
    # graph is bit-identical to eager (tested). Read when a function is first run; fast mode
    # restores the defaults (XLA does its own rewriting anyway).
    if _grappler_rewrites_on() == parity:
        tf.config.optimizer.set_experimental_options(
            {"arithmetic_optimization": not parity, "constant_folding": not parity})
    # Op determinism (run-to-run reproducibility) for parity mode. TF 2.21 exports only the switch
    # ON (tf.config.experimental.enable_op_determinism); once a parity state is built it stays on for
    # the process, fast mode included. settings() records the actual value.
    if parity and not op_determinism_enabled():
        tf.config.experimental.enable_op_determinism()


def _grappler_rewrites_on() -> bool:
    opts = tf.config.optimizer.get_experimental_options()
    return opts.get("arithmetic_optimization", True) or opts.get("constant_folding", True)


def op_determinism_enabled() -> bool:
    # Not exported in TF 2.21's public API (tensorflow/python/framework/config.py has it).
    from tensorflow.python.framework import config as tf_config

    return bool(tf_config.is_op_determinism_enabled())


def _device(name: str) -> str:
    if name in ("cpu", "/CPU:0"):
        return "/CPU:0"
    if name in ("gpu", "cuda", "/GPU:0"):
        if not tf.config.list_physical_devices("GPU"):
            raise GanSuiteError(f"device: {name!r} asked for but TensorFlow sees no GPU; allowed here: cpu")
        return "/GPU:0"
    raise GanSuiteError(f"device: unknown device {name!r}; allowed: cpu, gpu")


def onednn_enabled() -> bool:
    """Whether TF's oneDNN (MKL) CPU kernels are on: fixed at import by TF_ENABLE_ONEDNN_OPTS."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


@contextlib.contextmanager
def _frozen_running_stats(variables: dict[str, keras.Variable]) -> Iterator[None]:
    """A training=True forward updates BN moving statistics (our SpecBatchNorm, like Keras's): undo that."""
    saved = {k: tf.identity(v.value) for k, v in variables.items() if is_buffer(k)}
    try:
        yield
    finally:
        for k, v in saved.items():
            variables[k].assign(v)


class TensorflowBackend(Backend):
    name = "tensorflow"

    def versions(self) -> dict[str, str]:
        return {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__}

    def build(self, spec: GANSpec, params: Params, opt_state: OptState | None,
              options: BuildOptions) -> TensorflowState:
        if options.dtype not in TF_DTYPES:
            raise GanSuiteError(f"dtype: {options.dtype!r} is not supported; allowed: {', '.join(TF_DTYPES)}")
        if options.mode not in ("parity", "fast"):
            raise GanSuiteError(f"mode: {options.mode!r} is not supported; allowed: parity, fast")
        device = _device(options.device)
        if (options.mode == "parity" and options.dtype == "float32" and device == "/CPU:0" and onednn_enabled()
                and not options.extra.get("allow_onednn", False)):
            # See __init__.py: oneDNN's float32 CPU convolutions miss the parity tolerance (it has no
            # float64 kernels), and the switch is read once, when TensorFlow is imported.
            raise GanSuiteError("TF_ENABLE_ONEDNN_OPTS: parity mode needs TensorFlow's oneDNN CPU kernels off; "
                                "set TF_ENABLE_ONEDNN_OPTS=0 in the environment before TensorFlow is imported "
                                "(or pass extra={'allow_onednn': True} to accept its float32 error)")
        _configure_numerics(options.mode)
        dtype = TF_DTYPES[options.dtype]
        shapes = param_shapes(spec)
        missing, unexpected = sorted(set(shapes) - set(params)), sorted(set(params) - set(shapes))
        bad = [k for k in shapes if k in params and tuple(np.shape(params[k])) != shapes[k]]
        if missing or unexpected or bad:
            raise GanSuiteError(f"params: do not match the spec (missing {missing}, unexpected {unexpected}, "
                                f"wrong shape {bad})")
        with tf.device(device):
            G, D = build_net(spec.generator, "G", options.dtype), build_net(spec.discriminator, "D", options.dtype)
            G_vars, D_vars = canonical_variables(spec, "G", G), canonical_variables(spec, "D", D)
            for name, var in {**G_vars, **D_vars}.items():
                var.assign(param_to_framework(name, params[name], dtype))
            opt_G = make_adam(list(_trainable(G_vars).values()), spec.train.optim_G, "adam_G")
            opt_D = make_adam(list(_trainable(D_vars).values()), spec.train.optim_D, "adam_D")
            if opt_state is not None:
                _load_adam(opt_G, G_vars, opt_state.G, dtype)
                _load_adam(opt_D, D_vars, opt_state.D, dtype)
            # Device-side noise (z=None): TF's counter-based Philox generator, seeded here.
            rng = tf.random.Generator.from_seed(options.seed, alg="philox")
        fast = options.mode == "fast"
        jit = bool(options.extra.get("jit_compile", True)) if fast else False
        # Parity mode runs the same Python step as a tf.function WITHOUT XLA by default: with
        # grappler's float rewrites off (_configure_numerics) the graph runs the same kernels on the
        # same values as eager, bit-identical (tests/test_backend_tensorflow.py), at ~1/10 of eager
        # Keras's per-step cost. extra={"eager": True} runs it op by op for debugging.
        graph = fast or not options.extra.get("eager", False)
        step = _make_step(spec, G, D, _trainable(G_vars), _trainable(D_vars), opt_G, opt_D, rng)
        # autograph=False: the step has no tensor-dependent Python control flow to convert.
        step_fn = tf.function(step, jit_compile=jit, autograph=False) if graph else step
        return TensorflowState(spec, options, dtype, device, G, D, G_vars, D_vars, opt_G, opt_D, step_fn, rng,
                               jit, graph)

    def generate(self, state: TensorflowState, z: np.ndarray, bn: str = "batch") -> np.ndarray:
        return self._forward(state, state.G, state.G_vars, z, bn)

    def discriminate(self, state: TensorflowState, x: np.ndarray, bn: str = "batch") -> np.ndarray:
        out = self._forward(state, state.D, state.D_vars, x, bn)
        return out.reshape(out.shape[0])

    def train_step(self, state: TensorflowState, real: np.ndarray, z: np.ndarray | None,
                   with_grads: bool = False) -> StepOutput:
        scalars, grads = self._step(state, real, z, with_grads)
        out = StepOutput(**{k: float(v) for k, v in scalars.items()})
        if grads is not None:
            out.grads = {k: param_from_framework(k, v) for k, v in grads.items()}
        return out

    def export_params(self, state: TensorflowState) -> tuple[Params, OptState]:
        variables = {**state.G_vars, **state.D_vars}
        params = {name: param_from_framework(name, variables[name]) for name in param_shapes(state.spec)}
        return params, OptState(_export_adam(state.opt_G, state.G_vars), _export_adam(state.opt_D, state.D_vars))

    def settings(self, state: TensorflowState) -> dict[str, Any]:
        gpu = state.device.startswith("/GPU")
        name = "cpu"
        if gpu:
            details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
            name = details.get("device_name", "gpu")
        return {
            "mode": state.options.mode,
            "dtype": state.options.dtype,
            "device": state.device,
            "device_name": name if gpu else (platform.processor() or platform.machine() or "cpu"),
            "tf_function": state.graph,
            "jit_compile": state.jit_compile,
            "tf32": tf.config.experimental.tensor_float_32_execution_enabled(),
            "determinism": op_determinism_enabled(),
            "grappler_arithmetic_optimization": tf.config.optimizer.get_experimental_options().get(
                "arithmetic_optimization", True),
            "grappler_constant_folding": tf.config.optimizer.get_experimental_options().get("constant_folding", True),
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

    # -- helpers (not part of the protocol) ------------------------------------

    def _step(self, state: TensorflowState, real: np.ndarray, z: np.ndarray | None, with_grads: bool):
        _configure_numerics(state.options.mode)
        with tf.device(state.device):
            real_t = activations_to_framework(real, state.dtype)
            # z=None (fast mode): noise from the device RNG inside the step, no host round trip.
            z_t = None if z is None else activations_to_framework(z, state.dtype)
            signature = (tuple(real_t.shape), z_t is None, bool(with_grads))
            if not state.graph or signature in state.traced:
                return _to_host(state.step_fn(real_t, z_t, with_grads))
            # First call with this signature: time tracing alone, then tracing + (XLA) compilation + one
            # step, recorded for the benchmark harness (settings()); later calls reuse the compiled function.
            t0 = time.perf_counter()
            state.step_fn.get_concrete_function(real_t, z_t, with_grads)
            t1 = time.perf_counter()
            out = _to_host(state.step_fn(real_t, z_t, with_grads))
            t2 = time.perf_counter()
            if state.compile_s is None:
                state.trace_s, state.compile_s = t1 - t0, t2 - t0
            state.traced.add(signature)
            return out

    def _forward(self, state: TensorflowState, net: keras.Sequential, variables: dict[str, keras.Variable],
                 x: np.ndarray, bn: str) -> np.ndarray:
        if bn not in ("batch", "running"):
            raise GanSuiteError(f"bn: {bn!r} is not supported; allowed: batch, running")
        _configure_numerics(state.options.mode)
        with tf.device(state.device), _frozen_running_stats(variables):
            y = net(activations_to_framework(x, state.dtype), training=(bn == "batch"))
        return activations_from_framework(y)


def _trainable(variables: dict[str, keras.Variable]) -> dict[str, keras.Variable]:
    return {k: v for k, v in variables.items() if not is_buffer(k)}


def _make_step(spec: GANSpec, G: keras.Sequential, D: keras.Sequential, G_params: dict[str, keras.Variable],
               D_params: dict[str, keras.Variable], opt_G: SpecAdam, opt_D: SpecAdam,
               rng: tf.random.Generator) -> Callable:
    latent = keras_shape(spec.latent_shape)

    def step(real: tf.Tensor, z: tf.Tensor | None, with_grads: bool):
        if z is None:
            z = rng.normal((tf.shape(real)[0], *latent), dtype=real.dtype)
        return train_iteration(G, D, G_params, D_params, opt_G, opt_D, real, z, spec.loss, with_grads)

    return step


def _to_host(result: tuple[dict[str, tf.Tensor], dict[str, tf.Tensor] | None]
             ) -> tuple[dict[str, np.ndarray], dict[str, tf.Tensor] | None]:
    scalars, grads = result
    return {k: v.numpy() for k, v in scalars.items()}, grads


def _load_adam(opt: SpecAdam, variables: dict[str, keras.Variable], adam: AdamState,
               dtype: tf.dtypes.DType) -> None:
    # Keras keeps ONE step counter per optimiser (`iterations`), as the canonical state does.
    opt.iterations.assign(int(adam.step))
    for name, var in _trainable(variables).items():
        m, v = opt.moments(var)
        m.assign(param_to_framework(name, adam.m[name], dtype))
        v.assign(param_to_framework(name, adam.v[name], dtype))


def _export_adam(opt: SpecAdam, variables: dict[str, keras.Variable]) -> AdamState:
    adam = AdamState(step=int(opt.iterations.numpy()))
    for name, var in _trainable(variables).items():
        m, v = opt.moments(var)
        adam.m[name] = param_from_framework(name, m)
        adam.v[name] = param_from_framework(name, v)
    return adam
