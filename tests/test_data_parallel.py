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


@pytest.mark.parametrize("processes, workers, backend, message", [
    (1, 2, "torch", r"^processes: torch runs 2 workers in one process per worker \(torchrun\); allowed: 2; got 1$"),
    (3, 4, "jax", r"^processes: jax runs 4 workers in one process, or one process per worker; allowed: 1, 4; got 3$"),
    (0, 2, "tensorflow", r"^processes: must be a positive integer, got 0$"),
    (2, 1, "tensorflow", r"^processes: tensorflow runs 1 workers in one process; allowed: 1; got 2$"),
])
def test_process_counts_an_engine_cannot_run_are_refused_in_one_line(processes, workers, backend, message):
    with pytest.raises(GanSuiteError, match=message):
        dp.check_processes(processes, workers, backend)


def test_the_default_process_count_is_each_engines_own():
    assert dp.check_processes(None, 2, "torch") == 2
    assert [dp.check_processes(None, 2, b) for b in ("jax", "tensorflow", "mxnet")] == [1, 1, 1]
    assert dp.check_processes(2, 2, "tensorflow") == 2 and dp.check_processes(2, 2, "jax") == 2


def test_a_local_cluster_is_loopback_addresses_on_distinct_free_ports():
    import json

    configs = [json.loads(e["TF_CONFIG"]) for e in dp.local_cluster("tensorflow", 3)]
    hosts = configs[0]["cluster"]["worker"]
    assert len(set(hosts)) == 3 and all(h.startswith("127.0.0.1:") for h in hosts)
    assert [c["cluster"]["worker"] for c in configs] == [hosts] * 3
    assert [c["task"] for c in configs] == [{"type": "worker", "index": r} for r in range(3)]
    mx_envs = dp.local_cluster("mxnet", 2)
    assert [e["DMLC_ROLE"] for e in mx_envs] == ["worker", "worker"] and mx_envs[0] == mx_envs[1]
    assert mx_envs[0]["DMLC_PS_ROOT_URI"] == mx_envs[0]["DMLC_NODE_HOST"] == "127.0.0.1"
    assert (mx_envs[0]["DMLC_NUM_WORKER"], mx_envs[0]["DMLC_NUM_SERVER"]) == ("2", "1")
    services = dp.cluster_services("mxnet", mx_envs)
    assert [(name, env["DMLC_ROLE"], env["DMLC_PS_ROOT_PORT"]) for name, _, env in services] == [
        ("scheduler", "scheduler", mx_envs[0]["DMLC_PS_ROOT_PORT"]), ("server", "server", mx_envs[0]["DMLC_PS_ROOT_PORT"])]
    assert dp.cluster_services("jax", []) == [] and dp.cluster_services("tensorflow", []) == []
    jax_envs = dp.local_cluster("jax", 2)
    assert [e[dp.RANK_ENV] for e in jax_envs] == ["0", "1"]
    assert jax_envs[0][dp.COORDINATOR_ENV] == jax_envs[1][dp.COORDINATOR_ENV]
    assert jax_envs[0][dp.COORDINATOR_ENV].startswith("127.0.0.1:")
    # one process per worker: each its own device (jax) and its share of the cores
    env = dp.worker_env("jax", 2, {}, processes=2)
    assert env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=1" and "OMP_NUM_THREADS" in env


def test_the_launcher_ends_the_other_workers_when_one_dies(tmp_path):
    """Rank 1 SIGKILLs itself, rank 0 would wait for ever (a collective on a dead peer): the run fails
    at once, naming worker 1, and rank 0 is ended (its marker file never appears)."""
    import os
    import time

    marker = tmp_path / "rank0-finished"
    script = ("import os, signal, time\n"
              "if os.environ['R'] == '1': os.kill(os.getpid(), signal.SIGKILL)\n"
              f"time.sleep(60); open({str(marker)!r}, 'w').close()\n")
    start = time.monotonic()
    code, _, _, why = dp._run_processes([sys.executable, "-c", script], [{**os.environ, "R": str(r)} for r in (0, 1)])
    assert code == -signal.SIGKILL and why == "worker 1: killed by SIGKILL"
    assert time.monotonic() - start < 30 and not marker.exists()


