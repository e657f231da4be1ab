"""Build G and D as ``nn.Sequential`` from the spec, every default set explicitly."""

from __future__ import annotations

from torch import nn

from gansuite.common.spec import BatchNorm, Conv2d, ConvTranspose2d, Dense, LeakyReLU, NetSpec, ReLU, Tanh


def build_layer(layer, input_rank: int) -> nn.Module:
    if isinstance(layer, Dense):
        return nn.Linear(layer.in_features, layer.out_features, bias=layer.bias)
    if isinstance(layer, Conv2d):
        return nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel, layer.stride, layer.padding, bias=layer.bias)
    if isinstance(layer, ConvTranspose2d):
        # PyTorch's padding p crops p pixels per side of the full transposed conv: the spec's convention.
        return nn.ConvTranspose2d(layer.in_channels, layer.out_channels, layer.kernel, layer.stride,
                                  layer.padding, output_padding=0, bias=layer.bias)
    if isinstance(layer, BatchNorm):
        # momentum: PyTorch's convention is the spec's (weight on the NEW statistic); eps as given.
        # PyTorch normalises with the biased variance and stores the unbiased one: the spec's choice.
        cls = nn.BatchNorm1d if input_rank == 1 else nn.BatchNorm2d
        return cls(layer.num_features, eps=layer.eps, momentum=layer.momentum, affine=True, track_running_stats=True)
    if isinstance(layer, ReLU):
        return nn.ReLU()
    if isinstance(layer, LeakyReLU):
        # nn.LeakyReLU defaults to 0.01; the tutorial passes 0.2: always pass the spec's slope.
        return nn.LeakyReLU(negative_slope=layer.slope)
    if isinstance(layer, Tanh):
        return nn.Tanh()
    raise TypeError(f"unsupported layer {layer!r}")


def build_net(net: NetSpec) -> nn.Sequential:
    """Layer i of the spec is child ``str(i)``, so state_dict keys are ``"<i>.weight"``."""
    modules, shapes = [], [net.input_shape, *net.shapes()]
    for i, layer in enumerate(net.layers):
        modules.append(build_layer(layer, len(shapes[i])))
    return nn.Sequential(*modules)
