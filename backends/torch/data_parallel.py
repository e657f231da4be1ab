"""Data-parallel training on PyTorch's engine, ``DistributedDataParallel`` (semantics: common/data_parallel.py).

One process per worker, started by ``torchrun --standalone --nproc_per_node=W`` (common.data_parallel.
worker_command); ``build`` joins the process group torchrun describes (gloo on a CPU, NCCL on CUDA).
Every process builds the same nets from the same canonical tensors, takes its rows of each canonical
batch (common.data_parallel.shard / shard_draws) and runs train.py's own ``train_iteration`` on them,
with ``state.G_run`` / ``state.D_run`` replaced by DDP-wrapped TRAINING TWINS of the nets:

* the twin is a SpecNet over the same layer objects (so the same Parameter and buffer tensors, which
  the optimisers, export and the pure forwards keep using through ``state.G`` / ``state.D``), each
  BatchNorm replaced by a synchronised one (``sync_bn=True``): batch statistics over the global
  batch, gradients through them summed over the workers. On CUDA that is ``nn.SyncBatchNorm``. On a
  CPU it cannot be: torch 2.13's ``nn.SyncBatchNorm.forward`` raises ``ValueError: SyncBatchNorm
  expected input tensor to be on GPU or XPU or privateuseone`` and its kernels
  (``torch.batch_norm_stats``, ...) have no CPU implementation (NotImplementedError "Could not run
  'aten::batch_norm_stats' with arguments from the 'CPU' backend"); pytorch/pytorch#78078 ("Enable
  SyncBatchNorm in CPU backend") was closed unmerged; and DDP refuses the layer in a CPU module
  (``ValueError: SyncBatchNorm layers only work with GPU modules``). The nearest the framework offers
  is its autograd-aware all_reduce (``torch.distributed._functional_collectives.all_reduce``, which
  torch.distributed.nn.functional.all_reduce's 2.13 deprecation names; its backward is the all_reduce
  of the gradients, what nn.SyncBatchNorm's backward does): :class:`_CollectiveBatchNorm`, the same
  global statistics computed with it. MXNet's biased running variance (spec ``running_var="biased"``),
  which nn.SyncBatchNorm cannot do, uses it on CUDA too.
* DDP reduces a net's gradient in the backward that follows a forward run outside ``no_sync()``.
  train_iteration runs D three times (real and fake in the D step, in either order, with one joint or
  two separate backwards; again in the G step, through which G's gradient flows) and G once or twice
  (the D step's G(z); the G step's G(z_gen) with ``g_noise="fresh"``). :class:`_Replica` runs exactly
  one forward per net and iteration outside no_sync: D's second D-step pass, whose backward completes
  D's gradient (the first pass's terms are already in ``.grad``: DDP reduces the accumulated
  gradient); G's forward whose graph the G step back-propagates. So every gradient is reduced once,
  whole, and D's G-step gradient (never used: zeroed before the next D step) not at all. Checked:
  DistributedDataParallel's docstring (no_sync: "gradients will be accumulated ... synchronized in
  the first forward-backward pass exiting the context"; the forward must be inside it).
* the reduction: DDP averages (each gradient divided by W, then all-reduced). ``"mean"``: the average
  of local means is the global mean. ``"per_example"``: train.py rescales each local sum by 1/(B/W),
  and the average of ``S_r W / B`` is ``S / B``, B the global batch. ``"sum"`` (the Gaussian GAN):
  :func:`_summing_hook`, DDP's reference ``allreduce_hook`` without its division (a DDP comm hook is
  the reducer's documented extension point: "Grad bucket's tensors will not be predivided by
  world_size"), so the local sums are summed.

The scalars are the local ones all-reduced (means averaged, sums summed). ``generate`` /
``discriminate`` / ``export_params`` are the single-worker code on the plain nets (ordinary BatchNorm
over the same tensors): no collective, so rank 0 alone may call them. Parity mode only. float64
goes through gloo as is (measured: the two-worker run matches one worker to 1e-14). Measured on a
CPU (gloo); the CUDA path (NCCL, nn.SyncBatchNorm) follows the docs but had no GPU to run on.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from gansuite.common.data_parallel import rank as torchrun_rank
from gansuite.common.data_parallel import shard, shard_draws
from gansuite.common.draws import Draws, check_draws
from gansuite.common.errors import GanSuiteError
from gansuite.common.params import OptState, Params
from gansuite.common.protocol import SCALARS, BuildOptions, StepOutput, check_options, device_unavailable
from gansuite.common.spec import GANSpec

from .backend import TorchBackend, TorchState
from .models import SpecNet, _BiasedRunningVar

#: A collective waiting on a dead peer fails within this (torch 2.13's default: 30 minutes).
TIMEOUT = datetime.timedelta(seconds=120)


def _summing_hook(group: dist.ProcessGroup | None, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP's ``allreduce_hook`` (torch/distributed/algorithms/ddp_comm_hooks/default_hooks.py) without
    the division by the world size: the spec's ``reduction="sum"`` sums the workers' local sums."""
    work = dist.all_reduce(bucket.buffer(), group=group, async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])


