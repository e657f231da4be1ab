"""MXNet Gluon data-parallel training (backends/mxnet/data_parallel.py: W contexts in one process,
the Trainer's "local" kvstore summing gradients and running Adam, BatchNorm on the global batch)
through the contract every engine passes; over two processes (the dist_sync kvstore: ps-lite's
scheduler, server and workers on 127.0.0.1) through the multi-process contract, in float32 (its
server sums float64 in float32: common.data_parallel.MULTI_PROCESS_DTYPE_BLOCKERS); plus checks
that the engine is the one in use."""

from __future__ import annotations

import numpy as np
import pytest
from dp_contract import DataParallelContract, MultiProcessContract

from gansuite.common.data_parallel import shard
from gansuite.common.errors import GanSuiteError
from gansuite.common.params import init_params
from gansuite.common.presets import preset
from gansuite.common.protocol import BuildOptions
from gansuite.common.registry import get_backend
from gansuite.common.streams import Streams


class TestMxnetDataParallel(DataParallelContract, MultiProcessContract):
    backend_name = "mxnet"
    multi_process_dtype = "float32"  # the dist_sync server's float32 sum (MultiProcessBackend.build)

    def test_the_processes_shared_one_dist_sync_kvstore(self, runs) -> None:
        """Rank 0's record of the multi-process contract run: ps-lite's worker 0 of 2 on dist_sync,
        BatchNorm synchronised through it."""
        import json

        runs("dcgan-tiny", "float32", 2, processes=2)
        settings = json.loads((runs.root / "dcgan-tiny-float32-2-True-p2" / "summary.json").read_text())["settings"]
        assert (settings["kvstore"], settings["rank"], settings["num_workers"]) == ("dist_sync", 0, 2), settings
        assert settings["batchnorm"].startswith("global statistics through the dist_sync kvstore"), settings


@pytest.fixture(scope="module")
def stepped():
    """A 2-context dcgan-tiny state after one iteration (float32: the cheap dtype)."""
    get_backend("mxnet")  # sets MXNet's environment before its first operator
    from gansuite.backends.mxnet.data_parallel import DataParallelBackend

    spec, backend = preset("dcgan-tiny"), DataParallelBackend(workers=2)
    state = backend.build(spec, init_params(spec, 0, "float64"), None, BuildOptions(dtype="float32"))
    batch = next(iter(Streams(spec, 0).iterate(0, 1)))
    backend.train_step(state, batch.real, batch.z, draws=batch.draws)
    return backend, state


def test_every_tensor_has_one_replica_per_context_and_they_stay_equal(stepped) -> None:
    import mxnet as mx

    _, state = stepped
    for name, p in state.params.items():  # trained tensors and BatchNorm running statistics
        assert p.list_ctx() == [mx.cpu(0), mx.cpu(1)], name
        a, b = (d.asnumpy() for d in p.list_data())
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_the_trainers_kvstore_reduces_and_updates(stepped) -> None:
    _, state = stepped
    for trainer in (state.trainer_G, state.trainer_D):
        assert trainer._kvstore is not None and trainer._kvstore.type == "local"
        assert trainer._update_on_kvstore is True
        assert trainer._optimizer.num_update == 1  # Adam ran once (in the kvstore), not once per context


def test_shards_are_split_and_loads_rows() -> None:
    get_backend("mxnet")
    import mxnet as mx

    x = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
    parts = mx.gluon.utils.split_and_load(mx.nd.array(x), [mx.cpu(0), mx.cpu(1)], even_split=True)
    for r, part in enumerate(parts):
        np.testing.assert_array_equal(part.asnumpy(), shard(x, r, 2))


def test_fast_mode_is_refused_in_one_line() -> None:
    get_backend("mxnet")
    from gansuite.backends.mxnet.data_parallel import DataParallelBackend

    spec = preset("gaussian")
    with pytest.raises(GanSuiteError, match=r"^mode: data-parallel training runs in parity mode; allowed: parity$"):
        DataParallelBackend(workers=2).build(spec, init_params(spec, 0, "float64"), None, BuildOptions(mode="fast"))


def test_a_worker_without_its_ps_lite_environment_is_one_line(monkeypatch) -> None:
    get_backend("mxnet")
    from gansuite.backends.mxnet.data_parallel import MultiProcessBackend

    for key in ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT", "DMLC_NUM_SERVER", "DMLC_NUM_WORKER"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(GanSuiteError, match=r"^DMLC_ROLE: each worker process of MXNet's dist_sync kvstore needs "
                                            r"DMLC_ROLE=worker, DMLC_NUM_WORKER=2") as err:
        MultiProcessBackend(workers=2)
    assert "\n" not in str(err.value)
