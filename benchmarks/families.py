"""The model families the benchmarks time, each behind one small interface: the only place that
knows a GAN from seed 002's VAE.

A family says, for one of its presets, how to resolve the spec at a batch size, which protocol
object a backend name gives (common/registry.py's ``GANProtocol``; common/vae_backend.py's
``VAEProtocol``), how to draw its canonical parameters and the pool of host batches, what one
timed training step and one sampling call are, what the backend's settings are, and the FLOPs
(benchmarks/flops.py). The harness (harness.py) and the runner (run.py) are written once against
:class:`Family`; :func:`family_of` picks one from a model name. Peers (seed loops) are found from
the spec by ``peers.peer_class`` for every family alike.
"""

from __future__ import annotations

import abc
import dataclasses
from functools import partial
from typing import Any, Callable, ClassVar, ContextManager

from gansuite.common.errors import SpecError
from gansuite.common.params import init_params
from gansuite.common.presets import PRESETS
from gansuite.common.registry import get_backend
from gansuite.common.vae import VAE_PRESETS, init_vae_params
from gansuite.common.vae_backend import get_vae_backend

from .flops import (G_FORWARDS, IterationFlops, VAEIterationFlops, iteration_flops, sampling_flops,
                    vae_iteration_flops, vae_sampling_flops)
from .frameworks import numerics
from .workloads import Pool, Sampling, TrainSteps, make_pool, make_vae_pool, spec_at_batch


class Family(abc.ABC):
    """What a benchmark config needs of a model family (one instance per family, stateless)."""

    name: ClassVar[str]
    presets: ClassVar[dict[str, Callable[[], Any]]]
    #: What the sampling measurement of a backend row calls.
    sampling_what: ClassVar[str]

    def spec(self, model: str) -> Any:
        return self.presets[model]()

    def at_batch(self, spec: Any, batch_size: int) -> Any:
        """``spec`` at ``batch_size``, with exactly the pool's number of full batches of data."""
        return spec_at_batch(spec, batch_size)

    @abc.abstractmethod
    def sweep(self, spec: Any) -> str:
        """The key of run.py's batch-size sweeps for this spec."""

    @abc.abstractmethod
    def protocol(self, backend: str) -> Any:
        """The backend's implementation of this family's protocol (one-line error if unavailable)."""

    @abc.abstractmethod
    def init_params(self, spec: Any, seed: int, dtype: str) -> dict[str, Any]: ...

    @abc.abstractmethod
    def make_pool(self, spec: Any, seed: int, dtype: str) -> Pool: ...

    @abc.abstractmethod
    def device_noise(self, mode: str) -> bool:
        """Whether ``mode``'s steps draw their randomness on the device (``train_step(..., None)``)."""

    def noise(self, mode: str) -> str:
        """The recorded description of where a step's randomness comes from."""
        return "device RNG (train_step z=None)" if self.device_noise(mode) else "host pool"

    def sync(self, protocol: Any, state: Any) -> None:
        protocol.sync(state)

    def train_steps(self, protocol: Any, state: Any, pool: Pool, mode: str,
                    context: Callable[[], ContextManager]) -> TrainSteps:
        return TrainSteps(partial(protocol.train_step, state), partial(self.sync, protocol, state), pool,
                          self.device_noise(mode), context)

    @abc.abstractmethod
    def sampling(self, protocol: Any, state: Any, pool: Pool) -> Sampling: ...

    @abc.abstractmethod
    def settings(self, protocol: Any, state: Any, framework: str) -> dict[str, Any]: ...

    @abc.abstractmethod
    def iteration_flops(self, spec: Any, batch_size: int,
                        peer: type | None = None) -> IterationFlops | VAEIterationFlops:
        """FLOPs of one training iteration (``peer``: the seed loop's class, for a peer row)."""

    @abc.abstractmethod
    def sampling_flops(self, spec: Any, batch_size: int) -> int: ...