# DDP's register_comm_hook compares the annotations with the classes themselves; this module's
# `from __future__ import annotations` leaves them strings ("Communication hook: bucket annotation
# should be dist.GradBucket.").
_summing_hook.__annotations__.update(bucket=dist.GradBucket, group=dist.ProcessGroup | None,
                                     **{"return": torch.futures.Future[torch.Tensor]})


class _CollectiveBatchNorm(nn.modules.batchnorm._BatchNorm):
    """nn.SyncBatchNorm's computation where its CUDA-only kernels are missing (a CPU; see the module
    docstring), on the base class nn.SyncBatchNorm shares with nn.BatchNorm2d (DDP refuses an
    nn.SyncBatchNorm subclass in a CPU module): the global batch's mean and biased variance (two
    passes, as F.batch_norm) from the autograd-aware all_reduce, whose backward all-reduces the
    statistics' gradients, so each worker's input gradient is that of the whole batch's loss. The
    running statistics advance as the single-worker layer's (common/spec.py: momentum on the new
    statistic; the unbiased variance over the GLOBAL count, or the biased one for
    ``running_var="biased"``), identically on every worker. Train mode: the training
    twin never leaves it (the pure forwards use the plain layer)."""

    biased_running_var: bool = False

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:  # any (B, C, ...) input, as nn.SyncBatchNorm
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)  # eval: F.batch_norm on the running statistics, no collective
        dims, shape = [0, *range(2, x.dim())], [1, -1] + [1] * (x.dim() - 2)
        count = x.numel() // x.shape[1] * dist.get_world_size()  # every shard has B/W rows (data_parallel.shard)
        mean = funcol.all_reduce(x.sum(dims), "sum", dist.group.WORLD) / count
        centred = x - mean.view(shape)
        var_sum = funcol.all_reduce((centred * centred).sum(dims), "sum", dist.group.WORLD)
        y = centred * torch.rsqrt(var_sum / count + self.eps).view(shape)
        if self.weight is not None:  # None: fix_gamma (models.build_layer unregisters the scale)
            y = y * self.weight.view(shape)
        if self.bias is not None:
            y = y + self.bias.view(shape)
        with torch.no_grad():
            m = self.momentum
            running = var_sum / (count if self.biased_running_var else count - 1)
            self.running_mean.mul_(1 - m).add_(mean, alpha=m)
            self.running_var.mul_(1 - m).add_(running, alpha=m)
            self.num_batches_tracked.add_(1)
        return y


