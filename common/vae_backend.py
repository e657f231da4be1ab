"""The VAE's backend protocol (seed 002, 8.1), and the template every framework's ``vae.py`` fills in.

A VAE is one network family with its own step: encoder trunk ``E``, heads ``mu`` and ``logvar``,
decoder ``Dec`` (common/vae.py), ONE Adam over all of them. Callers use :class:`VAEProtocol`; the
float64 oracle (:class:`OracleVAE`, on common/vae.py) implements it directly, and
:class:`VAEBackend` implements it once for every framework: option and parameter checks, the
layout conversion at the boundary (through the framework's own ``layout.py``, the one place it
happens for the GANs too) and the Adam-state export, on the primitives of
``backends/<fw>/vae.py``, which every backend defines in this order:

=====================================  ======================================================
``create_state(spec, options, dtype,   the four nets (``models.build_net`` of the GANs), one
device)``                              Adam in ``spec.train.optim``'s form over E, mu, logvar,
                                       Dec (the seed's ``model.parameters()`` order), compiled
                                       callables in fast mode; tensors are written afterwards
``write_tensor(state, name, value)``   one canonical tensor (already in the framework's layout)
``read_tensor(state, name)``           that tensor back, framework type
``write_adam(state, step, m, v)``      the one Adam state (m, v: name -> framework tensor)
``read_adam(state)``                   ``(step, m, v)``; moments of a fresh state are zeros
``forward(state, x, eps)``             ``(x_reconst, mu, log_var)``, framework tensors
``decode(state, z)``                   ``Dec(z)``, the seed's ``model.decode(z)`` (sampled grids)
``train_iteration(state, x, eps,       the seed's loop body: forward, BCE sum (logs clamped at
with_grads)``                          -100) + summed KL, ``zero_grad``, backward, Adam step;
                                       returns ({"reconstruction", "kl", "total"}: floats at
                                       the parameters before the step, gradients by canonical
                                       name or None)
=====================================  ======================================================

Inputs: ``x`` is ``(B, features)`` in [0, 1] (common/vae.py ``vae_batch``: the seed's
``ToTensor()`` pixels, flattened), ``eps`` is ``(B, latent)``, the seed's ``torch.randn_like(std)``
drawn by common/ (stream 9), so every framework reparameterises with the same numbers. Both are
flat 2-D arrays, identical in every framework's layout (no channel axis to move).

Modes: ``parity`` runs the ops eagerly (or jitted where the framework only has that, JAX) with
deterministic settings; ``fast`` compiles the step (torch.compile, jax.jit, tf.function,
hybridize). Both take ``eps`` from the host: the VAE's only randomness is that one draw per
iteration, so fast mode needs no device RNG to be correct.
"""

from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from .errors import GanSuiteError
from .params import AdamState, Params
from .protocol import Backend, BuildOptions, check_options, check_shapes
from .spec import Layer
from .oracle import net_forward
from .vae import (VAE_NETS, VAE_SCALARS, VAEState, VAEStepOutput, VAESpec, check_vae_inputs, vae_forward,
                  vae_param_shapes, vae_state, vae_step)


def vae_layer_of(spec: VAESpec, name: str) -> Layer:
    """The spec layer that canonical tensor ``name`` (``<net>.<i>.<tensor>``) belongs to."""
    net, i, _ = name.split(".")
    if net not in VAE_NETS:
        raise GanSuiteError(f"param: {name!r} is not a VAE tensor; nets: {', '.join(VAE_NETS)}")
    return spec.net(net).layers[int(i)]


def check_vae_params(spec: VAESpec, params: Params) -> None:
    """Every canonical tensor present, nothing extra, every shape the spec's."""
    check_shapes(vae_param_shapes(spec), params, "the VAE spec")


def check_latent(spec: VAESpec, z: np.ndarray) -> np.ndarray:
    """``z`` as float64 ``(B, latent)``; a one-line error otherwise."""
    z = np.asarray(z, np.float64)
    if z.ndim != 2 or z.shape[1] != spec.latent:
        raise GanSuiteError(f"z: must have shape (batch, {spec.latent}) (the latent size), got {z.shape}")
    return z


