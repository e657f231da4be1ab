"""The seed documents' own training loops, re-implemented faithfully as speed references.

A peer is what a user porting from a seed would run: d2l 20.1's Gaussian GAN loop in each
framework d2l covers (``d2l_torch``, ``d2l_tensorflow``, ``d2l_mxnet``) and the PyTorch
DCGAN tutorial's loop (``tutorial_torch``) and seed 003's FashionMNIST loop (``seed003_torch``),
with their own data pipelines, modules, losses, optimisers and per-iteration host reads, minus
plotting and printing; and seed 002's VAE loop (``seed002_vae_torch``: the chapter's ``VAE`` and
loop body through ``VaeSeedCode``). Timed by the same harness as the backends; their rows' modes
are :data:`MODES`' values: ``peer-d2l``, ``peer-tutorial``, ``peer-seed003``, ``peer-seed002``.

What a GAN peer times that a backend row does not: its data loader (the seed iterates one) and
its noise draw. What it skips: nothing the seed's iteration does. The VAE peer has no loader of
its own (``VaeSeedCode`` takes the batch as given): it times the seed's loop body on the
harness's pool, as the VAE's backend rows (its ``includes`` says so in every row).
"""

from __future__ import annotations

import abc
import importlib
import math
from typing import Any

import numpy as np

from gansuite.common.data import gaussian_data
from gansuite.common.presets import dcgan, dcgan_mnist, gaussian
from gansuite.common.spec import DataSpec, Dense, GANSpec, NetSpec, ReLU, Sigmoid
from gansuite.common.vae import VAELossSpec, VAESpec

#: (backend, seed) -> module under gansuite.benchmarks.peers
MODULES = {
    ("torch", "d2l"): "d2l_torch",
    ("tensorflow", "d2l"): "d2l_tensorflow",
    ("mxnet", "d2l"): "d2l_mxnet",
    ("torch", "tutorial"): "tutorial_torch",
    ("torch", "seed003"): "seed003_torch",
    ("torch", "seed002-vae"): "seed002_vae_torch",
}
#: seed -> the mode of its rows. "seed002-vae": seed 002's GAN ports (seed002_torch) have no Peer
#: yet; if one is added it is another seed key with its own module, and may share the mode.
MODES = {"d2l": "peer-d2l", "tutorial": "peer-tutorial", "seed003": "peer-seed003", "seed002-vae": "peer-seed002"}
#: (backend, seed) -> that framework's loop for the seed's model written the way its users write one
#: (issue 16's "vs idiomatic"): Keras's train_step override, Flax + optax, hybridized Gluon. PyTorch's
#: is the tutorial itself (peer-tutorial), so it has no second row.
IDIOMATIC_MODULES = {
    ("tensorflow", "tutorial"): "keras_dcgan",
    ("jax", "tutorial"): "flax_dcgan",
    ("mxnet", "tutorial"): "gluon_dcgan",
}
IDIOMATIC_MODE = "peer-idiomatic"
PEER_MODES = (*dict.fromkeys(MODES.values()), IDIOMATIC_MODE)
#: Backends whose seed loop is already their idiom: the mode of the row that stands for it.
SEED_LOOP_IS_IDIOMATIC = {"torch": MODES["tutorial"]}


def idiomatic_row_mode(backend: str) -> str:
    """The mode of the row timing ``backend``'s DCGAN written the way its users write one."""
    return SEED_LOOP_IS_IDIOMATIC.get(backend, IDIOMATIC_MODE)


D2L_EXAMPLES = 1000  # d2l 20.1 draws 1000 examples


class Peer(abc.ABC):
    """One seed loop, built for one batch size; ``train(n)`` runs ``n`` of its iterations."""

    mode: str = ""
    framework: str = ""
    seed_document: str = ""
    g_forwards: int = 1  # G forwards per iteration (flops.G_FORWARDS)
    #: What a timed iteration holds, recorded in every row (settings.timing.includes).
    includes: str = "the seed's loop body as written: its data loader, noise draw and host reads"
    #: What the sampling measurement calls, recorded in settings.sampling.what.
    sampling_what: str = "G forward on batch_size noise vectors to the host, as the seed's visualisation"

    @abc.abstractmethod
    def __init__(self, spec: GANSpec | VAESpec, batch_size: int, device: str, seed: int) -> None: ...

    @abc.abstractmethod
    def train(self, n: int) -> None:
        """``n`` iterations of the seed's loop body, continuing through epochs of its data loader."""

    @abc.abstractmethod
    def sample(self, n: int) -> None:
        """``n`` times: ``batch_size`` samples from G to host memory, as the seed's visualisation does."""

    @abc.abstractmethod
    def sync(self) -> None: ...

    @abc.abstractmethod
    def versions(self) -> dict[str, str]: ...

    @abc.abstractmethod
    def settings(self) -> dict[str, Any]: ...


