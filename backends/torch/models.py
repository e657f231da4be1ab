"""Build G and D from the spec as an ``nn.Sequential`` (:class:`SpecNet`) whose forward also carries
the labels and dropout masks, every default set explicitly; the pure forward."""

from __future__ import annotations

import contextlib
from typing import Any, ContextManager, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from gansuite.common.protocol import MIXED_BF16
from gansuite.common.spec import (BatchNorm, Conv2d, ConvTranspose2d, Dense, Dropout, EmbedConcat, Flatten, Layer,
                                  LeakyReLU, NetSpec, ReLU, Reshape, Sigmoid, Tanh)


def build_layer(layer: Layer, input_shape: tuple[int, ...], name: str, dtype: torch.dtype, mode: str) -> nn.Module:
    """One spec layer. ``name`` and ``mode`` are unused here: ``nn.Sequential`` numbers its children
    itself, and PyTorch has no per-layer precision setting (TF32 is process-wide: backend.configure)."""
    if isinstance(layer, Dense):
        return nn.Linear(layer.in_features, layer.out_features, bias=layer.bias, dtype=dtype)
    if isinstance(layer, Conv2d):
        return nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel, layer.stride, layer.padding,
                         bias=layer.bias, dtype=dtype)
    if isinstance(layer, ConvTranspose2d):
        # PyTorch's padding p crops p pixels per side of the full transposed conv: the spec's convention.
        return nn.ConvTranspose2d(layer.in_channels, layer.out_channels, layer.kernel, layer.stride,
                                  layer.padding, output_padding=0, bias=layer.bias, dtype=dtype)
    if isinstance(layer, BatchNorm):
        # momentum: PyTorch's convention is the spec's (weight on the NEW statistic); eps as given.
        # PyTorch normalises with the biased variance and stores the unbiased one: the spec's default
        # (running_var="unbiased"). running_var="biased" (MXNet's CPU op) needs _BiasedRunningVar.
        flat = len(input_shape) == 1
        if layer.running_var == "biased":
            cls = _BiasedBatchNorm1d if flat else _BiasedBatchNorm2d
        else:
            cls = nn.BatchNorm1d if flat else nn.BatchNorm2d
        bn = cls(layer.num_features, eps=layer.eps, momentum=layer.momentum, affine=True,
                 track_running_stats=True, dtype=dtype)
        if layer.fix_gamma:
            # MXNet's fix_gamma=True: the scale is the constant 1, not a parameter. PyTorch has no such
            # switch (affine=False would drop beta too), so the weight is unregistered: F.batch_norm
            # with weight=None skips the multiply (x * 1 is exact anyway), nothing trains it, and it
            # is absent from state_dict / named_parameters, i.e. from the canonical tensors and Adam.
            bn.register_parameter("weight", None)
        return bn
    if isinstance(layer, ReLU):
        return nn.ReLU()
    if isinstance(layer, LeakyReLU):
        # nn.LeakyReLU defaults to 0.01; the tutorial passes 0.2: always pass the spec's slope.
        return nn.LeakyReLU(negative_slope=layer.slope)
    if isinstance(layer, Tanh):
        return nn.Tanh()
    if isinstance(layer, Sigmoid):
        return nn.Sigmoid()
    if isinstance(layer, Flatten):
        return nn.Flatten(start_dim=1)  # x.view(B, -1): NCHW flattened C-major, the canonical order
    if isinstance(layer, Reshape):
        return nn.Unflatten(1, layer.shape)  # out.view(B, *shape)
    if isinstance(layer, Dropout):
        return _MaskedDropout(layer.p)
    if isinstance(layer, EmbedConcat):
        return _EmbedConcat(layer.num_classes, layer.dim, dtype)
    raise TypeError(f"unsupported layer {layer!r}")


