"""Data-parallel runs against one worker (issue 17): the measurements the backend tests assert
(tests/dp_contract.py) and the comparison report's data-parallel section, written once.

A data-parallel run goes through the user's command, ``gansuite train --workers W``, in a fresh
process (each engine sets its devices before its framework starts); one worker on the full batch
is the ordinary backend through the same training loop. Compared: every canonical tensor
(parameters and BatchNorm running stats), both nets' Adam moments and every per-iteration scalar
of the final checkpoint, as max abs error / max |single-worker value| (common/parity.rel_err).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from .checkpoint import Checkpoint, load_checkpoint
from .data_parallel import COORDINATOR_ENV, FAULT_ENV, RANK_ENV, WORKER_ENV
from .parity import rel_err
from .presets import preset
from .registry import get_backend
from .training import CHECKPOINT, RunConfig, train

#: Iterations compared: past Adam's first steps, where the moments' bias correction amplifies most.
ITERATIONS = 6
#: The models: the DCGAN (BatchNorm: the layer a split changes) and the Gaussian GAN (no BatchNorm).
MODELS = ("dcgan-tiny", "gaussian")
WORKERS = 2


def cli_train(backend: str, model: str, out: Path, *, workers: int = WORKERS, iterations: int = ITERATIONS,
              dtype: str = "float64", sync_bn: bool = True, resume: bool = False, checkpoint_every: int = 2,
              env: dict[str, str] | None = None, python: str = sys.executable,
              timeout: float = 600, processes: int | None = None) -> subprocess.CompletedProcess:
    """``gansuite train`` as a user runs it, in a fresh process (an engine sets its devices at import),
    by ``python`` (another env's interpreter: benchmarks/scaling.py); ``processes``: ``--processes``
    (None: the engine's default). Past ``timeout`` the command AND every process it started (torchrun's
    or the launcher's workers: its process group) are killed, and TimeoutExpired is raised."""
    cmd = [python, "-m", "gansuite.common.cli", "train", "--backend", backend, "--model", model,
           "--out", str(out), "--iterations", str(iterations), "--dtype", dtype, "--workers", str(workers),
           "--checkpoint-every", str(checkpoint_every), "--no-quality", "--no-progress",
           "--sample-every", str(iterations),  # one progress frame: the comparison reads the checkpoint
           "--sync-bn" if sync_bn else "--no-sync-bn"] + (["--resume"] if resume else [])
    cmd += [] if processes is None else ["--processes", str(processes)]
    full_env = {k: v for k, v in os.environ.items() if k not in (WORKER_ENV, FAULT_ENV, RANK_ENV, COORDINATOR_ENV,
                                                                 "TF_CONFIG")}
    full_env.update(env or {})
    # A session of its own: its process group is the command and its workers (subprocess.run's
    # timeout would kill the command alone and leave the workers running).
    with subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def single_worker(backend: str, model: str, out: Path, dtype: str, iterations: int = ITERATIONS) -> Checkpoint:
    """One worker on the full batch: the ordinary backend through the same loop, in this process."""
    train(RunConfig(spec=preset(model), backend=get_backend(backend), out_dir=out, dtype=dtype,
                    iterations=iterations, checkpoint_every=iterations, quality=False, progress=False,
                    sample_every=iterations))
    return load_checkpoint(out / CHECKPOINT)


def differences(got: Checkpoint, ref: Checkpoint) -> dict[str, float]:
    """Worst relative error per kind of quantity (and the tensor it is in)."""
    worst: dict[str, tuple[float, str]] = {}

    def note(kind: str, name: str, a: np.ndarray, b: np.ndarray) -> None:
        err = rel_err(a, b)[1]
        if err >= worst.get(kind, (-1.0, ""))[0]:
            worst[kind] = (err, name)

    for name, value in ref.params.items():
        note("running_stats" if "running" in name else "params", name, got.params[name], value)
    for net in ("G", "D"):
        if got.opt[net].step != ref.opt[net].step:
            raise ValueError(f"{net}: Adam step {got.opt[net].step} vs {ref.opt[net].step}: not the same run length")
        for name in ref.opt[net].m:
            note("adam", f"m/{name}", got.opt[net].m[name], ref.opt[net].m[name])
            note("adam", f"v/{name}", got.opt[net].v[name], ref.opt[net].v[name])
    for key in ("loss_D", "loss_G", "D_x", "D_G_z1", "D_G_z2"):
        note("scalars", key, got.history[key], ref.history[key])
    return {f"{kind} ({name})": err for kind, (err, name) in worst.items()}


#: The comparison's data-parallel runs: (model, dtype, sync_bn). The equality in float64 (exact
#: maths) for both models and float32 for the DCGAN, then the trap: per-worker BatchNorm.
COMPARE_RUNS = (("dcgan-tiny", "float64", True), ("gaussian", "float64", True), ("dcgan-tiny", "float32", True),
                ("dcgan-tiny", "float64", False))


def compare_rows(backend: str, root: Path) -> list[dict[str, object]]:
    """The report's data-parallel rows of one backend: W workers vs one on the full batch."""
    from .data_parallel import ENGINES
    from .tolerances import DATA_PARALLEL, DATA_PARALLEL_TRAP_FACTOR

    single: dict[tuple[str, str], Checkpoint] = {}
    rows = []
    for model, dtype, sync_bn in COMPARE_RUNS:
        key = (model, dtype)
        if key not in single:
            single[key] = single_worker(backend, model, root / f"single-{model}-{dtype}", dtype)
        out = root / f"dp-{model}-{dtype}-{'sync' if sync_bn else 'local'}"
        proc = cli_train(backend, model, out, dtype=dtype, sync_bn=sync_bn)
        row: dict[str, object] = {"backend": backend, "engine": ENGINES[backend], "model": model, "dtype": dtype,
                                  "workers": WORKERS, "iterations": ITERATIONS, "sync_bn": sync_bn,
                                  "tolerance": DATA_PARALLEL[dtype]}
        if proc.returncode != 0:
            row.update(error=(proc.stderr.strip().splitlines() or ["no output"])[-1], passed=False)
        else:
            got = load_checkpoint(out / CHECKPOINT)
            errors = differences(got, single[key])
            worst = max(errors.values())
            # Synchronised: the same maths, within the tolerance. Per-worker BatchNorm (the trap):
            # other maths, at least DATA_PARALLEL_TRAP_FACTOR tolerances away.
            passed = worst <= DATA_PARALLEL[dtype] if sync_bn else worst > DATA_PARALLEL_TRAP_FACTOR * DATA_PARALLEL[dtype]
            row.update(errors=errors, max_rel_err=worst)
            if sync_bn and not passed and dtype != "float64":
                # The float32 one-worker run may take another branch at an activation kink than the
                # data-parallel one (tests/dp_contract.py): both are then held to the maths, the float64 run.
                if (model, "float64") not in single:
                    single[(model, "float64")] = single_worker(backend, model, root / f"single-{model}-float64", "float64")
                exact = differences(got, single[(model, "float64")])
                row.update(errors_vs_float64=exact, max_rel_err_vs_float64=max(exact.values()))
                passed = max(exact.values()) <= DATA_PARALLEL[dtype]
            row["passed"] = bool(passed)
        rows.append(row)
    return rows
