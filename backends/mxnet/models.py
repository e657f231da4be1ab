"""Build G and D as Gluon ``HybridSequential`` nets from the spec (:class:`GANNet`, whose forward also
carries the labels and dropout masks), every default set explicitly; the pure forward."""

from __future__ import annotations

from typing import Any

import mxnet as mx
import numpy as np
from mxnet import autograd, nd
from mxnet.gluon import nn

from gansuite.common.layout import layer_index
from gansuite.common.spec import (BatchNorm, Conv2d, ConvTranspose2d, Dense, Dropout, EmbedConcat, Flatten, Layer,
                                  LeakyReLU, NetSpec, ReLU, Reshape, Sigmoid, Tanh)

from . import onednn_enabled


def _normalise(F: Any, xc: Any, var: Any, gamma: Any, beta: Any, eps: float, bshape: tuple[int, ...]) -> Any:
    """``(x - mean) / sqrt(var + eps) * gamma + beta`` in the oracle's operation order; ``gamma=None``:
    the fixed scale 1 (fix_gamma), no multiplication."""
    inv_std = 1.0 / F.sqrt(var + eps)
    xhat = F.broadcast_mul(xc, F.reshape(inv_std, bshape))
    scaled = xhat if gamma is None else F.broadcast_mul(xhat, F.reshape(gamma, bshape))
    return F.broadcast_add(scaled, F.reshape(beta, bshape))


def _bf16_symbol(out: Any, inputs: list[Any]) -> Any:
    """``out`` rewritten by MXNet's AMP graph pass (``amp.convert_symbol``, target bfloat16): an
    ``amp_cast`` to bfloat16 before each input and weight of the operators on AMP's own bf16 list
    (lists/symbol_bf16.py BF16_FUNCS: Convolution, FullyConnected) and one to float32 after it.
    Every other operator is passed as float32 (AMP's fp32, dtype-neutral and conditional lists
    together, none conditional): by default AMP lets bfloat16 flow on through the dtype-neutral ones
    (BatchNorm, relu, ...), but the spec's split keeps BatchNorm, the activations, the running
    statistics and the outputs float32. ``cast_optional_params=False``: the parameters stay float32
    arrays (the Trainer's, Adam's), cast inside the graph; amp_cast's backward brings their
    gradients back to float32.

    Deconvolution (Conv2DTranspose) stays float32, as on AMP's own list (FP32_FUNCS), though the
    suite's setting names ConvTranspose2d among the bf16 layers: MXNet 1.9.1's oneDNN bfloat16
    Deconvolution crashes the process (SIGSEGV) in its backward when its weight is an
    amp_cast/cast output, the only way to keep a float32 variable (measured; a bfloat16 leaf weight
    trains: tests/test_backend_mxnet.py). So G's transposed convolutions compute in float32 here.

    Speed (measured 2026-12, full-size dcgan, batch 64, OMP_NUM_THREADS=2, 2-core AMD EPYC with
    avx512_bf16): on an idle machine this path is FASTER than float32, 97 vs 73-79 img/s; oneDNN
    runs every bf16 Convolution in its native kernel (MKLDNN_VERBOSE: jit_bf16:avx512_core_bf16 for
    forward, backward_data and backward_weights; the 3-channel first layer x64:gemm:jit, ~1.6 ms),
    no ref:any kernel and no denormals. The slow bf16 step seen earlier (8-9 vs 18 img/s, D's bf16
    backward_weights ~500 ms a call against 35 ms float32) is CPU oversubscription, not the
    kernel: with two busy processes on the two cores, the bf16 backward_weights primitive of D's
    256->512 layer took 83 ms on average and up to 173-650 ms per call (idle: 14-24 ms), float32's
    50 (max 59) and bf16 backward_data 23 (unaffected): that primitive's threads synchronise (its
    per-thread partial weight gradients are reduced and converted to bf16 between barriers), so a
    descheduled thread stalls the other. OMP_WAIT_POLICY=PASSIVE does not help (135 ms mean);
    OMP_NUM_THREADS=1 does (no spikes: whole backward 89 ms bf16 vs 120 float32 under the same
    load). So bf16 timings are only meaningful on an otherwise idle CPU (or one thread)."""
    from mxnet.contrib.amp import amp

    bf16 = amp.bfloat16
    lp16 = amp.list_lp16_ops(bf16)
    fp32 = (set(amp.list_fp32_ops(bf16)) | set(amp.list_lp16_fp32_ops(bf16))
            | {op for op, _, _ in amp.list_conditional_fp32_ops(bf16)}) - set(lp16)
    return amp.convert_symbol(out, "bfloat16", target_dtype_ops=lp16, fp32_ops=sorted(fp32),
                              conditional_fp32_ops=[], data_names=[i.name for i in inputs],
                              cast_optional_params=False)


