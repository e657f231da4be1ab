"""MXNet's multi-step primitive (``backend.train_epoch``): iterations unrolled into bound executors.

JAX scans its step (``lax.scan``), TensorFlow loops it (``tf.while_loop``) and PyTorch compiles a
scan over ``torch.func.grad``: each differentiates the iteration inside its loop. MXNet 1.9.1
cannot. It has no symbolic gradient (``Symbol.gradient`` raises ``MXNetError: not implemented``),
its graph loops (``contrib.foreach``, ``contrib.while_loop``) cannot run autograd in their body,
and Gluon's autograd records one imperative iteration at a time: at the Gaussian GAN's 2x2
matrices that iteration is Python and engine dispatch, 6-10 ms in d2l's MXNet tab.

So here the iteration's backward is written out by hand, layer by layer, the chain rule that
the float64 oracle spells out in NumPy (``common/oracle_layers.py``), in MXNet operators: its
own backward kernels where MXNet registers them (``_backward_tanh``, ``_backward_relu``,
``_backward_sigmoid``: the kernels its autograd runs). :data:`CHUNK` iterations are unrolled
into one symbol graph, bound once per input shape (``Symbol.bind``, no autograd, no gradient
arrays): one ``forward`` call runs them all, under 1 µs an operator at these sizes, where Gluon's
autograd spends tens of µs of Python and engine dispatch on each.

The iteration is the spec's, as PyTorch's compiled scan runs it (``backends/torch/train.py``):
D's real and fake passes as one forward of the stacked rows (no BatchNorm here, so the same
two forwards), BCE on the logits, Adam in the spec's form on one flat vector per net (the
step's moments, :func:`train._adam_moments`, and the eps-hat update with a per-step eps:
:func:`_adam_step`), then G through the updated D on the same z (``g_noise="reuse"``). The
per-row loss scales (the spec's reduction, ``d_loss_scale`` and the per_example reduction's
1/B, which Trainer.step applies to the gradients) are folded into Adam's coefficients where
they are one number for all of a net's rows, else multiply the logits' gradient: the same
maths in another order. The losses and D's probabilities come
from the logits on the host, in float64, with the oracle's BCE terms
(``oracle_layers.bce_with_logits_terms``), as
``train_step`` takes its probability means on the host.

What it takes (:func:`multi_step_refusal`): fast mode, float32 or float64 (no AMP), no
per-iteration draws, nets of dense layers and elementwise activations, BCE on logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mxnet as mx
import numpy as np
from mxnet import nd

from gansuite.common.oracle_layers import bce_with_logits_terms
from gansuite.common.protocol import BuildOptions, dense_multi_step_refusal
from gansuite.common.spec import AdamSpec, Dense, Flatten, GANSpec, LeakyReLU, NetSpec, ReLU, Sigmoid, Tanh

from .layout import _host_to_device
from .train import _adam_moments, _eps_hat_update, _fused_constants, _probability

#: Iterations unrolled into one executor, chosen by measurement (Gaussian GAN, batch 8, float32,
#: oneDNN on as in the benchmarks' fast rows, one thread, 125-iteration calls, 2026-12-07): in two
#: runs that interleaved 8, 16 and 32, and two that interleaved 4, 8 and 16, 8 was the fastest or
#: tied every time (its best 79, 140, 91 and 106 µs an iteration: this VM's speed moves 1.7x between
#: runs; 16 ran 82, 140, 102, 122; 32 94 and 163; 4 109 and 110): a longer graph's intermediates
#: outgrow the cache. Binding took 0.1 s for 16 iterations, 0.9-1.7 s for 128.
#: A call of n iterations runs n // CHUNK executor calls and one of the remainder (its own executor).
CHUNK = 8

def multi_step_refusal(spec: GANSpec, options: BuildOptions) -> str | None:
    """Why ``train_epoch`` cannot run ``spec`` under ``options`` (one line), or None: common/protocol's
    dense refusal (the layers _backward differentiates), and BCE on logits."""
    refusal = dense_multi_step_refusal(spec, options, "MXNet's hand-derived graph", "MXNet's AMP")
    if refusal is None and spec.loss.on != "logits":
        return (f"train_epoch: MXNet's hand-derived graph takes BCE on logits; model {spec.name!r} has "
                f"loss.on={spec.loss.on!r}; use train_step")
    return refusal


@dataclass(frozen=True)
class _FlatNet:
    """One net's trainable tensors as one flat vector: names in Adam's order, shapes, offsets."""

    prefix: str  # "G" or "D"
    spec: NetSpec
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @property
    def offsets(self) -> list[int]:
        return list(np.cumsum([0] + [int(np.prod(s)) for s in self.shapes]))

    @property
    def size(self) -> int:
        return self.offsets[-1]

    # Reshapes are ``reshape_like`` a constant input of the target shape (``shape_inputs``), not
    # ``reshape``: the same view of the same values, but with oneDNN on (fast mode's benchmarks)
    # ``reshape`` runs oneDNN's reorder, 1.5 µs a call against 0.3 (measured 2026-12-07).

    def _target_shapes(self) -> dict[str, tuple[int, ...]]:
        """Input name -> shape of each reshape target: a matrix's own shape and its flat size."""
        out = {}
        for name, shape in zip(self.names, self.shapes):
            if len(shape) > 1:
                out[f"shape:{name}"], out[f"size:{name}"] = shape, (int(np.prod(shape)),)
        return out

    def shape_vars(self) -> dict[str, Any]:
        """The graph's variables for :meth:`shape_inputs`, made once per graph (a name is one input)."""
        return {k: mx.sym.var(k) for k in self._target_shapes()}

    def unflatten(self, flat: Any, like: dict[str, Any]) -> dict[str, Any]:
        """Canonical name -> symbol of its tensor, cut from ``flat`` (one split, a reshape per matrix)."""
        pieces = ([flat] if len(self.names) == 1 else
                  mx.sym.split_v2(flat, indices_or_sections=tuple(self.offsets[1:-1]), axis=0))
        return {name: pieces[i] if len(shape) == 1 else mx.sym.reshape_like(pieces[i], like[f"shape:{name}"])
                for i, (name, shape) in enumerate(zip(self.names, self.shapes))}

    def flatten(self, tensors: dict[str, Any], like: dict[str, Any]) -> Any:
        parts = [tensors[n] if len(s) == 1 else mx.sym.reshape_like(tensors[n], like[f"size:{n}"])
                 for n, s in zip(self.names, self.shapes)]
        return parts[0] if len(parts) == 1 else mx.sym.concat(*parts, dim=0)

    def shape_inputs(self, device: mx.Context, dtype: Any) -> dict[str, nd.NDArray]:
        """The constant inputs whose shapes :meth:`unflatten` and :meth:`flatten` reshape to (never read)."""
        return {k: nd.zeros(shape, device, dtype=dtype) for k, shape in self._target_shapes().items()}


