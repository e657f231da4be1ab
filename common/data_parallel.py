"""Data-parallel training: the part every engine shares (issue 17).

Semantics (the same on every engine): a global batch of ``B`` rows is split over ``W`` workers,
worker ``r`` taking rows ``r*B/W .. (r+1)*B/W`` of the canonical batch (and the same rows of z and
of every draw). With synchronised BatchNorm, batch statistics are computed over the whole global
batch, so one data-parallel iteration equals one single-worker iteration on the full batch, up to
the order of floating-point sums. The spec's loss reduction is kept: with ``reduction="mean"`` the
engine's gradient all-reduce averages the workers' local-mean gradients (= the global mean); with
``"sum"`` the workers' local sums are summed (each engine states how it gets a sum out of its
averaging reduction). Parameters, data order and noise come from ``common/`` exactly as in a
single-worker run: every worker draws the same canonical batch and takes its shard.

Each engine lives in ``backends/<fw>/data_parallel.py`` as ``DataParallelBackend``, a subclass of
that framework's backend; the protocol (build / train_step on the FULL canonical batch /
export_params / generate) stays the same, so the training loop, checkpoints, resume and reports
serve data-parallel runs unchanged:

===========  ===================================================================================
torch        ``DistributedDataParallel`` (gloo on CPU, NCCL on GPU) + ``SyncBatchNorm``, one
             process per worker, started by ``torchrun``; rank 0 writes the outputs
jax          ``jax.sharding``: a 1-D ``Mesh`` over the host's devices, the batch ``NamedSharding``-
             split along it and parameters replicated (``XLA_FLAGS=
             --xla_force_host_platform_device_count=W`` on a CPU); one process
tensorflow   ``tf.distribute.MirroredStrategy`` over ``W`` logical devices
             (``tf.config.set_logical_device_configuration``), Keras's synchronised BatchNorm
mxnet        Gluon over ``W`` contexts (``mx.cpu(0)``, ``mx.cpu(1)``) with a kvstore and
             ``contrib.nn.SyncBatchNorm``
===========  ===================================================================================

Several processes (``--processes W``: one process per worker, on one host or several;
:data:`MULTI_PROCESS_ENGINES`). torch always runs that way. For the others ``--processes 1`` (the
default) is the one-process engine above and ``--processes W`` the framework's multi-process engine:

===========  ===================================================================================
tensorflow   ``tf.distribute.MultiWorkerMirroredStrategy``, the cluster in ``TF_CONFIG`` (its
             ``task.index`` is the rank), collectives over gRPC
jax          ``jax.distributed.initialize(coordinator, W, rank)`` in every process
             (:data:`COORDINATOR_ENV`, :data:`RANK_ENV`), one global ``Mesh`` over every
             process's devices, each process feeding its own shard; gloo CPU collectives
mxnet        the ``dist_sync`` kvstore (ps-lite: a scheduler, a server, the workers; its
             ``DMLC_*`` environment; ps-lite numbers the workers), gradients and BatchNorm's
             sums reduced there; float32 only (:data:`MULTI_PROCESS_DTYPE_BLOCKERS`)
===========  ===================================================================================

Each worker process is the same ``gansuite train ... --workers W --processes W`` command marked by
:data:`WORKER_ENV`, plus the engine's own cluster description (torchrun's ``RANK``/``MASTER_*``,
``TF_CONFIG``, the two ``GANSUITE_DP_*`` variables of JAX, ps-lite's ``DMLC_*``). On one host,
``gansuite train --workers W [--processes W]`` validates its input in the calling process and starts
them itself (:func:`launch`: torchrun for torch; for the others :func:`local_cluster` on 127.0.0.1
and free ports, plus :func:`cluster_services`, MXNet's scheduler and server); on several hosts the
user starts each with that environment (README, "Several devices").
A worker that dies fails the run with one line naming the last good checkpoint; the launcher then
ends the other workers (a survivor would wait in its next collective).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence

import numpy as np

from .draws import Draws
from .errors import GanSuiteError
from .spec import BatchNorm, GANSpec

#: Set (to the worker count) in every process a data-parallel run starts: the process is a worker.
WORKER_ENV = "GANSUITE_DP_WORKERS"
#: Test hook: ``"<iteration>"`` or ``"<iteration>:<rank>"`` makes that worker process SIGKILL itself at
#: the start of that iteration (a worker that dies; tests/dp_contract.py).
FAULT_ENV = "GANSUITE_FAULT_KILL_AT"
#: The engine of each backend, as the report and the CLI's help name it.
ENGINES = {
    "torch": "DistributedDataParallel under torchrun (gloo on CPU, NCCL on GPU); BatchNorm synchronised by "
             "torch's autograd all_reduce on CPU, nn.SyncBatchNorm on CUDA",
    "jax": "jax.sharding: Mesh + NamedSharding over the host's devices, one jit",
    "tensorflow": "tf.distribute.MirroredStrategy over logical devices; BatchNorm moments all-reduced by the "
                  "replica context",
    "mxnet": "Gluon over several contexts with a local kvstore; BatchNorm synchronised through autograd across "
             "the contexts",
}
#: The engine of each backend when the workers are processes (``--processes W``; several hosts).
MULTI_PROCESS_ENGINES = {
    "torch": ENGINES["torch"],
    "tensorflow": "tf.distribute.MultiWorkerMirroredStrategy, one process per worker (TF_CONFIG), collectives over "
                  "gRPC; BatchNorm moments all-reduced by the replica context",
    "jax": "jax.distributed.initialize in every process, one global Mesh over all processes' devices (gloo CPU "
           "collectives), each process feeding its shard",
    "mxnet": "the dist_sync kvstore (ps-lite: scheduler, server, one process per worker) summing the gradients; "
             "BatchNorm synchronised through the same kvstore in an autograd.Function",
}
#: dtypes a multi-process engine cannot run, with the measured reason (the engine's build refuses
#: them too, for workers started by hand). MXNet 1.9.1's dist_sync server sums float64 pushes in
#: float32 (backends/mxnet/data_parallel.py, MultiProcessBackend.build).
MULTI_PROCESS_DTYPE_BLOCKERS = {
    ("mxnet", "float64"): "MXNet 1.9.1's dist_sync kvstore server sums float64 pushes in float32",
}
#: A worker process's rank (0 .. W-1) where the engine takes it from the suite: JAX's process_id.
RANK_ENV = "GANSUITE_DP_RANK"
#: ``host:port`` of rank 0's coordinator where the engine takes it from the suite: JAX's coordinator_address.
COORDINATOR_ENV = "GANSUITE_DP_COORDINATOR"
#: The line a worker whose engine numbers it at its rendezvous (MXNet's ps-lite) writes to stderr,
#: followed by its rank, so that the launcher names a failed worker by that rank (:func:`announce_rank`).
RANK_LINE = "gansuite: data-parallel worker rank "
#: Every worker process of a local cluster binds to the loopback interface only.
LOCALHOST = "127.0.0.1"
#: Seconds the launcher gives the other workers to end after one failed (SIGTERM), before SIGKILL.
STOP_GRACE_S = 10.0


def check_workers(workers: int, spec: Any, backend: str) -> None:
    """One line for a worker count the run cannot use: not positive, a backend with no engine, a model
    outside the GAN family, or a batch that does not split evenly (every batch of the run: the
    spec's batch size, the noise rows and a shorter last batch)."""
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise GanSuiteError(f"workers: must be a positive integer, got {workers!r}")
    if workers == 1:
        return
    if backend not in ENGINES:
        raise GanSuiteError(f"workers: data-parallel training runs on {', '.join(ENGINES)}; got backend {backend!r}")
    if not isinstance(spec, GANSpec):
        raise GanSuiteError(f"workers: data-parallel training covers the GAN family; {spec.name!r} is not a GAN "
                            f"(use --workers 1)")
    batch = spec.train.batch_size
    rows = {batch, spec.train.noise_rows(batch)}
    n = _dataset_rows(spec)
    if n % batch and not (spec.train.drop_last or spec.train.pad_last):
        rows |= {n % batch, spec.train.noise_rows(n % batch)}
    bad = sorted(r for r in rows if r % workers)
    if bad:
        raise GanSuiteError(f"workers: {workers} workers cannot split a batch of {bad[0]} rows evenly; allowed: a "
                            f"divisor of every batch ({', '.join(map(str, sorted(rows)))} rows)")


def default_processes(backend: str, workers: int) -> int:
    """Processes a run of ``workers`` workers takes unless told: torch one per worker, the others one."""
    return workers if backend == "torch" else 1


def check_processes(processes: int | None, workers: int, backend: str, dtype: str | None = None) -> int:
    """The run's process count (``None``: :func:`default_processes`); one line for a count the engine
    cannot run: each engine runs its workers in one process or one process per worker (torch: only
    the latter), and only the engines of :data:`MULTI_PROCESS_ENGINES` have the latter; or for a
    ``dtype`` the multi-process engine cannot run (:data:`MULTI_PROCESS_DTYPE_BLOCKERS`)."""
    if processes is None:
        return default_processes(backend, workers)
    if not isinstance(processes, int) or isinstance(processes, bool) or processes < 1:
        raise GanSuiteError(f"processes: must be a positive integer, got {processes!r}")
    if workers == 1:
        allowed = [1]
    elif backend == "torch":
        allowed = [workers]
    elif backend in MULTI_PROCESS_ENGINES:
        allowed = [1, workers]
    else:
        allowed = [1]
    if processes not in allowed:
        why = {"torch": "one process per worker (torchrun)"}.get(backend, "one process" if allowed == [1] else
                                                                  "one process, or one process per worker")
        if backend not in MULTI_PROCESS_ENGINES and workers > 1:
            why += f" (its multi-process engine is not wired; multi-process engines: {', '.join(MULTI_PROCESS_ENGINES)})"
        raise GanSuiteError(f"processes: {backend} runs {workers} workers in {why}; allowed: "
                            f"{', '.join(map(str, allowed))}; got {processes}")
    blocker = MULTI_PROCESS_DTYPE_BLOCKERS.get((backend, dtype)) if processes > 1 and backend != "torch" else None
    if blocker:
        allowed_dtypes = [d for d in ("float32", "float64") if (backend, d) not in MULTI_PROCESS_DTYPE_BLOCKERS]
        raise GanSuiteError(f"dtype: {blocker}, so a multi-process {backend} run cannot be {dtype}; allowed: "
                            f"{', '.join(allowed_dtypes)} (or --processes 1)")
    return processes


def _dataset_rows(spec: GANSpec) -> int:
    """Examples in the dataset: the spec's count for drawn data, the files' for MNIST or a folder
    (loaded here once, so that a short last batch is refused before the run, not at its epoch's end)."""
    if spec.data.kind in ("idx", "image_folder"):
        from .data import load_dataset

        return load_dataset(spec.data, 0).n
    return spec.data.n_examples


def shard_slice(rows: int, rank: int, workers: int, field: str = "batch") -> slice:
    """Rows of worker ``rank``: the ``rank``-th of ``workers`` equal contiguous blocks."""
    if rows % workers:
        raise GanSuiteError(f"{field}: {rows} rows do not split evenly over {workers} workers; allowed: a batch "
                            f"size divisible by {workers}")
    per = rows // workers
    return slice(rank * per, (rank + 1) * per)


def shard(x: np.ndarray, rank: int, workers: int, field: str = "batch") -> np.ndarray:
    """Worker ``rank``'s rows of a canonical batch (axis 0)."""
    return x[shard_slice(len(x), rank, workers, field)]


def shard_draws(draws: Draws | None, rank: int, workers: int) -> Draws:
    """Worker ``rank``'s rows of every draw: each draw is batch-major (common/draws.py), the real
    batch's (``labels``, ``mask/real/*``) and the noise rows' (everything else) split alike."""
    return {k: shard(np.asarray(v), rank, workers, f"draws.{k}") for k, v in (draws or {}).items()}


def has_batchnorm(spec: GANSpec) -> bool:
    """Whether the model has BatchNorm: the only layer whose maths depends on how a batch is split."""
    return any(isinstance(layer, BatchNorm) for net in (spec.generator, spec.discriminator) for layer in net.layers)


def in_worker() -> bool:
    """Whether this process is a data-parallel worker (started by :func:`worker_command`)."""
    return bool(os.environ.get(WORKER_ENV))


def rank() -> int:
    """This worker's rank: torchrun's RANK, 0 for the single-process engines."""
    return int(os.environ.get("RANK", "0"))


def maybe_die(iteration: int, worker_rank: int = 0) -> None:
    """The :data:`FAULT_ENV` test hook: SIGKILL this process at the start of ``iteration``."""
    raw = os.environ.get(FAULT_ENV)
    if not raw:
        return
    at, _, who = raw.partition(":")
    if int(at) == iteration and (not who or int(who) == worker_rank):
        os.kill(os.getpid(), signal.SIGKILL)


def worker_env(backend: str, workers: int, base: dict[str, str] | None = None,
               processes: int | None = None) -> dict[str, str]:
    """The environment of the worker process(es): :data:`WORKER_ENV`, each engine's device count
    (per process), and threads split between worker processes (on shared cores)."""
    processes = default_processes(backend, workers) if processes is None else processes
    env = dict(os.environ if base is None else base)
    env[WORKER_ENV] = str(workers)
    if backend == "jax":
        # XLA's CPU client exposes one device unless told otherwise, read once at jax's import:
        # the process's own devices (all W in one process; one each with a process per worker).
        flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
        env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={workers // processes}"])
    if processes > 1 and "OMP_NUM_THREADS" not in env:
        # torchrun would set 1 (with a warning); the cores split between the processes is what it means.
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))
    return env


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port free on ``host`` now: the one the OS gives a socket bound to port 0 (released at
    once, for the worker that binds it next; the window between is the usual launcher race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def local_cluster(backend: str, workers: int, host: str = LOCALHOST) -> list[dict[str, str]]:
    """Rank r's cluster description for ``workers`` processes on this host (loopback, free ports),
    in each engine's own terms: ``TF_CONFIG`` (every worker's address, this one's index) for
    MultiWorkerMirroredStrategy; rank 0's coordinator address and the rank for JAX."""
    if backend == "tensorflow":
        cluster = {"worker": [f"{host}:{free_port(host)}" for _ in range(workers)]}
        return [{"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": r}})}
                for r in range(workers)]
    if backend == "jax":
        coordinator = f"{host}:{free_port(host)}"
        return [{COORDINATOR_ENV: coordinator, RANK_ENV: str(r)} for r in range(workers)]
    if backend == "mxnet":
        # ps-lite: one scheduler (DMLC_PS_ROOT_*), one server, the workers; every node on ``host``
        # itself (DMLC_NODE_HOST: loopback, not the interface ps-lite would pick). ps-lite numbers the
        # workers at its rendezvous (kv.rank): no rank here.
        ps = {"DMLC_PS_ROOT_URI": host, "DMLC_PS_ROOT_PORT": str(free_port(host)), "DMLC_NUM_SERVER": "1",
              "DMLC_NUM_WORKER": str(workers), "DMLC_NODE_HOST": host}
        return [{**ps, "DMLC_ROLE": "worker"} for _ in range(workers)]
    raise GanSuiteError(f"processes: no multi-process engine for {backend!r}; multi-process engines: "
                        f"{', '.join(b for b in MULTI_PROCESS_ENGINES if b != 'torch')} (torch: torchrun)")