def test_the_launcher_returns_rank_0s_output_and_a_workers_own_error_line():
    import os

    script = "import os, sys\nprint('out', os.environ['R'])\nif os.environ['R'] == '1': sys.exit('error: seed: bad')\n"
    envs = [{**os.environ, "R": str(r)} for r in (0, 1)]
    code, out, err, why = dp._run_processes([sys.executable, "-c", script], envs)
    assert (code, why) == (1, "worker 1: seed: bad") and "[worker 1] error: seed: bad" in err
    code, out, _, why = dp._run_processes([sys.executable, "-c", "print('out')"], envs)
    assert (code, out, why) == (0, "out\n", None)


def test_cli_refuses_a_process_count_before_starting_any(tmp_path, capsys):
    code = main(["train", "--backend", "torch", "--model", "dcgan-tiny", "--out", str(tmp_path), "--workers", "2",
                 "--processes", "1"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: processes: torch runs 2 workers in one process per worker (torchrun); allowed: 2; got 1"]
    assert not any(tmp_path.iterdir())


def test_a_dtype_a_multi_process_engine_cannot_run_is_one_line():
    with pytest.raises(GanSuiteError, match=r"^dtype: MXNet 1\.9\.1's dist_sync kvstore server sums float64 pushes in "
                                            r"float32, so a multi-process mxnet run cannot be float64; allowed: "
                                            r"float32 \(or --processes 1\)$"):
        dp.check_processes(2, 2, "mxnet", "float64")
    assert dp.check_processes(2, 2, "mxnet", "float32") == 2 and dp.check_processes(1, 2, "mxnet", "float64") == 1


def test_the_launcher_names_a_worker_by_the_rank_its_engine_announced():
    """ps-lite numbers MXNet's workers at its rendezvous: launch index 0 may be rank 1."""
    import os

    script = ("import os, signal\nfrom gansuite.common.data_parallel import announce_rank\n"
              "announce_rank(1 - int(os.environ['R']))\n"
              "if os.environ['R'] == '0': os.kill(os.getpid(), signal.SIGKILL)\n")
    _, _, _, why = dp._run_processes([sys.executable, "-c", script], [{**os.environ, "R": str(r)} for r in (0, 1)])
    assert why == "worker 1: killed by SIGKILL"
    # and the run's output is rank 0's (the writer's), whatever its launch index
    script = ("import os\nfrom gansuite.common.data_parallel import announce_rank\n"
              "announce_rank(1 - int(os.environ['R']))\nprint('rank', 1 - int(os.environ['R']))\n")
    code, out, _, _ = dp._run_processes([sys.executable, "-c", script], [{**os.environ, "R": str(r)} for r in (0, 1)])
    assert (code, out) == (0, "rank 0\n")


def test_a_worker_stopped_before_it_announced_its_rank_is_not_named_by_its_launch_index(tmp_path):
    """Launch index 0 announces rank 1 and dies; index 1 is stopped before it announces. Naming index 1
    'worker 1' would give two workers one name, and there is no rank 0 whose output to return."""
    import os

    joined = tmp_path / "joined"  # index 0 dies only once index 1 has written its line: no race
    script = ("import os, signal, sys, time\nfrom gansuite.common.data_parallel import announce_rank\n"
              f"joined = {str(joined)!r}\n"
              "if os.environ['R'] == '0':\n"
              "    while not os.path.exists(joined): time.sleep(0.01)\n"
              "    announce_rank(1)\n    os.kill(os.getpid(), signal.SIGKILL)\n"
              "print('still joining', file=sys.stderr, flush=True)\nopen(joined, 'w').close()\ntime.sleep(60)\n")
    code, out, err, why = dp._run_processes([sys.executable, "-c", script],
                                            [{**os.environ, "R": str(r)} for r in (0, 1)])
    assert (code, out, why) == (-9, "", "worker 1: killed by SIGKILL")
    assert "[worker at launch index 1 (rank not announced)] still joining\n" in err