def _forward(net: _FlatNet, params: dict[str, Any], x: Any) -> tuple[Any, list[tuple[int, Any, Any, Any]]]:
    """The net on ``x``: its output and the tape (layer index, layer, input, output) its backward reads."""
    tape = []
    for i, layer in enumerate(net.spec.layers):
        if isinstance(layer, Dense):
            y = mx.sym.dot(x, params[f"{net.prefix}.{i}.weight"], transpose_b=True)  # x W^T
            if layer.bias:
                y = mx.sym.broadcast_add(y, params[f"{net.prefix}.{i}.bias"])
        elif isinstance(layer, Tanh):
            y = mx.sym.tanh(x)
        elif isinstance(layer, Sigmoid):
            y = mx.sym.sigmoid(x)
        elif isinstance(layer, ReLU):
            y = mx.sym.relu(x)
        elif isinstance(layer, LeakyReLU):
            # max(x, slope x), models.ExactLeakyReLU's form: the LeakyReLU operator holds its slope
            # as a C++ float (0.2f) and rounds x to float32 even in a float64 graph.
            y = mx.sym.maximum(x, x * layer.slope)
        elif isinstance(layer, Flatten):
            y = mx.sym.flatten(x)
        else:  # Reshape: the batch axis kept (0), the spec's example shape after it
            y = mx.sym.reshape(x, shape=(0, *layer.shape))
        tape.append((i, layer, x, y))
        x = y
    return x, tape