def cluster_services(backend: str, workers_envs: list[dict[str, str]]) -> list[tuple[str, list[str], dict[str, str]]]:
    """Processes a local cluster needs besides its workers, as (name, command, environment): MXNet's
    ps-lite scheduler and server (``import mxnet`` with DMLC_ROLE=scheduler or server runs the node
    and exits when the workers finish: mxnet/kvstore/kvstore_server.py); none for the others."""
    if backend != "mxnet":
        return []
    base = {k: v for k, v in workers_envs[0].items() if k != "DMLC_ROLE"}
    return [(role, [sys.executable, "-c", "import mxnet"], {**base, "DMLC_ROLE": role}) for role in ("scheduler", "server")]


def announce_rank(rank: int) -> None:
    """Tell the launcher this process's rank (:data:`RANK_LINE`), for an engine that assigns it."""
    print(f"{RANK_LINE}{rank}", file=sys.stderr, flush=True)


def env_rank(workers: int) -> int:
    """:data:`RANK_ENV` checked: one line unless it is a rank of ``workers`` processes."""
    raw = os.environ.get(RANK_ENV)
    if raw is None or not raw.isdigit() or int(raw) >= workers:
        raise GanSuiteError(f"{RANK_ENV}: each worker process needs its rank, an integer in 0..{workers - 1}; "
                            f"got {raw!r} (gansuite train --workers {workers} --processes {workers} sets it)")
    return int(raw)


