"""The backend protocol, and the template every framework backend fills in.

The training loop, CLI, traces, parity tests and benchmarks are written once
against :class:`GANProtocol`. The float64 oracle (common/oracle.py) implements
it directly. A framework backend lives in ``backends/<framework>/`` and
subclasses :class:`Backend`, which implements the protocol ONCE (option and
parameter checks, device parsing, ``bn`` validation, layout conversion at the
boundary, gradient and Adam-state export in the canonical layout) on top of a
short list of framework primitives.

The primitives: three module-level functions the template binds from the backend's own
``layout.py``, ``models.py`` and ``train.py`` (so every backend package has those files), then
what every ``backends/<fw>/backend.py`` defines, in this order:

=====================================  ======================================================
``layout.py``                          tensors in/out (``param_to_framework``,
                                       ``param_from_framework``, ``activations_to_framework``,
                                       ``activations_from_framework``, ``module_key``,
                                       ``DTYPES``): the one place layouts are converted
``models.forward(state, net, x, bn,    one pure forward (``labels``: framework int tensor or
labels)``                              None; Dropout is the identity in a pure forward)
``train.train_iteration(state, real,   one iteration, framework tensors in, (scalars,
z, with_grads, draws)``                canonical-name -> framework gradient) out; ``draws``:
                                       the iteration's labels, fresh noise and dropout masks
                                       (common/draws.py keys), framework tensors
``packages``                           the packages whose versions affect the numbers
``framework_device(kind)``             "cpu" / "cuda" -> the framework's device object
``configure(device, options)``         process-wide numerics flags (re-asserted before every
                                       call, so a parity state keeps its settings when a
                                       fast one was built in between)
``create_state(spec, options,          nets, optimisers, device RNG and compiled callables;
dtype, device)``                       tensors are written afterwards
``write_tensor(state, name, value)``   one canonical tensor (already in the framework's
                                       layout) into the nets
``read_tensor(state, name)``           that tensor back, framework type
``write_adam(state, net, step, m, v)`` Adam state of one net (m, v: name -> framework tensor)
``read_adam(state, net)``              ``(step, m, v)`` of one net, framework tensors
``device_noise(state, batch_size)``    fast mode's latent noise, drawn on the device
``settings(state)``, ``sync(state)``   records, and a device barrier before a clock is read
=====================================  ======================================================

Semantics every backend reproduces (the spec's, i.e. the tutorial's):

``train_step`` runs ONE iteration in the tutorial's call order::

    D.zero_grad()
    out_real = D(real)                 # BN: batch stats, running stats updated
    fake     = G(z)                    # BN: batch stats, running stats updated (G runs once)
    out_fake = D(fake.detach())        # running stats updated again
    loss_D   = d_loss_scale * (BCE(out_real, real_label) + BCE(out_fake, fake_label))
    Adam step on D
    out_gen  = D(fake)                 # D after its step; running stats updated a third time
    loss_G   = BCE(out_gen, real_label)
    Adam step on G (gradient through D into G; D's parameters unchanged)

Spec variants of that sequence (each backend's train.py implements all of them): the order of D's
passes and one or two backwards (``train.d_order``, ``train.d_backward``), the G step on a fresh
z run through G again (``train.g_noise="fresh"``, seed 002), BCE on D's Sigmoid output
(``loss.on="probabilities"``), and for a conditional GAN the labels: D(real) takes the batch's
labels, G and D(fake) the draws' fake labels. Dropout layers multiply by the draws' mask of
their pass (``mask/<pass>/<net>.<i>``) in parity mode; in fast mode, with no draws, each
framework draws its own masks (and labels, and fresh z).

``generate`` / ``discriminate`` are pure forwards: with ``bn="batch"`` BatchNorm
uses the batch statistics (the tutorial samples in train mode) and with
``bn="running"`` the running ones (eval mode); neither changes any state.

Modes:
* ``parity``: inputs fed from the host (common.streams), deterministic kernels,
  no TF32, no compilation that changes arithmetic. Float32 or float64.
* ``fast``: compiled (torch.compile / jax.jit / tf.function / hybridize) and, when
  ``train_step`` is given ``z=None``, latent noise drawn on the device from the
  backend's own RNG seeded at ``build`` (``device_noise``).
"""