def _synchronised(bn: nn.Module, device: torch.device) -> nn.Module:
    """A synchronised BatchNorm over ``bn``'s own Parameter and buffer objects (what
    ``nn.SyncBatchNorm.convert_sync_batchnorm`` does, and uses, on CUDA)."""
    biased = isinstance(bn, _BiasedRunningVar)
    if device.type == "cuda" and not biased:
        return nn.SyncBatchNorm.convert_sync_batchnorm(bn)
    sync = _CollectiveBatchNorm(bn.num_features, bn.eps, bn.momentum, affine=True, track_running_stats=True,
                                device=device, dtype=bn.running_mean.dtype)
    sync.biased_running_var = biased
    sync.weight, sync.bias = bn.weight, bn.bias  # the same Parameters (None where fix_gamma dropped it)
    sync.running_mean, sync.running_var = bn.running_mean, bn.running_var  # the same buffers: updated in place
    sync.num_batches_tracked = bn.num_batches_tracked
    return sync


def _training_twin(net: SpecNet, sync_bn: bool, device: torch.device) -> SpecNet:
    """The net the engine trains: ``net``'s own layers, each BatchNorm synchronised when asked (the
    trap, ``sync_bn=False``, keeps the per-worker BatchNorm)."""
    layers = [_synchronised(m, device) if sync_bn and isinstance(m, nn.modules.batchnorm._BatchNorm) else m
              for m in net]
    return SpecNet(*layers).train()


class _Replica:
    """A DDP-wrapped twin as train.train_iteration calls it (``state.G_run`` / ``state.D_run``):
    forward number ``reducing`` of the iteration runs outside ``no_sync()``, the others inside it
    (module docstring); ``finish`` checks that the iteration made the calls it was planned for."""

    def __init__(self, ddp: DistributedDataParallel, reducing: int, calls: int) -> None:
        self.ddp, self.reducing, self.calls, self.made = ddp, reducing, calls, 0

    def __call__(self, *args: Any) -> torch.Tensor:
        call, self.made = self.made, self.made + 1
        if call == self.reducing:
            return self.ddp(*args)
        with self.ddp.no_sync():
            return self.ddp(*args)

    def finish(self) -> None:
        made, self.made = self.made, 0
        if made != self.calls:  # train.py changed its sequence: the reduction plan must follow
            raise RuntimeError(f"DDP replica: {made} forwards in one iteration, planned for {self.calls}")


def _init_process_group(workers: int, kind: str) -> None:
    """Join torchrun's process group (its RANK / WORLD_SIZE / MASTER_* environment)."""
    world = os.environ.get("WORLD_SIZE")
    if world != str(workers) or "RANK" not in os.environ:
        raise GanSuiteError(f"workers: torch data-parallel training runs in {workers} processes started by torchrun "
                            f"(WORLD_SIZE={workers}), got WORLD_SIZE={world}; use gansuite train --workers {workers}")
    if not dist.is_initialized():
        # gloo: PyTorch's CPU collectives; NCCL: its CUDA ones. The default timeout would leave the
        # survivors of a dead worker waiting half an hour (torchrun usually ends them first).
        dist.init_process_group("nccl" if kind == "cuda" else "gloo", timeout=TIMEOUT)
    if dist.get_world_size() != workers:
        raise GanSuiteError(f"workers: the process group has {dist.get_world_size()} processes, not {workers}")


