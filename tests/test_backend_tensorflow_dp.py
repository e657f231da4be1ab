"""TensorFlow's data-parallel engines (backends/tensorflow/data_parallel.py): ``tf.distribute.MirroredStrategy``
over two logical CPU devices of one process, through the contract every engine passes (tests/dp_contract.py),
and ``tf.distribute.MultiWorkerMirroredStrategy`` over two processes (TF_CONFIG on 127.0.0.1), through the
multi-process contract; plus checks that the engine is the one running. Runs in the tensorflow env."""

from __future__ import annotations

import json

import pytest
from dp_contract import DataParallelContract, MultiProcessContract

from gansuite.common.errors import GanSuiteError
from gansuite.common.params import init_params
from gansuite.common.presets import preset
from gansuite.common.protocol import BuildOptions


class TestTensorflowDataParallel(DataParallelContract, MultiProcessContract):
    backend_name = "tensorflow"

    def test_the_run_was_mirrored_over_two_logical_cpus(self, runs) -> None:
        """The writer's summary records the strategy that ran the steps: 2 replicas in sync, one per
        logical CPU device (a run the contract makes anyway: no extra run)."""
        runs("gaussian", "float64", 2)
        summary = json.loads((runs.root / "gaussian-float64-2-True" / "summary.json").read_text())
        settings = summary["settings"]
        assert settings["engine"] == "MirroredStrategy" and settings["replicas"] == 2, settings
        devices = settings["replica_devices"]
        assert len(set(devices)) == 2 and all(d.endswith(f"device:CPU:{i}") for i, d in enumerate(devices)), devices
        assert settings["sync_bn"] is True

    def test_the_processes_ran_multi_worker_mirrored_strategy(self, runs) -> None:
        """Rank 0's record of the multi-process contract run: MultiWorkerMirroredStrategy (TF's class
        behind the name, CollectiveAllReduceStrategy), 2 replicas in sync, this process worker 0 of a
        2-worker TF_CONFIG cluster on 127.0.0.1 with its one CPU replica."""
        import tensorflow as tf

        runs("dcgan-tiny", "float64", 2, processes=2)
        summary = json.loads((runs.root / "dcgan-tiny-float64-2-True-p2" / "summary.json").read_text())
        settings = summary["settings"]
        assert settings["engine"] == tf.distribute.MultiWorkerMirroredStrategy.__name__, settings
        assert settings["replicas"] == 2 and settings["task"] == {"type": "worker", "index": 0}, settings
        assert settings["replica_devices"] == ["/job:worker/replica:0/task:0/device:CPU:0"], settings
        workers = settings["cluster"]["worker"]
        assert len(workers) == 2 and all(w.startswith("127.0.0.1:") for w in workers), settings["cluster"]

    def test_fast_mode_replicas_run_without_xla(self) -> None:
        """Fast mode's CPU default compiles dense-only models with XLA (train._fast_uses_xla), but
        ``strategy.run`` traces the step's Python function without it: the data-parallel build says
        so (jit_compile=False) instead of recording a setting that did not run. A fresh process, since
        the logical CPUs must exist before TensorFlow starts."""
        import subprocess
        import sys
        import textwrap

        code = textwrap.dedent("""
            from gansuite.backends.tensorflow.data_parallel import DataParallelBackend
            from gansuite.common.params import init_params
            from gansuite.common.presets import preset
            from gansuite.common.protocol import BuildOptions
            spec, dp = preset("gaussian"), DataParallelBackend(2)
            st = dp.build(spec, init_params(spec, 0), None, BuildOptions(dtype="float32", mode="fast"))
            print("JIT", dp.settings(st)["jit_compile"], dp.settings(st)["replicas"])
        """)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        assert "JIT False 2" in out.stdout, out.stdout

    def test_a_runtime_already_started_with_one_cpu_is_one_line(self) -> None:
        """The logical devices exist only if TensorFlow had not started yet; here (this test process) it
        has, with one CPU device: the build refuses in one line instead of training on one replica."""
        import tensorflow as tf

        from gansuite.backends.tensorflow.data_parallel import DataParallelBackend

        tf.config.list_logical_devices("CPU")  # starts the runtime (with one CPU) if nothing has yet
        spec = preset("gaussian")
        with pytest.raises(GanSuiteError, match=r"^workers: TensorFlow was already initialised in this process "
                                                r"with 1 logical CPU device\(s\), so MirroredStrategy cannot get 2;"):
            DataParallelBackend(workers=2).build(spec, init_params(spec, 0, "float64"), None, BuildOptions())


@pytest.mark.parametrize("config, message", [
    (None, r"^TF_CONFIG: each worker process needs the cluster and its task, e\.g\. "),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}',
     r"^TF_CONFIG: cluster must be 2 workers and nothing else \(no chief, ps or evaluator\), got "),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}',
     r"^TF_CONFIG: task must be a worker with an index in 0\.\.1, got "),
])
def test_a_bad_cluster_description_is_one_line(monkeypatch, config, message) -> None:
    from gansuite.backends.tensorflow.data_parallel import MultiProcessBackend

    if config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", config)
    with pytest.raises(GanSuiteError, match=message) as err:
        MultiProcessBackend(workers=2)
    assert "\n" not in str(err.value)
