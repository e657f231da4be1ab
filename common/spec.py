"""A GAN described as data: frozen, validated dataclasses.

Every backend builds its networks from a :class:`GANSpec`, so a model is defined
once for all frameworks. Conventions fixed here (and converted per framework in
each backend's ``layout.py``):

* Shapes are per example, channels first: ``(C, H, W)`` for images, ``(F,)`` for
  vectors. The batch axis is never part of a spec shape.
* ``BatchNorm.momentum`` uses PyTorch's convention: the weight on the NEW batch
  statistic, ``running = (1 - momentum) * running + momentum * batch_stat``.
  Keras, Flax and MXNet put their momentum on the OLD value (=> 1 - momentum).
* ``ConvTranspose2d.padding`` is PyTorch's ``p``: it crops ``p`` pixels from each
  side of the full transposed convolution, ``out = (in - 1) * stride - 2p + k``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Mapping, Sequence, Union

from .errors import SpecError

# ---------------------------------------------------------------------------
# validation helpers


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SpecError(name, f"must be a positive integer, got {value!r}")


def _nonneg_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SpecError(name, f"must be a non-negative integer, got {value!r}")


def _positive_float(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise SpecError(name, f"must be a positive number, got {value!r}")


def _unit_interval(name: str, value: Any) -> None:
    """[0, 1): Adam's betas and a BatchNorm momentum of exactly 1 are degenerate."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise SpecError(name, f"must be in [0, 1), got {value!r}")


def _bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise SpecError(name, f"must be true or false, got {value!r}")


def _choice(name: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise SpecError(name, f"must be one of {', '.join(map(str, allowed))}; got {value!r}")


# ---------------------------------------------------------------------------
# allowed values of the choice fields

RUNNING_VARS = ("unbiased", "biased")
REDUCTIONS = ("mean", "sum", "per_example")
NOISE_BATCH_RULES = ("real", "batch_size")
D_ORDERS = ("real_first", "fake_first")
D_BACKWARDS = ("joint", "separate")
G_NOISE_RULES = ("reuse", "fresh")
LOSS_INPUTS = ("logits", "probabilities")

# ---------------------------------------------------------------------------
# layers


@dataclass(frozen=True)
class Dense:
    """Fully connected layer, canonical weight ``(out, in)`` as in ``torch.nn.Linear``."""

    in_features: int
    out_features: int
    bias: bool = True
    kind: ClassVar[str] = "dense"

    def __post_init__(self) -> None:
        _positive_int("in_features", self.in_features)
        _positive_int("out_features", self.out_features)

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if shape != (self.in_features,):
            raise SpecError("in_features", f"is {self.in_features} but the input shape is {shape}")
        return (self.out_features,)


@dataclass(frozen=True)
class Conv2d:
    """2-D convolution, canonical weight OIHW, explicit symmetric padding."""

    in_channels: int
    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0
    bias: bool = False
    kind: ClassVar[str] = "conv2d"

    def __post_init__(self) -> None:
        for name in ("in_channels", "out_channels", "kernel", "stride"):
            _positive_int(name, getattr(self, name))
        _nonneg_int("padding", self.padding)

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) != 3 or shape[0] != self.in_channels:
            raise SpecError("in_channels", f"is {self.in_channels} but the input shape is {shape}")
        _, h, w = shape
        out = [(s + 2 * self.padding - self.kernel) // self.stride + 1 for s in (h, w)]
        if min(out) <= 0:
            raise SpecError("kernel", f"kernel {self.kernel} with padding {self.padding} does not fit input {shape}")
        return (self.out_channels, out[0], out[1])


@dataclass(frozen=True)
class ConvTranspose2d:
    """Transposed convolution, canonical weight ``(in, out, kh, kw)``, PyTorch padding ``p``."""

    in_channels: int
    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0
    bias: bool = False
    kind: ClassVar[str] = "conv_transpose2d"

    def __post_init__(self) -> None:
        for name in ("in_channels", "out_channels", "kernel", "stride"):
            _positive_int(name, getattr(self, name))
        _nonneg_int("padding", self.padding)
        if self.padding > self.kernel - 1:
            raise SpecError("padding", f"must be <= kernel - 1 = {self.kernel - 1}, got {self.padding}")

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) != 3 or shape[0] != self.in_channels:
            raise SpecError("in_channels", f"is {self.in_channels} but the input shape is {shape}")
        _, h, w = shape
        out = [(s - 1) * self.stride - 2 * self.padding + self.kernel for s in (h, w)]
        return (self.out_channels, out[0], out[1])