def worker_command(backend: str, workers: int, cli_args: Sequence[str]) -> list[str]:
    """The command that runs ``gansuite <cli_args>`` as ``workers`` data-parallel workers (torch:
    torchrun's; the others: the command of one process, which :func:`launch` starts once per process)."""
    cli = ["-m", "gansuite.common.cli", *cli_args]
    if backend == "torch":
        # --standalone: a single-node rendezvous on a free local port (no MASTER_ADDR to set).
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={workers}", *cli]
    return [sys.executable, *cli]


def launch(backend: str, workers: int, cli_args: Sequence[str], checkpoint: Any, processes: int | None = None) -> str:
    """Run the workers; their stdout back (rank 0's summary). A failed worker -> one line naming the
    last good checkpoint (atomic: a dying worker never leaves half of one)."""
    processes = default_processes(backend, workers) if processes is None else processes
    command, env = worker_command(backend, workers, cli_args), worker_env(backend, workers, processes=processes)
    if backend == "torch" or processes == 1:
        proc = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        code, stdout, stderr, why = proc.returncode, proc.stdout, proc.stderr, None
    else:
        envs = [{**env, **extra} for extra in local_cluster(backend, workers)]
        code, stdout, stderr, why = _run_processes(command, envs, cluster_services(backend, envs))
    if code == 0:
        return stdout
    sys.stderr.write(stderr[-4000:])
    why = why or _failure(stderr, code)
    resume = "no checkpoint was written"
    if os.path.exists(checkpoint):
        from .checkpoint import load_checkpoint

        resume = f"last good checkpoint: {checkpoint} (resumes at iteration {load_checkpoint(checkpoint).next_iteration})"
    raise GanSuiteError(f"workers: a data-parallel worker failed ({why}); {resume}")