def _backward(net: _FlatNet, params: dict[str, Any], tape: list[tuple[int, Any, Any, Any]], dy: Any,
              param_grads: bool, input_grad: bool, ones: Any = None) -> tuple[dict[str, Any], Any]:
    """The chain rule back through ``tape`` from ``dy`` (d loss / d output): the parameters'
    gradients (if ``param_grads``; ``ones`` a vector of the batch's rows) and d loss / d input
    (if ``input_grad``, else None).
    Each layer's rule is the oracle's (common/oracle_layers.py) and PyTorch's autograd's."""
    grads: dict[str, Any] = {}
    for pos in range(len(tape) - 1, -1, -1):
        i, layer, x, y = tape[pos]
        if pos == 0 and not input_grad and not isinstance(layer, Dense):
            break  # nothing below needs d/dx
        if isinstance(layer, Dense):
            if param_grads:
                grads[f"{net.prefix}.{i}.weight"] = mx.sym.dot(dy, x, transpose_a=True)  # dy^T x: (out, in)
                if layer.bias:  # dy^T 1: the sum over rows as a product (sum(axis=0) costs ~2x a dot here)
                    grads[f"{net.prefix}.{i}.bias"] = mx.sym.dot(dy, ones, transpose_a=True)
            if pos == 0 and not input_grad:
                break
            dy = mx.sym.dot(dy, params[f"{net.prefix}.{i}.weight"])  # dy W: (rows, in)
        elif isinstance(layer, Tanh):
            dy = mx.sym._internal._backward_tanh(dy, y)  # dy (1 - y^2), from the output
        elif isinstance(layer, Sigmoid):
            dy = mx.sym._internal._backward_sigmoid(dy, y)  # dy y (1 - y)
        elif isinstance(layer, ReLU):
            dy = mx.sym._internal._backward_relu(dy, y)  # dy where y > 0, else 0
        elif isinstance(layer, LeakyReLU):
            dy = mx.sym.where(x > 0, dy, dy * layer.slope)  # PyTorch's rule: x > 0 keeps dy (x == 0: slope)
        else:  # Flatten, Reshape
            dy = mx.sym.reshape_like(dy, x)
    return grads, (dy if input_grad else None)


#: The carried state, in the executor's argument names: flat params, first and second moments.
_STATE = ("PG", "MG", "VG", "PD", "MD", "VD")
#: Adam's coefficients per iteration (:func:`_adam_coefficients`): G's step size and eps, then D's.
_COEFFICIENTS = 4


def _adam_step(w: Any, g: Any, m: Any, v: Any, step_size: Any, eps: Any, cfg: AdamSpec,
               grad_scale: float) -> tuple[Any, Any, Any]:
    """One Adam step on a flat vector, in the eps-hat form ``w - a m / (sqrt(v) + e)``
    (:func:`train._eps_hat_update`) with this step's (1,)-symbols ``a`` and ``e`` (:func:`_adam_coefficients`). The torch form is that form
    with ``a = lr sqrt(c2) / c1`` and ``e = eps sqrt(c2)`` (``lr m_hat / (sqrt(v_hat) + eps)``
    multiplied out), as SpecAdam's fused float32 path runs it: 5 operators where train._adam_math's
    torch form, in the oracle's operation order, takes 7 (the same maths; in float64 the two agree
    to rounding, tests/test_backend_mxnet_epoch.py)."""
    m_new, v_new = _adam_moments(mx.sym, g, m, v, cfg, grad_scale)
    return _eps_hat_update(mx.sym, w, m_new, v_new, step_size, eps), m_new, v_new


