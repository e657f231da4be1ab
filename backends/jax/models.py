"""Build G and D as Flax linen modules from the spec, with the labels and dropout masks, every default
set explicitly; the pure forward.

Parameters are never initialised here: ``Net.init`` is never called. The
variables are written by the backend through layout.py and are passed to ``apply``.
(Flax still evaluates each initializer abstractly, with ``jax.eval_shape``, to
check the shape of the array it is given; no default initializer's values are
ever used.)

Also here, because train.py imports this module (not the reverse): the process-wide cache of
compiled executables, used by :func:`forward` and by train.py's iteration and epoch.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gansuite.common.errors import GanSuiteError
from gansuite.common.layout import conv_transpose_input_padding
from gansuite.common.protocol import MIXED_BF16
from gansuite.common.spec import (BatchNorm, Conv2d, ConvTranspose2d, Dense, Dropout, EmbedConcat, Flatten, GANSpec,
                                  Layer, LeakyReLU, NetSpec, ReLU, Reshape, Sigmoid, Tanh)

from .layout import DTYPES


def _precision(mode: str) -> lax.Precision | None:
    # On GPU (Ampere+) the DEFAULT precision of dot and conv is TF32 (and bf16 passes on TPU);
    # parity needs true float32, so every Dense/Conv/ConvTranspose gets precision=HIGHEST, and the
    # parity functions are traced under jax.default_matmul_precision("highest") as well (any other
    # dot: _compiled). Fast mode keeps the default; the choice is recorded in settings(). XLA:CPU
    # computes float32 dots and convs in float32 at any precision setting (measured, jaxlib 0.10.2:
    # parity and fast dcgan-tiny forwards are bit-identical on CPU).
    return lax.Precision.HIGHEST if mode == "parity" else None


class TorchBatchNorm(nn.BatchNorm):
    """``nn.BatchNorm`` whose running variance is PyTorch's (the spec's): the UNBIASED one.

    Flax normalises with the biased batch variance (as PyTorch does) but also puts that biased
    variance into its running average; PyTorch stores ``n / (n - 1)`` times it. So the layer runs
    unchanged and afterwards its ``var`` update is replaced by PyTorch's, computed from the same
    batch variance (recomputed here two-pass, as ``use_fast_variance=False`` computes it: one
    more reduction per channel). The mean update is Flax's own: with ``momentum = 1 - spec.momentum``
    it is PyTorch's formula.

    ``running_var_stat="biased"`` (the spec's ``BatchNorm.running_var``, MXNet's CPU op, seed 004):
    the running variance tracks the biased batch variance instead. That is what Flax itself stores,
    but it is written here the same way as the unbiased one (same two-pass variance, same EMA
    expression), so the two options differ only by the ``n / (n - 1)`` factor.
    """

    running_var_stat: str = "unbiased"  # the spec's BatchNorm.running_var: "unbiased" | "biased"

    @nn.compact
    def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:  # no `mask`
        use_running_average = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
        if use_running_average or self.is_initializing():
            return super().__call__(x, use_running_average)
        old_var = self.get_variable("batch_stats", "var")  # before Flax overwrites it
        y = super().__call__(x, use_running_average)
        axes = tuple(range(x.ndim - 1))  # channels-last: reduce over everything but the last axis
        n = x.size // x.shape[-1]
        mean = jnp.mean(x, axis=axes)
        biased = jnp.mean(jnp.square(x - mean), axis=axes)
        if self.running_var_stat == "unbiased":
            stat = biased * n / max(n - 1, 1)  # PyTorch (and the oracle): var * n / (n - 1)
        else:
            stat = biased  # MXNet's CPU BatchNorm (running_var="biased")
        # Same EMA form as Flax's update (weight `momentum` on the OLD value).
        self.put_variable("batch_stats", "var", self.momentum * old_var + (1 - self.momentum) * stat)
        return y


def _subpixel_applies(layer: ConvTranspose2d) -> bool:
    """Fast mode's sub-pixel form is used for k = 2s, p = s/2, s >= 2 (the DCGANs' k4 s2 p1): every
    output phase then has exactly 2 x 2 taps (no zero taps) and the output is exactly s * H."""
    s = layer.stride
    return s >= 2 and layer.kernel == 2 * s and 2 * layer.padding == s


def _subpixel_taps(k: int, s: int, p: int) -> tuple[list[tuple[int, int]], list[list[int]]]:
    """Per output phase a (output row y = s*m + a), PyTorch's ConvTranspose2d(k, s, p) as a stride-1
    correlation over the input: ``(pads, taps)`` with ``pads[a]`` the (low, high) zero padding of the
    input and ``taps[a][t]`` the kernel row that multiplies input row ``m - hi(a) + t`` (``k``: no tap,
    a zero row). Needs k - 2p == s (output size (H - 1)s - 2p + k == s * H, one row per phase per m).

    PyTorch: y = s*i - p + ky, so ky = s*(m - i) + a + p; the offsets d = m - i with 0 <= ky < k run
    over [lo(a), hi(a)], input rows m - hi(a) .. m - lo(a). k4 s2 p1: a = 0 uses ky 3, 1 on rows
    m - 1, m; a = 1 uses ky 2, 0 on rows m, m + 1. Every phase gets the same window T = max count
    (shorter phases padded with the zero row k), placed by its own pads: (hi(a), T - 1 - hi(a))."""
    if k - 2 * p != s:
        raise ValueError(f"sub-pixel form needs kernel - 2 * padding == stride, got k={k} s={s} p={p}")
    ranges = []
    for a in range(s):
        ds = [d for d in range(-k, k + 1) if 0 <= s * d + a + p < k]
        ranges.append((min(ds), max(ds)))
    T = max(hi - lo + 1 for lo, hi in ranges)
    pads = [(hi, T - 1 - hi) for _, hi in ranges]
    taps = [[s * (hi - t) + a + p if 0 <= s * (hi - t) + a + p < k else k for t in range(T)]
            for a, (_, hi) in enumerate(ranges)]
    return pads, taps


def _conv_transpose_subpixel(x: jax.Array, kernel: jax.Array, stride: int, padding: int,
                             precision: lax.Precision | None) -> jax.Array:
    """PyTorch's ConvTranspose2d(k, stride, padding) of NHWC ``x`` with Flax's transpose_kernel=True
    kernel ``(k, k, out, in)`` (layout.py: ``kernel[ky, kx, o, i] = W[i, o, ky, kx]``), computed as
    s * s stride-1 convolutions, one per output phase (a, b), each of the input with that phase's
    T x T taps and its own zero pads (_subpixel_taps), then interleaved (depth-to-space):
    ``out[:, s*m + a, s*q + b] = phase_ab[:, m, q]``. Exactly the transposed conv's products and sums
    (no zero taps for k = 2s), in another order; autodiff gives its gradients.

    Why: lax.conv_transpose (nn.ConvTranspose) lowers to an lhs-dilated conv, and the kernel gradient
    of that is a window-dilated conv, which XLA:CPU runs slowly. Measured (XLA:CPU, jaxlib 0.10.2,
    2 cores shared with a CI run at load ~6-7, so absolute times are inflated): k4 s2 p1, 128 -> 64
    channels, 16 -> 32 px, batch 64, float32, jitted, median (min) of 10 after 2 warm-up calls, two
    alternating runs each:
      forward:                          nn.ConvTranspose 121, 109 (105, 103) ms; this 81, 56 (63, 52) ms
      forward + d/dx + d/dkernel (one jit): nn.ConvTranspose 3044, 3340 (2832, 2854) ms; this 242, 230
                                        (223, 220) ms -- 13x
      apart: forward / d/dx / d/dkernel: lax.conv_transpose 130 / 183 / 3086 ms; this 51 / 97 / 229 ms.
    Two other sub-pixel forms were slower: one 2x2-window conv to 4 * out channels on the input
    padded by 1 (a 17x17 output sliced per phase) runs its forward in 61-69 ms but its kernel gradient
    takes 6.4 s; one 3x3 window shared by all phases (2.25x the products, no slicing): 140 / 263 /
    483 ms; the phase convs on slices of a padded input (not the conv's own pads): 149 / 219 / 280 ms.
    Not measured on a GPU (none was lent to the session that wrote this): there cuDNN runs both forms.
    """
    k = kernel.shape[0]
    n, h, w, _ = x.shape
    pads, taps = _subpixel_taps(k, stride, padding)
    if any(t == k for row in taps for t in row):
        kernel = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))  # row/column k: the zero tap
    rows = []
    for a in range(stride):
        cols = []
        for b in range(stride):
            ky, kx = np.asarray(taps[a])[:, None], np.asarray(taps[b])[None, :]
            phase_kernel = kernel[ky, kx].transpose(0, 1, 3, 2)  # (T, T, out, in) -> HWIO
            cols.append(lax.conv_general_dilated(x, phase_kernel, (1, 1), (pads[a], pads[b]),
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                                 precision=precision))
        rows.append(jnp.stack(cols, axis=3))  # (N, H, W, s_b, out)
    out = jnp.stack(rows, axis=2)  # (N, H, s_a, W, s_b, out)
    return out.reshape(n, stride * h, stride * w, out.shape[-1])


class _SubPixelConvTranspose(nn.ConvTranspose):
    """``nn.ConvTranspose`` (transpose_kernel=True, pads k - 1 - p) whose forward is
    :func:`_conv_transpose_subpixel`: the same ``kernel`` (k, k, out, in) and ``bias`` variables,
    created and dtype-promoted as Flax's own __call__ does, so layout.py and checkpoints are
    untouched. NHWC inputs with one batch axis only (what Net passes)."""

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        k = self.kernel_size[0]
        (pad, _), _ = self.padding
        if inputs.ndim != 4 or not self.transpose_kernel:
            raise ValueError("_SubPixelConvTranspose: NHWC input and transpose_kernel=True only")
        kernel = self.param("kernel", self.kernel_init, (k, k, self.features, inputs.shape[-1]), self.param_dtype)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
        y = _conv_transpose_subpixel(inputs, kernel, self.strides[0], k - 1 - pad, self.precision)
        if bias is not None:
            y += jnp.reshape(bias, (1, 1, 1, -1))
        return y


#: The spec layers that multiply: under bf16 mixed precision (:data:`MIXED_BF16`) they compute in
#: bfloat16 on float32 variables, and Net casts their output back to float32.
_MIXED_LAYERS = (Dense, Conv2d, ConvTranspose2d)


def _is_mixed(dtype: Any) -> bool:
    return isinstance(dtype, str) and dtype == MIXED_BF16


def build_layer(layer: Layer, input_shape: tuple[int, ...], name: str, dtype: Any,
                mode: str) -> Callable[..., jax.Array]:
    """One spec layer. ``name`` is the Flax submodule's name, ``str(i)`` for layer i (the middle of
    layout.module_key). ``input_shape`` is unused: Flax infers input sizes at the first call, and
    BatchNorm's ``axis=-1`` fits (N, F) and NHWC alike. ``mode`` sets the dot/conv precision.

    ``dtype``: a JAX dtype, or :data:`MIXED_BF16` (fast mode's bf16 mixed precision, the name Keras's
    policy has in the TensorFlow backend): then the layers that multiply (:data:`_MIXED_LAYERS`) take
    Flax's own mixed-precision split, ``dtype=bfloat16`` (compute: Flax's ``promote_dtype`` casts the
    input, kernel and bias to bf16) with ``param_dtype=float32`` (the variables; their gradients come
    back through that cast as float32), and every other layer is float32."""
    precision = _precision(mode)
    heavy, dtype = (jnp.bfloat16, jnp.float32) if _is_mixed(dtype) else (dtype, dtype)
    if isinstance(layer, Dense):
        # Flax Dense kernel is (in, out): layout.py transposes.
        return nn.Dense(layer.out_features, use_bias=layer.bias, dtype=heavy, param_dtype=dtype,
                        precision=precision, name=name)
    if isinstance(layer, Conv2d):
        # Flax's default padding is 'SAME' (PyTorch: explicit p): always pass PyTorch's p per side.
        # ('SAME' happens to equal p=1 for k4 s2 on even inputs, but gives 4x4 instead of 1x1 for
        # D's last k4 s1 p0 layer; tests/test_backend_jax.py measures both.)
        p = layer.padding
        return nn.Conv(layer.out_channels, (layer.kernel, layer.kernel), strides=(layer.stride, layer.stride),
                       padding=((p, p), (p, p)), input_dilation=1, kernel_dilation=1, feature_group_count=1,
                       use_bias=layer.bias, dtype=heavy, param_dtype=dtype, precision=precision, name=name)
    if isinstance(layer, ConvTranspose2d):
        # Two Flax differences from PyTorch's ConvTranspose2d:
        # * padding: Flax's explicit pads are applied to the stride-dilated INPUT of the forward
        #   conv (jax.lax.conv_transpose); PyTorch's p crops p pixels off each side of the full
        #   output. Equal when pads = k - 1 - p per side (k4 s2 p1 -> (2, 2); k4 s1 p0 -> (3, 3)).
        #   Flax's default 'SAME' would give out = in * s: right shape for k4 s2 p1, wrong values.
        # * kernel: Flax's default (transpose_kernel=False) neither flips the kernel nor swaps its
        #   channel axes. transpose_kernel=True does both, so PyTorch's weight only needs the
        #   transpose in layout.py (the flip happens in the graph, a free index reversal).
        # Fast mode computes G's upsampling layers (k = 2s, p = s/2: the DCGANs' k4 s2 p1) as a
        # sub-pixel convolution instead (_SubPixelConvTranspose): same variables, same maths.
        pad = conv_transpose_input_padding(layer)
        cls = _SubPixelConvTranspose if mode == "fast" and _subpixel_applies(layer) else nn.ConvTranspose
        return cls(layer.out_channels, (layer.kernel, layer.kernel),
                   strides=(layer.stride, layer.stride), padding=((pad, pad), (pad, pad)),
                   kernel_dilation=(1, 1), use_bias=layer.bias, transpose_kernel=True,
                   dtype=heavy, param_dtype=dtype, precision=precision, name=name)
    if isinstance(layer, BatchNorm):
        return TorchBatchNorm(
            axis=-1,  # channels-last (NHWC / (N, F)): the spec's channel axis 1 after layout.py
            # Flax's momentum is the weight on the OLD value (default 0.99); the spec's (PyTorch's)
            # is the weight on the NEW one (0.1): Flax momentum = 1 - spec momentum.
            momentum=1.0 - layer.momentum,
            epsilon=layer.eps,
            # Flax's default computes var = E[x^2] - E[x]^2 (cancellation in float32); PyTorch and
            # the oracle use the two-pass E[(x - E[x])^2].
            use_fast_variance=False,
            # Flax's default promotes the statistics to at least float32 and keeps the running
            # averages in float32; off, everything stays in the state's dtype (no-op for fp32/fp64
            # activations, but float64 running stats would otherwise be created as float32).
            force_float32_reductions=False,
            # fix_gamma (MXNet's BatchNorm(fix_gamma=True), seed 004): the scale is the constant 1.
            # Flax's use_scale=False creates no `scale` variable and skips the multiply (x * 1 is
            # exact anyway): nothing to train, no canonical `weight` tensor (common/params.py).
            use_bias=True, use_scale=not layer.fix_gamma, dtype=dtype, param_dtype=dtype, name=name,
            running_var_stat=layer.running_var,
        )
    if isinstance(layer, ReLU):
        return nn.relu
    if isinstance(layer, LeakyReLU):
        # jax.nn.leaky_relu defaults to 0.01; the tutorial passes 0.2: always pass the spec's slope.
        return functools.partial(nn.leaky_relu, negative_slope=layer.slope)
    if isinstance(layer, Tanh):
        return jnp.tanh
    if isinstance(layer, Sigmoid):
        return jax.nn.sigmoid
    if isinstance(layer, Flatten):
        return _flatten
    if isinstance(layer, Reshape):
        return functools.partial(_reshape, shape=layer.shape)
    if isinstance(layer, Dropout):
        # Fast mode with no host masks only (Net applies a host mask itself, and a pure forward skips
        # the layer). Flax's Dropout is deterministic unless told otherwise (deterministic=None must be
        # given at the call): train mode here. It draws from the "dropout" RNG collection (the key
        # train.py passes per pass), one mask per element (broadcast_dims=()), and computes
        # select(keep, x / (1 - p), 0): PyTorch multiplies by 1 / (1 - p), a rounding apart -- fast
        # mode draws its own masks, so no parity row compares the two.
        return nn.Dropout(rate=layer.p, broadcast_dims=(), deterministic=False, rng_collection="dropout", name=name)
    if isinstance(layer, EmbedConcat):
        # nn.Embed's table "embedding" is (num_embeddings, features): PyTorch's nn.Embedding.weight
        # layout, so layout.py converts nothing. dtype=None would compute in the table's dtype anyway;
        # set, like param_dtype (default float32), to the state's. Its default embedding_init
        # (variance scaling, not nn.Embedding's N(0, 1)) is never run: the table is written from the
        # canonical params. Net concatenates the looked-up rows after the features.
        return nn.Embed(num_embeddings=layer.num_classes, features=layer.dim, dtype=dtype, param_dtype=dtype,
                        name=name)
    raise TypeError(f"unsupported layer {layer!r}")


def _flatten(x: jax.Array) -> jax.Array:
    """``x.view(B, -1)`` (seed 002): C-major over NCHW. Flax's activations are NHWC, whose plain
    reshape is H-major; transpose back to NCHW first (a no-op order for one channel, not for more)."""
    if x.ndim == 4:
        x = x.transpose(0, 3, 1, 2)
    return x.reshape(x.shape[0], -1)


def _reshape(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """``x.view(B, *shape)`` of a flat input, C-major: to the canonical ``(C, H, W)``, then to Flax's
    NHWC (layout.activations_to_framework's rule: only 4-D batches are channels-last)."""
    y = x.reshape(x.shape[0], *shape)
    return y.transpose(0, 2, 3, 1) if y.ndim == 4 else y


class Net(nn.Module):
    """A feed-forward stack; layer i of the spec is the submodule named ``str(i)``.

    ``use_running_average=False`` is PyTorch's train mode (BatchNorm: batch statistics, running
    statistics updated: apply with ``mutable=["batch_stats"]``); True is eval mode.

    ``labels`` (int array, or None for an unconditional net) feed the embed_concat layer. A Dropout
    layer multiplies by ``masks[i]`` when given (parity: common/draws.py's pre-scaled keep mask, in
    Flax's layout), draws its own mask with ``own_dropout`` (fast mode: apply with
    ``rngs={"dropout": key}``), else is the identity (the pure forwards: eval).

    ``dtype`` :data:`MIXED_BF16` (build_layer): each bfloat16 Dense/Conv/ConvTranspose output is cast
    to float32 at once, so BatchNorm, the activations and the net's output (D's logit, G's Tanh) are
    float32 -- where Keras's policy casts each float32 layer's input (backends/tensorflow/models.py).
    """

    net: NetSpec
    dtype: Any
    mode: str

    @nn.compact
    def __call__(self, x: jax.Array, use_running_average: bool, labels: jax.Array | None = None,
                 masks: dict[int, jax.Array] | None = None, own_dropout: bool = False) -> jax.Array:
        shapes = [self.net.input_shape, *self.net.shapes()]
        masks = masks or {}
        for i, layer in enumerate(self.net.layers):
            if isinstance(layer, Dropout):
                if i in masks:
                    x = x * masks[i]  # PyTorch's F.dropout: x * (keep / (1 - p)), the factor pre-formed
                elif own_dropout:
                    x = self.layer(layer, shapes[i], str(i))(x)
                continue  # no mask, no own draws: eval-mode dropout is the identity
            f = self.layer(layer, shapes[i], str(i))
            if isinstance(layer, EmbedConcat):
                if labels is None:
                    raise GanSuiteError(f"labels: layer {i} (embed_concat) needs the labels; none given")
                x = jnp.concatenate([x, f(labels)], axis=-1)  # torch.cat([x, emb(labels)], 1): features first
            elif isinstance(layer, BatchNorm):
                x = f(x, use_running_average)
            else:
                x = f(x)
            if isinstance(layer, _MIXED_LAYERS) and _is_mixed(self.dtype):
                x = x.astype(jnp.float32)
        return x

    def layer(self, layer: Layer, input_shape: tuple[int, ...], name: str) -> Callable[..., jax.Array]:
        """Spec layer -> Flax layer; traps.py's subclass swaps some for a framework default."""
        return build_layer(layer, input_shape, name, self.dtype, self.mode)


def build_net(net: NetSpec, name: str, dtype: Any, mode: str) -> Net:
    """``name`` ("G" / "D") is unused: a top-level Flax module's variables carry no prefix (the
    backend keeps G's and D's variables apart, in ``state.train["G"]`` / ``["D"]``). ``dtype``: a
    JAX dtype, or :data:`MIXED_BF16` (float32 variables, bf16 Dense/Conv/ConvTranspose: build_layer)."""
    return Net(net, dtype, mode)


@dataclass(frozen=True)
class StepConfig:
    """Everything static about a compiled function (hashable: a jit static argument and cache key)."""

    spec: GANSpec
    dtype: str  # the variables', the inputs' and the optimizer's: "float32" under mixed precision
    mode: str  # per-layer dot/conv precision (_precision): HIGHEST (parity), DEFAULT (fast)
    mixed: str | None = None  # MIXED_BF16: the nets' Dense/Conv/ConvTranspose compute in bf16 (fast mode)

    def nets(self) -> tuple[Net, Net]:
        dt = MIXED_BF16 if self.mixed == MIXED_BF16 else DTYPES[self.dtype]
        return (build_net(self.spec.generator, "G", dt, self.mode),
                build_net(self.spec.discriminator, "D", dt, self.mode))


def _forward(train: Any, x: jax.Array, labels: jax.Array | None, cfg: StepConfig, net: str, bn: str) -> jax.Array:
    """Pure forward of G or D: BN with batch ("batch", updates discarded) or running statistics;
    Dropout off (no masks, no own draws)."""
    G, D = cfg.nets()
    module = G if net == "G" else D
    variables = {"params": train[net]["params"], "batch_stats": train[net]["batch_stats"]}
    if bn == "batch":
        y, _ = module.apply(variables, x, use_running_average=False, labels=labels,
                            mutable=["batch_stats"])  # discarded
    else:
        y = module.apply(variables, x, use_running_average=True, labels=labels)
    return y


# labels are a traced argument (not static): one executable serves every label vector of a shape.
_FORWARD = jax.jit(_forward, static_argnames=("cfg", "net", "bn"))


def forward(state: Any, net: str, x: jax.Array, bn: str, labels: jax.Array | None) -> jax.Array:
    """Net ``net`` on ``x`` (and ``labels``): BatchNorm on batch ("batch") or running ("running")
    statistics, Dropout off; no state change (JAX is functional: the updated running statistics are
    dropped in :func:`_forward`)."""
    run = _compiled(state, "forward", _FORWARD, (state.train, x, labels), {"cfg": state.cfg, "net": net, "bn": bn})
    return run(state.train, x, labels)


# One executable per (function, static config, argument signature, device), shared by every state
# in the process: a second build of the same model compiles nothing (its compile_s stays 0).
_COMPILED: dict[Any, Any] = {}


def _signature(args: Any) -> tuple:
    leaves, treedef = jax.tree.flatten(args)
    return (treedef, tuple((leaf.shape, leaf.dtype) for leaf in leaves))


def _compiled(state: Any, kind: str, jitted: Any, args: tuple, static: dict[str, Any]) -> Callable:
    """Ahead-of-time compile once per signature, timing the compile apart from the run
    (``state.compile_s`` / ``state.compile_log``, read by the benchmarks)."""
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