from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable

import numpy as np

from .draws import Draws, check_draws, check_labels
from .errors import GanSuiteError
from .layout import layer_of
from .params import OptState, Params, param_shapes, trainable_names
from .spec import Dense, Flatten, GANSpec, LeakyReLU, ReLU, Reshape, Sigmoid, Tanh

DTYPES = ("float32", "float64")
MODES = ("parity", "fast")
BN_MODES = ("batch", "running")
#: Device names a user may pass, and the device kind each means.
DEVICES = {"cpu": "cpu", "cuda": "cuda", "gpu": "cuda"}


@dataclass
class StepOutput:
    """What one iteration reports (floats on the host)."""

    loss_D: float
    loss_G: float
    D_x: float  # mean sigmoid(D(real)), the tutorial's D(x)
    D_G_z1: float  # mean sigmoid(D(G(z))) before D's step
    D_G_z2: float  # mean sigmoid(D(G(z))) after D's step
    grads: Params | None = None  # canonical layout; D from the D step, G from the G step

    def scalars(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in SCALARS}


SCALARS = ("loss_D", "loss_G", "D_x", "D_G_z1", "D_G_z2")


@dataclass
class BuildOptions:
    dtype: str = "float32"
    device: str = "cpu"
    mode: str = "parity"
    seed: int = 0  # device RNG seed for fast mode
    extra: dict[str, Any] = field(default_factory=dict)


def check_choice(field_name: str, value: Any, allowed: Any) -> None:
    """One-line error naming the field and the allowed values."""
    if value not in allowed:
        raise GanSuiteError(f"{field_name}: {value!r} is not supported; allowed: {', '.join(allowed)}")


#: Fast mode's bf16 mixed precision, the same value on every backend (Keras's policy name):
#: ``BuildOptions(dtype="float32", mode="fast", extra={"mixed_precision": MIXED_BF16})``. Variables,
#: Adam state, BatchNorm and the loss stay float32; the layers that multiply (Dense, Conv2d,
#: ConvTranspose2d) compute in bfloat16 -- each framework's own mechanism (torch.autocast, Keras's
#: dtype policy, Flax's module ``dtype``, MXNet's AMP). Never in parity mode: parity is exact.
MIXED_BF16 = "mixed_bfloat16"
#: The reason a backend gives when the device, not the backend, lacks bf16 kernels (MXNet's oneDNN
#: on a CPU without AVX-512): a build refuses with it in one line, and the comparison report's
#: mixed-precision row keeps that line (tests/test_crossbackend.py accepts no other reason).
NO_BF16_KERNELS = "this CPU has no bfloat16 kernels"


def mixed_precision(options: BuildOptions) -> str | None:
    """``options.extra["mixed_precision"]`` checked: None (full precision) or :data:`MIXED_BF16`;
    anything else, parity mode or a float64 build is refused in one line."""
    mixed = options.extra.get("mixed_precision")
    if mixed is not None and (mixed != MIXED_BF16 or options.mode != "fast" or options.dtype != "float32"):
        raise GanSuiteError(f"extra.mixed_precision: {mixed!r} is not supported here; allowed: {MIXED_BF16!r} "
                            "in fast mode with dtype float32 (parity runs exact float32/float64)")
    return mixed


#: The spec layers a dense multi-step primitive takes (PyTorch's compiled scan, MXNet's executors):
#: dense layers and parameter-free elementwise or reshaping ones.
DENSE_MULTI_STEP_LAYERS = (Dense, Tanh, ReLU, LeakyReLU, Sigmoid, Flatten, Reshape)