def _graph(spec: GANSpec, nets: dict[str, _FlatNet], length: int, host_noise: bool, z_shape: tuple[int, ...],
           dtype: str, grad_scales: dict[str, float | None]) -> Any:
    """``length`` unrolled iterations. In: the carried state ``S``, the six flat vectors of
    ``_STATE`` end to end. Out: ONE vector, the new state then every iteration's D logits on real
    then fake rows and on fake rows after D's step (one array, so a chunk costs one copy back).
    ``grad_scales``: each net's loss scale per row when it is one number for every row (folded
    into Adam's coefficients, :func:`train._adam_moments`), else None (the per-row inputs
    ``scale_d``/``scale_g`` multiply d loss / d logit)."""
    G, D = nets["G"], nets["D"]
    sizes = [nets[k[1]].size for k in _STATE]
    P = dict(zip(_STATE, mx.sym.split_v2(mx.sym.var("S"), indices_or_sections=tuple(np.cumsum(sizes)[:-1]), axis=0)))
    # Per-row constants (made once per shape): the labels, and d loss / d logit's scale per row.
    labels_d, scale_d, labels_g, scale_g, ones_d, ones_g = (
        mx.sym.var(k) for k in ("labels_d", "scale_d", "labels_g", "scale_g", "ones_d", "ones_g"))
    reals = mx.sym.split(mx.sym.var("reals"), num_outputs=length, axis=0, squeeze_axis=True) if length > 1 else \
        [mx.sym.reshape(mx.sym.var("reals"), shape=(-3, -2))]
    if host_noise:
        zs = mx.sym.split(mx.sym.var("zs"), num_outputs=length, axis=0, squeeze_axis=True) if length > 1 else \
            [mx.sym.reshape(mx.sym.var("zs"), shape=(-3, -2))]
    # Adam's per-step coefficients, a flat (length * 4,) input cut by ONE split (a split costs ~2.5 µs
    # here, an elementwise operator under 1): iteration t's G step size and eps, then D's.
    coef = mx.sym.split(mx.sym.var("coef"), num_outputs=length * _COEFFICIENTS, axis=0)
    logits = []
    # Each net's tensors, cut from its flat vector once per update (an iteration's G step reads D
    # after D's update, and the next iteration's D step reads the same tensors).
    like = {**G.shape_vars(), **D.shape_vars()}
    g, d = G.unflatten(P["PG"], like), D.unflatten(P["PD"], like)
    for t in range(length):
        # z from the device RNG, as device_noise draws it (one normal sample of the batch's shape per
        # iteration, in iteration order: the same numbers as a call of train_step per iteration).
        z = zs[t] if host_noise else mx.sym.random.normal(loc=0.0, scale=1.0, shape=z_shape, dtype=dtype)
        fake, g_tape = _forward(G, g, z)
        # -- D step: one forward of real and fake rows; d loss / d logit = (sigmoid - label) * row scale
        out_d, d_tape = _forward(D, d, mx.sym.concat(reals[t], fake, dim=0))
        dy_d = mx.sym.sigmoid(out_d) - labels_d
        folded_d = grad_scales["D"] is not None  # the row scale is in Adam's coefficients
        grads_d, _ = _backward(D, d, d_tape, dy_d if folded_d else dy_d * scale_d, True, False, ones_d)
        # Adam on the flat vector, with this step's (1,)-symbols step size and eps
        P["PD"], P["MD"], P["VD"] = _adam_step(P["PD"], D.flatten(grads_d, like), P["MD"], P["VD"],
                                               coef[_COEFFICIENTS * t + 2], coef[_COEFFICIENTS * t + 3],
                                               spec.train.optim_D, grad_scales["D"] if folded_d else 1.0)
        # -- G step: the same fake through the updated D, its gradient back through D to G
        d = D.unflatten(P["PD"], like)
        out_g, dg_tape = _forward(D, d, fake)
        dy_g = mx.sym.sigmoid(out_g) - labels_g
        folded_g = grad_scales["G"] is not None
        _, d_fake = _backward(D, d, dg_tape, dy_g if folded_g else dy_g * scale_g, False, True)
        grads_g, _ = _backward(G, g, g_tape, d_fake, True, False, ones_g)
        P["PG"], P["MG"], P["VG"] = _adam_step(P["PG"], G.flatten(grads_g, like), P["MG"], P["VG"],
                                               coef[_COEFFICIENTS * t], coef[_COEFFICIENTS * t + 1],
                                               spec.train.optim_G, grad_scales["G"] if folded_g else 1.0)
        g = G.unflatten(P["PG"], like)
        logits += [out_d, out_g]
    return mx.sym.concat(*[P[k] for k in _STATE], mx.sym.reshape(mx.sym.concat(*logits, dim=0), shape=(-1,)), dim=0)


