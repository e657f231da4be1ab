"""Data-parallel training on MXNet Gluon's own multi-device engine: one process, ``W`` contexts
(``mx.cpu(0) .. mx.cpu(W-1)``), the parameters replicated on every context, each context running
forward and backward on its shard of the batch, and the gradient reduction AND the Adam update
done by the Trainer's kvstore (``kvstore="local"``, ``update_on_kvstore=True``).

Docs and sources checked (mxnet 1.9.1): ``gluon.Trainer`` (python/mxnet/gluon/trainer.py: with
several contexts and update_on_kvstore, ``step`` pushes every context's gradient, the kvstore SUMS
them, runs the optimizer once on its own copy of the weights and pulls that copy to every context;
``step(batch_size)`` sets ``rescale_grad = 1/batch_size``), ``kvstore.create('local')`` (CommCPU:
the sum on the CPU; its weight copy lives on ``cpu_pinned(0)``), ``Parameter.reset_ctx`` /
``Block.initialize(ctx=[...])`` (one copy per context), ``gluon.utils.split_and_load(even_split=
True)`` (contiguous equal slices: the rows of common.data_parallel.shard, which is used here so that
the labels and masks split the same way) and ``gluon.contrib.nn.SyncBatchNorm``
(src/operator/contrib/sync_batch_norm-inl.h).

Why not ``contrib.nn.SyncBatchNorm`` (``_contrib_SyncBatchNorm``; it runs on CPU contexts: each
context's op waits at a barrier in its own engine thread). Its eps (inside the square root),
momentum (Gluon's convention, the weight on the OLD value: 0.9 for the spec's 0.1) and
``fix_gamma = not scale`` map onto the spec; what does not (measured, 2 CPU contexts, 2+2 rows of
3 channels):

* float64 does not run: its kernel is written for ``real_t`` (float32) only:
  ``MXNetError: Check failed: mshadow: :DataType<DType>::kFlag == type_flag_:
  TBlob.get_with_shape: data type do not match specified type.Expected: double v.s. given float``.
* float32 normalises correctly (1.2e-7 off the global-batch formula, its variance taken in one
  pass as E[x^2] - E[x]^2), but it updates ``running_var`` in the BACKWARD pass with the BIASED
  variance (Gluon's own BatchNorm's convention, which backends/mxnet/models.py replaces for this
  reason): after one step from 1, momentum 0.9, running_var 0.99415 where the spec's unbiased EMA
  gives 1.00043.

So BatchNorm is synchronised with the nearest correct thing the framework offers: MXNet's
autograd through cross-context copies (``NDArray.as_in_context`` is recorded; its gradient is
copied back). Each context sums its shard per channel, the sums are added on context 0 and copied
back to every context, once for the mean and once for the centred squares (the two passes of the
single-worker block, models.TorchBatchNorm), and the spec's running statistics (unbiased over the
GLOBAL count, updated after every forward) are committed on every context. Autograd differentiates
through the copies, so the backward is the global-batch BatchNorm's. The nets therefore run in
lockstep, layer by layer over the shards (:func:`lockstep_forward`, which train._train_shards runs
for every pass). The parameter gradients are
never summed over the contexts by hand: the kvstore reduces them.

Reductions (the kvstore sums the W contexts' gradients; ``step(n)`` scales by 1/n): ``"mean"``: each
context's loss is its local mean, ``step(W)`` averages them (= the global mean); ``"sum"``: the local
sums summed are the global sum, ``step(1)``; ``"per_example"``: the local per-example sums summed,
``step(B)`` with B the GLOBAL batch, as the single-worker ``step(B)``.

Parity mode only (host-fed shards; fast mode's hybridized graphs and device RNG are per context);
``sync_bn=False`` (the trap) normalises each shard with its own statistics and exports context 0's
running statistics.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any, Callable

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon, nd

from gansuite.common.data_parallel import announce_rank, shard, shard_draws
from gansuite.common.draws import Draws, check_draws
from gansuite.common.errors import GanSuiteError
from gansuite.common.params import OptState, Params
from gansuite.common.protocol import SCALARS, BackendState, BuildOptions, StepOutput, device_unavailable
from gansuite.common.spec import GANSpec

from .backend import MxnetBackend, MxnetState
from .models import EmbedConcatBlock, GANNet, MaskedDropout, TorchBatchNorm, _normalise
from .train import SpecAdam, _Shard, _ShardForward, _train_shards

#: The kvstore: "local" (CommCPU). Gluon's Trainer default "device" merges the gradients on
#: context 0 while its weight copy is on cpu_pinned(0), and SpecAdam's one CachedOp then refuses
#: the mix (measured: "CachedOp requires all inputs to live on the same context. But w0 is on
#: cpu_pinned(0) while g0 is on cpu(0)", an error the kvstore's ctypes callback only prints).
KVSTORE = "local"


@dataclass
class MxnetDataParallelState(MxnetState):
    contexts: list[mx.Context] = field(default_factory=list)  # rank r works on contexts[r]; device = contexts[0]


class KVStoreAdam(SpecAdam):
    """SpecAdam run by the kvstore: the weights it updates are the kvstore's copy (on
    ``cpu_pinned(0)``), so moments restored from a checkpoint (made on context 0 by write_adam)
    move to that context at their first update (SpecAdam's one CachedOp needs one context).

    The kvstore calls the optimizer through a ctypes callback, which prints an exception and goes
    on with the weights NOT updated; :attr:`error` keeps it for train._trainer_step to raise."""

    error: Exception | None = None

    def create_state(self, index: int, weight: nd.NDArray) -> tuple[nd.NDArray, nd.NDArray]:
        if index in self.moments:
            self.moments[index] = tuple(a.as_in_context(weight.context) for a in self.moments[index])
        return super().create_state(index, weight)

    def update(self, index: Any, weight: Any, grad: Any, state: Any) -> None:
        try:
            super().update(index, weight, grad, state)
        except Exception as err:
            self.error = err
            raise


def _all_sum(parts: list[nd.NDArray]) -> list[nd.NDArray]:
    """The sum over the contexts of one array per context, on every context. Recorded by autograd
    (``as_in_context`` is a differentiable copy): its backward sums the head gradients the same way."""
    total = parts[0]
    for part in parts[1:]:
        total = total + part.as_in_context(total.context)
    return [total.as_in_context(part.context) for part in parts]


def _synced_batch_norm(bn: TorchBatchNorm, xs: list[nd.NDArray], all_sum: Callable = _all_sum,
                       processes: int = 1) -> list[nd.NDArray]:
    """models.TorchBatchNorm's training forward with the statistics of the GLOBAL batch (all shards):
    mean, then the biased variance of the centred data, each a per-context sum added over the
    contexts (``all_sum``; across ``processes`` processes of equal shards: :class:`_KVStoreAllSum`);
    the running statistics (unbiased over the global count n) committed on every context."""
    n = sum(x.size // x.shape[1] for x in xs) * processes  # elements per channel in the global batch
    means = [s / n for s in all_sum([nd.sum(x, axis=bn.axes) for x in xs])]
    centred = [nd.broadcast_sub(x, nd.reshape(mean, bn.bshape)) for x, mean in zip(xs, means)]
    variances = [s / n for s in all_sum([nd.sum(nd.square(xc), axis=bn.axes) for xc in centred])]
    ys, m = [], bn.torch_momentum
    for xc, mean, var in zip(centred, means, variances):
        ctx = xc.context
        gamma = None if bn.fix_gamma else bn.gamma.data(ctx)
        ys.append(_normalise(nd, xc, var, gamma, bn.beta.data(ctx), bn.eps, bn.bshape))
        with autograd.pause():  # the spec's EMA, no gradient (PyTorch updates under no_grad)
            stat_var = var * n / max(n - 1, 1) if bn.unbiased else var
            running_mean, running_var = bn.running_mean.data(ctx), bn.running_var.data(ctx)
            running_mean[:] = (1 - m) * running_mean + m * mean
            running_var[:] = (1 - m) * running_var + m * stat_var
    return ys


def _local_batch_norm(bn: TorchBatchNorm, xs: list[nd.NDArray]) -> list[nd.NDArray]:
    """The trap (sync_bn=False): each context normalises its shard with the shard's statistics
    and keeps its own running statistics (context 0's are exported)."""
    ys = []
    for x in xs:
        y, new_mean, new_var = bn(x)
        with autograd.pause():
            bn.running_mean.data(x.context)[:] = new_mean
            bn.running_var.data(x.context)[:] = new_var
        ys.append(y)
    return ys


def lockstep_forward(sync_bn: bool, synced: Callable | None = None) -> _ShardForward:
    """train._train_shards's forward for W contexts: every shard, layer by layer (GANNet.hybrid_forward's
    layer loop), since synchronised BatchNorm needs every shard's statistics before any shard goes on.
    ``synced``: the synchronised BatchNorm (default: across this process's contexts)."""
    synced = synced or _synced_batch_norm

    def forward(net: GANNet, xs: list[nd.NDArray], labels: list[nd.NDArray | None],
                masks: list[dict[int, nd.NDArray]]) -> list[nd.NDArray]:
        for i, block in enumerate(net._children.values()):
            if isinstance(block, TorchBatchNorm):
                xs = (synced if sync_bn else _local_batch_norm)(block, xs)
            elif isinstance(block, EmbedConcatBlock):
                xs = [block(x, lab) for x, lab in zip(xs, labels)]
            elif isinstance(block, MaskedDropout) and masks[0]:
                xs = [block(x, mask[i]) for x, mask in zip(xs, masks)]
            else:
                xs = [block(x) for x in xs]
        return xs

    return forward


class DataParallelBackend(MxnetBackend):
    """MxnetBackend over ``workers`` contexts of one process (see the module docstring)."""

    def __init__(self, workers: int, sync_bn: bool = True) -> None:
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise GanSuiteError(f"workers: must be a positive integer, got {workers!r}")
        self.workers = workers
        self.sync_bn = bool(sync_bn)
        self.rank = 0  # one process drives every context
        self.writes_outputs = True

    def build(self, spec: GANSpec, params: Params, opt_state: OptState | None,
              options: BuildOptions) -> MxnetDataParallelState:
        if options.mode != "parity":
            raise GanSuiteError("mode: data-parallel training runs in parity mode; allowed: parity")
        return super().build(spec, params, opt_state, options)

    def train_step(self, state: MxnetDataParallelState, real: np.ndarray, z: np.ndarray | None,
                   with_grads: bool = False, draws: Draws | None = None) -> StepOutput:
        """One iteration on the FULL canonical batch: context r takes rows r*B/W..(r+1)*B/W of real,
        z and every draw (common.data_parallel.shard)."""
        if z is None:
            raise GanSuiteError("z: data-parallel training runs in parity mode, on the host's noise; got none")
        self.configure(state.device, state.options)
        draws = check_draws(state.spec, draws, int(np.shape(real)[0]), int(np.shape(z)[0]))
        shards = [_Shard(state, self._shard(state, r, real, z, draws)) for r in range(self.workers)]
        # train.py's iteration itself, its passes over the W shards in lockstep
        scalars, grads = _train_shards(state, shards, with_grads, lockstep_forward(self.sync_bn))
        out = StepOutput(**{k: float(scalars[k]) for k in SCALARS})
        if grads is not None:
            out.grads = {k: self._from_framework(state, k, v) for k, v in grads.items()}
        return out

    def _shard(self, state: MxnetDataParallelState, rank: int, real: np.ndarray, z: np.ndarray,
               draws: Draws) -> dict[str, Any]:
        """Rank ``rank``'s rows of the batch, z and every draw, on its context (the layout's conversions)."""
        ctx, lay, W = state.contexts[rank], self.layout, self.workers
        out = {"real": lay.activations_to_framework(shard(np.asarray(real), rank, W, "real"), state.dtype, ctx),
               "z": lay.activations_to_framework(shard(np.asarray(z), rank, W, "z"), state.dtype, ctx)}
        for key, value in shard_draws(draws, rank, W).items():
            out[key] = (lay.labels_to_framework(np.asarray(value, np.int64), ctx) if "labels" in key
                        else lay.activations_to_framework(value, state.dtype, ctx))
        return out

    # -- framework primitives that differ from the single-worker backend --

    def worker_contexts(self, kind: str) -> list[mx.Context]:
        """The W contexts: CPU contexts 0..W-1 (all on the host's cores), or W GPUs."""
        if kind == "cuda":
            if mx.context.num_gpus() < self.workers:
                raise device_unavailable("MXNet", f"{self.workers} x cuda", ["cpu"])
            return [mx.gpu(r) for r in range(self.workers)]
        return [mx.cpu(r) for r in range(self.workers)]

    def create_state(self, spec: GANSpec, options: BuildOptions, dtype: type,
                     device: mx.Context) -> MxnetDataParallelState:
        contexts = self.worker_contexts("cuda" if device.device_type == "gpu" else "cpu")
        base = super().create_state(spec, options, dtype, contexts[0])
        for net in (base.G, base.D):
            # A copy of every tensor on every context (the canonical values are written next, by
            # set_data, which writes all copies).
            net.collect_params().reset_ctx(contexts)
        state = MxnetDataParallelState(**{f.name: getattr(base, f.name) for f in fields(MxnetState)},
                                       contexts=contexts)
        # The Trainers again, now that the parameters span the contexts (a Trainer takes its
        # contexts from its parameters when it is made), in make_adam's order. update_on_kvstore
        # is set (Gluon decides it from MXNET_UPDATE_ON_KVSTORE otherwise): Adam runs ONCE, in the
        # kvstore, so there is one canonical Adam state, and every context gets the same weights.
        # One context: Gluon makes no kvstore (and then fails on update_on_kvstore=True), the
        # single-worker Trainer (train.make_adam).
        multi = len(contexts) > 1
        state.trainer_G, state.trainer_D = (
            gluon.Trainer(list(state.trainable[net].values()), KVStoreAdam(cfg), kvstore=KVSTORE if multi else None,
                          update_on_kvstore=multi)
            for net, cfg in (("G", spec.train.optim_G), ("D", spec.train.optim_D)))
        return state

    def settings(self, state: BackendState) -> dict[str, Any]:
        out = super().settings(state)
        reduction = state.spec.loss.reduction
        out.update({
            "workers": self.workers, "sync_bn": self.sync_bn, "contexts": [str(c) for c in state.contexts],
            "kvstore": KVSTORE if len(state.contexts) > 1 else None, "update_on_kvstore": len(state.contexts) > 1,
            "batchnorm": ("global statistics through autograd cross-context copies" if self.sync_bn
                          else "per-context statistics (running stats of context 0 exported)"),
            "trainer_step_batch_size": {"mean": "W", "sum": 1, "per_example": "B (global)"}[reduction],
        })
        return out


#: The kvstore of a multi-process run: ps-lite's synchronous one (every push of a key waits for all
#: workers' pushes; the server sums them).
DIST_KVSTORE = "dist_sync"


def _dist_kvstore(workers: int) -> mx.kvstore.KVStore:
    """The process's ``dist_sync`` kvstore (ps-lite, configured by MXNet's own DMLC_* environment:
    DMLC_ROLE=worker, DMLC_PS_ROOT_URI/PORT the scheduler, DMLC_NUM_SERVER, DMLC_NUM_WORKER), one
    line where that environment is missing or describes another worker count."""
    missing = [k for k in ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT", "DMLC_NUM_SERVER", "DMLC_NUM_WORKER")
               if not os.environ.get(k)]
    if missing or os.environ["DMLC_ROLE"] != "worker" or os.environ["DMLC_NUM_WORKER"] != str(workers):
        got = {k: os.environ.get(k) for k in ("DMLC_ROLE", "DMLC_NUM_WORKER", "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT")}
        raise GanSuiteError(f"DMLC_ROLE: each worker process of MXNet's {DIST_KVSTORE} kvstore needs DMLC_ROLE=worker, "
                            f"DMLC_NUM_WORKER={workers}, DMLC_NUM_SERVER and the scheduler's DMLC_PS_ROOT_URI and "
                            f"DMLC_PS_ROOT_PORT; got {got} (gansuite train --workers {workers} --processes {workers} "
                            f"sets them and starts the scheduler and server)")
    kv = mx.kv.create(DIST_KVSTORE)
    if kv.num_workers != workers:
        raise GanSuiteError(f"workers: the {DIST_KVSTORE} kvstore has {kv.num_workers} workers, not {workers}")
    return kv


class _KVStoreAllSum:
    """The sum over the worker processes of one array per process, through the ``dist_sync``
    kvstore (push then pull: the server's sum of the W pushes), recorded by autograd: its backward
    is the same sum of the head gradients, what the cross-context copies' backward is within a
    process. MXNet has no cross-process synchronised BatchNorm (contrib.nn.SyncBatchNorm meets at a
    barrier inside one process) and no differentiable collective; this is the kvstore, the
    framework's one cross-process reduction, made differentiable with ``autograd.Function``.

    Keys: one pair (forward, backward) per call, numbered in call order, which is the same in every
    process (the iteration runs the same passes in lockstep), so the server pairs the processes'
    pushes by key whatever order the engine runs the backwards in. :meth:`reset` at each iteration
    reuses the keys (an iteration's sequence of calls is the spec's, fixed); each is initialised
    once, at its forward, on the Python thread (kvstore.init waits for every worker)."""

    def __init__(self, kv: mx.kvstore.KVStore) -> None:
        self.kv, self.calls, self.ready = kv, 0, set()

    def reset(self) -> None:
        self.calls = 0

    def pushpull(self, key: str, x: nd.NDArray) -> nd.NDArray:
        out = nd.zeros(x.shape, ctx=x.context, dtype=x.dtype)
        self.kv.pushpull(key, x, out=out)
        return out

    def __call__(self, parts: list[nd.NDArray]) -> list[nd.NDArray]:
        (x,) = parts  # one context per process
        key, self.calls = f"bn/{self.calls}", self.calls + 1
        if key not in self.ready:
            for direction in ("fwd", "bwd"):
                self.kv.init(f"{key}/{direction}", nd.zeros(x.shape, ctx=x.context, dtype=x.dtype))
            self.ready.add(key)
        owner = self

        class AllSum(autograd.Function):
            def forward(self, value: nd.NDArray) -> nd.NDArray:
                return owner.pushpull(f"{key}/fwd", value)

            def backward(self, grad: nd.NDArray) -> nd.NDArray:
                return owner.pushpull(f"{key}/bwd", grad)

        return [AllSum()(x)]


class _ProcessTrainer(gluon.Trainer):
    """train.make_adam's Trainer (SpecAdam run locally by the Trainer's updater) whose ``step`` first
    sums the gradients over the worker processes in the ``dist_sync`` kvstore (keys
    ``grad/<net>/<i>``: G's and D's Trainers share the process's one kvstore, and Gluon's own
    ``kvstore=`` path would key both nets' parameters 0, 1, ...) and scales the step's batch size to
    the global batch: train._train_shards computes it for this process's one shard (``"mean"``: 1,
    ``"per_example"``: the local rows; ``"sum"``: 1), the spec's reduction over W equal shards is
    ``step(W)`` / ``step(B)`` / ``step(1)``. Every process then runs the same Adam on the same summed
    gradients: the weights stay equal (and the Adam state is canonical in every process)."""

    def __init__(self, params: list[gluon.Parameter], optimizer: SpecAdam, kv: mx.kvstore.KVStore, net: str,
                 scale: int) -> None:
        super().__init__(params, optimizer, kvstore=None, update_on_kvstore=False)
        self.dist, self.scale = kv, scale
        self.keys = [f"grad/{net}/{i}" for i in range(len(params))]
        for key, p in zip(self.keys, params):  # in the same order in every process (kvstore.init waits for all)
            kv.init(key, nd.zeros(p.shape, ctx=p.list_ctx()[0], dtype=p.dtype))

    def step(self, batch_size: int, ignore_stale_grad: bool = False) -> None:
        for key, p in zip(self.keys, self._params):
            grad = p.grad()
            self.dist.pushpull(key, grad, out=grad)
        super().step(batch_size * self.scale, ignore_stale_grad)


class MultiProcessBackend(MxnetBackend):
    """MxnetBackend on ``workers`` processes, one context each, joined by the ``dist_sync`` kvstore
    (common/data_parallel.py, "Several processes"): each process runs train.py's iteration on its
    shard (one _Shard), BatchNorm synchronised across the processes by :class:`_KVStoreAllSum`, the
    gradients summed by the kvstore before each process's identical Adam step (:class:`_ProcessTrainer`),
    the scalars summed the same way. ps-lite numbers the workers itself at its rendezvous
    (``kv.rank``, not the launch order); worker 0 writes the outputs."""

    def __init__(self, workers: int, sync_bn: bool = True) -> None:
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise GanSuiteError(f"workers: must be a positive integer, got {workers!r}")
        self.workers, self.sync_bn = workers, bool(sync_bn)
        self.kv = _dist_kvstore(workers)
        self.rank = self.kv.rank
        announce_rank(self.rank)  # ps-lite's numbering, not the launch order: the launcher names workers by it
        self.writes_outputs = self.rank == 0
        self.all_sum = _KVStoreAllSum(self.kv)

    def build(self, spec: GANSpec, params: Params, opt_state: OptState | None,
              options: BuildOptions) -> MxnetState:
        if options.mode != "parity":
            raise GanSuiteError("mode: data-parallel training runs in parity mode; allowed: parity")
        if options.dtype != "float32":
            # Measured (2 workers on 127.0.0.1, pushpull of float64 [1/3, pi, 1 + 1e-9] and twice that):
            # the result is the float32 sum of the float32-rounded pushes (relative errors 0, 2.5e-9,
            # -1.0e-9), every time with the server on NaiveEngine and in some runs on the threaded one; a
            # float64 dcgan-tiny run then ended 4.7e-7 from one worker. A float64 run would be float32
            # maths under a float64 label.
            raise GanSuiteError(f"dtype: MXNet 1.9.1's {DIST_KVSTORE} kvstore server sums float64 pushes in float32, "
                                f"so a multi-process MXNet run is float32; allowed: float32; got {options.dtype}")
        return super().build(spec, params, opt_state, options)

    def create_state(self, spec: GANSpec, options: BuildOptions, dtype: type, device: mx.Context) -> MxnetState:
        state = super().create_state(spec, options, dtype, device)
        scale = {"mean": self.workers, "per_example": self.workers, "sum": 1}[spec.loss.reduction]
        state.trainer_G, state.trainer_D = (
            _ProcessTrainer(list(state.trainable[net].values()), SpecAdam(cfg),  # train.make_adam's optimizer
                            self.kv, net, scale)
            for net, cfg in (("G", spec.train.optim_G), ("D", spec.train.optim_D)))
        return state

    def train_step(self, state: MxnetState, real: np.ndarray, z: np.ndarray | None,
                   with_grads: bool = False, draws: Draws | None = None) -> StepOutput:
        if z is None:
            raise GanSuiteError("z: data-parallel training runs in parity mode, on the host's noise; got none")
        if with_grads:
            raise GanSuiteError("with_grads: the multi-process MXNet engine returns no gradients (each process "
                                "holds its shard's until the kvstore sums them in the step); allowed: False")
        self.configure(state.device, state.options)
        draws = check_draws(state.spec, draws, int(np.shape(real)[0]), int(np.shape(z)[0]))
        ctx, lay, W, r = state.device, self.layout, self.workers, self.rank
        mine = {"real": lay.activations_to_framework(shard(np.asarray(real), r, W, "real"), state.dtype, ctx),
                "z": lay.activations_to_framework(shard(np.asarray(z), r, W, "z"), state.dtype, ctx)}
        for key, value in shard_draws(draws, r, W).items():
            mine[key] = (lay.labels_to_framework(np.asarray(value, np.int64), ctx) if "labels" in key
                         else lay.activations_to_framework(value, state.dtype, ctx))
        self.all_sum.reset()
        synced = lambda bn, xs: _synced_batch_norm(bn, xs, self.all_sum, W)  # noqa: E731
        local, _ = _train_shards(state, [_Shard(state, mine)], False, lockstep_forward(self.sync_bn, synced))
        # The global batch's scalars: the processes' sums (the kvstore), means over the W equal shards.
        summed = self.all_sum.pushpull("scalars", nd.array([local[k] for k in SCALARS], ctx=ctx, dtype=np.float64)) \
            if "scalars" in self.all_sum.ready else self._first_scalars(local, ctx)
        totals = summed.asnumpy()
        keep_sum = {"loss_D", "loss_G"} if state.spec.loss.reduction != "mean" else set()
        return StepOutput(**{k: float(v if k in keep_sum else v / W) for k, v in zip(SCALARS, totals)})

    def _first_scalars(self, local: dict[str, float], ctx: mx.Context) -> nd.NDArray:
        self.kv.init("scalars", nd.zeros(len(SCALARS), ctx=ctx, dtype=np.float64))
        self.all_sum.ready.add("scalars")
        return self.all_sum.pushpull("scalars", nd.array([local[k] for k in SCALARS], ctx=ctx, dtype=np.float64))

    def settings(self, state: BackendState) -> dict[str, Any]:
        return {**super().settings(state), "workers": self.workers, "sync_bn": self.sync_bn,
                "kvstore": self.kv.type, "rank": self.rank, "num_workers": self.kv.num_workers,
                "batchnorm": ("global statistics through the dist_sync kvstore (autograd.Function)" if self.sync_bn
                              else "per-process statistics (rank 0's running stats exported)")}