def dense_multi_step_refusal(spec: GANSpec, options: BuildOptions, primitive: str, mixed: str) -> str | None:
    """Why a dense multi-step primitive (``train_epoch`` of nets of :data:`DENSE_MULTI_STEP_LAYERS`)
    cannot run ``spec`` under ``options`` (one line), or None: fast mode only (parity stays step by
    step), float32/float64 (not ``mixed``, the framework's bf16-mixed mechanism), no per-iteration
    draws, and dense nets (``primitive`` names the framework's primitive in the message)."""
    if options.mode != "fast":
        return "train_epoch is fast mode's (parity mode runs train_step, one iteration a call)"
    if options.extra.get("mixed_precision"):
        return f"train_epoch runs float32 or float64, not {mixed} (bf16-mixed)"
    if spec.conditional or spec.has_dropout or spec.train.g_noise != "reuse":
        return (f"train_epoch: model {spec.name!r} needs per-iteration draws (labels, fresh z, dropout "
                "masks), which train_epoch does not take; use train_step")
    for net in (spec.generator, spec.discriminator):
        for layer in net.layers:
            if not isinstance(layer, DENSE_MULTI_STEP_LAYERS):
                return (f"train_epoch: {primitive} takes nets of dense layers and elementwise activations; "
                        f"model {spec.name!r} has {type(layer).__name__}; use train_step")
    return None


def check_options(options: BuildOptions) -> str:
    """Validate dtype, mode and device; return the device kind ("cpu" or "cuda")."""
    check_choice("dtype", options.dtype, DTYPES)
    check_choice("mode", options.mode, MODES)
    check_choice("device", options.device, DEVICES)
    return DEVICES[options.device]


def check_params(spec: GANSpec, params: Params) -> None:
    """Every canonical tensor present, nothing extra, every shape the spec's."""
    check_shapes(param_shapes(spec), params, "the spec")


def check_shapes(shapes: dict[str, tuple[int, ...]], params: Params, what: str) -> None:
    """``params`` holds exactly the tensors of ``shapes`` (name -> shape), each of its shape; one
    line naming ``what`` they should match otherwise (any model family's shape table)."""
    missing, unexpected = sorted(set(shapes) - set(params)), sorted(set(params) - set(shapes))
    wrong = [k for k in shapes if k in params and tuple(np.shape(params[k])) != shapes[k]]
    if missing or unexpected or wrong:
        raise GanSuiteError(f"params: do not match {what} (missing {missing}, unexpected {unexpected}, "
                            f"wrong shape {wrong})")


def device_unavailable(framework: str, kind: str, have: list[str]) -> GanSuiteError:
    """The one error for a device the framework does not see."""
    return GanSuiteError(f"device: {kind!r} asked for but {framework} sees no such device; "
                         f"allowed here: {', '.join(have)}")


def _version(package: str) -> str:
    """The package's own ``__version__``, else its distribution's (jaxlib, flax)."""
    from importlib.metadata import version

    return str(getattr(importlib.import_module(package), "__version__", None) or version(package))


class GANProtocol(abc.ABC):
    """The interface every caller uses; the oracle implements it directly."""

    name: str = ""

    @abc.abstractmethod
    def versions(self) -> dict[str, str]:
        """Framework name -> version string, for every package that affects numbers."""

    @abc.abstractmethod
    def build(self, spec: GANSpec, params: Params, opt_state: OptState | None, options: BuildOptions) -> Any:
        """Networks and optimisers from canonical params (and Adam moments, if given)."""

    @abc.abstractmethod
    def generate(self, state: Any, z: np.ndarray, bn: str = "batch", labels: np.ndarray | None = None) -> np.ndarray:
        """G(z) (given ``labels`` for a conditional GAN) as float64 in the canonical layout; changes no state."""

    @abc.abstractmethod
    def discriminate(self, state: Any, x: np.ndarray, bn: str = "batch", labels: np.ndarray | None = None) -> np.ndarray:
        """D(x) outputs (logits, or probabilities with ``loss.on="probabilities"``), shape ``(B,)``,
        float64; changes no state."""

    @abc.abstractmethod
    def train_step(self, state: Any, real: np.ndarray, z: np.ndarray | None, with_grads: bool = False,
                   draws: Draws | None = None) -> StepOutput:
        """One iteration (see module docstring). Updates ``state`` in place. ``draws``: the
        iteration's labels, fresh noise and dropout masks (``Streams.batch(i).draws``)."""

    @abc.abstractmethod
    def export_params(self, state: Any) -> tuple[Params, OptState]:
        """Canonical params (incl. BN running stats) and Adam state, as numpy."""

    def export_weights(self, state: Any) -> Params:
        """:meth:`export_params` without the Adam state, for a caller that reads the params after
        every iteration (the comparison's trajectories): a backend whose moments cost a read each
        (a framework's variables: twice as many as the params) skips them."""
        return self.export_params(state)[0]

    def settings(self, state: Any) -> dict[str, Any]:
        """Settings that change numbers or speed (TF32, threads, determinism), for records."""
        return {}

    def sync(self, state: Any) -> None:
        """Block until queued device work is done (before reading a clock)."""


