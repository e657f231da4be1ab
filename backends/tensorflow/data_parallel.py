"""Data-parallel training on TensorFlow's own engine, ``tf.distribute.MirroredStrategy`` (common/data_parallel.py:
the semantics).

One process drives ``W`` replicas. ``build`` first splits the host's one physical CPU into ``W`` logical CPU
devices (``tf.config.set_logical_device_configuration``, possible only before TensorFlow initialises its
runtime, hence in ``build``: the worker process common.data_parallel starts is fresh), then a
``MirroredStrategy`` over them. Everything the template creates is created under ``strategy.scope()``, so
both nets' variables (parameters and BatchNorm running statistics) and both Adam states are
``MirroredVariable``s, one copy per device; the backend's own ``create_state`` builds them, unchanged.

The iteration is train.py's own step (``_make_step``), run per replica by ``strategy.run`` inside one
``tf.function``. The template still hands it the FULL canonical batch; the function gives replica ``r``
rows ``r*B/W .. (r+1)*B/W`` of real, z and every draw (``strategy.experimental_distribute_values_from_function``
with common.data_parallel.shard_slice), and each replica's step runs its forwards and tapes on that shard:

* gradients: the step's ``opt.apply`` in a replica context is Keras's distributed path (Keras 3.15,
  keras/src/backend/tensorflow/optimizer.py: ``_all_reduce_sum_gradients``, a ``ReplicaContext.all_reduce``
  SUM, then the update on every copy through ``strategy.extended.update``). SUM, because a Keras ``Loss``
  divides itself by ``num_replicas_in_sync`` under a strategy (keras/src/losses/loss.py,
  ``scale_loss_for_distribution``; TF's "Custom training with tf.distribute.Strategy" tutorial scales by the
  global batch alike). The step's losses are the spec's (train.bce), not Keras ``Loss`` objects, so that
  1/W is the optimizer's documented gradient unscale, ``loss_scale_factor`` (base_optimizer.apply divides
  the gradients by it before the update; no loss is scaled): the SUM of local-mean gradients / W is their
  mean (``"mean"``, and ``"per_example"``, whose 1/B the step applied to the LOCAL batch: the mean of local
  ``sum / (B/W)`` is ``sum / B``); ``"sum"`` keeps the plain SUM of local sums. For W a power of two,
  g / W is exact.
* synchronised BatchNorm: models.SpecBatchNorm with Keras's ``synchronized=True`` (set here on every
  BatchNorm layer): inside ``strategy.run`` its batch mean and variance are the global batch's, from the
  replicas' sums all-reduced (see SpecBatchNorm._moments for why not Keras's own synchronised moments).
  The all-reduce's gradient is an all-reduce of the gradients (tensorflow/python/distribute/
  distribute_lib.py, ReplicaContext.all_reduce: "The gradient of an all-sum is itself an all-sum"), so the
  replicas' local gradients sum to the global batch's. Every copy then computes the same running
  statistics. With ``sync_bn=False`` (the trap) each replica normalises with its own shard's statistics
  and updates only its own copy (a ``MirroredVariable`` with aggregation NONE, which Keras gives BatchNorm's
  moving statistics, is updated per replica in a replica context: tensorflow/python/distribute/values.py,
  ``_on_write_update_replica``); reads outside ``strategy.run`` see the primary copy: rank 0's.
* scalars: ``strategy.reduce`` over the replicas, MEAN of local means (equal shards: the global mean), SUM
  of local sums (``"sum"``/``"per_example"`` losses). The gradients ``with_grads`` exports are the ones
  Adam saw, reduced the same way as the optimizer reduces them.

``generate`` / ``discriminate`` / ``export_params`` are the single-worker code, outside ``strategy.run``: a
pure forward is collective-free (SpecBatchNorm takes local statistics outside a replica context) and reads
the primary copies (device 0: rank 0). Its running-statistics restore (models._frozen_running_stats) assigns
outside a replica context, which writes every copy: in the trap that resets the other replicas' own
statistics to rank 0's, which nothing reads (training-mode BatchNorm uses batch statistics; exports and
``bn="running"`` read rank 0's; a checkpoint holds rank 0's only). ``train_step`` is the template's, on the
full batch. One process: rank 0, the writer. Parity and fast mode (fast: the template's device draws of the full batch, from the one
seeded generator, sharded like host draws; no XLA: ``jit_compile`` is refused).

Checked: tensorflow.org tf.distribute.MirroredStrategy (variables created in ``scope()`` are mirrored),
tf.distribute.ReplicaContext.all_reduce, tf.config.set_logical_device_configuration; Keras 3.15 source
(optimizer.py, losses/loss.py, BatchNormalization's ``synchronized``: keras-team/keras#18671, nn.py
``_compute_moments_sync``); measured in tests/test_backend_tensorflow_dp.py.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

import tensorflow as tf

from gansuite.common.data_parallel import shard_slice
from gansuite.common.errors import GanSuiteError
from gansuite.common.params import OptState, Params
from gansuite.common.protocol import BuildOptions, check_options
from gansuite.common.spec import GANSpec

from .backend import TensorflowBackend, TensorflowState
from .models import SpecBatchNorm

_SUM, _MEAN = tf.distribute.ReduceOp.SUM, tf.distribute.ReduceOp.MEAN
#: The process's strategy per worker count (_mirrored_strategy).
_STRATEGIES: dict[int, tf.distribute.MirroredStrategy] = {}


def _logical_cpus(workers: int) -> list[str]:
    """``workers`` logical CPU devices on the host's physical CPU: their names, for MirroredStrategy.

    TensorFlow fixes its devices when its runtime starts (the first op, or listing logical devices) and
    refuses the configuration afterwards (RuntimeError: "Virtual devices cannot be modified after being
    initialized"); a runtime already started with exactly ``workers`` CPUs (a second build) is fine."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        # LogicalDeviceConfiguration() with no memory limit: the logical CPUs share the host's memory
        # and TF's intra-op thread pool; each is only a placement target with its own executor.
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * workers)
    except RuntimeError:
        pass  # already initialised: checked below
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) != workers:
        raise GanSuiteError(f"workers: TensorFlow was already initialised in this process with {len(devices)} "
                            f"logical CPU device(s), so MirroredStrategy cannot get {workers}; build the "
                            f"data-parallel backend before any other TensorFlow work (gansuite train --workers "
                            f"does, in a fresh process)")
    return devices