@dataclass(frozen=True)
class BatchNorm:
    """Batch normalisation over the channel axis (axis 1 of NCHW or of (N, F)).

    ``momentum`` is PyTorch's (weight on the new statistic). In train mode the
    output is normalised with the BIASED batch variance; ``running_var`` is updated
    with the UNBIASED one (PyTorch's, the default) or the biased one (MXNet's CPU
    BatchNorm: ``running_var="biased"``).

    ``fix_gamma=True`` is MXNet's ``BatchNorm(fix_gamma=True)``: the scale is held at 1
    and never trained, so the layer has no ``weight`` tensor in the canonical layout.
    """

    num_features: int
    eps: float = 1e-5
    momentum: float = 0.1
    fix_gamma: bool = False
    running_var: str = "unbiased"
    kind: ClassVar[str] = "batch_norm"

    def __post_init__(self) -> None:
        _positive_int("num_features", self.num_features)
        _positive_float("eps", self.eps)
        _unit_interval("momentum", self.momentum)
        _bool("fix_gamma", self.fix_gamma)
        _choice("running_var", self.running_var, RUNNING_VARS)

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if shape[0] != self.num_features:
            raise SpecError("num_features", f"is {self.num_features} but the input has {shape[0]} channels")
        return shape


@dataclass(frozen=True)
class ReLU:
    kind: ClassVar[str] = "relu"

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape


@dataclass(frozen=True)
class LeakyReLU:
    """Leaky ReLU. The slope has no default on purpose: every framework's differs."""

    slope: float
    kind: ClassVar[str] = "leaky_relu"

    def __post_init__(self) -> None:
        if isinstance(self.slope, bool) or not isinstance(self.slope, (int, float)) or not 0 <= self.slope < 1:
            raise SpecError("slope", f"must be in [0, 1), got {self.slope!r}")

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape


@dataclass(frozen=True)
class Tanh:
    kind: ClassVar[str] = "tanh"

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape


@dataclass(frozen=True)
class Sigmoid:
    """A Sigmoid output (seed 002's D ends in ``nn.Sigmoid()``, its loss is ``BCELoss`` on it)."""

    kind: ClassVar[str] = "sigmoid"

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape


@dataclass(frozen=True)
class Flatten:
    """``x.view(B, -1)``: ``(C, H, W)`` -> ``(C*H*W,)`` in C-major order (NCHW flattened)."""

    kind: ClassVar[str] = "flatten"

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (_prod(shape),)


@dataclass(frozen=True)
class Reshape:
    """``x.view(B, *shape)`` of a flat input, C-major: ``(F,)`` -> ``shape`` (e.g. 784 -> (1, 28, 28))."""

    shape: tuple[int, ...]
    kind: ClassVar[str] = "reshape"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))
        if not self.shape:
            raise SpecError("shape", "must not be empty")
        for i, s in enumerate(self.shape):
            _positive_int(f"shape[{i}]", s)

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) != 1 or shape[0] != _prod(self.shape):
            raise SpecError("shape", f"{self.shape} needs a flat input of {_prod(self.shape)} features, got {shape}")
        return self.shape


@dataclass(frozen=True)
class Dropout:
    """``nn.Dropout(p)`` in train mode: ``x * (keep / (1 - p))``, ``keep ~ Bernoulli(1 - p)``.

    In parity mode the keep mask of every pass comes from common/streams.py (one per pass and
    layer), so every backend drops the same units; in fast mode each framework draws its own.
    The pure forwards (``generate``/``discriminate``, the samples) apply no dropout (eval)."""

    p: float
    kind: ClassVar[str] = "dropout"

    def __post_init__(self) -> None:
        _unit_interval("p", self.p)

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape


