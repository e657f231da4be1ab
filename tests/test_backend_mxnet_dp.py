"""MXNet Gluon data-parallel training (backends/mxnet/data_parallel.py: W contexts in one process,
the Trainer's "local" kvstore summing gradients and running Adam, BatchNorm on the global batch)
through the contract every engine passes, plus checks that the engine is the one in use."""

from __future__ import annotations

import numpy as np
import pytest
from dp_contract import DataParallelContract

from gansuite.common.data_parallel import shard
from gansuite.common.errors import GanSuiteError
from gansuite.common.params import init_params
from gansuite.common.presets import preset
from gansuite.common.protocol import BuildOptions
from gansuite.common.registry import get_backend
from gansuite.common.streams import Streams


class TestMxnetDataParallel(DataParallelContract):
    backend_name = "mxnet"


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