class GANFamily(Family):
    name = "gan"
    presets = PRESETS
    sampling_what = "backend.generate(z, bn='batch') to host float64"

    def sweep(self, spec: Any) -> str:
        return "gaussian" if spec.data.kind == "gaussian" else "image"

    def protocol(self, backend: str) -> Any:
        return get_backend(backend)

    def init_params(self, spec: Any, seed: int, dtype: str) -> dict[str, Any]:
        return init_params(spec, seed, dtype)

    def make_pool(self, spec: Any, seed: int, dtype: str) -> Pool:
        return make_pool(spec, seed, dtype)

    def device_noise(self, mode: str) -> bool:
        return mode == "fast"  # the GAN protocol's fast mode: z=None, noise from the framework's RNG

    def sampling(self, protocol: Any, state: Any, pool: Pool) -> Sampling:
        return Sampling(lambda z: protocol.generate(state, z, "batch"), partial(self.sync, protocol, state), pool)

    def settings(self, protocol: Any, state: Any, framework: str) -> dict[str, Any]:
        return protocol.settings(state)

    def iteration_flops(self, spec: Any, batch_size: int, peer: type | None = None) -> IterationFlops:
        return iteration_flops(spec, batch_size, peer.g_forwards if peer is not None else G_FORWARDS["backend"])

    def sampling_flops(self, spec: Any, batch_size: int) -> int:
        return sampling_flops(spec, batch_size)


class VAEFamily(Family):
    name = "vae"
    presets = VAE_PRESETS
    sampling_what = "vae.decode(z) (the seed's model.decode(z) of its sampled grid) to host float64"

    def sweep(self, spec: Any) -> str:
        return "vae"

    def protocol(self, backend: str) -> Any:
        return get_vae_backend(backend)

    def init_params(self, spec: Any, seed: int, dtype: str) -> dict[str, Any]:
        return init_vae_params(spec, seed, dtype)

    def make_pool(self, spec: Any, seed: int, dtype: str) -> Pool:
        return make_vae_pool(spec, seed, dtype)

    def device_noise(self, mode: str) -> bool:
        return False  # the VAE protocol takes eps from the host in both modes (its one draw per step)

    def sync(self, protocol: Any, state: Any) -> None:
        sync = getattr(protocol, "sync", None)  # OracleVAE has none: numpy has finished when it returns
        if sync is not None:
            sync(state)

    def sampling(self, protocol: Any, state: Any, pool: Pool) -> Sampling:
        return Sampling(partial(protocol.decode, state), partial(self.sync, protocol, state), pool)

    def settings(self, protocol: Any, state: Any, framework: str) -> dict[str, Any]:
        """The VAE protocol has no ``settings(state)``: the state's options and its own scalar facts
        (JAX: compile_s; TensorFlow: graph, jit_compile), plus the framework's process-wide switches.
        Empty for the oracle, as the GAN oracle's."""
        options = getattr(state, "options", None)
        if options is None:
            return {}
        facts = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)
                 if isinstance(getattr(state, f.name), (bool, int, float, str))}
        if framework == "torch":  # backends/torch/vae.py: state.run is torch.compile's wrapper when compiled
            facts["compiled"] = hasattr(state.run, "_torchdynamo_orig_callable")
        return {"mode": options.mode, "dtype": options.dtype, "device": str(state.device), **facts,
                **numerics(framework, options.mode)}

    def iteration_flops(self, spec: Any, batch_size: int, peer: type | None = None) -> VAEIterationFlops:
        return vae_iteration_flops(spec, batch_size)  # the seed's loop does the same products

    def sampling_flops(self, spec: Any, batch_size: int) -> int:
        return vae_sampling_flops(spec, batch_size)


FAMILIES: tuple[Family, ...] = (GANFamily(), VAEFamily())


def family_of(model: str) -> Family:
    """The family whose presets hold ``model``; a one-line SpecError naming every preset otherwise."""
    for family in FAMILIES:
        if model in family.presets:
            return family
    allowed = [name for family in FAMILIES for name in family.presets]
    raise SpecError("model", f"unknown model {model!r}; allowed: {', '.join(allowed)}")