class _AmpGraph:
    """Mixin for a Gluon HybridBlock: with :attr:`amp_bf16` set, the symbol graph Gluon traces at the
    first hybridized call is converted by :func:`_bf16_symbol` before Gluon builds its CachedOp from
    it (``HybridBlock._get_graph``, which ``_build_cache`` calls), so the net runs as ONE cached graph
    with MXNet's own AMP casts in it. A retrace (``_clear_cached_op``) converts again. Off (the
    default), the block is Gluon's own."""

    amp_bf16 = False

    def _get_graph(self, *args: Any) -> tuple[Any, Any]:
        if self.amp_bf16 and not self._cached_graph:
            inputs, out = super()._get_graph(*args)
            self._cached_graph = inputs, _bf16_symbol(out, inputs)
        return super()._get_graph(*args)


class _Dense(_AmpGraph, nn.Dense):
    """``nn.Dense`` that can run in bfloat16 (:class:`_AmpGraph`)."""


class _Conv2D(_AmpGraph, nn.Conv2D):
    """``nn.Conv2D`` that can run in bfloat16 (:class:`_AmpGraph`)."""


class _KnowsItsDtype:
    """A block that remembers the net's dtype at ``cast()``: inside a hybridized graph the data is a
    Symbol without a dtype, and these blocks compute in another dtype and cast their outputs back."""

    net_dtype = "float32"

    def cast(self, dtype: Any) -> None:
        self.net_dtype = np.dtype(dtype).name
        super().cast(dtype)  # type: ignore[misc]


def _cast_each(F: Any, arrays: list[Any], dtype: str) -> list[Any]:
    return [F.cast(a, dtype) for a in arrays]