def seed_of(spec: GANSpec | VAESpec) -> str | None:
    """Which seed's loop reproduces ``spec``: 'd2l', 'tutorial', 'seed003', 'seed002-vae', or None (no peer)."""
    if isinstance(spec, VAESpec):
        return "seed002-vae" if is_seed002_vae(spec) else None
    g = gaussian()
    if (spec.generator, spec.discriminator, spec.loss) == (g.generator, g.discriminator, g.loss):
        return "d2l"
    if spec.data.kind != "gaussian" and len(spec.generator.input_shape) == 3:
        nz, nc = spec.generator.input_shape[0], spec.discriminator.input_shape[0]
        ngf = getattr(spec.generator.layers[0], "out_channels", 0) // 8
        ndf = getattr(spec.discriminator.layers[0], "out_channels", 0)
        if ngf > 0 and ndf > 0:
            ref = dcgan(nz=nz, ngf=ngf, ndf=ndf, nc=nc)
            if (spec.generator, spec.discriminator, spec.loss) == (ref.generator, ref.discriminator, ref.loss):
                return "tutorial"
        fg = getattr(spec.generator.layers[0], "out_channels", 0) // 16
        if fg > 0 and ndf > 0 and nc == 1:
            ref = dcgan_mnist(nz=nz, fg=fg, fd=ndf)
            if (spec.generator, spec.discriminator, spec.loss) == (ref.generator, ref.discriminator, ref.loss):
                return "seed003"
    return None


def is_seed002_vae(spec: VAESpec) -> bool:
    """Whether the chapter's ``VAE(image_size, h_dim, z_dim)`` (fc1..fc5, ReLU, sigmoid output, BCE
    sum + KL sum) is ``spec`` at some sizes: the class its loop builds."""
    f, h, z = spec.features, spec.hidden, spec.latent
    return (spec.encoder == NetSpec((f,), (Dense(f, h), ReLU()))
            and spec.decoder == NetSpec((z,), (Dense(z, h), ReLU(), Dense(h, f), Sigmoid()))
            and spec.loss == VAELossSpec("bce_sum", "sum"))


def peer_class(backend: str, spec: GANSpec | VAESpec, mode: str | None = None) -> tuple[type[Peer] | None, str]:
    """(the peer class, its mode) or (None, why there is none): the seed's own loop, or with
    ``mode=IDIOMATIC_MODE`` the framework's idiomatic loop of the same model."""
    seed = seed_of(spec)
    if seed is None:
        return None, f"no seed loop reproduces model {spec.name!r}"
    if mode == IDIOMATIC_MODE:
        module = IDIOMATIC_MODULES.get((backend, seed))
        if module is None:
            covered = ", ".join(b for b, s in IDIOMATIC_MODULES if s == seed) or "none"
            return None, f"no idiomatic {backend} loop of the {seed} model (covered: {covered})"
        return importlib.import_module(f"{__name__}.{module}").Peer, IDIOMATIC_MODE
    module = MODULES.get((backend, seed))
    if module is None:
        covered = ", ".join(b for b, s in MODULES if s == seed)
        return None, f"the {seed} seed has no {backend} version (it covers: {covered})"
    cls = importlib.import_module(f"{__name__}.{module}").Peer
    return cls, MODES[seed]


def dcgan_sizes(spec: GANSpec) -> dict[str, int]:
    """The tutorial's globals nz, ngf, ndf, nc for a tutorial-shaped spec."""
    return {"nz": spec.generator.input_shape[0], "ngf": spec.generator.layers[0].out_channels // 8,
            "ndf": spec.discriminator.layers[0].out_channels, "nc": spec.discriminator.input_shape[0]}


def dataset_size(batch_size: int, minimum: int) -> int:
    """At least ``minimum`` examples, a whole number of batches so every iteration is full
    (d2l's 1000 examples are 125 batches of 8; at batch 1024 the seed would have none full)."""
    return batch_size * max(2, math.ceil(minimum / batch_size))


def gaussian_examples(spec: GANSpec, batch_size: int, seed: int) -> np.ndarray:
    """d2l's ``N(0,1) @ A + b`` data as float32 numpy (the suite's generator: no d2l package)."""
    data = spec.data
    n = dataset_size(batch_size, D2L_EXAMPLES)
    values = gaussian_data(DataSpec(kind="gaussian", n_examples=n, gaussian_A=data.gaussian_A,
                                    gaussian_b=data.gaussian_b), seed).values
    return values.astype(np.float32)


def restore_torch_defaults() -> None:
    """A seed script runs in a fresh process: undo the process-wide switches the torch backend
    sets per mode (oneDNN off for parity, TF32 and cudnn.benchmark for fast)."""
    import torch

    torch.backends.mkldnn.enabled = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = False


def torch_settings() -> dict[str, Any]:
    import torch

    from gansuite.common.registry import loaded_allocator

    return {"threads": torch.get_num_threads(), "mkldnn": torch.backends.mkldnn.enabled,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "malloc": loaded_allocator()}  # the fast processes' TCMalloc preload (common/registry.py)