class _MaskedDropout(nn.Module):
    """``nn.Dropout(p)`` whose keep mask can be given: in parity mode every backend multiplies by the
    same pre-scaled mask from common/draws.py (``x * (keep / (1 - p))``, PyTorch's own grouping in
    F.dropout), so the four frameworks drop the same units. Without a mask it is PyTorch's dropout
    when asked (fast mode's own RNG) and the identity otherwise (pure forwards: eval semantics)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, own_rng: bool = False) -> torch.Tensor:
        if mask is not None:
            return x * mask
        return F.dropout(x, self.p, training=True) if own_rng else x


class _EmbedConcat(nn.Module):
    """Seed 002's ``label_emb = nn.Embedding(k, d)`` and ``torch.cat([x, label_emb(labels)], 1)``. The
    table is this module's own ``weight`` (not a child Embedding) so its state_dict key is the
    canonical ``"<i>.weight"``; F.embedding is exactly what nn.Embedding.forward calls."""

    def __init__(self, num_classes: int, dim: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, dim, dtype=dtype))

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, F.embedding(labels, self.weight)], 1)


class SpecNet(nn.Sequential):
    """``nn.Sequential`` (children ``"0"``, ``"1"``, ... as the spec numbers them) whose forward also
    routes the labels to the embed_concat layer and each Dropout layer's mask to it."""

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None,  # type: ignore[override]
                masks: dict[int, torch.Tensor] | None = None, own_dropout: bool = False) -> torch.Tensor:
        for i, module in enumerate(self):
            if isinstance(module, _EmbedConcat):
                x = module(x, labels)
            elif isinstance(module, _MaskedDropout):
                x = module(x, (masks or {}).get(i), own_dropout)
            else:
                x = module(x)
        return x


class _BiasedRunningVar:
    """BatchNorm whose ``running_var`` tracks the BIASED batch variance (MXNet's CPU BatchNorm).

    PyTorch's kernel always folds the unbiased variance (n / (n - 1) times the biased one) into
    ``running_var``, with no option to change that, and undoing it afterwards would need the batch
    variance again. So in train mode the batch is normalised by F.batch_norm WITHOUT running
    buffers (batch statistics only, exactly PyTorch's normalisation), and the running statistics
    are advanced here, ``running = (1 - m) running + m stat``, the spec's (and the oracle's) form.
    Eval mode is plain PyTorch (running statistics)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)  # type: ignore[misc]
        dims = [0, *range(2, x.dim())]
        with torch.no_grad():
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(x.mean(dims), alpha=m)
            self.running_var.mul_(1 - m).add_(x.var(dims, unbiased=False), alpha=m)
            self.num_batches_tracked.add_(1)
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


class _BiasedBatchNorm1d(_BiasedRunningVar, nn.BatchNorm1d):
    pass


class _BiasedBatchNorm2d(_BiasedRunningVar, nn.BatchNorm2d):
    pass


def build_net(net: NetSpec, name: str, dtype: torch.dtype, mode: str) -> SpecNet:
    """Layer i of the spec is child ``str(i)``, so state_dict keys are ``"<i>.weight"``."""
    shapes = [net.input_shape, *net.shapes()]
    model = SpecNet(*(build_layer(layer, shapes[i], f"{name}.{i}", dtype, mode)
                      for i, layer in enumerate(net.layers)))
    model.train()  # BatchNorm in train mode throughout, as the tutorial (never .eval()).
    return model


@contextlib.contextmanager
def _frozen_running_stats(net: nn.Module) -> Iterator[None]:
    """A train-mode forward in PyTorch updates BN running stats even under no_grad: undo that."""
    saved = {k: v.clone() for k, v in net.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for k, v in net.named_buffers():
                v.copy_(saved[k])


def _autocast(state: Any) -> ContextManager:
    """Fast mode's bf16 mixed precision (``extra["mixed_precision"]``, checked in backend.configure):
    ``torch.autocast`` runs Linear, Conv2d and ConvTranspose2d in bfloat16 on bf16 copies of the
    float32 weights; the parameters, BatchNorm buffers, Adam state and (outside the region) the loss
    stay float32. Entered around the forwards of ONE pass, never across an optimiser step: autocast
    caches its bf16 weight copies until the outermost region exits (benchmarks/mixed.py), so a
    region spanning a step would run the next forward on the stale pre-step weights. Otherwise a
    no-op context."""
    if state.options.extra.get("mixed_precision") == MIXED_BF16:
        return torch.autocast(state.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def forward(state: Any, net: str, x: torch.Tensor, bn: str, labels: torch.Tensor | None) -> torch.Tensor:
    """Net ``net`` on ``x`` (and ``labels``): BatchNorm on batch ("batch") or running ("running")
    statistics, Dropout off; no state change. Under mixed precision the net runs in autocast and its
    output comes back in the state's dtype (float32), as the training step's do."""
    module = state.G if net == "G" else state.D
    with torch.no_grad(), _frozen_running_stats(module):
        module.train(bn == "batch")
        try:
            with _autocast(state):
                out = module(x, labels)
            return out.to(state.dtype)  # the identity unless autocast left bfloat16
        finally:
            module.train()