def _run_processes(command: list[str], envs: list[dict[str, str]],
                   services: Sequence[tuple[str, list[str], dict[str, str]]] = ()) -> tuple[int, str, str, str | None]:
    """``command`` once per environment (worker r: ``envs[r]``, in launch order), watched as torchrun
    watches its workers: the first to fail fails the run and the others are ended (SIGTERM, then
    SIGKILL after :data:`STOP_GRACE_S`), since a survivor would wait for the dead one in its next
    collective. ``services`` (:func:`cluster_services`) start first; one that fails while the
    workers run fails the run too; once the workers are done they get the grace to end, then are
    ended. Returns (exit status, rank 0's stdout, every process's stderr, what failed or None)."""
    names = [f"worker {r}" for r in range(len(envs))] + [name for name, _, _ in services]
    with tempfile.TemporaryDirectory(prefix="gansuite-dp-") as tmp:
        logs = [(open(os.path.join(tmp, f"{i}.out"), "w+"), open(os.path.join(tmp, f"{i}.err"), "w+"))
                for i in range(len(names))]
        procs: list[subprocess.Popen] = []
        failed: tuple[int, int] | None = None
        try:
            runs = [(cmd, env) for _, cmd, env in services] + [(command, env) for env in envs]
            for (cmd, env), (out, err) in zip(runs, logs[len(envs):] + logs[:len(envs)]):
                procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True))
            procs = procs[len(services):] + procs[:len(services)]  # in the order of ``names``
            workers = procs[:len(envs)]
            while failed is None and any(p.poll() is None for p in workers):
                time.sleep(0.1)
                # A worker killed by a signal is a cause; one that failed in the same instant with a
                # status is usually its peer's consequence (a broken collective): the signal first.
                bad = sorted((p.returncode >= 0, i) for i, p in enumerate(procs) if p.poll() not in (None, 0))
                failed = (bad[0][1], procs[bad[0][1]].returncode) if bad else None
            if failed is None:
                bad = [(i, p.returncode) for i, p in enumerate(workers) if p.returncode != 0]
                failed = bad[0] if bad else None
            if failed is None:  # the services end once their workers have: give them the grace first
                deadline = time.monotonic() + STOP_GRACE_S
                while time.monotonic() < deadline and any(p.poll() is None for p in procs):
                    time.sleep(0.1)
        finally:
            _stop(procs)
        texts = []
        for out, err in logs:
            out.seek(0), err.seek(0)
            texts.append((out.read(), err.read()))
            out.close(), err.close()
    ranks = [_announced_rank(err) for _, err in texts[:len(envs)]]  # the engine's own, where it assigned one
    if any(rank is not None for rank in ranks):
        # A worker ended before it announced (killed by the launcher after a peer failed) has no rank
        # yet: its launch index is not one, and naming it by that index could repeat a peer's name.
        for i, rank in enumerate(ranks):
            names[i] = f"worker {rank}" if rank is not None else f"worker at launch index {i} (rank not announced)"
    stderr = "".join(f"[{names[i]}] {line}\n" for i, (_, err) in enumerate(texts) for line in err.splitlines())
    # rank 0's: the writer prints the run's summary; none when rank 0 ended before it announced
    stdout = texts[names.index("worker 0")][0] if "worker 0" in names else ""
    if failed is None:
        return 0, stdout, stderr, None
    index, code = failed
    return code, stdout, stderr, f"{names[index]}: {_failure(texts[index][1], code)}"