class TorchBatchNorm(_KnowsItsDtype, nn.BatchNorm):
    """Gluon's BatchNorm with PyTorch's running statistics (the spec's), usable hybridized.

    Gluon's own op (``F.BatchNorm``, MXNet 1.9.1 CPU build, measured in
    tests/test_backend_mxnet.py) normalises with the biased batch variance like
    PyTorch, but updates ``running_mean``/``running_var`` inside the BACKWARD pass,
    with the BIASED variance, and only for forwards recorded under ``autograd.record()``
    whose loss is then back-propagated. The spec updates them right after EVERY
    forward (three times per iteration for D) with the UNBIASED variance. So this
    block calls the op with ``momentum=1.0`` (the op's weight on the old value), which
    makes the op's in-backward update write every running value back unchanged, and
    returns, next to the op's output, the spec's updated running statistics, from the
    op's own batch statistics; train.py writes them back after each forward. Parity
    mode runs the op in float64 (its float32 sums are sequential: hybrid_forward). Call it in
    train mode (``autograd.record()`` or ``autograd.train_mode()``): outside it MXNet's
    operator normalises with the running statistics.
    (Until 2026-12-04 it built the output from broadcast operators: the same maths,
    40x slower forward + backward than the fused op.)

    Parameters keep Gluon's names (``gamma``, ``beta``, ``running_mean``,
    ``running_var``; see layout.module_key). ``momentum`` is passed to Gluon in
    Gluon's convention (weight on the OLD value: ``1 - spec.momentum``, 0.9 for the
    spec's 0.1) so ``repr`` shows the true setting; the EMA below uses the spec's.

    The spec's options: ``fix_gamma`` (MXNet's ``BatchNorm(fix_gamma=True)``, seed 004) is
    Gluon's ``scale=False``: Gluon still creates a ``gamma`` parameter (``grad_req='null'``,
    never trained, ones), which the op ignores under its own ``fix_gamma=True`` (scale 1) and
    which has no canonical tensor (:attr:`fixed_gamma`). ``running_var="biased"`` keeps the biased batch variance in
    ``running_var``, as MXNet's own CPU op does; "unbiased" is PyTorch's (the default).
    """

    def __init__(self, layer: BatchNorm, input_rank: int, prefix: str, exact: bool = True) -> None:
        super().__init__(axis=1, momentum=1.0 - layer.momentum, epsilon=layer.eps, center=True,
                         scale=not layer.fix_gamma, use_global_stats=False, in_channels=layer.num_features,
                         prefix=prefix)
        self.torch_momentum = layer.momentum  # weight on the NEW statistic (PyTorch, the spec)
        self.exact = exact  # parity mode: the operator in float64 whatever the net's dtype (hybrid_forward)
        self.eps = layer.eps
        self.fix_gamma = layer.fix_gamma
        self.unbiased = layer.running_var == "unbiased"
        self.axes = (0,) if input_rank == 1 else (0, 2, 3)  # every axis but channels (axis 1)
        self.bshape = (1, -1) if input_rank == 1 else (1, -1, 1, 1)

    @property
    def compute_dtype(self) -> str:
        return "float64" if self.exact else self.net_dtype

    def hybrid_forward(self, F: Any, x: Any, gamma: Any, beta: Any, running_mean: Any, running_var: Any) -> tuple[Any, Any, Any]:
        # The output: MXNet's own BatchNorm operator, which normalises with the batch mean and the
        # BIASED batch variance like the spec, in one fused kernel forward and backward. The same
        # maths as broadcast operators (_normalise) took 40x longer forward + backward (1.6 vs 57 ms
        # at 64x128x4x4, 5.1 vs 232 ms at 64x32x16x16, one thread: the backward of a broadcast is
        # a slow strided reduction), most of a parity iteration. momentum=1.0 (MXNet's weight on
        # the OLD value) makes the operator's own running-statistics update, which it does inside
        # the backward pass, moving * 1 + batch * 0: the arrays keep their bits, and the spec's
        # update is computed below. fix_gamma: the operator's own (scale 1, gamma never read).
        # Gluon's train mode must be on for batch statistics (autograd.record() sets it;
        # forward_pure sets it explicitly).
        #
        # Precision: the CPU operator sums each channel SEQUENTIALLY, forward and backward. In
        # float32 that is 3.9e-6 of the variance's scale at 64x8x16x16 (a two-stage mean: 4.2e-8),
        # and on the comparison's full-size DCGANs it missed the float32 tolerance: D(x) 1.7e-5,
        # D.2.weight's gradient 2.4e-5 > 1e-5 (CI's cross-backend stage, 2026-12-04). So parity
        # mode runs the operator in float64 (inputs cast up, output cast back: the oracle's
        # arithmetic, then one rounding; float64's own sequential sums: 5e-15). Fast mode runs it
        # in the net's dtype (its tolerance is 1e-4).
        cast = self.compute_dtype != self.net_dtype
        args = [x, gamma, beta, running_mean, running_var]
        if cast:
            args = _cast_each(F, args, self.compute_dtype)
        y, op_mean, op_invstd = F.BatchNorm(*args, eps=self.eps, momentum=1.0, fix_gamma=self.fix_gamma,
                                            use_global_stats=False, output_mean_var=True, axis=1)
        # The batch statistics of the spec's update are the operator's own (output_mean_var): its mean
        # and 1/sqrt(var + eps), so var = 1/invstd^2 - eps, two more roundings relative to var + eps in
        # the compute dtype. Computing them again from x cost 15% of a fast-mode iteration
        # (full-size DCGAN, batch 64, oneDNN: 210 of 1380 ms).
        mean = F.BlockGrad(op_mean)
        var = F.BlockGrad(F.reciprocal(F.square(op_invstd)) - self.eps)
        if cast:
            y, mean, var = _cast_each(F, [y, mean, var], self.net_dtype)
        # Running statistics, PyTorch's EMA: running = (1 - m) running + m stat, with the
        # UNBIASED variance var * n / (n - 1), n = elements per channel (or, running_var="biased",
        # MXNet's own op's choice, the biased one). No gradient flows through them (PyTorch
        # updates them under no_grad).
        if self.unbiased:
            shape = F.shape_array(x)
            n = F.cast(F.prod(shape) / F.slice_axis(shape, axis=0, begin=1, end=2), self.net_dtype)
            stat_var = F.broadcast_div(F.broadcast_mul(var, n), F.maximum(n - 1, 1))
        else:
            stat_var = var
        m = self.torch_momentum
        new_mean = (1 - m) * running_mean + m * mean
        new_var = (1 - m) * running_var + m * stat_var
        return y, new_mean, new_var

    @property
    def fixed_gamma(self) -> list[str]:
        """Gluon parameter names this block holds without a canonical tensor: gamma under fix_gamma."""
        return [self.gamma.name] if self.fix_gamma else []

    def forward_running(self, x: nd.NDArray) -> nd.NDArray:
        """Eval-mode output (running statistics), imperative, changes nothing."""
        mean, var = self.running_mean.data(x.context), self.running_var.data(x.context)
        xc = nd.broadcast_sub(x, nd.reshape(mean, self.bshape))
        gamma = None if self.fix_gamma else self.gamma.data(x.context)
        return _normalise(nd, xc, var, gamma, self.beta.data(x.context), self.eps, self.bshape)