def _mirrored_strategy(workers: int) -> tf.distribute.MirroredStrategy:
    """The process's one MirroredStrategy over ``workers`` logical CPUs, made on first use. One, not one
    per build: two strategies over the same devices number their collectives alike, and TF's process-wide
    collective executor then pairs one's all-reduce with the other's (measured, a second backend built
    in the same process: "Shape mismatch in the collective instance 100")."""
    if workers not in _STRATEGIES:
        # cross_device_ops: TF's default for CPU devices, CollectiveAllReduce (float64 included).
        _STRATEGIES[workers] = tf.distribute.MirroredStrategy(devices=_logical_cpus(workers))
    return _STRATEGIES[workers]


def _scalar_ops(spec: GANSpec) -> dict[str, tf.distribute.ReduceOp]:
    """How each scalar of StepOutput combines over equal shards: the losses as the spec reduces them
    (a mean of means, or a sum of sums: "per_example" reports the batch sum), D(x) and D(G(z)) means."""
    loss = _MEAN if spec.loss.reduction == "mean" else _SUM
    return {"loss_D": loss, "loss_G": loss, "D_x": _MEAN, "D_G_z1": _MEAN, "D_G_z2": _MEAN}


def _grad_op(spec: GANSpec) -> tf.distribute.ReduceOp:
    """The reduction of the replicas' local gradients that the spec's loss reduction means (module
    docstring): their sum for "sum", their mean otherwise (per_example's 1/B is local in the step)."""
    return _SUM if spec.loss.reduction == "sum" else _MEAN


def _distributed(strategy: tf.distribute.MirroredStrategy, step: Callable, spec: GANSpec,
                 graph: bool) -> Callable:
    """train.py's per-replica ``step`` as a function of the FULL batch: each replica takes its rows, runs
    ``step`` under ``strategy.run``, and the scalars (and exported gradients) come back reduced."""
    workers, scalar_ops, grad_op = strategy.num_replicas_in_sync, _scalar_ops(spec), _grad_op(spec)

    def distributed_step(real: tf.Tensor, z: tf.Tensor, with_grads: bool,
                         draws: dict[str, tf.Tensor]) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor] | None]:
        def local(ctx: tf.distribute.InputReplicaContext) -> tuple:
            # Run under the replica's device scope: each slice lands on that replica's device.
            r = ctx.replica_id_in_sync_group
            return tf.nest.map_structure(lambda x: x[shard_slice(int(x.shape[0]), r, workers)], (real, z, draws))

        real_r, z_r, draws_r = strategy.experimental_distribute_values_from_function(local)
        scalars, grads = strategy.run(step, args=(real_r, z_r, with_grads, draws_r))
        scalars = {k: strategy.reduce(scalar_ops[k], v, axis=None) for k, v in scalars.items()}
        if grads is not None:
            grads = {k: strategy.reduce(grad_op, v, axis=None) for k, v in grads.items()}
        return scalars, grads

    # autograph=False as train._make_step: no tensor-dependent Python control flow. No XLA (build refuses it).
    return tf.function(distributed_step, autograph=False) if graph else distributed_step