@dataclass(frozen=True)
class EmbedConcat:
    """The label embedding and its concatenation, seed 002's CGAN: ``c = nn.Embedding(num_classes,
    dim)(labels)``, then ``torch.cat([x, c], 1)``: ``(F,)`` -> ``(F + dim,)``, the features first.

    One layer kind for both because the spec is a sequential stack: the label is the only second
    input a net takes, and it enters exactly here. Weight ``(num_classes, dim)``, PyTorch's layout."""

    num_classes: int
    dim: int
    kind: ClassVar[str] = "embed_concat"

    def __post_init__(self) -> None:
        _positive_int("num_classes", self.num_classes)
        _positive_int("dim", self.dim)

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) != 1:
            raise SpecError("embed_concat", f"concatenates onto a flat input; got shape {shape} (add a flatten layer)")
        return (shape[0] + self.dim,)


Layer = Union[Dense, Conv2d, ConvTranspose2d, BatchNorm, ReLU, LeakyReLU, Tanh, Sigmoid, Flatten, Reshape, Dropout,
              EmbedConcat]
LAYER_KINDS: dict[str, type] = {
    cls.kind: cls for cls in (Dense, Conv2d, ConvTranspose2d, BatchNorm, ReLU, LeakyReLU, Tanh, Sigmoid, Flatten,
                              Reshape, Dropout, EmbedConcat)
}
PARAM_LAYERS = (Dense, Conv2d, ConvTranspose2d, BatchNorm, EmbedConcat)


# ---------------------------------------------------------------------------
# networks and training settings


@dataclass(frozen=True)
class NetSpec:
    """A feed-forward stack: per-example input shape and the layers in order.

    A discriminator ends in a linear layer (one logit; the loss is BCE-with-logits, the tutorial's
    Sigmoid + BCELoss computed stably) or, with ``loss.on = "probabilities"``, in a Sigmoid
    (seed 002: ``BCELoss`` on the probability, log clamped at -100, as PyTorch computes it).
    An ``embed_concat`` layer makes the net conditional: it takes the labels as a second input.
    """

    input_shape: tuple[int, ...]
    layers: tuple[Layer, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(self.input_shape))
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.input_shape:
            raise SpecError("input_shape", "must not be empty")
        for i, s in enumerate(self.input_shape):
            _positive_int(f"input_shape[{i}]", s)
        if not self.layers:
            raise SpecError("layers", "must hold at least one layer")
        self.shapes()  # raises on the first layer that does not fit

    def shapes(self) -> list[tuple[int, ...]]:
        """Per-example shape after each layer (index i = output of layer i)."""
        shape, out = self.input_shape, []
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, tuple(LAYER_KINDS.values())):
                raise SpecError(f"layers[{i}]", f"unknown layer {layer!r}; allowed: {', '.join(LAYER_KINDS)}")
            if isinstance(layer, Dense) and len(shape) != 1:
                raise SpecError(f"layers[{i}].in_features", f"a dense layer needs a flat input, got shape {shape}")
            try:
                shape = layer.output_shape(shape)
            except SpecError as err:
                raise err.under(f"layers[{i}]") from None
            out.append(shape)
        return out

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.shapes()[-1]

    @property
    def conditional(self) -> bool:
        """Whether the net takes labels (has an ``embed_concat`` layer)."""
        return any(isinstance(layer, EmbedConcat) for layer in self.layers)


#: Adam forms: PyTorch's (and optax's), and the "eps-hat" form of Keras and MXNet.
ADAM_FORMS = ("torch", "eps_hat")
#: Each form's framework default eps: PyTorch 1e-8; Keras 1e-7 (MXNet's eps-hat default is 1e-8).
ADAM_DEFAULT_EPS = {"torch": 1e-8, "eps_hat": 1e-7}