class GANNet(_AmpGraph, nn.HybridSequential):
    """``HybridSequential`` whose forward also returns each BatchNorm's updated running stats.

    ``net(x, *inputs)`` -> ``(y, running_mean_0, running_var_0, running_mean_1, ...)`` in layer
    order (a list when hybridized, a tuple otherwise), the running statistics as they are after
    this batch: one (compiled) call gives the output and what train.py commits, and nothing is
    mutated inside the graph. ``inputs``: the labels (a conditional net, for its embed_concat
    layer), then one pre-scaled keep mask per Dropout layer in layer order, or no masks at all
    (MXNet's own dropout: fast mode without host draws). Positional NDArrays, not a dict or None:
    a hybridized block's graph is traced from, and bound to, its flat input list.
    """

    def hybrid_forward(self, F: Any, x: Any, *inputs: Any) -> tuple[Any, ...]:
        labels, masks = (inputs[0], inputs[1:]) if self.conditional else (None, inputs)
        mask_of = dict(zip(self.dropout_layers, masks))
        stats = []
        for i, block in enumerate(self._children.values()):
            if isinstance(block, TorchBatchNorm):
                x, new_mean, new_var = block(x)
                stats += [new_mean, new_var]
            elif isinstance(block, EmbedConcatBlock):
                x = block(x, labels)
            elif isinstance(block, MaskedDropout) and i in mask_of:
                x = block(x, mask_of[i])
            else:
                x = block(x)
        return (x, *stats)

    @property
    def conditional(self) -> bool:
        return any(isinstance(b, EmbedConcatBlock) for b in self._children.values())

    @property
    def dropout_layers(self) -> list[int]:
        """Spec indices of the Dropout layers, the order of their masks in the inputs."""
        return [i for i, b in enumerate(self._children.values()) if isinstance(b, MaskedDropout)]

    def train_forward(self, x: nd.NDArray, labels: nd.NDArray | None,
                      masks: dict[int, nd.NDArray]) -> list[nd.NDArray]:
        """``net(x, labels, masks in layer order)``. A hybridized net's graph is bound to the
        number of its inputs (Gluon raises on another): when that changes (host masks vs MXNet's
        own dropout in one state), the graph is dropped and traced again for the new inputs."""
        inputs = ([labels] if self.conditional else []) + [masks[i] for i in self.dropout_layers if masks]
        if self._active and getattr(self, "_n_inputs", len(inputs)) != len(inputs):
            self._clear_cached_op()
        self._n_inputs = len(inputs)
        return self(x, *inputs)

    def batch_norms(self) -> list[TorchBatchNorm]:
        return [b for b in self._children.values() if isinstance(b, TorchBatchNorm)]

    def commit_running_stats(self, stats: list[nd.NDArray]) -> None:
        """Write the running statistics a forward returned into the BN parameters (in place)."""
        for bn, i in zip(self.batch_norms(), range(0, len(stats), 2)):
            bn.running_mean.set_data(stats[i])
            bn.running_var.set_data(stats[i + 1])

    def forward_pure(self, x: nd.NDArray, bn: str, labels: nd.NDArray | None = None) -> nd.NDArray:
        """Output only, with batch (``"batch"``) or running (``"running"``) BN statistics, Dropout
        off (the identity: eval semantics, as the spec's pure forwards); no state changes.

        Layer by layer, so the same code serves the hybridized nets (Gluon bakes a graph
        at its first call; a mode switch inside it would need a second graph).
        """
        for block in self._children.values():
            if isinstance(block, TorchBatchNorm) and bn == "running":
                x = block.forward_running(x)
            elif isinstance(block, TorchBatchNorm):
                with autograd.train_mode():  # MXNet's BatchNorm uses batch statistics in train mode only
                    x = block(x)[0]
            elif isinstance(block, EmbedConcatBlock):
                x = block(x, labels)
            elif isinstance(block, MaskedDropout):
                continue
            else:
                x = block(x)
        return x


