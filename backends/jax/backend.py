"""JAX implementation of the backend protocol (common/protocol.py)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from gansuite.common.errors import GanSuiteError
from gansuite.common.params import AdamState, OptState, Params, net_spec, param_shapes, trainable_names
from gansuite.common.protocol import Backend, BuildOptions, StepOutput
from gansuite.common.spec import GANSpec

from .layout import (JAX_DTYPES, activations_from_framework, activations_to_framework, module_key,
                     param_from_framework, param_to_framework)
from .train import EPOCH, FORWARD, ITERATION, StepConfig, TrainState


@dataclass
class JaxState:
    spec: GANSpec
    options: BuildOptions
    device: jax.Device
    cfg: StepConfig
    train: TrainState  # the whole mutable state as one pytree (replaced, never mutated, by each step)
    compile_s: float = 0.0  # seconds spent compiling for this state (benchmarks read it)
    compile_log: dict[str, float] = field(default_factory=dict)  # the same, per compiled variant


def _device(name: str) -> jax.Device:
    platform = "gpu" if name in ("cuda", "gpu") else name
    try:
        return jax.devices(platform)[0]
    except RuntimeError:
        have = sorted({d.platform for d in jax.devices()})
        raise GanSuiteError(f"device: {name!r} asked for but JAX sees no such device; allowed here: "
                            f"{', '.join(have)}") from None


def _precision(mode: str) -> lax.Precision | None:
    # On GPU (Ampere+) the DEFAULT precision of dot and conv is TF32 (and bf16 passes on TPU);
    # parity needs true float32, so every Dense/Conv/ConvTranspose gets precision=HIGHEST, and the
    # parity functions are traced under jax.default_matmul_precision("highest") as well (any other
    # dot). Fast mode keeps the default; the choice is recorded in settings(). XLA:CPU computes
    # float32 dots and convs in float32 at any precision setting (measured, jaxlib 0.10.2: parity
    # and fast dcgan-tiny forwards are bit-identical on CPU).
    return lax.Precision.HIGHEST if mode == "parity" else None


# One executable per (function, static config, argument signature, device), shared by every state
# in the process: a second build of the same model compiles nothing (its compile_s stays 0).
_COMPILED: dict[Any, Any] = {}


def _signature(args: Any) -> tuple:
    leaves, treedef = jax.tree.flatten(args)
    return (treedef, tuple((leaf.shape, leaf.dtype) for leaf in leaves))


class JaxBackend(Backend):
    name = "jax"

    def versions(self) -> dict[str, str]:
        return {"jax": jax.__version__, "jaxlib": version("jaxlib"), "flax": version("flax"),
                "optax": optax.__version__, "numpy": np.__version__}

    def build(self, spec: GANSpec, params: Params, opt_state: OptState | None, options: BuildOptions) -> JaxState:
        if not jax.config.jax_enable_x64:  # set on import in __init__.py; someone turned it off
            raise GanSuiteError("jax: jax_enable_x64 is off; the JAX backend needs it (float64 parity)")
        device = _device(options.device)
        dtype = JAX_DTYPES[options.dtype]
        expected = param_shapes(spec)
        if set(params) != set(expected):
            raise GanSuiteError(f"params: do not match the spec (missing {sorted(set(expected) - set(params))}, "
                                f"unexpected {sorted(set(params) - set(expected))})")
        train: TrainState = {net: _to_variables(spec, net, params, dtype, device) for net in ("G", "D")}
        cfg = StepConfig(spec, options.dtype, _precision(options.mode))
        tx_G, tx_D = cfg.optimizers()
        for net, tx in (("G", tx_G), ("D", tx_D)):
            opt = tx.init(train[net]["params"])  # zeros and count 0: the canonical fresh state
            if opt_state is not None:
                opt = _load_adam(opt, spec, net, opt_state[net], dtype, device)
            train[f"opt_{net}"] = opt
        # Device RNG for fast mode (z=None): threefry, seeded at build and carried in the state.
        train["key"] = jax.device_put(jax.random.key(options.seed), device)
        return JaxState(spec, options, device, cfg, train)

    def generate(self, state: JaxState, z: np.ndarray, bn: str = "batch") -> np.ndarray:
        return self._forward(state, "G", z, bn)

    def discriminate(self, state: JaxState, x: np.ndarray, bn: str = "batch") -> np.ndarray:
        out = self._forward(state, "D", x, bn)
        return out.reshape(out.shape[0])

    def train_step(self, state: JaxState, real: np.ndarray, z: np.ndarray | None, with_grads: bool = False) -> StepOutput:
        scalars, grads = self._step(state, real, z, with_grads)
        out = StepOutput(**{k: float(v) for k, v in jax.device_get(scalars).items()})
        if grads is not None:
            out.grads = {}
            for net in ("G", "D"):  # D's from the D step, G's from the G step (train.py)
                for name in trainable_names(state.spec, net):
                    layer = _layer(state.spec, name)
                    _, mod, var = module_key(name, layer)  # gradients mirror the "params" collection
                    out.grads[name] = param_from_framework(name, grads[net][mod][var], layer)
        return out

    def export_params(self, state: JaxState) -> tuple[Params, OptState]:
        params: Params = {}
        for name in param_shapes(state.spec):
            layer = _layer(state.spec, name)
            coll, mod, var = module_key(name, layer)
            params[name] = param_from_framework(name, state.train[name[0]][coll][mod][var], layer)
        return params, OptState(_export_adam(state, "G"), _export_adam(state, "D"))

    def settings(self, state: JaxState) -> dict[str, Any]:
        return {
            "mode": state.options.mode,
            "dtype": state.options.dtype,
            "device": f"{state.device.platform}:{state.device.id}",
            "device_name": state.device.device_kind,
            "jit": True,  # both modes: one XLA executable per iteration (see train.py)
            "donation": state.options.mode == "fast",
            "x64": bool(jax.config.jax_enable_x64),
            "layer_precision": "highest" if state.cfg.precision is not None else "default",
            "default_matmul_precision": "highest" if state.options.mode == "parity"
            else str(jax.config.jax_default_matmul_precision),
            "xla_flags": os.environ.get("XLA_FLAGS"),
            "xla_python_client_preallocate": os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE"),
            "jax_platforms": os.environ.get("JAX_PLATFORMS"),
            "cpu_count": os.cpu_count(),
            "compile_s": state.compile_s,
        }

    def sync(self, state: JaxState) -> None:
        jax.block_until_ready(state.train)

    # -- extras (not part of the protocol) ------------------------------------

    def train_epoch(self, state: JaxState, reals: np.ndarray, zs: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """``len(reals)`` iterations as ONE compiled ``lax.scan`` over a stack of equal-size batches.

        ``reals``: ``(n, B, *example_shape)`` canonical. ``zs``: ``(n, B, *latent_shape)`` host
        noise, or None to draw it on the device (fast mode). Returns each scalar per iteration.
        """
        reals_j = _stack_to_framework(reals, state)
        zs_j = None if zs is None else _stack_to_framework(zs, state)
        run = self._compiled(state, "epoch", EPOCH[state.options.mode], (state.train, reals_j, zs_j),
                             {"cfg": state.cfg})
        state.train, scalars = run(state.train, reals_j, zs_j)
        return {k: np.asarray(v, dtype=np.float64) for k, v in jax.device_get(scalars).items()}

    # -- helpers (not part of the protocol) ------------------------------------

    def _step(self, state: JaxState, real: np.ndarray, z: np.ndarray | None, with_grads: bool):
        dtype = JAX_DTYPES[state.options.dtype]
        real_j = activations_to_framework(real, dtype, state.device)
        # z None: noise from the state's key, drawn inside the compiled step (no host round trip).
        z_j = None if z is None else activations_to_framework(z, dtype, state.device)
        # Parity always returns the gradients (they are computed for Adam anyway): one executable
        # serves both with_grads values. Fast mode compiles them out unless asked for.
        compiled_grads = with_grads or state.options.mode == "parity"
        run = self._compiled(state, "iteration", ITERATION[state.options.mode], (state.train, real_j, z_j),
                             {"cfg": state.cfg, "with_grads": compiled_grads})
        state.train, scalars, grads = run(state.train, real_j, z_j)
        return scalars, (grads if with_grads else None)

    def _forward(self, state: JaxState, net: str, x: np.ndarray, bn: str) -> np.ndarray:
        if bn not in ("batch", "running"):
            raise GanSuiteError(f"bn: must be 'batch' or 'running', got {bn!r}")
        x_j = activations_to_framework(x, JAX_DTYPES[state.options.dtype], state.device)
        run = self._compiled(state, "forward", FORWARD, (state.train, x_j), {"cfg": state.cfg, "net": net, "bn": bn})
        # Pure: the updated running statistics of a batch-stats forward are dropped in train.forward.
        return activations_from_framework(run(state.train, x_j))

    def _compiled(self, state: JaxState, kind: str, jitted: Any, args: tuple, static: dict[str, Any]) -> Callable:
        """Ahead-of-time compile once per signature, timing the compile apart from the run."""
        key = (kind, id(jitted), tuple(sorted(static.items())), _signature(args), state.device)
        exe = _COMPILED.get(key)
        if exe is None:
            t0 = time.perf_counter()
            if state.options.mode == "parity":
                with jax.default_matmul_precision("highest"):
                    exe = jitted.lower(*args, **static).compile()
            else:
                exe = jitted.lower(*args, **static).compile()
            dt = time.perf_counter() - t0
            state.compile_s += dt
            state.compile_log[kind] = state.compile_log.get(kind, 0.0) + dt
            _COMPILED[key] = exe
        return exe


def _layer(spec: GANSpec, name: str):
    return net_spec(spec, name[0]).layers[int(name.split(".")[1])]


def _to_variables(spec: GANSpec, net: str, params: Params, dtype: Any, device: jax.Device) -> dict[str, Any]:
    """Canonical params of one net -> Flax's ``{"params": ..., "batch_stats": ...}`` variables."""
    variables: dict[str, Any] = {"params": {}, "batch_stats": {}}
    for name, shape in param_shapes(spec).items():
        if not name.startswith(net + "."):
            continue
        if tuple(np.shape(params[name])) != shape:
            raise GanSuiteError(f"params: {name} has shape {np.shape(params[name])}, the spec says {shape}")
        layer = _layer(spec, name)
        coll, mod, var = module_key(name, layer)
        variables[coll].setdefault(mod, {})[var] = param_to_framework(name, params[name], layer, dtype, device)
    return variables


