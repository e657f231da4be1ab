"""Canonical parameters: the one layout every backend converts to and from.

Layout (PyTorch's, so a tutorial ``state_dict`` maps key for key):

=================  =====================  ==================================
layer              tensor                 shape
=================  =====================  ==================================
Dense              ``weight`` / ``bias``  ``(out, in)`` / ``(out,)``
Conv2d             ``weight`` / ``bias``  ``(out, in, kh, kw)`` (OIHW)
ConvTranspose2d    ``weight`` / ``bias``  ``(in, out, kh, kw)``
BatchNorm          ``weight`` ``bias``    ``(C,)`` each (gamma, beta)
                   ``running_mean``       ``(C,)``
                   ``running_var``        ``(C,)``, UNBIASED (PyTorch)
=================  =====================  ==================================

Names are ``"<net>.<layer index>.<tensor>"`` with net ``G`` or ``D`` and the
index into the spec's layer list (as ``nn.Sequential`` numbers its children),
in layer order, G before D. Running statistics are buffers, not trainable.

Adam state is held per network (one step counter each, as every framework
can be made to do): ``OptState.step``, and ``m``/``v`` keyed like the params.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from .spec import BatchNorm, Conv2d, ConvTranspose2d, Dense, GANSpec, NetSpec

Params = dict[str, np.ndarray]
NETS = ("G", "D")
BUFFER_SUFFIXES = (".running_mean", ".running_var")

#: Fixed sub-stream ids under the run seed (numpy SeedSequence entropy words).
STREAM_PARAMS = 1


def net_spec(spec: GANSpec, net: str) -> NetSpec:
    return spec.generator if net == "G" else spec.discriminator


def param_shapes(spec: GANSpec) -> dict[str, tuple[int, ...]]:
    """Every canonical tensor name and shape, in canonical order."""
    out: dict[str, tuple[int, ...]] = {}
    for net in NETS:
        for i, layer in enumerate(net_spec(spec, net).layers):
            p = f"{net}.{i}."
            if isinstance(layer, Dense):
                out[p + "weight"] = (layer.out_features, layer.in_features)
                if layer.bias:
                    out[p + "bias"] = (layer.out_features,)
            elif isinstance(layer, Conv2d):
                out[p + "weight"] = (layer.out_channels, layer.in_channels, layer.kernel, layer.kernel)
                if layer.bias:
                    out[p + "bias"] = (layer.out_channels,)
            elif isinstance(layer, ConvTranspose2d):
                out[p + "weight"] = (layer.in_channels, layer.out_channels, layer.kernel, layer.kernel)
                if layer.bias:
                    out[p + "bias"] = (layer.out_channels,)
            elif isinstance(layer, BatchNorm):
                c = layer.num_features
                for name in ("weight", "bias", "running_mean", "running_var"):
                    out[p + name] = (c,)
    return out


def is_buffer(name: str) -> bool:
    return name.endswith(BUFFER_SUFFIXES)


def trainable_names(spec: GANSpec, net: str) -> list[str]:
    return [n for n in param_shapes(spec) if n.startswith(net + ".") and not is_buffer(n)]


def init_params(spec: GANSpec, seed: int, dtype: str | np.dtype = "float64") -> Params:
    """Draw every tensor with numpy PCG64 in float64, then cast to ``dtype``.

    Draw order is the canonical order, so the same seed gives the same numbers
    whatever dtype is asked for (float32 params are the float64 draws rounded).
    """
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), STREAM_PARAMS])))
    init = spec.init
    out: Params = {}
    for name, shape in param_shapes(spec).items():
        layer = net_spec(spec, name[0]).layers[int(name.split(".")[1])]
        kind = name.rsplit(".", 1)[1]
        if isinstance(layer, BatchNorm):
            if kind == "weight":
                value = rng.normal(init.bn_weight_mean, init.bn_weight_std, size=shape)
            elif kind == "running_var":
                value = np.ones(shape)
            else:  # beta 0, running_mean 0
                value = np.zeros(shape)
        elif kind == "weight":
            value = rng.normal(0.0, init.weight_std, size=shape)
        else:  # bias
            value = rng.normal(0.0, init.weight_std, size=shape) if init.bias == "normal" else np.zeros(shape)
        out[name] = value
    return cast_params(out, dtype)


def cast_params(params: Params, dtype: str | np.dtype) -> Params:
    return {k: np.asarray(v, dtype=dtype) for k, v in params.items()}


@dataclass
class AdamState:
    """Adam moments of one network, canonical names and layouts."""

    step: int = 0
    m: Params = field(default_factory=dict)
    v: Params = field(default_factory=dict)


@dataclass
class OptState:
    G: AdamState = field(default_factory=AdamState)
    D: AdamState = field(default_factory=AdamState)

    def __getitem__(self, net: str) -> AdamState:
        return self.G if net == "G" else self.D

    def items(self) -> Iterator[tuple[str, AdamState]]:
        yield "G", self.G
        yield "D", self.D


def copy_opt_state(opt: OptState, dtype: str | np.dtype | None = None) -> OptState:
    """A deep copy (optionally cast) that shares no arrays with ``opt``."""
    def conv(d: Params) -> Params:
        return {k: np.array(v, dtype=dtype if dtype is not None else v.dtype) for k, v in d.items()}
    return OptState(*(AdamState(a.step, conv(a.m), conv(a.v)) for _, a in opt.items()))


def zero_opt_state(spec: GANSpec, dtype: str | np.dtype = "float64") -> OptState:
    shapes = param_shapes(spec)
    state = OptState()
    for net, adam in state.items():
        for name in trainable_names(spec, net):
            adam.m[name] = np.zeros(shapes[name], dtype=dtype)
            adam.v[name] = np.zeros(shapes[name], dtype=dtype)
    return state


def flatten_opt_state(opt: OptState) -> dict[str, np.ndarray]:
    """``opt.<net>.step`` / ``opt.<net>.m.<param>`` / ``opt.<net>.v.<param>`` arrays."""
    out: dict[str, np.ndarray] = {}
    for net, adam in opt.items():
        out[f"opt.{net}.step"] = np.asarray(adam.step, dtype=np.int64)
        for k, v in adam.m.items():
            out[f"opt.{net}.m.{k}"] = v
        for k, v in adam.v.items():
            out[f"opt.{net}.v.{k}"] = v
    return out


def unflatten_opt_state(flat: dict[str, np.ndarray]) -> OptState:
    opt = OptState()
    for key, value in flat.items():
        _, net, what, *rest = key.split(".", 3)
        adam = opt[net]
        if what == "step":
            adam.step = int(value)
        else:
            getattr(adam, what)[rest[0]] = np.asarray(value)
    return opt