class DataParallelBackend(TorchBackend):
    """The torch backend on ``workers`` torchrun processes; this process is worker ``rank``."""

    def __init__(self, workers: int, sync_bn: bool = True) -> None:
        self.workers, self.sync_bn = workers, sync_bn
        self.rank = torchrun_rank()  # torchrun's RANK (checked against the process group in build)
        self.writes_outputs = self.rank == 0

    def build(self, spec: GANSpec, params: Params, opt_state: OptState | None, options: BuildOptions) -> TorchState:
        if options.mode != "parity":
            raise GanSuiteError("mode: data-parallel training runs in parity mode; allowed: parity")
        _init_process_group(self.workers, check_options(options))
        if dist.get_rank() != self.rank:
            raise GanSuiteError(f"workers: process group rank {dist.get_rank()} is not torchrun's RANK {self.rank}")
        state = super().build(spec, params, opt_state, options)  # plain nets, tensors, Adam state
        plans = {"G": (1, 2) if spec.train.g_noise == "fresh" else (0, 1), "D": (1, 3)}  # (reducing, calls)
        for net, (reducing, calls) in plans.items():
            plain = state.G if net == "G" else state.D
            ddp = DistributedDataParallel(
                _training_twin(plain, self.sync_bn, state.device),
                device_ids=[state.device.index] if state.device.type == "cuda" else None,
                # No buffer broadcast before each forward (DDP's default does one): with synchronised
                # BatchNorm every worker advances its running statistics from the same global ones; in
                # the trap each keeps its own shard's and rank 0's are exported. init_sync (default)
                # still broadcasts rank 0's parameters and buffers once, equal already.
                forward_sync_buffers=False,
                find_unused_parameters=False,  # every parameter has a gradient in the reducing backward
            )
            if spec.loss.reduction == "sum":
                ddp.register_comm_hook(dist.group.WORLD, _summing_hook)
            setattr(state, f"{net}_run", _Replica(ddp, reducing, calls))
        return state

    def generate(self, state: TorchState, z: np.ndarray, bn: str = "batch",
                 labels: np.ndarray | None = None) -> np.ndarray:
        return super().generate(state, z, bn, labels)  # the plain G: no collective

    def discriminate(self, state: TorchState, x: np.ndarray, bn: str = "batch",
                     labels: np.ndarray | None = None) -> np.ndarray:
        return super().discriminate(state, x, bn, labels)  # the plain D: no collective

    def train_step(self, state: TorchState, real: np.ndarray, z: np.ndarray | None, with_grads: bool = False,
                   draws: Draws | None = None) -> StepOutput:
        if z is None:
            raise GanSuiteError("z: data-parallel training takes the host's noise (parity mode); got None")
        draws = check_draws(state.spec, draws, int(np.shape(real)[0]), int(np.shape(z)[0]))  # the full batch's
        mine = (self.rank, self.workers)
        out = super().train_step(state, shard(np.asarray(real), *mine, "real"), shard(np.asarray(z), *mine, "z"),
                                 with_grads, shard_draws(draws, *mine))  # gradients: reduced by DDP
        for replica in (state.G_run, state.D_run):
            replica.finish()
        # the global batch's scalars: the mean of the equal shards' means; losses of "sum"/"per_example" summed
        local = torch.tensor([getattr(out, k) for k in SCALARS], dtype=torch.float64, device=state.device)
        dist.all_reduce(local)
        summed = {"loss_D", "loss_G"} if state.spec.loss.reduction != "mean" else set()
        for k, v in zip(SCALARS, local.tolist()):
            setattr(out, k, v if k in summed else v / self.workers)
        return out

    def export_params(self, state: TorchState) -> tuple[Params, OptState]:
        return super().export_params(state)  # the shared tensors, this worker's copy: no collective

    def framework_device(self, kind: str) -> torch.device:
        if kind != "cuda":
            return super().framework_device(kind)
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.device_count() < self.workers:
            raise device_unavailable("torch", f"{self.workers} cuda devices (one per worker)",
                                     [f"{torch.cuda.device_count()} cuda device(s)", "cpu"])
        torch.cuda.set_device(local)  # NCCL: one GPU per process
        return torch.device("cuda", local)

    def settings(self, state: TorchState) -> dict[str, Any]:
        ddp = state.D_run.ddp
        logged = ddp._get_ddp_logging_data()  # DDP's own record (its logger), local: no collective
        return {**super().settings(state), "engine": type(ddp).__name__, "process_group": dist.get_backend(),
                "world_size": dist.get_world_size(), "rank": self.rank, "sync_bn": self.sync_bn,
                "batchnorm": sorted({type(m).__name__ for r in (state.G_run, state.D_run)
                                     for m in r.ddp.module if isinstance(m, nn.modules.batchnorm._BatchNorm)}),
                "ddp": {k: logged.get(k) for k in ("world_size", "backend_name", "broadcast_buffers",
                                                   "find_unused_parameters", "comm_hook", "num_parameter_tensors")}}
