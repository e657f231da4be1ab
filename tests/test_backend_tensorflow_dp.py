"""TensorFlow's data-parallel engine, ``tf.distribute.MirroredStrategy`` over two logical CPU devices of one
process (backends/tensorflow/data_parallel.py), through the contract every engine passes
(tests/dp_contract.py), plus two checks that the engine is the one running. Runs in the tensorflow env."""

from __future__ import annotations

import json

import pytest
from dp_contract import DataParallelContract

from gansuite.common.errors import GanSuiteError
from gansuite.common.params import init_params
from gansuite.common.presets import preset
from gansuite.common.protocol import BuildOptions


class TestTensorflowDataParallel(DataParallelContract):
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
