"""Data-parallel training on PyTorch (backends/torch/data_parallel.py: torchrun processes, DDP over gloo,
BatchNorm synchronised with the autograd-aware all_reduce on a CPU) through the contract every engine
passes (tests/dp_contract.py), plus checks that the engine really is used: DDP's own record of the
runs, the CPU synchronised BatchNorm against F.batch_norm, and the one-line refusals."""

from __future__ import annotations

import json

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from dp_contract import DataParallelContract
from gansuite.common.dp_compare import WORKERS
from gansuite.common.errors import GanSuiteError


class TestTorchDataParallel(DataParallelContract):
    backend_name = "torch"
    fault_rank = 1  # one process per worker: kill the non-writer; the run fails, rank 0's checkpoint stays good

    @pytest.mark.parametrize("model, dtype, batchnorm, hook",
                             [("dcgan-tiny", "float64", ["_CollectiveBatchNorm"], None),
                              ("gaussian", "float64", [], "_summing_hook")])
    def test_the_runs_are_ddp_over_gloo_with_synchronised_batchnorm(self, runs, model, dtype, batchnorm, hook):
        """Rank 0's record of a contract run (made on demand, shared): DDP's own logging data."""
        runs(model, dtype, WORKERS)
        out = runs.root / "-".join(map(str, (model, dtype, WORKERS, True)))
        settings = json.loads((out / "summary.json").read_text())["settings"]
        assert settings["engine"] == "DistributedDataParallel" and settings["process_group"] == "gloo"
        assert settings["world_size"] == WORKERS and settings["rank"] == 0 and settings["batchnorm"] == batchnorm
        assert settings["ddp"] == {"world_size": WORKERS, "backend_name": "gloo", "broadcast_buffers": 0,
                                   "find_unused_parameters": 0, "comm_hook": hook,
                                   "num_parameter_tensors": settings["ddp"]["num_parameter_tensors"]}


@pytest.fixture
def one_process_group():
    """A gloo group of this one process (a HashStore: no port), removed afterwards."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("biased", (False, True))
def test_the_cpu_synchronised_batchnorm_is_batchnorm_over_the_group(one_process_group, biased):
    """Over one process the global batch is the local one: outputs, input and parameter gradients
    and running statistics are F.batch_norm's (unbiased running variance, or MXNet's biased one)."""
    from gansuite.backends.torch.data_parallel import _CollectiveBatchNorm

    torch.manual_seed(0)
    x = (torch.randn(6, 3, 4, 4, dtype=torch.float64) * 2 + 1).requires_grad_()
    sync = _CollectiveBatchNorm(3, 1e-5, 0.1, dtype=torch.float64)
    sync.biased_running_var = biased
    with torch.no_grad():
        sync.weight.uniform_(0.5, 1.5), sync.bias.uniform_(-1, 1)
    weight, bias = sync.weight.detach().clone().requires_grad_(), sync.bias.detach().clone().requires_grad_()
    probe = torch.randn_like(x)
    (sync(x) * probe).sum().backward()
    got = [x.grad.clone(), sync.weight.grad, sync.bias.grad]
    x.grad = None
    mean, var = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    (F.batch_norm(x, mean, var, weight, bias, True, 0.1, 1e-5) * probe).sum().backward()
    for a, b in zip(got, [x.grad, weight.grad, bias.grad]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    if biased:
        var = 0.9 + 0.1 * x.detach().var([0, 2, 3], unbiased=False)
    torch.testing.assert_close(sync.running_mean, mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sync.running_var, var, rtol=1e-12, atol=1e-12)


def test_outside_torchrun_and_fast_mode_are_one_line_refusals(monkeypatch):
    from gansuite.backends.torch.data_parallel import DataParallelBackend
    from gansuite.common.params import init_params
    from gansuite.common.presets import preset
    from gansuite.common.protocol import BuildOptions

    spec = preset("gaussian")
    params = init_params(spec, 0, "float64")
    with pytest.raises(GanSuiteError, match=r"^mode: data-parallel training runs in parity mode; allowed: parity$"):
        DataParallelBackend(2).build(spec, params, None, BuildOptions(mode="fast"))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(GanSuiteError, match=r"^workers: torch data-parallel training runs in 2 processes started "
                                            r"by torchrun \(WORLD_SIZE=2\), got WORLD_SIZE=None") as err:
        DataParallelBackend(2).build(spec, params, None, BuildOptions())
    assert "\n" not in str(err.value)