def _load_adam(opt: Any, spec: GANSpec, net: str, adam: AdamState, dtype: Any, device: jax.Device) -> Any:
    # optax.adam = chain(scale_by_adam, scale_by_learning_rate): state (ScaleByAdamState, EmptyState).
    # Its one `count` per optimizer is the canonical per-net step (PyTorch keeps one per parameter).
    adam_state, *rest = opt
    if adam.step == 0 and not adam.m:
        return opt
    mu = {"params": {}}
    nu = {"params": {}}
    for name in trainable_names(spec, net):
        layer = _layer(spec, name)
        _, mod, var = module_key(name, layer)
        mu["params"].setdefault(mod, {})[var] = param_to_framework(name, adam.m[name], layer, dtype, device)
        nu["params"].setdefault(mod, {})[var] = param_to_framework(name, adam.v[name], layer, dtype, device)
    count = jax.device_put(jnp.asarray(adam.step, dtype=adam_state.count.dtype), device)
    return (adam_state._replace(count=count, mu=mu["params"], nu=nu["params"]), *rest)


def _export_adam(state: JaxState, net: str) -> AdamState:
    adam_state = state.train[f"opt_{net}"][0]
    out = AdamState(step=int(jax.device_get(adam_state.count)))
    for name in trainable_names(state.spec, net):
        layer = _layer(state.spec, name)
        _, mod, var = module_key(name, layer)
        out.m[name] = param_from_framework(name, adam_state.mu[mod][var], layer)
        out.v[name] = param_from_framework(name, adam_state.nu[mod][var], layer)
    return out


def _stack_to_framework(stack: np.ndarray, state: JaxState) -> jax.Array:
    """``(n, B, ...)`` canonical -> ``(n, B, ...)`` in Flax's layout, one transfer."""
    stack = np.asarray(stack)
    flat = activations_to_framework(stack.reshape(-1, *stack.shape[2:]), JAX_DTYPES[state.options.dtype],
                                    state.device)
    return flat.reshape(stack.shape[0], stack.shape[1], *flat.shape[1:])
