"""One training iteration in the tutorial's call order (see common/protocol.py)."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon, nd

from gansuite.common.draws import pass_masks
from gansuite.common.errors import GanSuiteError
from gansuite.common.spec import AdamSpec, LossSpec

from .layout import _LABEL_DTYPE as LABEL_DTYPE
from .layout import _host_to_device
from .models import GANNet


def _adam_moments(F: Any, g: Any, m: Any, v: Any, cfg: AdamSpec, grad_scale: float = 1.0) -> tuple[Any, Any]:
    """Adam's moments after one step: ``b1 m + (1 - b1) s g`` and ``b2 v + (1 - b2) s^2 g g``, ``s``
    the gradient's scale (``grad_scale``; 1 in train_step). epoch.py folds the loss's per-row scale
    in here, into the Python-float coefficients, instead of multiplying the gradient by it: the
    same maths, one operator less. Every coefficient is a Python float, which MXNet's scalar
    operators apply as a double (``1 - beta2`` is formed in float64 here, not from a float32 beta2).
    """
    # broadcast_add, not ``+`` (elemwise_add): the same IEEE sum of equal-shape arrays, but with
    # oneDNN on (fast mode's benchmarks) elemwise_add runs oneDNN's sum primitive, ~15 µs a call
    # at the Gaussian GAN's sizes against ~1 µs (epoch.py's graph, measured 2026-12-07).
    m_new = F.broadcast_add(cfg.beta1 * m, ((1 - cfg.beta1) * grad_scale) * g)
    v_new = F.broadcast_add(cfg.beta2 * v, ((1 - cfg.beta2) * grad_scale**2) * g * g)
    return m_new, v_new


def _eps_hat_update(F: Any, w: Any, m: Any, v: Any, step_size: Any, eps: Any) -> Any:
    """``w - a m / (sqrt(v) + e)``, the eps-hat form's update (Keras, MXNet: eps added to sqrt(v)
    BEFORE the bias correction), ``a`` a (1,)-array; ``e`` the spec's eps as a Python float (a
    scalar operator, applied as a double) or a (1,)-array (epoch.py's per-step eps)."""
    denominator = F.sqrt(v) + eps if isinstance(eps, float) else F.broadcast_add(F.sqrt(v), eps)
    return w - F.broadcast_div(F.broadcast_mul(m, step_size), denominator)


def _adam_math(F: Any, w: Any, g: Any, m: Any, v: Any, c1: Any, c2: Any, alpha: Any,
               cfg: AdamSpec) -> tuple[Any, Any, Any]:
    """The spec's Adam for one tensor, in the oracle's operation order (common/oracle.adam_update).

    ``c1 = 1 - beta1^t`` and ``c2 = 1 - beta2^t`` are (1,)-arrays (they change every step), and
    so is ``alpha = lr * sqrt(c2) / c1``, the eps-hat form's step size, formed on the host in
    float64 as the oracle (and MXNet's optimizer, in Python) forms it. The moments are
    :func:`_adam_moments`'s.
    """
    m_new, v_new = _adam_moments(F, g, m, v, cfg)
    if cfg.form == "eps_hat":
        return _eps_hat_update(F, w, m_new, v_new, alpha, float(cfg.eps)), m_new, v_new
    m_hat = F.broadcast_div(m_new, c1)
    v_hat = F.broadcast_div(v_new, c2)
    w_new = w - F.broadcast_div(cfg.lr * m_hat, F.sqrt(v_hat) + cfg.eps)
    return w_new, m_new, v_new


class SpecAdam(mx.optimizer.Optimizer):
    """Adam in the spec's form: PyTorch's ``p -= lr * m_hat / (sqrt(v_hat) + eps)`` (``form="torch"``)
    or the eps-hat form ``p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)`` (``"eps_hat"``).

    MXNet's ``mx.optimizer.Adam`` (1.9.1, optimizer.py) is the "eps-hat" form, like Keras:
    eps is added BEFORE the bias correction (its docstring even prints the two coefficients
    the wrong way round). Algebraically the torch form is that form with a per-step epsilon
    ``eps_t = eps * sqrt(1 - b2^t)``, but its fused kernel ``nd.adam_update`` delivers
    neither form at the spec's tolerances, not even its own: the kernel keeps lr, betas and
    epsilon as float32 parameters and forms ``1 - beta`` from them, in float64 as in float32
    (0.999f: 1 - 0.999f = 0.000999987, so v is 1.3e-5 off; 1 - 0.9f: m 2.4e-7 off). So both
    forms are :func:`_adam_math`, written out in MXNet operators with double coefficients.
    These differences are measured in tests/test_backend_mxnet.py.

    Speed: written as single NDArray calls the update is 12 operators per tensor (112
    of the Gaussian GAN's 167 per iteration). So the Updater hands all of a net's
    tensors over at once (``aggregate_num``), and _adam_math, traced once into a symbol
    graph, runs as ONE ``CachedOp`` per net and step that writes w, m and v in place
    (the same kernels as imperative calls; in float64 the parameters and moments after a
    step equal the oracle's bit for bit, measured).

    One optimizer per network: MXNet counts updates per parameter index
    (``_index_update_count``); every parameter of a net is updated at every step, so
    they all equal ``num_update``, the canonical per-net step counter.

    Fast mode in float32 (:meth:`_use_fused_kernel`, set by backend.py for a GAN's two trainers)
    runs MXNet's fused ``nd.adam_update`` instead, one kernel per tensor, with its float32
    coefficients made the spec's by a change of variables (:func:`_fused_constants`); see
    :meth:`_fused_update` for why and the measured cost.
    """

    def __init__(self, cfg: AdamSpec) -> None:
        # wd=0 (no weight decay) and no gradient clipping, as the spec; set so nobody looks them up.
        super().__init__(learning_rate=cfg.lr, wd=0.0, clip_gradient=None, rescale_grad=1.0,
                         begin_num_update=0, multi_precision=False)
        self.cfg = cfg
        self.aggregate_num = 1 << 30  # the Updater passes every tensor of the net in one update() call
        self.moments: dict[int, tuple[nd.NDArray, nd.NDArray]] = {}
        self._ops: dict[int, tuple[Any, list[str]]] = {}  # number of tensors -> (CachedOp, input names)
        self._fused = False  # _use_fused_kernel: float32 tensors go through nd.adam_update

    def _use_fused_kernel(self) -> None:
        """Float32 tensors from now on through MXNet's fused kernel (:meth:`_fused_update`); float64
        keeps the exact graph. Before the first update and before :meth:`restore` (the first moment
        is stored scaled: :meth:`_canonical_moments`)."""
        self._fused = True

    def _scaled(self, dtype: Any) -> bool:
        return self._fused and np.dtype(dtype) == np.float32

    def _canonical_moments(self, index: int) -> tuple[nd.NDArray, nd.NDArray] | None:
        """Parameter ``index``'s (m, v) as the spec defines them (None before its first update or
        restore): the fused path stores ``k m`` (:func:`_fused_constants`), divided out here (one
        float32 rounding)."""
        if index not in self.moments:
            return None
        m, v = self.moments[index]
        return (m / _fused_constants(self.cfg)[1], v) if self._scaled(m.dtype) else (m, v)

    def restore(self, step: int, moments: dict[int, tuple[nd.NDArray, nd.NDArray]]) -> None:
        """A checkpoint's step counter and moments, before the first update: what constructing with
        ``begin_num_update=step`` (MXNet's own mechanism) would have set, and the moments that
        :meth:`create_state` hands to the Updater at each parameter's first update."""
        self.begin_num_update = self.num_update = step
        self._all_index_update_counts = {0: {}}  # counts start at begin_num_update (_update_count)
        self._index_update_count = self._all_index_update_counts[0]
        k = _fused_constants(self.cfg)[1]
        self.moments = {i: ((m * k, v) if self._scaled(m.dtype) else (m, v)) for i, (m, v) in moments.items()}

    def set_step(self, step: int) -> None:
        """The step counter after ``train_epoch`` (epoch.py) ran updates in its own graph (it wrote
        the moments in place): the next update is ``step + 1`` for every parameter (_update_count)."""
        self.num_update = step
        for i in self.moments:
            self._index_update_count[i] = step

    def create_state(self, index: int, weight: nd.NDArray) -> tuple[nd.NDArray, nd.NDArray]:
        # The Updater asks lazily, at a parameter's first update: hand over restored moments,
        # else zeros (as PyTorch, whose moments also start at the first step).
        if index not in self.moments:
            self.moments[index] = (nd.zeros(weight.shape, weight.context, dtype=weight.dtype),
                                   nd.zeros(weight.shape, weight.context, dtype=weight.dtype))
        return self.moments[index]

    def update(self, index: Any, weight: Any, grad: Any, state: Any) -> None:
        indices, weights, grads, states = ((index, weight, grad, state) if isinstance(index, (list, tuple))
                                           else ([index], [weight], [grad], [state]))
        self._update_count(indices)
        t = self._index_update_count[indices[0]]
        if self._scaled(weights[0].dtype):
            self._fused_update(t, weights, grads, states)
            return
        op, names = self._compiled(len(indices))
        w0 = weights[0]
        # rescale_grad is 1/batch_size from Trainer.step(batch_size): 1/B for the per_example
        # reduction (MXNet's own convention), else step(1) and applying it (g * 1.0) is exact.
        cfg = self.cfg
        alpha = cfg.lr * np.sqrt(1 - cfg.beta2**t) / (1 - cfg.beta1**t)  # eps_hat's step, the oracle's expression
        coef = np.array([1 - cfg.beta1**t, 1 - cfg.beta2**t, self.rescale_grad, alpha])
        # One host->device copy per step, without a host sync (layout._host_to_device: nd.array here
        # waited for the whole queued backward before Adam could even be queued).
        arrays = {"coef": _host_to_device(coef, w0.dtype, w0.context)}
        for i, (w, g, (m, v)) in enumerate(zip(weights, grads, states)):
            arrays.update({f"w{i}": w, f"g{i}": g, f"m{i}": m, f"v{i}": v})
        op(*[arrays[k] for k in names], out=[a for w, (m, v) in zip(weights, states) for a in (w, m, v)])

    def _fused_update(self, t: int, weights: list[nd.NDArray], grads: list[nd.NDArray],
                      states: list[tuple[nd.NDArray, nd.NDArray]]) -> None:
        """Step ``t`` of every tensor through MXNet's fused ``nd.adam_update`` (float32): ``m' <- b1 m' +
        (1 - b1) G``, ``v <- b2 v + (1 - b2) G^2``, ``w <- w - lr m' / (sqrt(v) + eps)`` with
        ``G = rescale_grad * g`` and every coefficient a float32 kernel parameter.

        Why: the graph (:meth:`_compiled`) is 15 elementwise passes per tensor, MXNet's ``sqrt``
        alone 11 ms on G's 3.6M weights (numpy's: 3 ms); the whole update took 67 ms for G and 52
        ms for D per step against 7.1 and 5.3 ms for this kernel (full-size dcgan, float32,
        OMP_NUM_THREADS=2, oneDNN on), the gap that left fast mode at 0.94x of the idiomatic
        Gluon peer (which runs this kernel through gluon.Trainer's 'adam').

        The spec's coefficients from the kernel's (:func:`_fused_constants`): the kernel forms
        ``1 - beta2`` from float32 beta2 (``1 - 0.999f = 0.000999987``, 1.3e-5 off 0.001: the
        test_fused_adam_kernel_* test), so the gradient is scaled by ``r = sqrt((1 - b2) / (1 -
        b2f))`` (``rescale_grad``), which makes v's coefficient ``(1 - b2f) r^2 = 1 - b2``, and
        the first moment is stored as ``k m`` with ``k = r (1 - b1f) / (1 - b1)``, which makes
        m's ``(1 - b1f) r / k = 1 - b1``; the step divides k out of lr. The spec's forms then
        follow as for any eps-hat kernel: ``torch``: lr ``lr sqrt(c2) / c1 / k``, eps ``eps
        sqrt(c2)`` (``lr m_hat / (sqrt(v_hat) + eps)`` multiplied out); ``eps_hat``: lr ``alpha /
        k``, eps ``eps``. Against the float64 oracle (3 steps, gradients 1e-10..1e-1) the
        parameters and v are as close as the graph's, m closer (p - P0 2.0e-7, m 6.1e-9 vs the
        graph's 6.1e-8, v 7.7e-8: test_fused_spec_adam_matches_oracle_in_float32). Checkpoints
        carry the canonical m (``m' / k``, one float32 rounding; restore multiplies back). A rescale_grad
        other than 1 (the per_example reduction's 1/B) is applied first, as its own product, so
        that k stays one constant. wd=0 and no clipping, as the spec."""
        cfg, (r, k) = self.cfg, _fused_constants(self.cfg)
        if cfg.form == "eps_hat":
            lr, eps = cfg.lr * np.sqrt(1 - cfg.beta2**t) / (1 - cfg.beta1**t), cfg.eps
        else:
            lr, eps = cfg.lr * np.sqrt(1 - cfg.beta2**t) / (1 - cfg.beta1**t), cfg.eps * np.sqrt(1 - cfg.beta2**t)
        for w, g, (m, v) in zip(weights, grads, states):
            if self.rescale_grad != 1.0:
                g = g * self.rescale_grad
            nd.adam_update(w, g, m, v, out=w, lr=lr / k, beta1=cfg.beta1, beta2=cfg.beta2, epsilon=eps, wd=0.0,
                           rescale_grad=r, clip_gradient=-1.0, lazy_update=False)

    def _compiled(self, n: int) -> tuple[Any, list[str]]:
        if n not in self._ops:
            coef = mx.sym.var("coef")  # (4,): 1 - beta1^t, 1 - beta2^t, rescale_grad, alpha
            c1, c2, rescale, alpha = (mx.sym.slice_axis(coef, axis=0, begin=j, end=j + 1) for j in range(4))
            outputs = []
            for i in range(n):
                w, g, m, v = (mx.sym.var(f"{k}{i}") for k in "wgmv")
                outputs += _adam_math(mx.sym, w, mx.sym.broadcast_mul(g, rescale), m, v, c1, c2, alpha, self.cfg)
            graph = mx.sym.Group(outputs)
            self._ops[n] = (nd.CachedOp(graph), graph.list_inputs())  # inputs in the graph's own order
        return self._ops[n]


def _fused_constants(cfg: AdamSpec) -> tuple[float, float]:
    """``(r, k)`` of SpecAdam's fused float32 path: ``r = sqrt((1 - b2) / (1 - b2f))`` rounded to
    float32 (the kernel's rescale_grad is a float32 parameter: so r is exactly what it applies) and
    ``k = r (1 - b1f) / (1 - b1)`` in float64, b1f and b2f the float32 betas the kernel holds."""
    b1f, b2f = float(np.float32(cfg.beta1)), float(np.float32(cfg.beta2))
    r = float(np.float32(np.sqrt((1 - cfg.beta2) / (1 - b2f))))
    return r, r * (1 - b1f) / (1 - cfg.beta1)


def make_adam(cfg: AdamSpec, params: Iterable[gluon.Parameter], mode: str) -> gluon.Trainer:
    """A Trainer over ``params`` IN THE GIVEN ORDER (index i = params[i]; a dict would be sorted by name),
    at step 0 with no moments (SpecAdam.restore sets a checkpoint's). ``mode`` is unused: the same
    SpecAdam serves both modes (its update is one CachedOp per net and step either way).

    kvstore=None: one device, updates run locally by the Trainer's Updater (no kvstore copy).
    """
    return gluon.Trainer(list(params), SpecAdam(cfg), kvstore=None, update_on_kvstore=False)


# BCE-with-logits on the raw logit (the tutorial: Sigmoid + BCELoss), computed stably as
# relu(x) - x t + log(1 + exp(-|x|)). One stateless block, built once (a Gluon Block costs
# name-scope bookkeeping at construction).
_BCE = gluon.loss.SigmoidBinaryCrossEntropyLoss(from_sigmoid=False, batch_axis=0)

#: PyTorch's binary_cross_entropy: each log clamped at -100, the backward's denominator at least 1e-12.
_LOG_CLAMP, _BACKWARD_EPS = -100.0, 1e-12


def _probability_bce(p: nd.NDArray, target: float, reduction: str) -> nd.NDArray:
    """PyTorch's ``BCELoss`` on D's Sigmoid output (``loss.on="probabilities"``, seed 002), reduced.

    Value, per element: ``-(t max(log p, -100) + (1 - t) max(log1p(-p), -100))``, then the mean or
    sum. Gradient: PyTorch's own formula ``(p - t) / max((1 - p) p, 1e-12)`` (the oracle's), not
    autograd of the value: that sends ``0 * inf`` = NaN into the gradient wherever p is exactly 0
    or 1 (a saturated float32 D: log's backward divides by p, log1p's by 1 - p, and the clamp's zero
    does not cancel an inf), where PyTorch gives a finite +-1e12. Gluon has no such loss (its
    SigmoidBCELoss(from_sigmoid=True) adds 1e-12 inside each log, Keras-like: not the spec).

    The gradient is attached with native operators only: ``value + (s - BlockGrad(s))`` with
    ``s = sum(p * BlockGrad(g))`` is the value exactly (``s - s`` is 0) and back-propagates ``g`` to
    p, times the head gradient (the oracle's order: per-element gradient, / n, then the loss scale).
    Not an ``autograd.Function``: its Python backward runs as an engine callback and measured, it
    deadlocks MXNet's threaded engine intermittently (3 of 6 runs of one mlp-gan iteration hung in
    the next ``asnumpy``).
    """
    with autograd.pause():
        per = -(target * nd.maximum(nd.log(p), _LOG_CLAMP) + (1 - target) * nd.maximum(nd.log1p(-p), _LOG_CLAMP))
        value = per.mean() if reduction == "mean" else per.sum()
        grad = (p - target) / nd.maximum((1 - p) * p, _BACKWARD_EPS)
        if reduction == "mean":
            grad = grad / p.size
    surrogate = (p * grad).sum()  # recorded: d/dp = grad (grad is a constant, computed under pause)
    return value + (surrogate - nd.BlockGrad(surrogate))


def bce(out: nd.NDArray, label: float, loss: LossSpec) -> nd.NDArray:
    """The spec's BCE on D's output ``(B,)``: on a logit, or on D's Sigmoid output (``loss.on``)."""
    if loss.on == "probabilities":
        return _probability_bce(out, label, loss.reduction)
    # Gluon's SigmoidBCELoss returns one value per example, the MEAN over every non-batch axis
    # (here one element: logits are (B,)); the batch reduction is the spec's and is explicit
    # ('sum' in d2l, 'mean' in the tutorial). d2l's MXNet tab instead keeps the per-example
    # vector (backward of a vector = of its sum) and calls trainer.step(batch_size): the spec's
    # "per_example", back-propagated (and reported) as the sum, its 1/B applied by the Trainer.
    per_example = _BCE(out, _constant(out, label))
    return per_example.mean() if loss.reduction == "mean" else per_example.sum()


_CONSTANTS: dict[tuple[Any, ...], nd.NDArray] = {}


def _constant(like: nd.NDArray, value: float) -> nd.NDArray:
    """A label array shaped like ``like``, made once per shape/dtype/device (it is never written)."""
    key = (like.shape, str(like.dtype), str(like.context), value)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = nd.full(like.shape, value, ctx=like.context, dtype=like.dtype)
    return _CONSTANTS[key]


def _forward(net: GANNet, x: nd.NDArray, labels: nd.NDArray | None = None,
             masks: dict[int, nd.NDArray] | None = None) -> nd.NDArray:
    """One training forward (``labels`` for a conditional net, ``masks`` its Dropout layers' from the
    host; none: MXNet's own dropout): output, and the running statistics committed right after (the spec)."""
    y, *stats = net.train_forward(x, labels, masks or {})
    if stats:
        with autograd.pause():
            net.commit_running_stats(stats)
    return y


def _step_batch(reduction: str, rows: int) -> int:
    """Trainer.step's batch_size: B for the per_example reduction (rescale_grad = 1/B, as MXNet's
    Trainer.step(batch_size) and Module apply it), else 1 (the loss carries the spec's reduction;
    step(B) would give gradients 1/B of the spec's)."""
    return rows if reduction == "per_example" else 1


def _grads(params: dict[str, gluon.Parameter], batch: int) -> dict[str, nd.NDArray]:
    """The gradients as Adam sees them: the contexts' sum (one context: its own gradient; several:
    what the kvstore sums, data_parallel.py) times rescale_grad = 1/batch (exact copies when batch is 1)."""
    out = {}
    for name, p in params.items():
        parts = p.list_grad()
        total = parts[0] if len(parts) == 1 else nd.add_n(*[g.as_in_context(parts[0].context) for g in parts])
        out[name] = total.copy() if batch == 1 else total * (1.0 / batch)
    return out


def _trainer_step(trainer: gluon.Trainer, batch: int, net: str) -> None:
    """``trainer.step(batch)``. A kvstore runs the optimizer through a ctypes callback that only
    prints an exception and goes on with the weights NOT updated; an optimizer that keeps the error
    (data_parallel.KVStoreAdam) has it raised here in one line."""
    trainer.step(batch)
    err = getattr(trainer._optimizer, "error", None)
    if err is not None:
        raise GanSuiteError(f"workers: the kvstore's Adam update of {net} failed: {str(err).splitlines()[-1]}")


class _Shard:
    """One context's part of the iteration: its rows of the real batch and z (``"real"``, ``"z"``),
    and of the labels, fresh noise and dropout masks: the host's (parity, and fast mode fed from
    the host), or in fast mode with device noise (``train_step(real, None, draws)``: the template
    keeps only the real batch's labels) MXNet's own: the fake labels and z_gen from its device RNG
    (seeded at build, as device_noise), dropout from Gluon's Dropout op in train mode (no masks
    reach the nets). Only what is missing is drawn. Single-worker training is one shard."""

    def __init__(self, state: Any, draws: dict[str, nd.NDArray]) -> None:
        spec, ctx = state.spec, draws["real"].context
        self.draws = dict(draws)
        real_rows, rows = draws["real"].shape[0], draws["z"].shape[0]
        if spec.conditional:
            for key, n in (("labels", real_rows), ("fake_labels", rows), ("fake_labels_gen", rows)):
                if key not in self.draws:
                    # randint draws integers; cast to the labels' dtype (layout.labels_to_framework)
                    self.draws[key] = nd.random.randint(0, spec.num_classes, shape=(n,), dtype="int32",
                                                        ctx=ctx).astype(LABEL_DTYPE)
        if spec.train.g_noise == "fresh" and "z_gen" not in self.draws:
            self.draws["z_gen"] = nd.random.normal(0.0, 1.0, shape=(rows, *spec.latent_shape), ctx=ctx,
                                                   dtype=state.dtype)

    def get(self, key: str) -> nd.NDArray | None:
        return self.draws.get(key)

    def masks(self, pass_name: str, net: str) -> dict[int, nd.NDArray]:
        return pass_masks(self.draws, pass_name, net)


#: A training forward of every shard: (net, inputs, labels, masks) per shard -> outputs per shard.
_ShardForward = Callable[[GANNet, list, list, list], list]


def _forward_each(net: GANNet, xs: list[nd.NDArray], labels: list[nd.NDArray | None],
                  masks: list[dict[int, nd.NDArray]]) -> list[nd.NDArray]:
    """Each shard on its own (one context: the single-worker forward, the net's compiled graph in
    fast mode). data_parallel.py's forward runs the shards in lockstep, BatchNorm synchronised."""
    return [_forward(net, x, lab, m) for x, lab, m in zip(xs, labels, masks)]


def train_iteration(state: Any, real: nd.NDArray, z: nd.NDArray, with_grads: bool,
                    draws: dict[str, nd.NDArray]) -> tuple[dict[str, float], dict[str, nd.NDArray] | None]:
    """One iteration on one context: :func:`_train_shards` with one shard (see there)."""
    return _train_shards(state, [_Shard(state, {**draws, "real": real, "z": z})], with_grads, _forward_each)


def _train_shards(state: Any, shards: list[_Shard], with_grads: bool,
                 forward: _ShardForward) -> tuple[dict[str, float], dict[str, nd.NDArray] | None]:
    """D step then G step in the spec's sequence, over the shards of the batch (one per context;
    single-worker training is one). Returns the host scalars and, if asked, the gradients keyed
    by canonical name (rescaled as Adam sees them: per_example's 1/B included).

    D's passes: D(real), G(z), D(fake) (``d_order="real_first"``, the tutorial) or G(z), D(fake),
    D(real) (``"fake_first"``, seed 004); one backward of the summed loss (``d_backward="joint"``)
    or one per pass, the first pass's gradients copied and added to the second's by hand
    (``"separate"``: seed 004's ``gradr += gradf``, the tutorial's two backward calls). z may have
    more rows than real (``noise_batch="batch_size"``): each BCE reduces over its own batch. A
    conditional GAN: D(real) sees the batch's labels, G and D(fake) the fake labels; the G step
    reuses the D step's fake (``g_noise="reuse"``) or runs G on a new z with new labels
    (``"fresh"``, seed 002). Each pass multiplies by its own dropout masks.

    Several shards (data_parallel.py): every pass runs all of them (``forward``), one backward
    over all their losses, and the Trainer's kvstore sums the contexts' gradients. Each shard's
    loss is its local mean or sum; the step's batch size makes the sum the spec's reduction:
    ``"mean"`` step(W) (the mean of W equal local means is the global mean), ``"sum"`` step(1),
    ``"per_example"`` step(B) with B the global batch (rescale_grad = 1/B, as MXNet's
    Trainer.step(batch_size) and Module apply it).

    The losses and D's three output vectors come back as ONE device vector ``[loss_D, loss_G,
    D(x), D(G(z)) before and after D's step]`` (every shard's, in rank order: the canonical rows):
    one host copy (the iteration's only sync) for all, and the probability means are taken on
    the host in float64.
    """
    G, D, trainer_G, trainer_D, loss = state.G, state.D, state.trainer_G, state.trainer_D, state.spec.loss
    train = state.spec.train
    W = len(shards)
    first = state.steps == 0 and state.options.mode == "fast"
    t0 = time.perf_counter()
    grads: dict[str, nd.NDArray] | None = {} if with_grads else None
    separate = train.d_backward == "separate"

    def col(key: str) -> list[nd.NDArray | None]:
        return [s.get(key) for s in shards]

    def masks(pass_name: str, net: str) -> list[dict[int, nd.NDArray]]:
        return [s.masks(pass_name, net) for s in shards]

    def step_batch(outputs: list[nd.NDArray]) -> int:
        rows = sum(o.shape[0] for o in outputs)
        return _step_batch(loss.reduction, rows) * (W if loss.reduction == "mean" else 1)

    # -- D step: maximise log D(x) + log(1 - D(G(z))) --
    # Inside autograd.record() Gluon is in train mode; our BatchNorm uses batch statistics anyway.
    # grad_req='write': backward overwrites last step's gradients (PyTorch's zero_grad). The
    # passes' graphs are recorded in separate record() scopes: MXNet keeps the graph on the
    # arrays, so a later scope (the joint loss, the G step) can still back-propagate through them.
    order = ("fake", "real") if train.d_order == "fake_first" else ("real", "fake")
    outs, losses, fakes, copied = {}, {}, None, None
    for which in order:
        with autograd.record():
            if which == "real":
                out = forward(D, col("real"), col("labels"), masks("real", "D"))
            else:
                labels = col("fake_labels")
                fakes = forward(G, col("z"), labels, masks("fake", "G"))  # reused by a "reuse" G step
                out = forward(D, [f.detach() for f in fakes], labels, masks("fake", "D"))
            label = loss.real_label if which == "real" else loss.fake_label
            outs[which] = [o.reshape(-1) for o in out]
            losses[which] = [bce(o, label, loss) for o in outs[which]]
            scaled = [loss.d_loss_scale * lo for lo in losses[which]]
        if separate:
            # One backward over every shard's loss: synchronised BatchNorm links the shards'
            # graphs, and a backward per shard would overwrite (grad_req='write') the other's.
            autograd.backward(scaled)
            params_D = list(state.trainable["D"].values())
            if copied is None:  # copies, not references: the next backward overwrites the gradients
                copied = [[g.copy() for g in p.list_grad()] for p in params_D]
            else:
                for p, saved in zip(params_D, copied):
                    for g, c in zip(p.list_grad(), saved):
                        g[:] += c
    with autograd.record():
        loss_D = [loss.d_loss_scale * (r + f) for r, f in zip(losses["real"], losses["fake"])]
    if not separate:
        autograd.backward(loss_D)
    d_batch = step_batch(outs["real"])
    if grads is not None:
        grads.update(_grads(state.trainable["D"], d_batch))
    _trainer_step(trainer_D, d_batch, "D")

    # -- G step: maximise log D(G(z)), through the updated D: the same fake, or G on a new z --
    # A reused `fake` still holds G's recorded graph (loss_D's backward stopped at fake.detach()).
    # D's gradients are recomputed here too (as in PyTorch) and overwritten by the next D step.
    fresh = train.g_noise == "fresh"
    labels = col("fake_labels_gen" if fresh else "fake_labels")
    with autograd.record():
        if fresh:  # seed 002: z = torch.randn(...); fake_images = G(z) (G's running stats advance again)
            fakes = forward(G, col("z_gen"), labels, masks("gen", "G"))
        out_gen = [o.reshape(-1) for o in forward(D, fakes, labels, masks("gen", "D"))]
        loss_G = [bce(o, loss.real_label, loss) for o in out_gen]
    autograd.backward(loss_G)
    g_batch = step_batch(fakes)  # B = the G step's rows
    if grads is not None:
        grads.update(_grads(state.trainable["G"], g_batch))
    _trainer_step(trainer_G, g_batch, "G")

    ctx0 = shards[0].get("real").context
    parts = [*loss_D, *loss_G, *outs["real"], *outs["fake"], *out_gen]
    report = nd.concat(*[p.reshape((-1,)).as_in_context(ctx0) for p in parts], dim=0)
    values = report.asnumpy().astype(np.float64)  # the one host sync of the iteration
    if first:  # graph building and memory planning happen in this call: see MxnetState.compile_s
        state.compile_s = time.perf_counter() - t0
    state.steps += 1
    # The global loss: the mean of the W local means ("mean": equal shards), else the sum of the local sums.
    combine = np.mean if loss.reduction == "mean" else np.sum
    n_real, n_fake = sum(o.shape[0] for o in outs["real"]), sum(o.shape[0] for o in outs["fake"])
    outputs = np.split(values[2 * W:], [n_real, n_real + n_fake])  # D(x), D(G(z)) before and after D's step
    D_x, D_G_z1, D_G_z2 = (float(_probability(row, loss).mean()) for row in outputs)
    scalars = {"loss_D": float(combine(values[:W])), "loss_G": float(combine(values[W:2 * W])), "D_x": D_x,
               "D_G_z1": D_G_z1, "D_G_z2": D_G_z2}
    return scalars, grads


def _probability(out: np.ndarray, loss: LossSpec) -> np.ndarray:
    """D's outputs as probabilities, on the host: D's own Sigmoid output (``loss.on``), or the
    sigmoid of a logit as exp(-log(1 + exp(-x))): no overflow for any logit."""
    return out if loss.on == "probabilities" else np.exp(-np.logaddexp(0.0, -out))
