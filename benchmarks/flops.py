"""Floating-point operations of a GAN or seed 002's VAE, counted from its spec (no framework involved).

Counted: multiply-adds of Dense, Conv2d and ConvTranspose2d, 2 FLOPs per multiply-add.
Not counted: biases, BatchNorm, activations, losses and Adam (elementwise, a few per
element: under 1% of the DCGAN's convolutions, and the Gaussian GAN is all overhead anyway),
nor the VAE's reparameterisation (``exp``, ``mu + eps * std``) and KL (elementwise on the latent).

Per example, forward (MACs = multiply-adds):

* ``Dense(in, out)``:                      ``in * out``
* ``Conv2d`` (output ``C_out x H_out x W_out``): ``H_out * W_out * C_out * C_in * k * k``
* ``ConvTranspose2d`` (input ``C_in x H_in x W_in``): ``H_in * W_in * C_in * C_out * k * k``
  (every input pixel scatters a ``k x k x C_out`` patch; the products that padding crops
  away are still computed by every framework's kernel, as the gradient of a convolution).

One training iteration as executed (common/protocol.py; ``F_D``, ``F_G`` = forward FLOPs)::

    forwards:  D(real), G(z), D(fake.detach()), D(fake)            = 3 F_D + g F_G
    backwards: D step: through D for real and for fake              = 2 * (2 F_D)
               G step: through D (into the fake) and through G      = 2 F_D + 2 F_G
    total per example                                               = 9 F_D + (g + 2) F_G

where a backward pass costs ~2x its forward (gradient w.r.t. the input and w.r.t. the
weights, one product each) and ``g`` is the number of G forwards: 1 in the tutorial's loop
and in every backend; 2 in d2l's loop, whose ``update_G`` recomputes ``G(Z)``. The 2x is an
upper bound by one input-gradient product for the first layer of each differentiated pass
(no gradient w.r.t. data or z is needed); frameworks that skip it do slightly less.

One VAE iteration as executed (common/vae.py ``vae_step``; ``F_E``, ``F_H``, ``F_Dec`` = forward
FLOPs of the encoder trunk, of one head, of the decoder; the preset: ``Dense(784, 400)``, two
``Dense(400, 20)`` heads (mu and log_var), ``Dense(20, 400)``, ``Dense(400, 784)``)::

    forward:   E(x), mu(h), logvar(h), Dec(z)                       = F_E + 2 F_H + F_Dec
    backward:  through Dec, both heads (into h) and E               = 2 (F_E + 2 F_H + F_Dec)
    total per example                                               = 3 (F_E + 2 F_H + F_Dec)

with the same 2x rule and the same upper bound: the encoder's first layer needs no gradient
w.r.t. x (one 784 x 400 product per example that a framework may skip).
"""

from __future__ import annotations

from dataclasses import dataclass

from gansuite.common.spec import Conv2d, ConvTranspose2d, Dense, GANSpec, NetSpec
from gansuite.common.vae import VAESpec

FLOPS_PER_MAC = 2
#: d2l 20.1's update_G calls net_G(Z) again; the tutorial (and the backends) reuse the fake.
G_FORWARDS = {"backend": 1, "peer-tutorial": 1, "peer-seed003": 1, "peer-d2l": 2}


def layer_macs(layer: object, input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> int:
    """Multiply-adds of one layer for one example (0 for layers without a product)."""
    if isinstance(layer, Dense):
        return layer.in_features * layer.out_features
    if isinstance(layer, Conv2d):
        c_out, h_out, w_out = output_shape
        return h_out * w_out * c_out * layer.in_channels * layer.kernel * layer.kernel
    if isinstance(layer, ConvTranspose2d):
        c_in, h_in, w_in = input_shape
        return h_in * w_in * c_in * layer.out_channels * layer.kernel * layer.kernel
    return 0


def forward_flops(net: NetSpec) -> int:
    """FLOPs of one forward pass of ``net`` for one example."""
    shapes = [net.input_shape, *net.shapes()]
    return FLOPS_PER_MAC * sum(layer_macs(layer, shapes[i], shapes[i + 1]) for i, layer in enumerate(net.layers))


@dataclass(frozen=True)
class IterationFlops:
    """FLOPs of one training iteration at one batch size (see the module docstring)."""

    forward_G: int  # per example
    forward_D: int  # per example
    g_forwards: int
    batch_size: int

    @property
    def per_example(self) -> int:
        return 9 * self.forward_D + (self.g_forwards + 2) * self.forward_G

    @property
    def total(self) -> int:
        return self.per_example * self.batch_size

    def as_dict(self) -> dict[str, object]:
        return {"forward_G_per_example": self.forward_G, "forward_D_per_example": self.forward_D,
                "g_forwards": self.g_forwards, "per_example": self.per_example, "per_iteration": self.total,
                "formula": f"batch * (9 F_D + {self.g_forwards + 2} F_G); 2 FLOPs per multiply-add of "
                           "Dense/Conv/ConvTranspose; backward = 2x forward"}


def iteration_flops(spec: GANSpec, batch_size: int, g_forwards: int = 1) -> IterationFlops:
    return IterationFlops(forward_flops(spec.generator), forward_flops(spec.discriminator), g_forwards, batch_size)


def sampling_flops(spec: GANSpec, batch_size: int) -> int:
    """FLOPs of ``generate``: one G forward per example."""
    return forward_flops(spec.generator) * batch_size


@dataclass(frozen=True)
class VAEIterationFlops:
    """FLOPs of one VAE training iteration at one batch size (see the module docstring)."""

    forward_E: int  # per example, the encoder trunk
    forward_head: int  # per example, ONE of the two heads (mu, log_var)
    forward_Dec: int  # per example
    batch_size: int

    @property
    def forward(self) -> int:
        """One forward pass per example: the trunk, both heads, the decoder."""
        return self.forward_E + 2 * self.forward_head + self.forward_Dec

    @property
    def per_example(self) -> int:
        return 3 * self.forward

    @property
    def total(self) -> int:
        return self.per_example * self.batch_size

    def as_dict(self) -> dict[str, object]:
        return {"forward_E_per_example": self.forward_E, "forward_head_per_example": self.forward_head,
                "forward_Dec_per_example": self.forward_Dec, "per_example": self.per_example,
                "per_iteration": self.total,
                "formula": "batch * 3 (F_E + 2 F_head + F_Dec); 2 FLOPs per multiply-add of Dense; "
                           "backward = 2x forward"}


def vae_iteration_flops(spec: VAESpec, batch_size: int) -> VAEIterationFlops:
    return VAEIterationFlops(forward_flops(spec.encoder), forward_flops(spec.head()), forward_flops(spec.decoder),
                             batch_size)


def vae_sampling_flops(spec: VAESpec, batch_size: int) -> int:
    """FLOPs of ``decode``: one decoder forward per example (the seed's sampled grid)."""
    return forward_flops(spec.decoder) * batch_size