class DataParallelBackend(TensorflowBackend):
    """The TensorFlow backend on ``workers`` MirroredStrategy replicas of one process (module docstring)."""

    def __init__(self, workers: int, sync_bn: bool = True) -> None:
        super().__init__()
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise GanSuiteError(f"workers: must be a positive integer, got {workers!r}")
        self.workers = workers
        self.sync_bn = bool(sync_bn)
        self.rank = 0  # one process drives every replica: it is rank 0, and it writes the outputs
        self.writes_outputs = True
        self.strategy: tf.distribute.MirroredStrategy | None = None

    def build(self, spec: GANSpec, params: Params, opt_state: OptState | None,
              options: BuildOptions) -> TensorflowState:
        kind = check_options(options)
        if kind != "cpu":
            raise GanSuiteError(f"device: data-parallel training on TensorFlow runs on {self.workers} logical CPU "
                                f"devices; allowed: cpu")
        if options.extra.get("jit_compile", False):
            raise GanSuiteError("extra.jit_compile: data-parallel training on TensorFlow runs MirroredStrategy's "
                                "step without XLA; allowed: False")
        # Explicit: fast mode's default (XLA for dense-only models on a CPU, train._fast_uses_xla) does not
        # apply here, since strategy.run traces the step's Python function without XLA.
        options = replace(options, extra={**options.extra, "jit_compile": False})
        # Before the template's first tensor: the logical devices must exist when the runtime starts.
        self.strategy = self._make_strategy()
        return super().build(spec, params, opt_state, options)

    def _make_strategy(self) -> tf.distribute.Strategy:
        """This engine's strategy: MirroredStrategy over the process's W logical CPUs."""
        return _mirrored_strategy(self.workers)

    def create_state(self, spec: GANSpec, options: BuildOptions, dtype: tf.dtypes.DType,
                     device: str) -> TensorflowState:
        strategy = self.strategy
        with strategy.scope():  # nets, BN statistics, Adam moments and step counters: MirroredVariables
            state = super().create_state(spec, options, dtype, device)
        for net in (state.G, state.D):
            for layer in net.layers:
                if isinstance(layer, SpecBatchNorm):
                    # Keras's default is False (per-replica statistics): the spec's BatchNorm sees the
                    # global batch (sync_bn=True); False is the trap.
                    layer.synchronized = self.sync_bn
        if _grad_op(spec) == _MEAN:
            for opt in (state.opt_G, state.opt_D):
                # SpecAdam's default is None (no unscale): Keras's optimizer SUMs the replicas' gradients,
                # and the spec's mean is that sum / W (module docstring).
                opt.loss_scale_factor = float(strategy.num_replicas_in_sync)
        # The template's step as one replica's (its Python function: strategy.run traces it per replica),
        # wrapped in the distributed function of the full batch.
        step = state.step_fn.python_function if state.graph else state.step_fn
        state.step_fn = _distributed(strategy, step, spec, state.graph)
        return state

    def settings(self, state: TensorflowState) -> dict[str, Any]:
        strategy = self.strategy
        return {**super().settings(state),
                "engine": type(strategy).__name__,
                "replicas": strategy.num_replicas_in_sync,
                "replica_devices": list(strategy.extended.worker_devices),
                "sync_bn": self.sync_bn}


