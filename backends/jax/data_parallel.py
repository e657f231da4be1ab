"""Data-parallel training on JAX's own engine, ``jax.sharding`` (common/data_parallel.py: the semantics).

One process drives ``W`` devices (on a CPU: ``XLA_FLAGS=--xla_force_host_platform_device_count=W``,
which common.data_parallel.worker_env sets for the worker process; the flag is read once, when XLA
starts). The devices form a 1-D :class:`jax.sharding.Mesh` with the axis ``"batch"``:

* synchronised BatchNorm (``sync_bn=True``): the canonical batch (real, z and every draw) is placed
  with ``NamedSharding(mesh, P("batch"))`` -- device ``r`` holds rows ``r*B/W .. (r+1)*B/W``, exactly
  common.data_parallel.shard's -- and the train state (parameters, BatchNorm running statistics,
  both Adam states, the key) with ``NamedSharding(mesh, P())``, a full copy on every device. The
  iteration is train.py's own ``_step``, jitted with those shardings. jit keeps the program's
  global-view meaning whatever the placement: XLA's SPMD partitioner splits the work along the
  batch and inserts the collectives itself (each ``mean``/``sum`` over the batch becomes per-device
  partial sums plus an all-reduce). So BatchNorm's batch mean and variance, the losses, the
  gradients (and per_example's 1/B) are over the GLOBAL batch: synchronised BatchNorm by
  construction, no ``axis_name`` needed (Flax's BatchNorm ``axis_name`` is for a per-device
  program, pmap or shard_map). Checked: docs.jax.dev "Distributed arrays and automatic
  parallelization" (sharding.html: a global-view program, the compiler partitions it into per-device
  programs with collectives), "Introduction to parallel programming" (sharded-computation: the
  compiler turns ``jnp.sum`` into a psum), jax.jit's in_shardings/out_shardings; and measured
  (tests/test_backend_jax_dp.py): two devices give the one-device numbers within common/tolerances.
* unsynchronised BatchNorm (``sync_bn=False``, the trap): ``jax.shard_map`` over the same mesh,
  each device running the same iteration (train._iteration) on its own shard with its own batch
  statistics; the optimizers all-reduce the gradients over the mesh axis before Adam with
  ``lax.pmean`` (``"mean"``, and ``"per_example"``, whose 1/B was applied per device to the local
  batch: the mean of local ``sum/B_local`` is ``sum/B``) or ``lax.psum`` (``"sum"``). Each device
  keeps its own running statistics (a leading device axis, ``P("batch")``); rank 0's are exported.
  Checked: docs.jax.dev "Manual parallelism with shard_map" and jax.shard_map's ``check_vma``.

``generate`` / ``discriminate`` / ``export_params`` run the single-worker code on rank 0's copy of the
state (device 0's shard of each array: no transfer, no collective). Parity mode only.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass
from typing import Any, Callable

import jax
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gansuite.common.data_parallel import COORDINATOR_ENV, env_rank, shard_slice
from gansuite.common.draws import Draws, check_draws
from gansuite.common.errors import GanSuiteError
from gansuite.common.params import OptState, Params
from gansuite.common.protocol import SCALARS, BuildOptions, StepOutput, check_options
from gansuite.common.spec import GANSpec

from .backend import JaxBackend, JaxState
from .models import StepConfig
from .train import _iteration, _optimizers, _run_iteration, _step

#: The mesh's one axis: the batch is split along it.
AXIS = "batch"


@dataclass
class DataParallelJaxState(JaxState):
    mesh: Mesh | None = None  # the W devices; JaxState.device stays device 0 (rank 0), where build writes


def _state_specs(per_device_stats: bool) -> dict[str, Any]:
    """PartitionSpecs of the train state (a prefix of train.TrainState's pytree): everything
    replicated, except, for the trap, the BatchNorm running statistics, one row per device."""
    stats = P(AXIS) if per_device_stats else P()
    return {"G": {"params": P(), "batch_stats": stats}, "D": {"params": P(), "batch_stats": stats},
            "opt_G": P(), "opt_D": P(), "key": P()}


def _map_stats(train: dict[str, Any], f: Callable[[jax.Array], jax.Array]) -> dict[str, Any]:
    """``train`` with ``f`` applied to every BatchNorm running statistic (both nets)."""
    return {**train, **{net: {**train[net], "batch_stats": jax.tree.map(f, train[net]["batch_stats"])}
                        for net in ("G", "D")}}


def _all_reduced(tx: optax.GradientTransformation, reduce: Callable[[Any], Any]) -> optax.GradientTransformation:
    """``tx`` on gradients all-reduced over the mesh first (inside shard_map). Not ``optax.chain``:
    that would nest the state, and backend.write_adam / read_adam (and checkpoints) read optax.adam's."""
    def update(grads: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        return tx.update(reduce(grads), state, params)

    return optax.GradientTransformation(tx.init, update)


def _local_iteration(train: dict[str, Any], real: jax.Array, z: jax.Array, draws: dict[str, jax.Array],
                     cfg: StepConfig, with_grads: bool) -> tuple[dict[str, Any], dict[str, jax.Array], Any]:
    """The trap's per-device program (inside shard_map): train._iteration on this device's shard,
    its own BatchNorm statistics, gradients and reported scalars all-reduced over ``AXIS``."""
    mean = functools.partial(lax.pmean, axis_name=AXIS)
    # "sum": the global loss is the sum of the local sums; "mean" and "per_example" (1/B_local already
    # applied by train._rescale): the mean over the W equal shards.
    grads_reduce = functools.partial(lax.psum, axis_name=AXIS) if cfg.spec.loss.reduction == "sum" else mean
    loss_reduce = mean if cfg.spec.loss.reduction == "mean" else functools.partial(lax.psum, axis_name=AXIS)
    G, D = cfg.nets()
    tx_G, tx_D = (_all_reduced(tx, grads_reduce) for tx in _optimizers(cfg))
    local = _map_stats(train, lambda s: s[0])  # this device's row of the stacked statistics
    new, scalars, grads = _iteration(G, D, tx_G, tx_D, local, real, z, cfg.spec, draws, {}, with_grads)
    scalars = {k: (loss_reduce if k.startswith("loss") else mean)(v) for k, v in scalars.items()}  # D_x...: means
    grads = None if grads is None else grads_reduce(grads)  # what Adam saw
    return _map_stats(new, lambda s: s[None]), scalars, grads


@functools.lru_cache(maxsize=None)  # one jitted function per (mesh, sync): a stable id for models._compiled
def _jitted_iteration(mesh: Mesh, sync_bn: bool) -> Any:
    """The iteration on ``mesh``: train._step with the batch split and the state replicated
    (``sync_bn``), or the trap's shard_map of :func:`_local_iteration`."""
    if sync_bn:
        replicated = NamedSharding(mesh, P())
        # No in_shardings (jit refuses them with keyword arguments, and cfg / with_grads come as
        # keywords): jit follows the inputs' own placements, which build and train_step set. The
        # out_shardings keep the new state replicated (the partitioner all-reduces what it must) rather
        # than whatever layout propagation would pick; the scalars and gradients come back whole too.
        return jax.jit(_step, static_argnames=("cfg", "with_grads"), out_shardings=replicated)

    def trap_step(train: dict[str, Any], real: jax.Array, z: jax.Array, draws: dict[str, jax.Array],
                  cfg: StepConfig, with_grads: bool) -> tuple[dict[str, Any], dict[str, jax.Array], Any]:
        specs = _state_specs(per_device_stats=True)
        # check_vma=False: the per-device (pmap) semantics, where a replicated input's gradient is the
        # LOCAL one and the pmean/psum above is the one all-reduce. With check_vma=True (its default)
        # JAX's pullback of a replicated (P()) parameter already psums it over the mesh (measured,
        # jax 0.10.2: grad of mean(w * x) over 2 shards gave the sum of both, and a pmean of that
        # invariant value is then a no-op: gradients W times too large).
        local = jax.shard_map(functools.partial(_local_iteration, cfg=cfg, with_grads=with_grads), mesh=mesh,
                              in_specs=(specs, P(AXIS), P(AXIS), P(AXIS)), out_specs=(specs, P(), P()),
                              check_vma=False)
        return local(train, real, z, draws)

    return jax.jit(trap_step, static_argnames=("cfg", "with_grads"))


def _on_device(x: jax.Array, device: jax.Device) -> jax.Array:
    """``x``'s shard on ``device``: a replicated array's whole value, no copy and no collective."""
    return next(s.data for s in x.addressable_shards if s.device == device)


class DataParallelBackend(JaxBackend):
    """The JAX backend over ``workers`` devices of one process (see the module docstring)."""

    def __init__(self, workers: int, sync_bn: bool = True) -> None:
        self.workers = workers
        self.sync_bn = sync_bn
        self.rank = 0  # one process drives every device
        self.writes_outputs = True

    def build(self, spec: GANSpec, params: Params, opt_state: OptState | None,
              options: BuildOptions) -> DataParallelJaxState:
        check_options(options)
        if options.mode != "parity":
            raise GanSuiteError("mode: data-parallel training runs in parity mode; allowed: parity")
        state = super().build(spec, params, opt_state, options)  # on device 0, as one worker builds it
        train = state.train
        if not self.sync_bn:  # one copy of the running statistics per device, a leading device axis
            train = _map_stats(train, lambda s: np.broadcast_to(np.asarray(s), (self.workers, *s.shape)))
        specs = _state_specs(per_device_stats=not self.sync_bn)
        state.train = self._place(train, jax.tree.map(lambda s: NamedSharding(state.mesh, s), specs))
        return state

    def _place(self, tree: Any, shardings: Any) -> Any:
        """``tree`` (this process holds every row) placed with ``shardings`` (a prefix tree): the
        devices are all this process's, so a device_put is the whole of it."""
        return jax.device_put(tree, shardings)

    def generate(self, state: DataParallelJaxState, z: np.ndarray, bn: str = "batch",
                 labels: np.ndarray | None = None) -> np.ndarray:
        return super().generate(self._rank0(state), z, bn, labels)

    def discriminate(self, state: DataParallelJaxState, x: np.ndarray, bn: str = "batch",
                     labels: np.ndarray | None = None) -> np.ndarray:
        return super().discriminate(self._rank0(state), x, bn, labels)

    def train_step(self, state: DataParallelJaxState, real: np.ndarray, z: np.ndarray | None,
                   with_grads: bool = False, draws: Draws | None = None) -> StepOutput:
        """One iteration on the FULL canonical batch: converted as the single-worker backend converts
        it, then split along the mesh; the iteration runs on all W devices at once."""
        if z is None:  # fast mode's device noise; build refuses fast mode, so this is a direct caller
            raise GanSuiteError("z: data-parallel training takes the host's noise (parity mode); got None")
        self.configure(state.device, state.options)
        rows, z_rows = int(np.shape(real)[0]), int(np.shape(z)[0])
        shard_slice(rows, 0, self.workers, "batch")  # one line for a batch that does not split evenly
        shard_slice(z_rows, 0, self.workers, "z")
        draws = check_draws(state.spec, draws, rows, z_rows)
        inputs = (self.layout.activations_to_framework(real, state.dtype, state.device),
                  self.layout.activations_to_framework(z, state.dtype, state.device),
                  self._draws_to_framework(state, draws))
        real_f, z_f, draws_f = self._place(inputs, NamedSharding(state.mesh, P(AXIS)))  # every draw is batch-major
        scalars, grads = _run_iteration(state, _jitted_iteration(state.mesh, self.sync_bn), real_f, z_f,
                                        with_grads, draws_f)
        out = StepOutput(**{k: float(scalars[k]) for k in SCALARS})
        if grads is not None:
            out.grads = {k: self._from_framework(state, k, v) for k, v in grads.items()}
        return out

    def export_params(self, state: DataParallelJaxState) -> tuple[Params, OptState]:
        return super().export_params(self._rank0(state))

    def export_weights(self, state: DataParallelJaxState) -> Params:
        return super().export_weights(self._rank0(state))

    def create_state(self, spec: GANSpec, options: BuildOptions, dtype: Any,
                     device: jax.Device) -> DataParallelJaxState:
        devices = jax.devices(device.platform)
        if len(devices) < self.workers:
            raise GanSuiteError(f"workers: {self.workers} workers need {self.workers} JAX {device.platform} devices, "
                                f"{len(devices)} visible; start the process with XLA_FLAGS="
                                f"--xla_force_host_platform_device_count={self.workers} (gansuite train "
                                f"--workers {self.workers} sets it)")
        base = super().create_state(spec, options, dtype, device)
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(JaxState)}
        return DataParallelJaxState(**fields, mesh=Mesh(np.array(devices[:self.workers]), (AXIS,)))

    def settings(self, state: DataParallelJaxState) -> dict[str, Any]:
        return {**super().settings(state), "workers": self.workers, "sync_bn": self.sync_bn,
                "mesh": {AXIS: self.workers}, "mesh_devices": [f"{d.platform}:{d.id}" for d in state.mesh.devices]}

    # -- helpers ----------------------------------------------------------------------------------

    def _rank0(self, state: DataParallelJaxState) -> DataParallelJaxState:
        """The state as rank 0 holds it, on device 0: what the single-worker code reads."""
        train = jax.tree.map(lambda x: _on_device(x, state.device), state.train)
        if not self.sync_bn:
            train = _map_stats(train, lambda s: s[0])  # rank 0's row
        return dataclasses.replace(state, train=train)


def initialize_distributed(workers: int, rank: int) -> None:
    """``jax.distributed.initialize`` for process ``rank`` of ``workers``, rank 0's coordinator at
    :data:`common.data_parallel.COORDINATOR_ENV` (``host:port``), CPU collectives over gloo. It has to
    run before the process's first JAX computation (it decides the global device list: docs.jax.dev
    "Multi-process environments"); a second call in the same process only checks the numbers."""
    if jax.distributed.is_initialized():
        if (jax.process_count(), jax.process_index()) != (workers, rank):
            raise GanSuiteError(f"workers: JAX's distributed runtime is process {jax.process_index()} of "
                                f"{jax.process_count()} here, not {rank} of {workers}")
        return
    coordinator = os.environ.get(COORDINATOR_ENV, "")
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit():
        raise GanSuiteError(f"{COORDINATOR_ENV}: each worker process needs rank 0's coordinator address, host:port "
                            f"(the same in every process); got {coordinator!r} (gansuite train --workers {workers} "
                            f"--processes {workers} sets it)")
    # gloo: jaxlib 0.10.2's CPU cross-process collectives (jax_cpu_collectives_implementation, whose
    # default it also is; "mpi" needs an MPI launch), set so that the choice does not move with JAX's
    # default. Without a distributed client XLA:CPU has no cross-process collectives at all.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=workers, process_id=rank)
    except RuntimeError as err:  # e.g. a computation already ran: the device list is fixed
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise GanSuiteError(f"workers: jax.distributed.initialize failed ({first})") from None


class MultiProcessBackend(DataParallelBackend):
    """The JAX backend on ``workers`` processes, one CPU device each (common/data_parallel.py,
    "Several processes"): ``jax.distributed.initialize`` joins them, the mesh spans every process's
    devices (``jax.devices()`` is global after it), and everything else is :class:`DataParallelBackend`'s
    jitted program: JAX's multi-controller model runs the SAME global-view program in every process,
    XLA inserting the collectives (gloo between processes). Each process builds its part of each
    global array from the rows it holds (``jax.make_array_from_process_local_data``): its shard of the
    batch (common.data_parallel.shard's rows: the mesh orders devices by process, one per process), and
    the whole replicated state. Its own device is ``jax.local_devices()[0]``; pure forwards and exports
    read that device's copy (equal on every process; in the trap, each process's own statistics: rank
    0's are the ones written). Rank 0 writes the outputs."""

    def __init__(self, workers: int, sync_bn: bool = True) -> None:
        super().__init__(workers, sync_bn)
        self.rank = env_rank(workers)
        self.writes_outputs = self.rank == 0
        initialize_distributed(workers, self.rank)

    def framework_device(self, kind: str) -> jax.Device:
        device = super().framework_device(kind)  # checks the platform; jax.devices() is global here
        return jax.local_devices(backend=device.platform)[0]

    def _place(self, tree: Any, shardings: Any) -> Any:
        """Global arrays from this process's rows: along ``AXIS``, the rows of this process's devices
        (its shard: rank r of W equal blocks); replicated, everything."""
        def place(x: Any, sharding: NamedSharding) -> jax.Array:
            if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
                # The state's typed PRNG key: placed as its raw data, then wrapped again (same impl).
                return jax.random.wrap_key_data(place(jax.random.key_data(x), sharding), impl=jax.random.key_impl(x))
            x = np.asarray(x)  # the whole value (a local device's array comes to the host)
            mine = x if sharding.spec == P() else x[shard_slice(x.shape[0], self.rank, jax.process_count(), "batch")]
            return jax.make_array_from_process_local_data(sharding, mine, x.shape)

        shardings = jax.tree.broadcast(shardings, tree, is_leaf=lambda n: isinstance(n, NamedSharding))
        return jax.tree.map(place, tree, shardings)

    def settings(self, state: DataParallelJaxState) -> dict[str, Any]:
        return {**super().settings(state), "processes": jax.process_count(), "process_index": jax.process_index(),
                "local_devices": [f"{d.platform}:{d.id}" for d in jax.local_devices()],
                "cpu_collectives": jax.config.jax_cpu_collectives_implementation}
