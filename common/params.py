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

import math
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from .spec import BatchNorm, Conv2d, ConvTranspose2d, Dense, EmbedConcat, GANSpec, Init, NetSpec

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
            elif isinstance(layer, EmbedConcat):
                out[p + "weight"] = (layer.num_classes, layer.dim)  # nn.Embedding.weight
            elif isinstance(layer, BatchNorm):
                c = layer.num_features
                # fix_gamma (MXNet): the scale is the constant 1, not a tensor.
                names = ("bias", "running_mean", "running_var") if layer.fix_gamma else (
                    "weight", "bias", "running_mean", "running_var")
                for name in names:
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
    out: Params = {}
    for name, shape in param_shapes(spec).items():
        net = name.split(".", 1)[0]
        layer = net_spec(spec, net).layers[int(name.split(".")[1])]
        kind = name.rsplit(".", 1)[1]
        net_init = spec.init.G if net == "G" else spec.init.D
        if kind == "running_var":
            value = np.ones(shape)
        elif kind == "running_mean":
            value = np.zeros(shape)
        elif isinstance(layer, BatchNorm):
            value = draw(rng, net_init.bn_weight if kind == "weight" else net_init.bn_bias, shape, layer, kind)
        elif isinstance(layer, EmbedConcat):
            value = draw(rng, net_init.embedding, shape, layer, kind)
        else:
            value = draw(rng, net_init.weight if kind == "weight" else net_init.bias, shape, layer, kind)
        out[name] = value
    return cast_params(out, dtype)


def torch_fan_in(layer: Dense | Conv2d | ConvTranspose2d) -> int:
    """fan_in as ``torch.nn.init._calculate_fan_in_and_fan_out`` computes it from the weight:
    ``weight.size(1) * kh * kw``. For ConvTranspose2d, whose weight is (in, out, kh, kw), that is
    the OUTPUT channels times the kernel area (PyTorch's own quirk, kept)."""
    if isinstance(layer, Dense):
        return layer.in_features
    if isinstance(layer, Conv2d):
        return layer.in_channels * layer.kernel * layer.kernel
    return layer.out_channels * layer.kernel * layer.kernel


def glorot_fans(layer: Dense | Conv2d | ConvTranspose2d) -> tuple[int, int]:
    """(fan_in, fan_out) as Keras's ``GlorotUniform`` computes them from its kernel shape."""
    if isinstance(layer, Dense):
        return layer.in_features, layer.out_features
    area = layer.kernel * layer.kernel
    if isinstance(layer, Conv2d):  # Keras kernel (kh, kw, in, out)
        return layer.in_channels * area, layer.out_channels * area
    return layer.out_channels * area, layer.in_channels * area  # Conv2DTranspose kernel (kh, kw, out, in)


def draw(rng: np.random.Generator, init: Init, shape: tuple[int, ...], layer: Any, kind: str) -> np.ndarray:
    """One tensor by its init scheme. Constants draw nothing, so adding a zero bias never shifts
    the draws of the tensors after it."""
    if init.scheme == "normal":
        return rng.normal(init.mean, init.std, size=shape)
    if init.scheme == "zeros":
        return np.zeros(shape)
    if init.scheme == "ones":
        return np.ones(shape)
    if init.scheme == "torch_default" and isinstance(layer, EmbedConcat):
        return rng.standard_normal(size=shape)  # nn.Embedding's reset_parameters: normal_(0, 1)
    if init.scheme == "torch_default":
        # kaiming_uniform_(a=sqrt(5)) for weights and U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for biases:
        # the same bound, gain * sqrt(3 / fan_in) with gain = sqrt(2 / (1 + 5)).
        bound = 1.0 / math.sqrt(torch_fan_in(layer))
        return rng.uniform(-bound, bound, size=shape)
    fan_in, fan_out = glorot_fans(layer)  # glorot_uniform
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)


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