class VAEProtocol(abc.ABC):
    """The interface every VAE caller uses."""

    name: str = ""

    @abc.abstractmethod
    def versions(self) -> dict[str, str]:
        """Package -> version, for every package that affects numbers."""

    @abc.abstractmethod
    def build(self, spec: VAESpec, params: Params, opt: AdamState | None, options: BuildOptions) -> Any:
        """Nets and the optimizer from canonical params (and Adam moments, if given)."""

    @abc.abstractmethod
    def forward(self, state: Any, x: np.ndarray, eps: np.ndarray) -> dict[str, np.ndarray]:
        """``{"x_reconst", "mu", "log_var"}`` as float64 (canonical layout); changes no state."""

    @abc.abstractmethod
    def decode(self, state: Any, z: np.ndarray) -> np.ndarray:
        """``Dec(z)`` as float64 ``(B, features)`` in [0, 1]; changes no state."""

    @abc.abstractmethod
    def train_step(self, state: Any, x: np.ndarray, eps: np.ndarray, with_grads: bool = False) -> VAEStepOutput:
        """One iteration of the seed's loop; updates ``state`` in place."""

    @abc.abstractmethod
    def export_params(self, state: Any) -> tuple[Params, AdamState]:
        """Canonical params and the Adam state, as numpy."""


class OracleVAE(VAEProtocol):
    """The float64 NumPy oracle of common/vae.py behind the protocol."""

    name = "oracle"

    def versions(self) -> dict[str, str]:
        return {"numpy": np.__version__}

    def build(self, spec: VAESpec, params: Params, opt: AdamState | None, options: BuildOptions) -> VAEState:
        check_options(options)  # the dtype is validated, and then, as the GANs' oracle, not used:
        check_vae_params(spec, params)  # the oracle is the float64 reference of every dtype's run
        return vae_state(spec, params, opt)

    def forward(self, state: VAEState, x: np.ndarray, eps: np.ndarray) -> dict[str, np.ndarray]:
        x, eps = check_vae_inputs(state.spec, x, eps)
        out = vae_forward(state.params, state.spec, x, eps)
        return {k: out[k] for k in ("x_reconst", "mu", "log_var")}

    def decode(self, state: VAEState, z: np.ndarray) -> np.ndarray:
        return net_forward(state.spec.decoder, state.params, "Dec", check_latent(state.spec, z))[0]

    def train_step(self, state: VAEState, x: np.ndarray, eps: np.ndarray, with_grads: bool = False) -> VAEStepOutput:
        x, eps = check_vae_inputs(state.spec, x, eps)
        return vae_step(state, x, eps, with_grads)

    def export_params(self, state: VAEState) -> tuple[Params, AdamState]:
        opt = state.opt
        return ({k: v.copy() for k, v in state.params.items()},
                AdamState(opt.step, {k: v.copy() for k, v in opt.m.items()}, {k: v.copy() for k, v in opt.v.items()}))


@dataclass
class VAEBackendState:
    """What the template needs of every backend's VAE state; each backend's extends it."""

    spec: VAESpec
    options: BuildOptions
    dtype: Any  # the framework's dtype object
    device: Any  # the framework's device object