class ExactLeakyReLU(nn.LeakyReLU):
    """``nn.LeakyReLU`` computed as ``max(x, alpha x)`` (equal for 0 <= alpha < 1).

    The ``LeakyReLU`` operator keeps its ``slope`` parameter as a C++ float and computes the
    negative side as ``float(x) * float(slope)`` whatever the dtype (mshadow_op::xelu): in a
    float64 net 0.2 becomes 0.200000003 and x is rounded to float32 (measured: D outputs 2e-8
    off the oracle). Two elementwise ops keep everything double (Python float scalars reach
    MXNet's scalar ops as doubles).
    """

    def hybrid_forward(self, F: Any, x: Any) -> Any:
        return F.maximum(x, x * self._alpha)


class MaskedDropout(nn.Dropout):
    """``nn.Dropout(p)`` whose keep mask can be given: ``x * mask``, the mask pre-scaled
    (``keep / (1 - p)``, common/draws.py), so every backend drops the same units in parity mode.

    One elementwise product of x and the given array, so the rounding is the oracle's ``x * mask``
    exactly (MXNet's own Dropout op computes ``x * keep * (1 / (1 - p))``, two roundings, from its
    own RNG). Without a mask it IS Gluon's Dropout, which acts only in train mode (inside
    ``autograd.record()``): fast mode with no host draws. ``axes=()`` (Gluon's default, set):
    independent units, as ``nn.Dropout``'s, no shared mask along any axis.
    """

    def __init__(self, layer: Dropout, prefix: str) -> None:
        super().__init__(rate=layer.p, axes=(), prefix=prefix)

    def hybrid_forward(self, F: Any, x: Any, mask: Any = None) -> Any:
        if mask is not None:
            return x * mask
        return super().hybrid_forward(F, x)