def cluster_rank(workers: int) -> int:
    """This process's rank in the ``TF_CONFIG`` cluster (MultiWorkerMirroredStrategy's own
    description: ``cluster.worker`` every worker's ``host:port``, ``task`` this one), one line
    for a description that is not a cluster of ``workers`` workers with this one among them."""
    import json
    import os

    raw = os.environ.get("TF_CONFIG")
    example = ('{"cluster": {"worker": ["host0:port", "host1:port"]}, "task": {"type": "worker", "index": 0}}; '
               f"gansuite train --workers {workers} --processes {workers} sets it on one host")
    try:
        config = json.loads(raw) if raw else None
        hosts, task = config["cluster"]["worker"], config["task"]
        index = task["index"]
    except (ValueError, TypeError, KeyError):
        raise GanSuiteError(f"TF_CONFIG: each worker process needs the cluster and its task, e.g. {example}; got "
                            f"{raw!r}") from None
    if set(config["cluster"]) != {"worker"} or len(hosts) != workers:
        raise GanSuiteError(f"TF_CONFIG: cluster must be {workers} workers and nothing else (no chief, ps or "
                            f"evaluator), got {json.dumps(config['cluster'])}")
    if task.get("type") != "worker" or not isinstance(index, int) or not 0 <= index < workers:
        raise GanSuiteError(f"TF_CONFIG: task must be a worker with an index in 0..{workers - 1}, got "
                            f"{json.dumps(task)}")
    return index


#: The process's one MultiWorkerMirroredStrategy (made once: it starts the process's gRPC server).
_MULTI_WORKER: list[tf.distribute.MultiWorkerMirroredStrategy] = []


def _multi_worker_strategy(workers: int) -> tf.distribute.MultiWorkerMirroredStrategy:
    """MultiWorkerMirroredStrategy over the TF_CONFIG cluster: one replica per worker process (its
    CPU), made on first use. It must come before any other TensorFlow work in the process: it starts
    the process's gRPC server and configures the collective ops (tensorflow.org,
    tf.distribute.MultiWorkerMirroredStrategy: "needs to be created at the program's startup")."""
    if not _MULTI_WORKER:
        options = tf.distribute.experimental.CommunicationOptions(
            # RING: gRPC collectives, what AUTO picks on a CPU anyway (NCCL is GPU-only), stated so
            # that a GPU cluster does not silently switch the reduction's implementation. No
            # timeout_seconds (TF's default: none): rank 0 measures and writes between iterations
            # while the others wait in their next collective; a dead peer is the launcher's to end
            # (common.data_parallel) and MultiWorkerMirroredStrategy's own health check's.
            implementation=tf.distribute.experimental.CommunicationImplementation.RING)
        _MULTI_WORKER.append(tf.distribute.MultiWorkerMirroredStrategy(communication_options=options))
    strategy = _MULTI_WORKER[0]
    if strategy.num_replicas_in_sync != workers:
        raise GanSuiteError(f"workers: MultiWorkerMirroredStrategy has {strategy.num_replicas_in_sync} replicas in "
                            f"sync, not {workers} (one CPU per worker process)")
    return strategy


class MultiProcessBackend(DataParallelBackend):
    """The TensorFlow backend on ``workers`` processes, one replica each, under
    ``tf.distribute.MultiWorkerMirroredStrategy`` (common/data_parallel.py, "Several processes").

    Everything else is :class:`DataParallelBackend`'s: the same step under ``strategy.run``, the
    replica's rows chosen by ``replica_id_in_sync_group`` (global over the cluster: worker r's one
    replica is r), Keras's optimizer summing the replicas' gradients through the replica context
    (here a cross-process all-reduce), the synchronised BatchNorm's sums all-reduced the same way and
    ``strategy.reduce`` for the scalars, whose result every worker gets. Every worker computes the same
    updates from the same sums, so the processes' variables stay equal; rank 0 (TF_CONFIG's worker 0)
    writes the outputs. Parity mode: fast mode's device draws come from each process's own generator."""

    def __init__(self, workers: int, sync_bn: bool = True) -> None:
        super().__init__(workers, sync_bn)
        self.rank = cluster_rank(workers)
        self.writes_outputs = self.rank == 0

    def build(self, spec: GANSpec, params: Params, opt_state: OptState | None,
              options: BuildOptions) -> TensorflowState:
        if options.mode != "parity":
            raise GanSuiteError("mode: multi-process data-parallel training on TensorFlow runs in parity mode; "
                                "allowed: parity")
        return super().build(spec, params, opt_state, options)

    def _make_strategy(self) -> tf.distribute.Strategy:
        return _multi_worker_strategy(self.workers)

    def settings(self, state: TensorflowState) -> dict[str, Any]:
        resolver = self.strategy.cluster_resolver
        return {**super().settings(state), "task": {"type": resolver.task_type, "index": resolver.task_id},
                "cluster": resolver.cluster_spec().as_dict()}