class VAEBackend(VAEProtocol):
    """The protocol implemented once, on ``backends/<fw>/vae.py`` and the GAN backend's device,
    numerics flags and ``layout.py`` (one conversion module per framework, for every family)."""

    def __init__(self, backend: Backend, primitives: ModuleType) -> None:
        self.backend, self.fw = backend, primitives
        self.name = backend.name
        self.layout = backend.layout

    def versions(self) -> dict[str, str]:
        return self.backend.versions()

    def build(self, spec: VAESpec, params: Params, opt: AdamState | None, options: BuildOptions) -> VAEBackendState:
        kind = check_options(options)
        if options.extra.get("mixed_precision") is not None:
            # The VAE's nets are built without it (the GAN backends' configure would accept it and the
            # build would then silently run float32): refuse here, in one line.
            raise GanSuiteError(f"extra.mixed_precision: {options.extra['mixed_precision']!r} is not supported for "
                                "the VAE family; allowed: none (the GAN backends take 'mixed_bfloat16')")
        check_vae_params(spec, params)
        device = self.backend.framework_device(kind)
        self.backend.configure(device, options)
        state = self.fw.create_state(spec, options, self.layout.DTYPES[options.dtype], device)
        for name in vae_param_shapes(spec):
            self.fw.write_tensor(state, name, self._to_framework(state, name, params[name]))
        if opt is not None and opt.step > 0:  # step 0: zero moments, what create_state made
            self.fw.write_adam(state, int(opt.step), {k: self._to_framework(state, k, opt.m[k]) for k in opt.m},
                               {k: self._to_framework(state, k, opt.v[k]) for k in opt.v})
        return state

    def forward(self, state: VAEBackendState, x: np.ndarray, eps: np.ndarray) -> dict[str, np.ndarray]:
        x_f, eps_f = self._inputs(state, x, eps)
        outs = self.fw.forward(state, x_f, eps_f)
        return {k: self.layout.activations_from_framework(v) for k, v in zip(("x_reconst", "mu", "log_var"), outs)}

    def decode(self, state: VAEBackendState, z: np.ndarray) -> np.ndarray:
        z = check_latent(state.spec, z)
        self.backend.configure(state.device, state.options)
        z_f = self.layout.activations_to_framework(z, state.dtype, state.device)
        return self.layout.activations_from_framework(self.fw.decode(state, z_f))

    def train_step(self, state: VAEBackendState, x: np.ndarray, eps: np.ndarray,
                   with_grads: bool = False) -> VAEStepOutput:
        x_f, eps_f = self._inputs(state, x, eps)
        scalars, grads = self.fw.train_iteration(state, x_f, eps_f, with_grads)
        grads_np = None if grads is None else {k: self._from_framework(state, k, v) for k, v in grads.items()}
        return VAEStepOutput(*(float(scalars[k]) for k in VAE_SCALARS), grads=grads_np)

    def export_params(self, state: VAEBackendState) -> tuple[Params, AdamState]:
        names = vae_param_shapes(state.spec)
        params = {k: self._from_framework(state, k, self.fw.read_tensor(state, k)) for k in names}
        step, m, v = self.fw.read_adam(state)
        return params, AdamState(int(step), {k: self._from_framework(state, k, m[k]) for k in names},
                                 {k: self._from_framework(state, k, v[k]) for k in names})

    def sync(self, state: VAEBackendState) -> None:
        self.backend.sync(state)

    # -- glue --------------------------------------------------------------------------------

    def _inputs(self, state: VAEBackendState, x: np.ndarray, eps: np.ndarray) -> tuple[Any, Any]:
        x, eps = check_vae_inputs(state.spec, x, eps)
        self.backend.configure(state.device, state.options)
        return (self.layout.activations_to_framework(x, state.dtype, state.device),
                self.layout.activations_to_framework(eps, state.dtype, state.device))

    def _to_framework(self, state: VAEBackendState, name: str, value: np.ndarray) -> Any:
        return self.layout.param_to_framework(name, np.asarray(value), vae_layer_of(state.spec, name), state.dtype,
                                              state.device)

    def _from_framework(self, state: VAEBackendState, name: str, value: Any) -> np.ndarray:
        return self.layout.param_from_framework(name, value, vae_layer_of(state.spec, name))


def get_vae_backend(name: str) -> VAEProtocol:
    """``"oracle"`` or a framework backend's VAE (its ``backends/<fw>/vae.py``); the same one-line
    errors as ``registry.get_backend`` for an unknown or uninstalled backend."""
    from .registry import get_backend

    if name == "oracle":
        return OracleVAE()
    backend = get_backend(name)
    package = type(backend).__module__.rsplit(".", 1)[0]
    return VAEBackend(backend, importlib.import_module(f"{package}.vae"))