class EmbedConcatBlock(nn.Embedding):
    """Seed 002's ``label_emb = nn.Embedding(k, d)`` and ``torch.cat([x, label_emb(labels)], 1)``:
    Gluon's ``nn.Embedding`` (its parameter, named ``"<i>_weight"``: the canonical name, see
    layout.module_key) whose forward also concatenates, the features FIRST.

    Defaults set: ``dtype`` is Gluon's float32 unless given (it types the op's weight, so it follows
    the net's dtype, also on :meth:`cast`); ``sparse_grad=False``: a dense gradient, as PyTorch's
    default (a row_sparse one would make Adam's update lazy, rows without a label untouched);
    the weight initializer is Zero (Gluon's is the global one given to ``initialize``): build()
    overwrites the table from the canonical params (PyTorch's N(0, 1), common/params.py).
    The labels come as float32 (layout.labels_to_framework)."""

    def __init__(self, layer: EmbedConcat, dtype: type, prefix: str) -> None:
        super().__init__(layer.num_classes, layer.dim, dtype=np.dtype(dtype).name,
                         weight_initializer=mx.init.Zero(), sparse_grad=False, prefix=prefix)

    def cast(self, dtype: Any) -> None:
        self._kwargs["dtype"] = np.dtype(dtype).name  # the Embedding op's weight dtype
        super().cast(dtype)

    def hybrid_forward(self, F: Any, x: Any, labels: Any, weight: Any) -> Any:
        return F.concat(x, super().hybrid_forward(F, labels, weight), dim=1)


class FlatReshape(nn.HybridBlock):
    """``x.view(B, *shape)``: Flatten (``shape = (F,)``) or Reshape, C order. MXNet's activations are
    NCHW, the canonical layout, so a plain reshape is the canonical flatten (no transpose)."""

    def __init__(self, shape: tuple[int, ...], prefix: str) -> None:
        super().__init__(prefix=prefix)
        self.shape = tuple(shape)

    def hybrid_forward(self, F: Any, x: Any) -> Any:
        return F.reshape(x, shape=(0, *self.shape))  # 0: keep the batch axis as it is


class OneChannelConv2DTranspose(_KnowsItsDtype, nn.Conv2DTranspose):
    """A transposed convolution to ONE channel, computed by MXNet's native float64 kernel (inputs
    cast up, the output cast back to the net's dtype): with oneDNN on, MXNet 1.9.1's oneDNN
    Deconvolution cannot take its input's gradient when ``num_filter=1`` ("MXNetError: could not
    create a primitive descriptor for a reorder primitive"), nor take a computed (e.g. zero-padded
    to two channels) weight ("could not execute a primitive"); oneDNN has no float64 kernels, so
    float64 runs the native one. G's last layer for grey images (dcgan-digits, dcgan-mnist) is
    such a layer; it is small (ngf -> 1 channel), and float64 only rounds less. Built only when
    oneDNN is on (fast mode): parity mode runs with oneDNN off and the plain block.
    tests/test_backend_mxnet.py reproduces the error and checks this block against the plain one.
    """

    def hybrid_forward(self, F: Any, x: Any, weight: Any, bias: Any = None) -> Any:
        args = _cast_each(F, [x, weight] if bias is None else [x, weight, bias], "float64")
        y = F.Deconvolution(*args, name="fwd", **self._kwargs)
        return F.cast(y, self.net_dtype)


def build_layer(layer: Layer, input_shape: tuple[int, ...], name: str, dtype: type, mode: str) -> nn.HybridBlock:
    """One spec layer, cast to ``dtype`` (before initialisation: its arrays are created in it).

    Layer ``"G.3"`` gets the Gluon prefix ``"3_"``: inside its net's name scope (prefix ``"G_"``)
    its parameters are ``"G_3_weight"`` and so on (layout.module_key). ``mode`` chooses where
    BatchNorm's running-statistics update takes its batch statistics from (TorchBatchNorm); Gluon
    has no per-layer precision setting, and hybridize is set on the whole net (backend.py).
    """
    block = _block(layer, input_shape, f"{layer_index(name)}_", dtype, mode)
    block.cast(dtype)
    return block


