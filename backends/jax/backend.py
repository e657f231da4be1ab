"""JAX primitives of the backend template (common/protocol.py), in the template's order.

The state is functional: everything mutable is one pytree, ``JaxState.train`` (train.TrainState),
which each compiled step replaces; the primitives below read and write its leaves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gansuite.common.errors import GanSuiteError
from gansuite.common.layout import channels_last_shape, layer_of, net_of
from gansuite.common.params import param_shapes, trainable_names
from gansuite.common.protocol import Backend, BackendState, BuildOptions, device_unavailable, mixed_precision
from gansuite.common.spec import GANSpec

from . import layout
from .models import StepConfig
from .train import TrainState, _draw_noise, _train_epoch, make_adam


@dataclass
class JaxState(BackendState):
    cfg: StepConfig
    train: TrainState  # the whole mutable state as one pytree (replaced, never mutated, by each step)
    compile_s: float = 0.0  # seconds spent compiling for this state (benchmarks read it)
    compile_log: dict[str, float] = field(default_factory=dict)  # the same, per compiled variant


class JaxBackend(Backend):
    name = "jax"
    packages = ("jax", "jaxlib", "flax", "optax", "numpy")

    def framework_device(self, kind: str) -> jax.Device:
        try:
            return jax.devices("gpu" if kind == "cuda" else kind)[0]  # JAX's platform name for CUDA
        except RuntimeError:
            raise device_unavailable("JAX", kind, sorted({d.platform for d in jax.devices()})) from None

    def configure(self, device: jax.Device, options: BuildOptions) -> None:
        # jax_enable_x64 is set on import (__init__.py: it must precede every JAX array); refuse if
        # someone turned it off since. Precision is per layer and per compile (models._precision).
        if not jax.config.jax_enable_x64:
            raise GanSuiteError("jax: jax_enable_x64 is off; the JAX backend needs it (float64 parity)")
        mixed_precision(options)  # one line for a value, mode or dtype that has no mixed path

    def create_state(self, spec: GANSpec, options: BuildOptions, dtype: Any, device: jax.Device) -> JaxState:
        # Zeros of the right (Flax-layout) shapes and dtype; the template writes the values next. An
        # embed_concat table is one more "params" leaf (nn.Embed's "embedding", layout.module_key), so
        # write/read_tensor and the Adam moments (which mirror "params") carry it with no special case.
        nets: dict[str, Any] = {net: {"params": {}, "batch_stats": {}} for net in ("G", "D")}
        for name, shape in param_shapes(spec).items():
            coll, mod, var = layout.module_key(name, layer_of(spec, name))
            nets[net_of(name)][coll].setdefault(mod, {})[var] = layout.param_to_framework(
                name, np.zeros(shape), layer_of(spec, name), dtype, device)
        # optax's init: zero moments and count 0, the canonical fresh state.
        opt = {net: make_adam(spec.train.optim_G if net == "G" else spec.train.optim_D, nets[net]["params"],
                              options.mode).init(nets[net]["params"]) for net in ("G", "D")}
        # Device RNG for fast mode (z=None): threefry, seeded at build and carried in the state.
        key = jax.device_put(jax.random.key(options.seed), device)
        train = TrainState(G=nets["G"], D=nets["D"], opt_G=opt["G"], opt_D=opt["D"], key=key)
        # bf16 mixed precision (fast mode, a benchmark setting: benchmarks/mixed.py) is the nets' compute
        # dtype only (models.build_layer: Flax's dtype=bfloat16, param_dtype=float32 on the layers that
        # multiply): the variables above, Adam's moments, the noise and the loss stay float32.
        cfg = StepConfig(spec, options.dtype, options.mode, mixed_precision(options))
        return JaxState(spec, options, dtype, device, cfg, train)

    def write_tensor(self, state: JaxState, name: str, value: jax.Array) -> None:
        coll, mod, var = layout.module_key(name, layer_of(state.spec, name))
        state.train[net_of(name)][coll][mod][var] = value

    def read_tensor(self, state: JaxState, name: str) -> jax.Array:
        coll, mod, var = layout.module_key(name, layer_of(state.spec, name))
        return state.train[net_of(name)][coll][mod][var]

    def write_adam(self, state: JaxState, net: str, step: int, m: dict[str, jax.Array],
                   v: dict[str, jax.Array]) -> None:
        # optax.adam = chain(scale_by_adam, scale_by_learning_rate): state (ScaleByAdamState, EmptyState);
        # the eps-hat form (train._eps_hat_adam) keeps that layout, so both forms are read/written alike.
        # Its one `count` per optimizer is the canonical per-net step (PyTorch keeps one per parameter).
        adam, *rest = state.train[f"opt_{net}"]
        mu: dict[str, dict[str, jax.Array]] = {}
        nu: dict[str, dict[str, jax.Array]] = {}
        for name in trainable_names(state.spec, net):  # the moments mirror the "params" collection
            _, mod, var = layout.module_key(name, layer_of(state.spec, name))
            mu.setdefault(mod, {})[var], nu.setdefault(mod, {})[var] = m[name], v[name]
        count = jax.device_put(jnp.asarray(step, dtype=adam.count.dtype), state.device)
        state.train[f"opt_{net}"] = (adam._replace(count=count, mu=mu, nu=nu), *rest)

    def read_adam(self, state: JaxState, net: str) -> tuple[int, dict[str, jax.Array], dict[str, jax.Array]]:
        adam = state.train[f"opt_{net}"][0]
        keys = {name: layout.module_key(name, layer_of(state.spec, name)) for name in trainable_names(state.spec, net)}
        return (int(jax.device_get(adam.count)), {k: adam.mu[mod][var] for k, (_, mod, var) in keys.items()},
                {k: adam.nu[mod][var] for k, (_, mod, var) in keys.items()})

    def device_noise(self, state: JaxState, batch_size: int) -> jax.Array:
        # Split the state's key outside the compiled step (same values as a split inside it).
        shape = (batch_size, *channels_last_shape(state.spec.latent_shape))
        state.train, z = _draw_noise(state.train, shape, state.dtype)
        return z

    def settings(self, state: JaxState) -> dict[str, Any]:
        return {
            "mode": state.options.mode,
            "dtype": state.options.dtype,
            "device": f"{state.device.platform}:{state.device.id}",
            "device_name": state.device.device_kind,
            "jit": True,  # both modes: one XLA executable per iteration (see train.py)
            "mixed_precision": state.cfg.mixed,  # None, or "mixed_bfloat16": bf16 Dense/Conv/ConvTranspose
            "donation": state.options.mode == "fast",
            "x64": bool(jax.config.jax_enable_x64),
            "layer_precision": "highest" if state.options.mode == "parity" else "default",
            "default_matmul_precision": "highest" if state.options.mode == "parity"
            else str(jax.config.jax_default_matmul_precision),
            "xla_flags": os.environ.get("XLA_FLAGS"),
            "xla_python_client_preallocate": os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE"),
            "jax_platforms": os.environ.get("JAX_PLATFORMS"),
            "cpu_count": os.cpu_count(),
            "compile_s": state.compile_s,
            # optax.adam (PyTorch's form) or train._eps_hat_adam (Keras/MXNet's), per net.
            "adam_form": {"G": state.spec.train.optim_G.form, "D": state.spec.train.optim_D.form},
        }

    def sync(self, state: JaxState) -> None:
        jax.block_until_ready(state.train)

    # -- extra (not part of the protocol; tests/test_backend_signatures.py FRAMEWORK_EXTRAS) ------

    def train_epoch(self, state: JaxState, reals: np.ndarray, zs: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """``len(reals)`` iterations as ONE compiled ``lax.scan`` over a stack of equal-size batches.

        ``reals``: ``(n, B, *example_shape)`` canonical. ``zs``: ``(n, B, *latent_shape)`` host
        noise, or None to draw it on the device (fast mode). Returns each scalar per iteration.
        """
        self.configure(state.device, state.options)
        return _train_epoch(state, reals, zs)
