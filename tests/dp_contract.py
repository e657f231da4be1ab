"""The data-parallel tests every backend passes (issue 17), written once.

A backend's ``tests/test_backend_<name>_dp.py`` subclasses :class:`DataParallelContract` and sets
``backend_name``. Every data-parallel run goes through the user's command,
``gansuite train --workers 2`` (common/data_parallel.py launches the engine's worker processes),
and is compared with ONE worker on the full batch: the ordinary backend, in this process, through
the same training loop. Compared: every canonical tensor (parameters and BatchNorm running stats),
both nets' Adam moments and every per-iteration scalar in the checkpoint, each as max abs error /
max |single-worker value| (common/parity.rel_err), against ``DATA_PARALLEL`` of
common/tolerances.py.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from gansuite.common.checkpoint import Checkpoint, load_checkpoint
from gansuite.common.data_parallel import FAULT_ENV
from gansuite.common.dp_compare import ITERATIONS, WORKERS, cli_train, differences, single_worker
from gansuite.common.tolerances import DATA_PARALLEL, DATA_PARALLEL_TRAP_FACTOR
from gansuite.common.training import CHECKPOINT


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


class DataParallelContract:
    backend_name: str = ""
    #: dtypes the engine trains in (a subclass removes float64 only with the engine's exact blocker).
    dtypes: tuple[str, ...] = ("float64", "float32")
    #: The worker the fault test kills: the last of a multi-process engine (not the writer); a
    #: single-process engine's one process (rank 0) otherwise.
    fault_rank: int = 0

    @pytest.fixture(scope="class")
    def runs(self, tmp_path_factory) -> dict:
        """Runs shared by the tests: (model, dtype, workers, sync_bn) -> checkpoint, made on demand."""
        root, cache = tmp_path_factory.mktemp(f"dp-{self.backend_name}"), {}

        def get(model: str, dtype: str, workers: int, sync_bn: bool = True, processes: int | None = None) -> Checkpoint:
            key = (model, dtype, workers, sync_bn) + (() if processes is None else (f"p{processes}",))
            if key not in cache:
                out = root / "-".join(map(str, key))
                if workers == 1:
                    cache[key] = single_worker(self.backend_name, model, out, dtype)
                else:
                    ok(cli_train(self.backend_name, model, out, workers=workers, dtype=dtype, sync_bn=sync_bn,
                                 processes=processes))
                    cache[key] = load_checkpoint(out / CHECKPOINT)
            return cache[key]

        get.root = root
        return get

    #: float64, where every engine here runs (the maths: exact up to sum order), for both models. The
    #: float32 runs (the DCGAN) are in the comparison's data-parallel section (common/dp_compare.py),
    #: with the case where the float32 one-worker run takes another branch at an activation kink;
    #: CI's hour has no room for a launch per env more.
    @pytest.mark.parametrize("model, dtype", [("dcgan-tiny", "float64"), ("gaussian", "float64")])
    def test_two_workers_equal_one_worker_on_the_full_batch(self, runs, model: str, dtype: str) -> None:
        if dtype not in self.dtypes:
            pytest.fail(f"{self.backend_name}: no {dtype} data-parallel run: {self.blocker(dtype)}")
        got, ref = runs(model, dtype, WORKERS), runs(model, dtype, 1)
        assert got.meta.get("workers") == str(WORKERS)
        errors = differences(got, ref)
        print(f"{self.backend_name} {model} {dtype}, {WORKERS} workers vs 1, {ITERATIONS} iterations: {errors}")
        bad = {k: v for k, v in errors.items() if not v <= DATA_PARALLEL[dtype]}
        assert not bad, f"beyond {DATA_PARALLEL[dtype]:g}: {bad}"

    def test_unsynchronised_batchnorm_is_a_different_computation(self, runs) -> None:
        """The trap: per-worker BatchNorm statistics are other maths, far outside the tolerance."""
        dtype = self.dtypes[0]
        trap, ref = runs("dcgan-tiny", dtype, WORKERS, False), runs("dcgan-tiny", dtype, 1)
        errors = differences(trap, ref)
        print(f"{self.backend_name} dcgan-tiny {dtype}, per-worker BatchNorm vs 1 worker: {errors}")
        worst = max(v for k, v in errors.items() if k.startswith("params"))
        assert worst > DATA_PARALLEL_TRAP_FACTOR * DATA_PARALLEL[dtype], errors

    def test_a_worker_that_dies_fails_the_run_and_its_checkpoint_resumes_exactly(self, runs) -> None:
        dtype, out = self.dtypes[0], runs.root / "killed"
        die = {FAULT_ENV: f"{ITERATIONS - 1}:{self.fault_rank}"}  # at the start of the last iteration
        proc = cli_train(self.backend_name, "dcgan-tiny", out, dtype=dtype, env=die)
        assert proc.returncode != 0
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("error: workers: a data-parallel worker failed"), proc.stderr[-3000:]
        assert f"resumes at iteration {ITERATIONS - 2}" in last, last  # checkpoints every 2 iterations
        assert load_checkpoint(out / CHECKPOINT).next_iteration == ITERATIONS - 2
        ok(cli_train(self.backend_name, "dcgan-tiny", out, dtype=dtype, resume=True))
        resumed, straight = load_checkpoint(out / CHECKPOINT), runs("dcgan-tiny", dtype, WORKERS)
        for name, value in straight.params.items():
            np.testing.assert_array_equal(resumed.params[name], value, err_msg=name)
        for key in ("loss_D", "loss_G"):
            np.testing.assert_array_equal(resumed.history[key], straight.history[key], err_msg=key)

    def blocker(self, dtype: str) -> str:
        return "not supported by the engine"


class MultiProcessContract:
    """The multi-process engine (``--processes 2``: one process per worker, the engine of several
    hosts; common.data_parallel.MULTI_PROCESS_ENGINES), mixed into a :class:`DataParallelContract`
    subclass (its ``runs`` fixture, so the one-worker run is shared): the launcher starts the 2
    worker processes on 127.0.0.1 and free ports. dcgan-tiny in one dtype (CI time): the equality,
    and a process that dies."""

    #: The dtype of the multi-process runs: float64 (exact maths), unless the engine cannot (a subclass
    #: sets float32 only with the engine's blocker in common.data_parallel.MULTI_PROCESS_DTYPE_BLOCKERS).
    multi_process_dtype: str = "float64"

    def test_two_processes_equal_one_worker_on_the_full_batch(self, runs) -> None:
        dtype = self.multi_process_dtype
        got, ref = runs("dcgan-tiny", dtype, WORKERS, processes=WORKERS), runs("dcgan-tiny", dtype, 1)
        assert got.meta.get("workers") == str(WORKERS)
        errors = differences(got, ref)
        print(f"{self.backend_name} dcgan-tiny {dtype}, {WORKERS} processes vs 1 worker, {ITERATIONS} iterations: "
              f"{errors}")
        bad = {k: v for k, v in errors.items() if not v <= DATA_PARALLEL[dtype]}
        assert not bad, f"beyond {DATA_PARALLEL[dtype]:g}: {bad}"

    def test_a_process_that_dies_fails_the_run_and_its_checkpoint_resumes_exactly(self, runs) -> None:
        """Worker 1 (not the writer) SIGKILLed at the start of the last iteration: the launcher ends
        worker 0 (waiting for it in a collective) and names worker 1 and the last good checkpoint;
        resumed with 2 processes, the run ends bit-identical to the uninterrupted one."""
        out, dtype = runs.root / "killed-processes", self.multi_process_dtype
        proc = cli_train(self.backend_name, "dcgan-tiny", out, dtype=dtype, processes=WORKERS,
                         env={FAULT_ENV: f"{ITERATIONS - 1}:1"})
        assert proc.returncode != 0
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("error: workers: a data-parallel worker failed (worker 1: killed by SIGKILL); "
                               f"last good checkpoint: {out / CHECKPOINT} (resumes at iteration {ITERATIONS - 2})"), \
            proc.stderr[-3000:]
        ok(cli_train(self.backend_name, "dcgan-tiny", out, dtype=dtype, processes=WORKERS, resume=True))
        resumed, straight = load_checkpoint(out / CHECKPOINT), runs("dcgan-tiny", dtype, WORKERS, processes=WORKERS)
        for name, value in straight.params.items():
            np.testing.assert_array_equal(resumed.params[name], value, err_msg=name)
        for key in ("loss_D", "loss_G"):
            np.testing.assert_array_equal(resumed.history[key], straight.history[key], err_msg=key)