@dataclass
class BackendState:
    """What the template needs of every backend's state; each backend's state extends it."""

    spec: GANSpec
    options: BuildOptions
    dtype: Any  # the framework's dtype object
    device: Any  # the framework's device object


class Backend(GANProtocol):
    """The protocol implemented once, on the framework primitives listed in the module docstring."""

    #: Packages whose ``__version__`` goes into every record (``versions``).
    packages: tuple[str, ...] = ()
    # Bound from the backend's own package when the subclass is defined (__init_subclass__).
    layout: ModuleType
    forward: Callable[..., Any]
    iteration: Callable[..., tuple[dict[str, Any], dict[str, Any] | None]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        package = cls.__module__.rsplit(".", 1)[0]  # gansuite.backends.<fw>
        cls.layout = importlib.import_module(f"{package}.layout")
        cls.forward = staticmethod(importlib.import_module(f"{package}.models").forward)
        cls.iteration = staticmethod(importlib.import_module(f"{package}.train").train_iteration)

    def versions(self) -> dict[str, str]:
        return {name: _version(name) for name in self.packages}

    # -- the protocol, written once ---------------------------------------------------------

    def build(self, spec: GANSpec, params: Params, opt_state: OptState | None,
              options: BuildOptions) -> BackendState:
        kind = check_options(options)
        check_params(spec, params)
        device = self.framework_device(kind)
        self.configure(device, options)
        state = self.create_state(spec, options, self.layout.DTYPES[options.dtype], device)
        for name in param_shapes(spec):
            self.write_tensor(state, name, self._to_framework(state, name, params[name]))
        if opt_state is not None:
            for net in ("G", "D"):
                adam = opt_state[net]
                if adam.step > 0:  # step 0 is the canonical fresh state: zero moments, already there
                    m = {k: self._to_framework(state, k, adam.m[k]) for k in trainable_names(spec, net)}
                    v = {k: self._to_framework(state, k, adam.v[k]) for k in trainable_names(spec, net)}
                    self.write_adam(state, net, adam.step, m, v)
        return state

    def generate(self, state: BackendState, z: np.ndarray, bn: str = "batch",
                 labels: np.ndarray | None = None) -> np.ndarray:
        return self._pure_forward(state, "G", z, bn, labels)

    def discriminate(self, state: BackendState, x: np.ndarray, bn: str = "batch",
                     labels: np.ndarray | None = None) -> np.ndarray:
        out = self._pure_forward(state, "D", x, bn, labels)
        return out.reshape(out.shape[0])

    def train_step(self, state: BackendState, real: np.ndarray, z: np.ndarray | None,
                   with_grads: bool = False, draws: Draws | None = None) -> StepOutput:
        self.configure(state.device, state.options)
        real_f = self.layout.activations_to_framework(real, state.dtype, state.device)
        if z is None:  # fast mode: noise, fake labels and dropout masks from the device RNG, no host round trip
            z_f = self.device_noise(state, state.spec.train.noise_rows(int(np.shape(real)[0])))
            # only the data's part of the draws is kept: the real batch's labels
            labels = check_labels((draws or {}).get("labels"), state.spec, int(np.shape(real)[0]), "draws.labels")
            draws = {} if labels is None else {"labels": labels}
        else:
            z_f = self.layout.activations_to_framework(z, state.dtype, state.device)
            draws = check_draws(state.spec, draws, int(np.shape(real)[0]), int(np.shape(z)[0]))
        scalars, grads = self.iteration(state, real_f, z_f, with_grads, self._draws_to_framework(state, draws))
        out = StepOutput(**{k: float(scalars[k]) for k in SCALARS})
        if grads is not None:
            out.grads = {k: self._from_framework(state, k, v) for k, v in grads.items()}
        return out

    def export_weights(self, state: BackendState) -> Params:
        return self._read_params(state)

    def export_params(self, state: BackendState) -> tuple[Params, OptState]:
        spec = state.spec
        params = self._read_params(state)  # not export_weights: a subclass may override both alike
        opt = OptState()
        for net in ("G", "D"):
            step, m, v = self.read_adam(state, net)
            opt[net].step = int(step)
            for name in trainable_names(spec, net):
                opt[net].m[name] = self._from_framework(state, name, m[name])
                opt[net].v[name] = self._from_framework(state, name, v[name])
        return params, opt

    # -- the framework primitives (see the module docstring), in every backend's order ------

    @abc.abstractmethod
    def framework_device(self, kind: str) -> Any:
        """"cpu" or "cuda" -> the framework's device; :func:`device_unavailable` if it has none."""

    @abc.abstractmethod
    def configure(self, device: Any, options: BuildOptions) -> None:
        """Set (or refuse) the process-wide numerics flags the mode needs."""

    @abc.abstractmethod
    def create_state(self, spec: GANSpec, options: BuildOptions, dtype: Any, device: Any) -> BackendState:
        """Nets, optimisers (fresh moments) and the device RNG; tensors are written next."""

    @abc.abstractmethod
    def write_tensor(self, state: BackendState, name: str, value: Any) -> None:
        """Put canonical tensor ``name`` (already converted by ``layout``) into the nets."""

    @abc.abstractmethod
    def read_tensor(self, state: BackendState, name: str) -> Any:
        """Canonical tensor ``name`` as the framework holds it."""

    @abc.abstractmethod
    def write_adam(self, state: BackendState, net: str, step: int, m: dict[str, Any], v: dict[str, Any]) -> None:
        """Adam step counter and moments of one net (framework tensors keyed by canonical name)."""

    @abc.abstractmethod
    def read_adam(self, state: BackendState, net: str) -> tuple[int, dict[str, Any], dict[str, Any]]:
        """``(step, m, v)`` of one net; moments of a net never stepped are zeros."""

    @abc.abstractmethod
    def device_noise(self, state: BackendState, batch_size: int) -> Any:
        """``(batch_size, *latent_shape)`` standard normal noise from the device RNG, framework layout."""

    # -- glue --------------------------------------------------------------------------------

    def _to_framework(self, state: BackendState, name: str, value: np.ndarray) -> Any:
        return self.layout.param_to_framework(name, np.asarray(value), layer_of(state.spec, name), state.dtype,
                                              state.device)

    def _from_framework(self, state: BackendState, name: str, value: Any) -> np.ndarray:
        return self.layout.param_from_framework(name, value, layer_of(state.spec, name))

    def _read_params(self, state: BackendState) -> Params:
        return {name: self._from_framework(state, name, self.read_tensor(state, name))
                for name in param_shapes(state.spec)}

    def _draws_to_framework(self, state: BackendState, draws: Draws | None) -> dict[str, Any]:
        """Labels as the framework's int tensors, noise and masks as activations (its layout)."""
        out: dict[str, Any] = {}
        for key, value in (draws or {}).items():
            if "labels" in key:
                out[key] = self.layout.labels_to_framework(np.asarray(value, np.int64), state.device)
            else:
                out[key] = self.layout.activations_to_framework(np.asarray(value), state.dtype, state.device)
        return out

    def _pure_forward(self, state: BackendState, net: str, x: np.ndarray, bn: str,
                      labels: np.ndarray | None) -> np.ndarray:
        check_choice("bn", bn, BN_MODES)
        labels = check_labels(labels, state.spec, int(np.shape(x)[0]))
        self.configure(state.device, state.options)
        x_f = self.layout.activations_to_framework(x, state.dtype, state.device)
        labels_f = None if labels is None else self.layout.labels_to_framework(labels, state.device)
        return self.layout.activations_from_framework(self.forward(state, net, x_f, bn, labels_f))