def _cached(sym: Any) -> tuple[Any, list[str]]:
    """``sym`` as a CachedOp with its memory planned once (fixed shapes), and its input names in order."""
    return nd.CachedOp(sym, flags=[("static_alloc", True), ("static_shape", True)]), sym.list_inputs()


class EpochGraphs:
    """The compiled graphs of one state and batch shape, built at the first ``train_epoch`` call with
    these shapes: a bound executor of :data:`CHUNK` iterations and one per remainder length, and
    :meth:`gather` and :meth:`scatter`, which move the state between Gluon and the flat state
    vector in one call each (an MXNet imperative call costs tens of µs here; one per tensor took 8 ms).

    The executors share their state input ``S`` and the constants. Per chunk: the batches' and
    coefficients' rows are copied in (device to device), one ``forward`` runs the chunk, and its one
    output vector is copied back: the new state into ``S``, the logits into the call's array.
    (A bound executor, not a CachedOp writing into the other of two state buffers: at these sizes
    the executor's forward measured 68-92 µs an iteration against the static CachedOp's 110.)"""

    def __init__(self, state: Any, real_shape: tuple[int, ...], z_shape: tuple[int, ...], host_noise: bool) -> None:
        spec, loss, device, dtype = state.spec, state.spec.loss, state.device, state.dtype
        self.nets = {net: _FlatNet(net, spec.generator if net == "G" else spec.discriminator,
                                   tuple(state.trainable[net]),
                                   tuple(tuple(p.shape) for p in state.trainable[net].values()))
                     for net in ("G", "D")}
        self.state, self.host_noise, self.real_shape, self.z_shape = state, host_noise, real_shape, z_shape
        n_real, n_fake = real_shape[0], z_shape[0]
        self.out_shape = spec.discriminator.shapes()[-1]  # D's output per example: (1,), one logit

        def per_row(values: list[float]) -> nd.NDArray:
            column = np.asarray(values, np.float64).reshape(-1, *[1] * len(self.out_shape))
            return nd.array(np.broadcast_to(column, (len(values), *self.out_shape)), ctx=device, dtype=dtype)

        # d loss_D / d logit per row: d_loss_scale times the reduction's 1/rows ("mean": each BCE over
        # its own rows) or Trainer.step(B)'s 1/B on D's gradients ("per_example", B the real rows).
        r_real, r_fake = {"mean": (1 / n_real, 1 / n_fake), "sum": (1.0, 1.0),
                          "per_example": (1 / n_real, 1 / n_real)}[loss.reduction]
        r_gen = 1.0 if loss.reduction == "sum" else 1 / n_fake
        row_scales = {"D": [loss.d_loss_scale * r_real] * n_real + [loss.d_loss_scale * r_fake] * n_fake,
                      "G": [r_gen] * n_fake}
        # One scale for all of a net's rows (every reduction but "mean" over unequal real and fake
        # batches) is folded into Adam's coefficients; else each row's gradient is multiplied by its own.
        self.grad_scales = {net: values[0] if len(set(values)) == 1 else None for net, values in row_scales.items()}
        self.state_size = sum(self.nets[k[1]].size for k in _STATE)
        self.shared = {
            "S": nd.zeros((self.state_size,), device, dtype=dtype),
            "labels_d": per_row([loss.real_label] * n_real + [loss.fake_label] * n_fake),
            "scale_d": per_row(row_scales["D"]),
            "labels_g": per_row([loss.real_label] * n_fake),
            "scale_g": per_row(row_scales["G"]),
            "ones_d": nd.ones((n_real + n_fake,), device, dtype=dtype),
            "ones_g": nd.ones((n_fake,), device, dtype=dtype),
            **{k: v for net in self.nets.values() for k, v in net.shape_inputs(device, dtype).items()},
        }
        self.rows = n_real + 2 * n_fake  # logits per iteration (times out_shape)
        self.executors: dict[int, Any] = {}
        self._gather = self._scatter = None

    def executor(self, length: int) -> Any:
        if length not in self.executors:
            sym = _graph(self.state.spec, self.nets, length, self.host_noise, self.z_shape,
                         np.dtype(self.state.dtype).name, self.grad_scales)
            device, dtype = self.state.device, self.state.dtype
            args = {**self.shared, "reals": nd.zeros((length, *self.real_shape), device, dtype=dtype),
                    "coef": nd.zeros((length * _COEFFICIENTS,), device, dtype=dtype)}
            if self.host_noise:
                args["zs"] = nd.zeros((length, *self.z_shape), device, dtype=dtype)
            self.executors[length] = sym.bind(device, {k: args[k] for k in sym.list_arguments()}, grad_req="null")
        return self.executors[length]

    def tensors(self, trainers: dict[str, Any]) -> tuple[list[nd.NDArray], list[float]]:
        """Every parameter, first and second moment Gluon and SpecAdam hold, in _STATE's order
        (P, M, V of G, then of D), and each net's stored-moment scale (SpecAdam keeps k m on its
        fused float32 path, _fused_constants; else 1). Missing moments (before a parameter's
        first update) are created as zeros and handed to the Updater at that update (create_state)."""
        arrays, scales = [], []
        for net, flat in self.nets.items():
            opt, params = trainers[net].optimizer, self.state.trainable[net]
            for i, name in enumerate(flat.names):
                opt.create_state(i, params[name].data(self.state.device))
            arrays += [params[name].data(self.state.device) for name in flat.names]
            arrays += [opt.moments[i][0] for i in range(len(flat.names))]
            arrays += [opt.moments[i][1] for i in range(len(flat.names))]
            scales.append(_fused_constants(opt.cfg)[1] if opt._scaled(self.state.dtype) else 1.0)
        return arrays, scales

    def gather(self, arrays: list[nd.NDArray], scales: list[float]) -> None:
        """Gluon's parameters and SpecAdam's canonical moments (:meth:`tensors`) into the state vector ``S``."""
        if self._gather is None:
            parts, j = [], 0
            for (net, flat), k in zip(self.nets.items(), scales):
                for which in "PMV":
                    vec = [mx.sym.reshape(mx.sym.var(f"t{j + i}"), shape=(-1,)) for i in range(len(flat.names))]
                    j += len(flat.names)
                    parts += [v / k for v in vec] if which == "M" and k != 1.0 else vec  # canonical m
            self._gather = _cached(mx.sym.concat(*parts, dim=0))
        op, names = self._gather
        by_name = {f"t{j}": a for j, a in enumerate(arrays)}
        op(*[by_name[n] for n in names], out=self.shared["S"])

    def scatter(self, arrays: list[nd.NDArray], scales: list[float]) -> None:
        """The state vector ``S`` back into Gluon's parameters and SpecAdam's moments (:meth:`tensors`),
        in place (the hybridized nets and the Updater hold those arrays)."""
        if self._scatter is None:
            shapes = [shape for flat in self.nets.values() for _ in "PMV" for shape in flat.shapes]
            pieces = mx.sym.split_v2(mx.sym.var("S"), axis=0,
                                     indices_or_sections=tuple(np.cumsum([int(np.prod(s)) for s in shapes])[:-1]))
            outputs, j = [], 0
            for (net, flat), k in zip(self.nets.items(), scales):
                for which in "PMV":
                    for shape in flat.shapes:
                        piece = mx.sym.reshape(pieces[j], shape=shape)
                        outputs.append(piece * k if which == "M" and k != 1.0 else piece)  # SpecAdam's stored form
                        j += 1
            self._scatter = _cached(mx.sym.Group(outputs))
        op, _ = self._scatter
        op(self.shared["S"], out=arrays)