def _block(layer: Layer, input_shape: tuple[int, ...], prefix: str, dtype: type, mode: str) -> nn.HybridBlock:
    input_rank = len(input_shape)
    if isinstance(layer, Dense):
        # Gluon's weight is (units, in_units) = PyTorch's (out, in). flatten=False: act on the
        # last axis like nn.Linear (the default flattens every non-batch axis into one).
        return _Dense(layer.out_features, in_units=layer.in_features, use_bias=layer.bias,
                      flatten=False, prefix=prefix)
    if isinstance(layer, Conv2d):
        # Weight (channels, in_channels, kh, kw) = OIHW; NCHW is Gluon's default layout, set explicitly.
        return _Conv2D(layer.out_channels, layer.kernel, strides=layer.stride, padding=layer.padding,
                       in_channels=layer.in_channels, use_bias=layer.bias, layout="NCHW", prefix=prefix)
    if isinstance(layer, ConvTranspose2d):
        # Gluon's padding p crops p pixels per side like PyTorch's (out = (in-1)s - 2p + k + output_padding),
        # and its weight is (in_channels, channels, kh, kw) = PyTorch's (in, out, kh, kw).
        one_channel = layer.out_channels == 1 and onednn_enabled()
        return (OneChannelConv2DTranspose if one_channel else nn.Conv2DTranspose)(layer.out_channels, layer.kernel, strides=layer.stride, padding=layer.padding,
                                  output_padding=0, in_channels=layer.in_channels, use_bias=layer.bias,
                                  layout="NCHW", prefix=prefix)
    if isinstance(layer, BatchNorm):
        return TorchBatchNorm(layer, input_rank, prefix, exact=mode == "parity")
    if isinstance(layer, ReLU):
        return nn.Activation("relu", prefix=prefix)
    if isinstance(layer, LeakyReLU):
        # Gluon's nn.LeakyReLU has no default slope (alpha is required): pass the spec's. Its
        # operator holds the slope as a C++ float: in a float32 net that moves x * slope by under
        # one rounding (0.2f is 0.2 * (1 + 1.5e-8)), so float32 nets run the one fused operator
        # (one pass forward and backward, where max(x, a x) takes two and three); float64 nets the
        # exact form (ExactLeakyReLU).
        exact = np.dtype(dtype) == np.float64
        return (ExactLeakyReLU if exact else nn.LeakyReLU)(alpha=layer.slope, prefix=prefix)
    if isinstance(layer, Tanh):
        return nn.Activation("tanh", prefix=prefix)
    if isinstance(layer, Sigmoid):
        return nn.Activation("sigmoid", prefix=prefix)
    if isinstance(layer, (Flatten, Reshape)):
        return FlatReshape(layer.output_shape(input_shape), prefix)
    if isinstance(layer, Dropout):
        return MaskedDropout(layer, prefix)
    if isinstance(layer, EmbedConcat):
        return EmbedConcatBlock(layer, dtype, prefix)
    raise TypeError(f"unsupported layer {layer!r}")


def build_net(net: NetSpec, name: str, dtype: type, mode: str) -> GANNet:
    """Net ``name`` ("G"/"D") gets prefix ``"G_"`` and layer i prefix ``"<i>_"``: Gluon names ``"G_3_gamma"``."""
    model, shapes = GANNet(prefix=f"{name}_"), [net.input_shape, *net.shapes()]
    with model.name_scope():
        for i, layer in enumerate(net.layers):
            model.add(build_layer(layer, shapes[i], f"{name}.{i}", dtype, mode))
    return model


def _use_amp_bf16(net: GANNet) -> None:
    """bf16 mixed precision (fast mode, before the first call): the net's one cached graph, and each
    Dense and Conv2D layer's own (the layer-by-layer pure forwards), converted by MXNet's AMP pass
    (:class:`_AmpGraph`). Needs oneDNN: MXNet 1.9.1's native CPU kernels have no bfloat16 (backend.py)."""
    for block in (net, *net._children.values()):
        if isinstance(block, _AmpGraph):
            block.amp_bf16 = True


def forward(state: Any, net: str, x: nd.NDArray, bn: str, labels: nd.NDArray | None) -> nd.NDArray:
    """Net ``net`` on ``x`` (and ``labels``): BatchNorm on batch ("batch") or running ("running")
    statistics, Dropout off; no state change.

    Outside autograd.record(): nothing is recorded and no running statistic is committed (only
    train.py commits them), so this changes no state.
    """
    return (state.G if net == "G" else state.D).forward_pure(x, bn, labels)