def _announced_rank(stderr: str) -> int | None:
    """The last rank a worker announced on ``stderr`` (:func:`announce_rank`), or None."""
    announced = [line[len(RANK_LINE):] for line in stderr.splitlines() if line.startswith(RANK_LINE)]
    return int(announced[-1]) if announced and announced[-1].isdigit() else None


def _stop(procs: Sequence[subprocess.Popen]) -> None:
    """End every process still running: SIGTERM, and SIGKILL for one still there after the grace."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _failure(stderr: str, code: int) -> str:
    """What failed: a worker's own one-line error, else torchrun's record of the first failed rank
    (``rank : 1 (local_rank: 1)`` ... ``exitcode : -9``), else the exit status."""
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    if errors:
        return errors[-1][len("error:"):].strip()
    failed = re.search(r"rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", stderr, re.S)
    if failed:
        return f"worker {failed.group(1)}: {_exit_reason(int(failed.group(2)))}"
    return _exit_reason(code)


def _exit_reason(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


def get_data_parallel_backend(name: str, workers: int, sync_bn: bool = True, processes: int | None = None) -> Any:
    """The engine-backed backend of ``name`` for ``workers`` workers (in a worker process): the
    module's ``DataParallelBackend``, or its ``MultiProcessBackend`` for one process per worker."""
    from .registry import get_backend

    processes = check_processes(processes, workers, name)
    get_backend(name)  # the one-line refusal of a backend not installed here
    module = importlib.import_module(f"gansuite.backends.{name}.data_parallel")
    engine = module.MultiProcessBackend if processes > 1 and name != "torch" else module.DataParallelBackend
    return engine(workers=workers, sync_bn=sync_bn)