def _adam_coefficients(cfg: AdamSpec, first_step: int, n: int) -> np.ndarray:
    """``(n, 2)``: the eps-hat form's step size and eps (:func:`_adam_step`) for steps ``first_step + 1
    ...``, formed on the host in float64 as ``SpecAdam.update`` forms ``lr sqrt(c2) / c1``."""
    t = np.arange(first_step + 1, first_step + n + 1, dtype=np.float64)
    c1, c2 = 1 - cfg.beta1 ** t, 1 - cfg.beta2 ** t
    eps = cfg.eps * np.sqrt(c2) if cfg.form == "torch" else np.full(n, cfg.eps)
    return np.stack([cfg.lr * np.sqrt(c2) / c1, eps], axis=1)


def train_epoch(state: Any, reals: np.ndarray, zs: np.ndarray | None) -> dict[str, np.ndarray]:
    """``len(reals)`` iterations through the unrolled graphs; ``reals`` (and host ``zs``) canonical
    ``(n, B, ...)`` (MXNet's layout is the canonical one). The state (Gluon parameters, SpecAdam's
    moments and step counts) is gathered at the start and scattered back at the end, so train_step,
    export_params, read_adam and checkpoints see it as if train_step had run n times."""
    n, host_noise = len(reals), zs is not None
    z_shape = tuple(zs.shape[1:]) if host_noise else (state.spec.train.noise_rows(reals.shape[1]),
                                                      *state.spec.latent_shape)
    key = (tuple(reals.shape[1:]), z_shape, host_noise)
    if key not in state.epoch_graphs:
        state.epoch_graphs[key] = EpochGraphs(state, tuple(reals.shape[1:]), z_shape, host_noise)
    graphs = state.epoch_graphs[key]
    trainers = {"G": state.trainer_G, "D": state.trainer_D}
    steps = {net: int(trainers[net].optimizer.num_update) for net in ("G", "D")}
    coef = np.concatenate([_adam_coefficients(state.spec.train.optim_G, steps["G"], n),
                           _adam_coefficients(state.spec.train.optim_D, steps["D"], n)], axis=1)
    # One host->device copy of each input for the whole call; each chunk copies its rows on the device.
    inputs = {"reals": _host_to_device(reals, state.dtype, state.device),
              "coef": _host_to_device(coef.reshape(-1), state.dtype, state.device)}
    if host_noise:
        inputs["zs"] = _host_to_device(zs, state.dtype, state.device)
    rows, size = graphs.rows * int(np.prod(graphs.out_shape)), graphs.state_size
    logits = nd.empty((n * rows,), state.device, dtype=state.dtype)
    arrays, scales = graphs.tensors(trainers)
    graphs.gather(arrays, scales)
    for start in range(0, n, CHUNK):
        length = min(CHUNK, n - start)
        exe = graphs.executor(length)
        for name, source in inputs.items():
            width = _COEFFICIENTS if name == "coef" else 1  # coef is flat: _COEFFICIENTS values an iteration
            source[start * width:(start + length) * width].copyto(exe.arg_dict[name])
        exe.forward(is_train=False)
        out = exe.outputs[0]
        out[:size].copyto(graphs.shared["S"])  # the carried state, for the next chunk
        out[size:].copyto(logits[start * rows:(start + length) * rows])
    graphs.scatter(arrays, scales)
    for net, trainer in trainers.items():
        trainer.optimizer.set_step(steps[net] + n)
    values = logits.asnumpy().astype(np.float64).reshape(n, -1)
    return _scalars(state.spec, values, reals.shape[1], z_shape[0])


def _scalars(spec: GANSpec, logits: np.ndarray, n_real: int, n_fake: int) -> dict[str, np.ndarray]:
    """Each iteration's scalars from its logits ``(n, n_real + 2 n_fake)``: D on real then fake rows,
    then on fake rows after D's step. The losses are the oracle's BCE (common/oracle_layers), in
    float64, over all of the call's logits at once (one NumPy pass each, not one per quantity)."""
    loss = spec.loss
    targets = np.array([loss.real_label] * n_real + [loss.fake_label] * n_fake + [loss.real_label] * n_fake)
    bounds = [n_real, n_real + n_fake]
    reduce = np.mean if loss.reduction == "mean" else np.sum  # per_example: reported as the sum
    real, fake, gen = (reduce(part, axis=1) for part in np.split(bce_with_logits_terms(logits, targets), bounds, axis=1))
    p_real, p_fake, p_gen = (part.mean(axis=1) for part in np.split(_probability(logits, loss), bounds, axis=1))
    return {"loss_D": loss.d_loss_scale * (real + fake), "loss_G": gen,
            "D_x": p_real, "D_G_z1": p_fake, "D_G_z2": p_gen}