@dataclass(frozen=True)
class AdamSpec:
    """Adam, in one of two forms (``m``, ``v`` the usual moments, ``t`` the step):

    * ``form="torch"`` (PyTorch, optax): ``p -= lr * m_hat / (sqrt(v_hat) + eps)``;
    * ``form="eps_hat"`` (Keras, MXNet): ``p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``,
      i.e. eps added before the bias correction (the paper's "epsilon hat").

    No weight decay, no AMSGrad (both off in every seed).
    """

    lr: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    form: str = "torch"

    def __post_init__(self) -> None:
        _positive_float("lr", self.lr)
        _unit_interval("beta1", self.beta1)
        _unit_interval("beta2", self.beta2)
        _positive_float("eps", self.eps)
        _choice("form", self.form, ADAM_FORMS)


@dataclass(frozen=True)
class LossSpec:
    """BCE-with-logits on D's output.

    ``reduction`` over the batch: ``"sum"`` (d2l's PyTorch tab), ``"mean"`` (the tutorial), or
    ``"per_example"``: the per-example losses are back-propagated as their sum and the
    gradients are then rescaled by 1/B, B the real batch (MXNet's ``Trainer.step(B)`` and
    ``Module``'s ``rescale_grad``); the reported loss is the batch sum (``float(loss.sum())``).
    ``loss_D = d_loss_scale * (BCE(D(x), real) + BCE(D(G(z)), fake))``
    (d2l halves it: 0.5; the tutorial adds errD_real + errD_fake: 1.0).
    """

    reduction: str = "mean"
    d_loss_scale: float = 1.0
    real_label: float = 1.0
    fake_label: float = 0.0
    # What D outputs and the BCE takes: a logit (BCE-with-logits), or a probability after D's own
    # Sigmoid ("probabilities": PyTorch's BCELoss, each log clamped at -100, seed 002).
    on: str = "logits"

    def __post_init__(self) -> None:
        _choice("reduction", self.reduction, REDUCTIONS)
        _choice("on", self.on, LOSS_INPUTS)
        _positive_float("d_loss_scale", self.d_loss_scale)
        for name in ("real_label", "fake_label"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise SpecError(name, f"must be in [0, 1], got {v!r}")


#: Init schemes: a normal(mean, std) draw, constants, PyTorch's default Linear/Conv init
#: (kaiming-uniform(a=sqrt 5) weights and U(+-1/sqrt(fan_in)) biases, both bounded by
#: 1/sqrt(fan_in), fan_in as torch computes it), Keras's Glorot-uniform (weights only).
INIT_SCHEMES = ("normal", "zeros", "ones", "torch_default", "glorot_uniform")


@dataclass(frozen=True)
class Init:
    """How one kind of tensor is drawn (numpy PCG64, float64)."""

    scheme: str = "normal"
    mean: float = 0.0
    std: float = 0.02

    def __post_init__(self) -> None:
        _choice("scheme", self.scheme, INIT_SCHEMES)
        if isinstance(self.mean, bool) or not isinstance(self.mean, (int, float)):
            raise SpecError("mean", f"must be a number, got {self.mean!r}")
        _positive_float("std", self.std)


@dataclass(frozen=True)
class NetInit:
    """One network's init, per tensor kind: Dense/Conv/ConvTranspose weights and biases, BatchNorm's,
    and the label embedding's table (``nn.Embedding``'s default is N(0, 1), also its torch_default)."""

    weight: Init = Init("normal", 0.0, 0.02)
    bias: Init = Init("zeros")
    bn_weight: Init = Init("normal", 1.0, 0.02)
    bn_bias: Init = Init("zeros")
    embedding: Init = Init("normal", 0.0, 1.0)

    def __post_init__(self) -> None:
        if self.bias.scheme == "glorot_uniform":
            raise SpecError("bias.scheme", "glorot_uniform is a weight init; allowed for biases: "
                            "normal, zeros, ones, torch_default")
        for name in ("bn_weight", "bn_bias"):
            if getattr(self, name).scheme in ("torch_default", "glorot_uniform"):
                raise SpecError(f"{name}.scheme", "BatchNorm tensors take normal, zeros or ones")
        if self.embedding.scheme == "glorot_uniform":
            raise SpecError("embedding.scheme", "allowed for an embedding: normal, zeros, ones, torch_default")


@dataclass(frozen=True)
class InitSpec:
    """How ``init_params`` draws each net's parameters."""

    G: NetInit = NetInit()
    D: NetInit = NetInit()


@dataclass(frozen=True)
class TrainSpec:
    batch_size: int
    epochs: int
    optim_G: AdamSpec
    optim_D: AdamSpec
    drop_last: bool = False  # the seeds' DataLoaders keep the last partial batch
    # Data order: a new permutation every epoch (DataLoader(shuffle=True)), or the dataset's own
    # order every epoch (MXNet's NDArrayIter default).
    shuffle: bool = True
    # NDArrayIter(last_batch_handle='pad'): the last batch is filled up from the start of the data.
    pad_last: bool = False
    # Rows of z: the real batch's ("real", the tutorial) or always batch_size ("batch_size":
    # seed 003's torch.randn(BATCH_SIZE, ...), which stays 128 when the last real batch is shorter).
    noise_batch: str = "real"
    # D's two passes: real first (the tutorial) or fake first (seed 004); one backward of the sum
    # ("joint", seed 003, d2l) or one per pass with the gradients summed ("separate": the tutorial's
    # errD_real.backward(); errD_fake.backward(), seed 004's copied-and-added gradients).
    d_order: str = "real_first"
    d_backward: str = "joint"
    # The G step's input: the D step's fake again ("reuse", the tutorial's D(fake) after errD), or a
    # new z (and new fake labels) through G once more ("fresh": seed 002's MLP GAN and CGAN).
    g_noise: str = "reuse"

    def __post_init__(self) -> None:
        _positive_int("batch_size", self.batch_size)
        _positive_int("epochs", self.epochs)
        for name in ("drop_last", "shuffle", "pad_last"):
            _bool(name, getattr(self, name))
        if self.drop_last and self.pad_last:
            raise SpecError("pad_last", "and drop_last cannot both be true")
        _choice("noise_batch", self.noise_batch, NOISE_BATCH_RULES)
        _choice("d_order", self.d_order, D_ORDERS)
        _choice("d_backward", self.d_backward, D_BACKWARDS)
        _choice("g_noise", self.g_noise, G_NOISE_RULES)

    def noise_rows(self, real_rows: int) -> int:
        """Rows of z for an iteration whose real batch has ``real_rows`` rows (``noise_batch``)."""
        return self.batch_size if self.noise_batch == "batch_size" else real_rows


DATA_KINDS = ("gaussian", "shapes", "glyphs", "idx", "image_folder")
IDX_SPLITS = ("train", "test")


@dataclass(frozen=True)
class DataSpec:
    """Where real examples come from.

    * ``gaussian``: ``N(0,1)^(n x 2) @ A + b`` (d2l 20.1).
    * ``shapes``: procedurally drawn discs, squares and triangles (the former offline default: G collapses on it).
    * ``glyphs``: procedurally drawn handwritten-like digits 0-9 with labels, on textured
      backgrounds (not separable by brightness alone); ``image_size`` >= 16.
    * ``idx``: MNIST/FashionMNIST IDX images (.gz or raw) in ``path``: a file, or a folder such as
      torchvision's ``raw/`` (train and t10k, raw and ``.gz``): ``split`` picks one, loaded once,
      with its labels where the ``*-labels-idx1-ubyte`` file is there.
    * ``image_folder``: jpg/png files under ``path`` (CelebA-style).
    Images are resized (shorter side) and centre-cropped to ``image_size`` and
    scaled to [-1, 1], as the tutorial's transforms do.
    """

    kind: str
    n_examples: int = 1000
    path: str = ""
    image_size: int = 64
    channels: int = 3
    split: str = "train"  # idx folders: "train" (train-*) or "test" (t10k-*)
    gaussian_A: tuple[tuple[float, float], ...] = ((1.0, 2.0), (-0.1, 0.5))
    gaussian_b: tuple[float, ...] = (1.0, 2.0)

    def __post_init__(self) -> None:
        _choice("kind", self.kind, DATA_KINDS)
        _positive_int("n_examples", self.n_examples)
        _positive_int("image_size", self.image_size)
        _choice("channels", self.channels, (1, 3))
        _choice("split", self.split, IDX_SPLITS)
        object.__setattr__(self, "gaussian_A", tuple(tuple(float(v) for v in row) for row in self.gaussian_A))
        object.__setattr__(self, "gaussian_b", tuple(float(v) for v in self.gaussian_b))
        if len(self.gaussian_A) != 2 or any(len(r) != 2 for r in self.gaussian_A):
            raise SpecError("gaussian_A", "must be a 2x2 matrix")
        if len(self.gaussian_b) != 2:
            raise SpecError("gaussian_b", "must have 2 entries")
        if self.kind in ("idx", "image_folder") and not self.path:
            raise SpecError("path", f"is required for data kind {self.kind!r} (give --data PATH)")

    def example_shape(self) -> tuple[int, ...]:
        if self.kind == "gaussian":
            return (2,)
        return (self.channels, self.image_size, self.image_size)


@dataclass(frozen=True)
class GANSpec:
    name: str
    source: str
    generator: NetSpec
    discriminator: NetSpec
    loss: LossSpec
    train: TrainSpec
    init: InitSpec
    data: DataSpec

    def __post_init__(self) -> None:
        if not self.name:
            raise SpecError("name", "must not be empty")
        g_out = self.generator.output_shape
        if g_out != self.discriminator.input_shape:
            raise SpecError(
                "discriminator.input_shape",
                f"is {self.discriminator.input_shape} but the generator outputs {g_out}",
            )
        if self.data.example_shape() != g_out:
            raise SpecError("data", f"examples have shape {self.data.example_shape()} but the generator outputs {g_out}")
        d_out = self.discriminator.output_shape
        if int(_prod(d_out)) != 1:
            raise SpecError("discriminator.layers", f"must end in one logit per example, got shape {d_out}")
        ends_in_sigmoid = isinstance(self.discriminator.layers[-1], Sigmoid)
        if ends_in_sigmoid != (self.loss.on == "probabilities"):
            raise SpecError("loss.on", f"is {self.loss.on!r} but the discriminator "
                            f"{'ends' if ends_in_sigmoid else 'does not end'} in a sigmoid; "
                            "allowed: probabilities with a sigmoid last layer, logits without")
        classes = {l.num_classes for net in (self.generator, self.discriminator) for l in net.layers
                   if isinstance(l, EmbedConcat)}
        if len(classes) > 1:
            raise SpecError("embed_concat.num_classes", f"differs between layers ({sorted(classes)}); "
                            "one label set conditions both nets")
        if self.conditional and not (self.generator.conditional and self.discriminator.conditional):
            raise SpecError("embed_concat", "a conditional GAN conditions both nets; "
                            "add an embed_concat layer to the one without")

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return self.generator.input_shape

    @property
    def convolutional(self) -> bool:
        """A convolution in either net (the DCGANs), or dense layers only (the Gaussian GANs, seed
        002's MLP GAN and CGAN): fast modes pick their compilation by it where measured (TensorFlow)."""
        return any(isinstance(layer, (Conv2d, ConvTranspose2d))
                   for net in (self.generator, self.discriminator) for layer in net.layers)

    @property
    def latent_dim(self) -> int:
        return int(_prod(self.latent_shape))

    @property
    def conditional(self) -> bool:
        """A conditional GAN (seed 002's CGAN): both nets take the labels."""
        return self.generator.conditional or self.discriminator.conditional

    @property
    def num_classes(self) -> int:
        """Label classes of a conditional GAN (0 if unconditional)."""
        return next((l.num_classes for l in self.generator.layers if isinstance(l, EmbedConcat)), 0)

    @property
    def has_dropout(self) -> bool:
        return any(isinstance(l, Dropout) for net in (self.generator, self.discriminator) for l in net.layers)

    @property
    def has_batch_norm(self) -> bool:
        return any(isinstance(l, BatchNorm) for net in (self.generator, self.discriminator) for l in net.layers)

    # -- serialisation ------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> "GANSpec":
        return _from_plain(GANSpec, d, "")

    @staticmethod
    def from_json(text: str) -> "GANSpec":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as err:
            raise SpecError("spec", f"is not valid JSON ({err.msg} at line {err.lineno})") from None
        return GANSpec.from_dict(d)

    @staticmethod
    def from_toml(text: str) -> "GANSpec":
        import tomllib

        try:
            d = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise SpecError("spec", f"is not valid TOML ({err})") from None
        return GANSpec.from_dict(d)


def _prod(shape: Sequence[int]) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        out: dict[str, Any] = {}
        if hasattr(type(obj), "kind") and type(obj) in LAYER_KINDS.values():
            out["kind"] = obj.kind
        for f in fields(obj):
            out[f.name] = _to_plain(getattr(obj, f.name))
        return out
    if isinstance(obj, tuple):
        return [_to_plain(v) for v in obj]
    return obj


def _field_type(cls: type, name: str) -> Any:
    return {
        (GANSpec, "generator"): NetSpec,
        (GANSpec, "discriminator"): NetSpec,
        (GANSpec, "loss"): LossSpec,
        (GANSpec, "train"): TrainSpec,
        (GANSpec, "init"): InitSpec,
        (InitSpec, "G"): NetInit,
        (InitSpec, "D"): NetInit,
        (NetInit, "weight"): Init,
        (NetInit, "bias"): Init,
        (NetInit, "bn_weight"): Init,
        (NetInit, "bn_bias"): Init,
        (NetInit, "embedding"): Init,
        (GANSpec, "data"): DataSpec,
        (TrainSpec, "optim_G"): AdamSpec,
        (TrainSpec, "optim_D"): AdamSpec,
    }.get((cls, name))


def _legacy_init(d: Mapping[str, Any]) -> dict[str, Any]:
    """The one-table init of specs written before per-net init schemes (checkpoints keep their
    spec): ``weight_std``, ``bias`` ("normal" | "zero"), ``bn_weight_mean``, ``bn_weight_std``."""
    std = d.get("weight_std", 0.02)
    net = {"weight": {"scheme": "normal", "mean": 0.0, "std": std},
           "bias": {"scheme": "normal", "mean": 0.0, "std": std} if d.get("bias", "normal") == "normal"
           else {"scheme": "zeros"},
           "bn_weight": {"scheme": "normal", "mean": d.get("bn_weight_mean", 1.0), "std": d.get("bn_weight_std", 0.02)},
           "bn_bias": {"scheme": "zeros"}}
    return {"G": net, "D": net}


_LEGACY_INIT_KEYS = {"weight_std", "bias", "bn_weight_mean", "bn_weight_std"}


def _from_plain(cls: type, d: Any, path: str) -> Any:
    where = path or "spec"
    if not isinstance(d, Mapping):
        raise SpecError(where, f"must be a table/object, got {type(d).__name__}")
    if cls is InitSpec and d and set(d) <= _LEGACY_INIT_KEYS:
        d = _legacy_init(d)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known - ({"kind"} if cls in LAYER_KINDS.values() else set()))
    if unknown:
        raise SpecError(where, f"unknown key {unknown[0]!r}; allowed: {', '.join(sorted(known))}")
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in d:
            continue
        sub = f"{path}.{f.name}" if path else f.name
        value = d[f.name]
        nested = _field_type(cls, f.name)
        if nested is not None:
            value = _from_plain(nested, value, sub)
        elif cls is NetSpec and f.name == "layers":
            value = tuple(_layer_from_plain(v, f"{sub}[{i}]") for i, v in enumerate(value))
        elif isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except SpecError as err:
        raise err.under(path) if path else err from None
    except TypeError as err:  # a required key is missing
        raise SpecError(where, str(err).split(") ", 1)[-1].replace("__init__() ", "")) from None


def _layer_from_plain(d: Any, path: str) -> Layer:
    if not isinstance(d, Mapping) or "kind" not in d:
        raise SpecError(path, f"a layer needs a 'kind'; allowed: {', '.join(LAYER_KINDS)}")
    kind = d["kind"]
    if kind not in LAYER_KINDS:
        raise SpecError(f"{path}.kind", f"unknown layer {kind!r}; allowed: {', '.join(LAYER_KINDS)}")
    return _from_plain(LAYER_KINDS[kind], d, path)
