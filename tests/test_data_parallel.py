"""What every data-parallel engine shares (common/data_parallel.py): the split of the canonical
batch, the one-line refusals, each engine's launcher and the one line a failed worker becomes.
The engines themselves are tested in tests/test_backend_<name>_dp.py (tests/dp_contract.py)."""

from __future__ import annotations

import signal
import sys

import numpy as np
import pytest

from gansuite.common import data_parallel as dp
from gansuite.common.cli import main
from gansuite.common.draws import iteration_draws
from gansuite.common.errors import GanSuiteError
from gansuite.common.presets import preset
from gansuite.common.vae import vae_tiny_preset


def test_shards_are_contiguous_equal_blocks_that_rebuild_the_batch():
    x = np.arange(16 * 3).reshape(16, 3)
    parts = [dp.shard(x, r, 4) for r in range(4)]
    assert [p.shape for p in parts] == [(4, 3)] * 4
    np.testing.assert_array_equal(np.concatenate(parts), x)
    np.testing.assert_array_equal(parts[1], x[4:8])


def test_draws_split_with_their_rows():
    spec = preset("cgan-tiny")
    labels = np.arange(spec.train.batch_size) % 10
    draws = iteration_draws(spec, 0, 0, labels, spec.train.batch_size)
    assert any(k.startswith("mask/") for k in draws)
    halves = [dp.shard_draws(draws, r, 2) for r in range(2)]
    for key, value in draws.items():
        np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), value, err_msg=key)


def test_a_batch_that_does_not_split_is_one_line():
    with pytest.raises(GanSuiteError, match=r"^batch: 10 rows do not split evenly over 4 workers"):
        dp.shard(np.zeros((10, 2)), 0, 4)


@pytest.mark.parametrize("workers, spec, backend, message", [
    (0, preset("gaussian"), "torch", r"^workers: must be a positive integer, got 0"),
    (3, preset("dcgan-tiny"), "torch", r"^workers: 3 workers cannot split a batch of 16 rows evenly"),
    (2, preset("dcgan-tiny"), "oracle", r"^workers: data-parallel training runs on torch, jax, tensorflow, mxnet"),
    (2, vae_tiny_preset(), "torch", r"^workers: data-parallel training covers the GAN family"),
])
def test_worker_counts_a_run_cannot_use_are_refused_in_one_line(workers, spec, backend, message):
    with pytest.raises(GanSuiteError, match=message):
        dp.check_workers(workers, spec, backend)


def test_a_short_last_batch_is_checked_too():
    spec = preset("gaussian")  # d2l: 1000 examples in batches of 8: no short batch
    dp.check_workers(2, spec, "jax")
    dp.check_workers(8, spec, "jax")
    with pytest.raises(GanSuiteError, match="3 workers cannot split a batch of 4 rows"):
        dp.check_workers(3, _with_batch(spec, 12), "jax")  # 1000 = 83 x 12 + 4


def _with_batch(spec, batch):
    from gansuite.common.overrides import apply_overrides

    return apply_overrides(spec, [f"train.batch_size={batch}"])


def test_each_engine_gets_its_launcher_and_devices():
    torch_cmd = dp.worker_command("torch", 2, ["train", "--workers", "2"])
    assert torch_cmd[:3] == [sys.executable, "-m", "torch.distributed.run"] and "--nproc_per_node=2" in torch_cmd
    assert dp.worker_command("jax", 2, ["train"]) == [sys.executable, "-m", "gansuite.common.cli", "train"]
    env = dp.worker_env("jax", 2, {"XLA_FLAGS": "--xla_cpu_foo --xla_force_host_platform_device_count=1"})
    assert env["XLA_FLAGS"] == "--xla_cpu_foo --xla_force_host_platform_device_count=2"
    assert env[dp.WORKER_ENV] == "2"
    assert "OMP_NUM_THREADS" in dp.worker_env("torch", 2, {}) and "XLA_FLAGS" not in dp.worker_env("torch", 2, {})


def test_a_failed_worker_is_named_from_torchruns_record():
    record = ("torch.distributed.elastic.multiprocessing.errors.ChildFailedError:\n"
              "Failures:\n  <NO_OTHER_FAILURES>\nRoot Cause (first observed failure):\n[0]:\n"
              "  time      : 2026-12-03_12:00:00\n  host      : box\n  rank      : 1 (local_rank: 1)\n"
              "  exitcode  : -9 (pid: 123)\n  error_file: <N/A>\n  traceback : Signal 9 (SIGKILL) received by PID 123\n")
    assert dp._failure(record, 1) == "worker 1: killed by SIGKILL"
    assert dp._failure("noise\nerror: seed: bad\n", 2) == "seed: bad"
    assert dp._failure("", -signal.SIGKILL) == "killed by SIGKILL"


def test_the_fault_hook_is_a_no_op_unless_asked(monkeypatch):
    monkeypatch.delenv(dp.FAULT_ENV, raising=False)
    dp.maybe_die(3)
    monkeypatch.setenv(dp.FAULT_ENV, "3:1")
    dp.maybe_die(3, 0)  # another rank
    dp.maybe_die(2, 1)  # another iteration


def test_cli_refuses_workers_before_starting_any(tmp_path, capsys):
    code = main(["train", "--backend", "torch", "--model", "dcgan-tiny", "--out", str(tmp_path), "--workers", "3"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: workers: 3 workers cannot split a batch of 16 rows")
    assert not any(tmp_path.iterdir())
