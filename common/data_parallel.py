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

``gansuite train --workers W`` validates its input in the calling process, then runs the same
command line as the engine's worker process(es) (:func:`worker_command`), marked by
:data:`WORKER_ENV`; a worker that dies fails the run with one line naming the last good checkpoint.
"""

from __future__ import annotations

import importlib
import os
import re
import signal
import subprocess
import sys
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


def worker_env(backend: str, workers: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the worker process(es): :data:`WORKER_ENV`, each engine's device count,
    and threads split between worker processes (torch: one process per worker, on shared cores)."""
    env = dict(os.environ if base is None else base)
    env[WORKER_ENV] = str(workers)
    if backend == "jax":
        # XLA's CPU client exposes one device unless told otherwise, read once at jax's import.
        flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
        env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={workers}"])
    if backend == "torch" and "OMP_NUM_THREADS" not in env:
        # torchrun would set 1 (with a warning); the cores split between the W processes is what it means.
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    return env


def worker_command(backend: str, workers: int, cli_args: Sequence[str]) -> list[str]:
    """The command that runs ``gansuite <cli_args>`` as ``workers`` data-parallel workers."""
    cli = ["-m", "gansuite.common.cli", *cli_args]
    if backend == "torch":
        # --standalone: a single-node rendezvous on a free local port (no MASTER_ADDR to set).
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={workers}", *cli]
    return [sys.executable, *cli]


def launch(backend: str, workers: int, cli_args: Sequence[str], checkpoint: Any) -> str:
    """Run the workers; their stdout back (rank 0's summary). A failed worker -> one line naming the
    last good checkpoint (atomic: a dying worker never leaves half of one)."""
    proc = subprocess.run(worker_command(backend, workers, cli_args), env=worker_env(backend, workers),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode == 0:
        return proc.stdout
    sys.stderr.write(proc.stderr[-4000:])
    why = _failure(proc.stderr, proc.returncode)
    resume = "no checkpoint was written"
    if os.path.exists(checkpoint):
        from .checkpoint import load_checkpoint

        resume = f"last good checkpoint: {checkpoint} (resumes at iteration {load_checkpoint(checkpoint).next_iteration})"
    raise GanSuiteError(f"workers: a data-parallel worker failed ({why}); {resume}")


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


def get_data_parallel_backend(name: str, workers: int, sync_bn: bool = True) -> Any:
    """The engine-backed backend of ``name`` for ``workers`` workers (in a worker process)."""
    from .registry import get_backend

    get_backend(name)  # the one-line refusal of a backend not installed here
    module = importlib.import_module(f"gansuite.backends.{name}.data_parallel")
    return module.DataParallelBackend(workers=workers, sync_bn=sync_bn)
