"""Data-parallel training on JAX (backends/jax/data_parallel.py: a jax.sharding Mesh, the batch
NamedSharding-split, the state replicated; the trap: shard_map with per-device BatchNorm) through the
contract every engine passes (tests/dp_contract.py), and over two processes (jax.distributed.initialize,
a global Mesh, gloo; MultiProcessBackend) through the multi-process contract, plus checks that the
engine really is used:
the arrays' placements over the 2 devices, in a process started with
XLA_FLAGS=--xla_force_host_platform_device_count=2 (this one may see one device only)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from dp_contract import DataParallelContract, MultiProcessContract
from gansuite.common.data_parallel import worker_env
from gansuite.common.errors import GanSuiteError


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """One persistent XLA compilation cache (JAX's jax_compilation_cache_dir) for this file's worker
    processes: the fault test's killed and resumed runs load the 2-worker float64 run's executables
    (the same program) instead of compiling them again. A loaded executable is the compiled one, so
    the numbers cannot change; the XLA:CPU compile of dcgan-tiny's iteration is most of a run."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path_factory.mktemp("xla-cache")))
        yield


class TestJaxDataParallel(DataParallelContract, MultiProcessContract):
    backend_name = "jax"

    def test_the_processes_joined_one_distributed_runtime_and_one_global_mesh(self, runs) -> None:
        """Rank 0's record of the multi-process contract run: process 0 of 2, its one local device,
        a mesh over both processes' devices, gloo collectives."""
        import json

        runs("dcgan-tiny", "float64", 2, processes=2)
        settings = json.loads((runs.root / "dcgan-tiny-float64-2-True-p2" / "summary.json").read_text())["settings"]
        assert (settings["processes"], settings["process_index"], settings["cpu_collectives"]) == (2, 0, "gloo")
        assert settings["mesh"] == {"batch": 2} and len(settings["local_devices"]) == 1, settings
        assert settings["mesh_devices"][0] == settings["local_devices"][0], settings
        assert len(set(settings["mesh_devices"])) == 2, settings


# A gaussian GAN with a BatchNorm in D: a cheap compile, and per-device statistics to tell apart.
_PLACEMENTS = textwrap.dedent("""
    import dataclasses
    import jax
    import numpy as np
    from jax.sharding import PartitionSpec as P
    from gansuite.backends.jax import data_parallel as dp
    from gansuite.backends.jax.layout import activations_to_framework
    from gansuite.common.params import init_params
    from gansuite.common.presets import preset
    from gansuite.common.protocol import BuildOptions
    from gansuite.common.spec import BatchNorm, Dense, NetSpec, Tanh
    from gansuite.common.streams import Streams

    assert jax.device_count() == 2 and jax.config.jax_enable_x64
    spec = preset("gaussian")
    spec = dataclasses.replace(spec, discriminator=NetSpec((2,), (Dense(2, 5), BatchNorm(5), Tanh(), Dense(5, 1))))
    batch = next(Streams(spec, 0).iterate(0, 1))
    seen = {}
    run = dp._run_iteration
    dp._run_iteration = lambda state, jitted, real, *rest: (seen.update(real=real), run(state, jitted, real, *rest))[1]
    for sync_bn in (True, False):
        be = dp.DataParallelBackend(2, sync_bn)
        state = be.build(spec, init_params(spec, 0, "float64"), None, BuildOptions(dtype="float64"))
        be.train_step(state, batch.real, batch.z, draws=batch.draws)
        # the batch: split along the mesh, device r holding rows r*B/2 .. (r+1)*B/2 (common.data_parallel.shard)
        real, whole = seen["real"], np.asarray(activations_to_framework(batch.real, np.float64, jax.devices()[0]))
        assert real.sharding.spec == P("batch") and len(real.sharding.device_set) == 2, real.sharding
        for r, device in enumerate(jax.devices()):
            part = next(s.data for s in real.addressable_shards if s.device == device)
            np.testing.assert_array_equal(np.asarray(part), whole[r * 4:(r + 1) * 4])
        # the state: on both devices; replicated, except the trap's running statistics (one row per device)
        for net in ("G", "D"):
            for coll, tree in state.train[net].items():
                for x in jax.tree.leaves(tree):
                    assert len(x.sharding.device_set) == 2 and x.dtype == np.float64, (net, coll, x.sharding)
                    assert x.sharding.is_fully_replicated == (sync_bn or coll == "params"), (net, coll, x.sharding)
        for x in jax.tree.leaves([state.train[k] for k in ("opt_G", "opt_D", "key")]):
            assert len(x.sharding.device_set) == 2 and x.sharding.is_fully_replicated, x.sharding
        if not sync_bn:
            mean = np.asarray(state.train["D"]["batch_stats"]["1"]["mean"])
            assert mean.shape == (2, 5) and not np.allclose(mean[0], mean[1]), mean  # each its own shard's
            np.testing.assert_array_equal(be.export_params(state)[0]["D.1.running_mean"], mean[0])  # rank 0's
            np.testing.assert_array_equal(be.export_weights(state)["D.1.running_mean"], mean[0])
    print("placements ok")
""")


def test_the_batch_is_split_over_the_mesh_and_the_state_replicated():
    env = worker_env("jax", 2)  # what gansuite train --workers 2 gives its worker process
    proc = subprocess.run([sys.executable, "-c", _PLACEMENTS], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "placements ok" in proc.stdout, proc.stderr[-4000:]


def test_too_few_devices_and_fast_mode_are_one_line_refusals():
    import jax

    from gansuite.backends.jax.data_parallel import DataParallelBackend
    from gansuite.common.params import init_params
    from gansuite.common.presets import preset
    from gansuite.common.protocol import BuildOptions

    spec = preset("gaussian")
    params = init_params(spec, 0, "float64")
    with pytest.raises(GanSuiteError, match=r"^mode: data-parallel training runs in parity mode; allowed: parity$"):
        DataParallelBackend(2).build(spec, params, None, BuildOptions(mode="fast"))
    many = jax.device_count() + 1  # more workers than this process's devices
    with pytest.raises(GanSuiteError, match=f"^workers: {many} workers need {many} JAX cpu devices, .*XLA_FLAGS="
                                            f"--xla_force_host_platform_device_count={many}") as err:
        DataParallelBackend(many).build(spec, params, None, BuildOptions())
    assert "\n" not in str(err.value)


def test_a_process_without_its_rank_or_coordinator_is_one_line(monkeypatch):
    from gansuite.backends.jax.data_parallel import MultiProcessBackend, initialize_distributed
    from gansuite.common.data_parallel import COORDINATOR_ENV, RANK_ENV

    monkeypatch.delenv(RANK_ENV, raising=False)
    with pytest.raises(GanSuiteError, match=rf"^{RANK_ENV}: each worker process needs its rank, an integer in "
                                            r"0\.\.1; got None"):
        MultiProcessBackend(2)
    monkeypatch.setenv(COORDINATOR_ENV, "no-port")
    with pytest.raises(GanSuiteError, match=rf"^{COORDINATOR_ENV}: each worker process needs rank 0's coordinator "
                                            r"address, host:port .*; got 'no-port'") as err:
        initialize_distributed(2, 0)
    assert "\n" not in str(err.value)
