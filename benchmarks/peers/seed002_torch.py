"""Seed 002 (a book chapter, PyTorch): its MLP GAN (8.3) and conditional GAN (8.5), code and loop.

MLP GAN, kept from the seed: ``D`` and ``G`` as its two ``nn.Sequential`` (D: Linear(image_size,
hidden_size), LeakyReLU(0.2), Linear(hidden_size, hidden_size), LeakyReLU(0.2), Linear(hidden_size,
1), Sigmoid(); G: Linear(latent_size, hidden_size), ReLU(), Linear, ReLU(), Linear(hidden_size,
image_size), Tanh()), ``criterion`` on D's probabilities, and the 8.3.3 loop body line for line
(:func:`mlp_gan_iteration`): ``images.reshape(batch_size, -1)``, ``real_labels =
torch.ones(batch_size, 1)``, ``fake_labels = torch.zeros(batch_size, 1)``, ``D(images)``, ``z =
torch.randn(batch_size, latent_size)``, ``D(G(z))`` WITHOUT detach, ``d_loss = d_loss_real +
d_loss_fake``, ``reset_grad(); d_loss.backward(); d_optimizer.step()``, then a NEW ``z =
torch.randn(batch_size, latent_size)``, ``G(z)`` again, ``g_loss = criterion(D(fake_images),
real_labels)``, ``reset_grad(); g_loss.backward(); g_optimizer.step()``. d_loss.backward() also
fills G's gradients (no detach); the second ``reset_grad()`` (the seed's comment: "对生成器、判别器的
梯度清零", zero G's and D's gradients) clears them before ``g_loss.backward()``, so G steps on
g_loss's gradient alone, as the preset. Not in the excerpt, written as the pytorch-tutorial GAN
(yunjey) that the loop is line for line: ``criterion = nn.BCELoss()``, ``d_optimizer =
torch.optim.Adam(D.parameters(), lr=...)`` and ``g_optimizer`` likewise (PyTorch's default betas
and eps), ``reset_grad()`` zeroing both optimisers; sizes and lr from the spec (mlp-gan: latent 64,
hidden 256, lr 2e-4; mlp-gan-tiny builds the same Sequentials narrower). ``batch_size`` is the
seed's constant (the spec's ``train.batch_size``: the preset's ``noise_batch="batch_size"``), so on
a short last batch the seed's ``images.reshape(batch_size, -1)`` raises, as it would on MNIST at a
batch size that does not divide 60,000 (the comparison's batches are all full).

CGAN, kept from the seed: the ``Generator`` / ``Discriminator`` classes (``label_emb =
nn.Embedding(10, 10)``; G: ``z.view(z.size(0), 100)``, ``torch.cat([z, c], 1)``, 110 -> 256 ->
512 -> 1024 -> 784 with LeakyReLU(0.2, inplace=True), Tanh, ``out.view(x.size(0), 28, 28)``; D:
``x.view(x.size(0), 784)``, ``torch.cat([x, c], 1)``, 794 -> 1024 -> 512 -> 256 -> 1 with
LeakyReLU(0.2, inplace=True) and ``nn.Dropout(0.4)`` after each hidden layer, Sigmoid,
``out.squeeze()``), and the 8.5.4 D-loss lines: ``real_validity = D(images, labels)``, ``z =
torch.randn(batch_size, 100)``, ``fake_labels = torch.randint(0,10,(batch_size,))``,
``fake_validity = D(G(z, fake_labels), fake_labels)`` (no detach), ``criterion(fake_validity,
torch.zeros(batch_size))``, ``d_loss = d_loss_real + d_loss_fake``. The one change to the
classes: the three hidden widths are a constructor argument (default the seed's 256, 512, 1024)
so that cgan-tiny builds the same classes narrower. The excerpt shows nothing else of the CGAN
loop: no ``criterion``, ``real_labels``, ``batch_size``, optimisers, zero_grad/backward/step or G
step. Written, as the preset chooses them (common/presets.cgan): ``criterion = nn.BCELoss()``,
``real_labels = torch.ones(batch_size)`` (D's ``squeeze()``d output has no second axis),
``batch_size`` the real batch's rows, Adam(lr from the spec: 1e-4), and the rest of the body as
the MLP GAN's: ``reset_grad(); d_loss.backward(); d_optimizer.step()``, then a new z and new
``torch.randint(0,10,(batch_size,))`` labels through G, ``criterion(D(fake_images, fake_labels),
real_labels)``, ``reset_grad(); g_loss.backward(); g_optimizer.step()``.

The ``SeedPort`` classes (:class:`MlpGanPort`, :class:`CganPort`; common/verify.py) run one loop
body per ``train_step`` from the suite's canonical start: the seed's own modules (cast to float64
for dtype="float64", on the CPU), loss and optimisers. Replaced: PyTorch's default inits by the
canonical tensors (the presets draw them as PyTorch's defaults); the MNIST DataLoader by the given
batch (and, CGAN, ``draws["labels"]``); the seed's ``torch.randn`` by the given ``z`` in the D step
and ``draws["z_gen"]`` in the G step; the CGAN's ``torch.randint`` by ``draws["fake_labels"]``
and ``draws["fake_labels_gen"]`` (:class:`Given`, which checks the size the seed asks for);
nn.Dropout's own Bernoulli draw by the canonical pre-scaled mask of its pass
(:class:`CanonicalDropout`: a forward hook on each of the seed's nn.Dropout instances returns
``input * mask``; a pre-hook on D steps through the passes in the order the seed calls D:
"real", "fake", "gen"). The float64 run sets torch's default dtype for the iteration, so the
seed's ``torch.ones``/``torch.zeros`` targets are float64 (nn.BCELoss refuses a float32 target
for a float64 input). The pure forwards (generate/discriminate) apply no dropout, as the
oracle's; D(x) is compared as the probability, which is what both presets' D (ending in their own
Sigmoid layer, ``loss.on = "probabilities"``) outputs. The presets compute the same arithmetic
(Sigmoid, PyTorch's clamped BCELoss on the probability, Adam): what remains is operation order.

Measured, float64, vs the oracle (``verify``: forward G(z) / D(x); one iteration losses / params;
3 iterations losses / params) and vs the torch backend's run of the preset (3 iterations):

* mlp-gan-tiny (batch 16): 4.0e-16 / 1.2e-16; 1.4e-16 / 4.1e-15; 1.4e-16 / 4.1e-15. The torch
  backend: 0 / 0 (bit-identical; it is itself 4.1e-15 from the oracle).
* cgan-tiny (batch 16): 9.4e-16 / 2.5e-16; 1.3e-16 / 1.2e-15; 1.6e-16 / 1.2e-15. Torch: 0 / 0.
* mlp-gan, the comparison's spec (batch 8, 256 glyph digits): 8.9e-16 / 2.1e-16; 1.6e-16 /
  3.4e-14; 1.6e-16 / 3.4e-14. Torch: 0 / 0.
* cgan, the comparison's spec: 2.6e-15 / 0; 0 / 3.2e-13; 1.6e-16 / 3.2e-13. Torch: 0 / 0
  (the JAX backend vs the oracle: mlp-gan 3.1e-14, cgan 9.0e-14).

No ``Peer`` (benchmark loop) yet: ``gansuite.benchmarks.peers.MODULES`` does not list this module.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

from gansuite.common.draws import pass_masks, passes_of
from gansuite.common.errors import GanSuiteError
from gansuite.common.layout import layer_index
from gansuite.common.params import Params
from gansuite.common.spec import Dense, Dropout, GANSpec

from .tutorial_torch import TorchPort

image_size = 784
device = torch.device("cpu")


# -- 8.3: the MLP GAN ----------------------------------------------------------------------------

def build_mlp_gan(image_size: int, hidden_size: int, latent_size: int) -> tuple[nn.Sequential, nn.Sequential]:
    """8.3.1 and 8.3.2 verbatim (the seed builds them at module level from its globals)."""
    # 构建判断器
    D = nn.Sequential(
        nn.Linear(image_size, hidden_size),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden_size, hidden_size),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden_size, 1),
        nn.Sigmoid())
    # 构建生成器,这个相当于AVE中的解码器
    G = nn.Sequential(
        nn.Linear(latent_size, hidden_size),
        nn.ReLU(),
        nn.Linear(hidden_size, hidden_size),
        nn.ReLU(),
        nn.Linear(hidden_size, image_size),
        nn.Tanh())
    return D, G


def mlp_gan_iteration(D, G, criterion, d_optimizer, g_optimizer, reset_grad, images, batch_size, latent_size,
                      randn: Callable[..., torch.Tensor] = torch.randn):
    """The body of 8.3.3's ``for i, (images, _) in enumerate(data_loader):``, line for line;
    ``randn`` is the seed's ``torch.randn``. Returns d_loss, g_loss, real_score, fake_score."""
    images = images.reshape(batch_size, -1).to(device)

    # 定义图像是真或假的标签
    real_labels = torch.ones(batch_size, 1).to(device)
    fake_labels = torch.zeros(batch_size, 1).to(device)

    # ================================================================== #
    #                           训练判别器                                 #
    # ================================================================== #

    # 定义判别器对真图像的损失函数
    outputs = D(images)
    d_loss_real = criterion(outputs, real_labels)
    real_score = outputs

    # 定义判别器对假图像(即由潜在空间点生成的图像)的损失函数
    z = randn(batch_size, latent_size).to(device)
    fake_images = G(z)
    outputs = D(fake_images)
    d_loss_fake = criterion(outputs, fake_labels)
    fake_score = outputs

    # 得到判别器总的损失函数
    d_loss = d_loss_real + d_loss_fake

    # 对生成器、判别器的梯度清零
    reset_grad()
    d_loss.backward()
    d_optimizer.step()

    # ================================================================== #
    #                           训练生成器                                 #
    # ================================================================== #

    # 定义生成器对假图像的损失函数,这里我们要求
    # 判别器生成的图像越来越像真图片,故损失函数中
    # 的标签改为真图像的标签,即希望生成的假图像,
    # 越来越靠近真图像
    z = randn(batch_size, latent_size).to(device)
    fake_images = G(z)
    outputs = D(fake_images)

    g_loss = criterion(outputs, real_labels)

    # 对生成器、判别器的梯度清零
    # 进行反向传播及运行生成器的优化器
    reset_grad()
    g_loss.backward()
    g_optimizer.step()
    return d_loss, g_loss, real_score, fake_score


# -- 8.5: the conditional GAN --------------------------------------------------------------------

class Generator(nn.Module):
    def __init__(self, widths=(256, 512, 1024)):  # the seed: def __init__(self), widths 256, 512, 1024
        super().__init__()
        h1, h2, h3 = widths

        self.label_emb = nn.Embedding(10, 10)

        self.model = nn.Sequential(
            nn.Linear(110, h1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(h1, h2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(h2, h3),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(h3, 784),
            nn.Tanh()
        )

    def forward(self, z, labels):
        z = z.view(z.size(0), 100)
        c = self.label_emb(labels)
        x = torch.cat([z, c], 1)
        out = self.model(x)
        return out.view(x.size(0), 28, 28)


class Discriminator(nn.Module):
    def __init__(self, widths=(256, 512, 1024)):  # the seed: def __init__(self), widths 1024, 512, 256
        super().__init__()
        h1, h2, h3 = widths

        self.label_emb = nn.Embedding(10, 10)

        self.model = nn.Sequential(
            nn.Linear(794, h3),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Dropout(0.4),
            nn.Linear(h3, h2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Dropout(0.4),
            nn.Linear(h2, h1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Dropout(0.4),
            nn.Linear(h1, 1),
            nn.Sigmoid()
        )

    def forward(self, x, labels):
        x = x.view(x.size(0), 784)
        c = self.label_emb(labels)
        x = torch.cat([x, c], 1)
        out = self.model(x)
        return out.squeeze()


def cgan_iteration(D, G, criterion, d_optimizer, g_optimizer, reset_grad, images, labels,
                   randn: Callable[..., torch.Tensor] = torch.randn,
                   randint: Callable[..., torch.Tensor] = torch.randint):
    """One CGAN iteration: 8.5.4's D-loss lines verbatim, the rest (marked) as the MLP GAN's loop
    (the excerpt shows no more; module docstring). ``randn`` / ``randint`` are the seed's
    ``torch.randn`` / ``torch.randint``. Returns d_loss, g_loss."""
    images = images.to(device)  # not in the excerpt: the DataLoader's (images, labels)
    labels = labels.to(device)
    batch_size = images.size(0)  # not in the excerpt
    real_labels = torch.ones(batch_size).to(device)  # not in the excerpt: D's output is squeeze()d

    # 定义判别器对真图像的损失函数
    real_validity = D(images, labels)
    d_loss_real = criterion(real_validity, real_labels)
    # 定义判别器对假图像(即由潜在空间点生成的图像)的损失函数
    z = randn(batch_size, 100).to(device)
    fake_labels = randint(0, 10, (batch_size,)).to(device)
    fake_images = G(z, fake_labels)
    fake_validity = D(fake_images, fake_labels)
    d_loss_fake = criterion(fake_validity, torch.zeros(batch_size).to(device))
    # CGAN总的损失值
    d_loss = d_loss_real + d_loss_fake

    # -- not in the excerpt: as 8.3.3 --
    reset_grad()
    d_loss.backward()
    d_optimizer.step()

    z = randn(batch_size, 100).to(device)
    fake_labels = randint(0, 10, (batch_size,)).to(device)
    fake_images = G(z, fake_labels)
    validity = D(fake_images, fake_labels)
    g_loss = criterion(validity, real_labels)

    reset_grad()
    g_loss.backward()
    g_optimizer.step()
    return d_loss, g_loss


# -- the ports -----------------------------------------------------------------------------------

class Given:
    """Stands in for ``torch.randn(*size)`` (``size_arg=None``) or ``torch.randint(low, high, size)``
    (``size_arg=2``) in the seed's lines: the suite's draws in call order, each checked against the
    size the seed asks for."""

    def __init__(self, what: str, tensors: Sequence[torch.Tensor], size_arg: int | None = None) -> None:
        self.what, self.queue, self.size_arg = what, list(tensors), size_arg

    def __call__(self, *args: Any) -> torch.Tensor:
        size = tuple(args) if self.size_arg is None else tuple(args[self.size_arg])
        if not self.queue:
            raise GanSuiteError(f"impl: the seed's loop draws {self.what} once more than the suite gives")
        t = self.queue.pop(0)
        if tuple(t.shape) != size:
            raise GanSuiteError(f"impl: the seed draws {self.what} of size {size}; the suite's is {tuple(t.shape)}")
        return t

    def done(self) -> None:
        if self.queue:
            raise GanSuiteError(f"impl: the seed's loop drew {self.what} fewer times than the suite gives")


class CanonicalDropout:
    """The seed's nn.Dropout instances multiplying by the canonical mask of the pass they run in
    (common/draws.py) in place of their own Bernoulli draw. A forward hook on each instance
    replaces its output by ``input * mask``; a pre-hook on the net takes the next pass name at
    each call (:meth:`passes`). Outside :meth:`passes` (the pure forwards) Dropout is the identity."""

    def __init__(self, net: nn.Module, net_name: str, layers: dict[int, nn.Module], dtype: torch.dtype) -> None:
        self.net_name, self.dtype = net_name, dtype
        self.pending: list[str] | None = None
        self.draws: dict[str, np.ndarray] = {}
        self.masks: dict[int, torch.Tensor] = {}
        self.layers = sorted(layers)
        net.register_forward_pre_hook(self._next_pass)
        for i, module in layers.items():
            module.register_forward_hook(functools.partial(self._apply, i))

    def _next_pass(self, module: nn.Module, inputs: Any) -> None:
        if self.pending is None:
            self.masks = {}
            return
        if not self.pending:
            raise GanSuiteError(f"impl: the seed's loop runs {self.net_name} more often than the suite's passes")
        name = self.pending.pop(0)
        masks = pass_masks(self.draws, name, self.net_name)
        if sorted(masks) != self.layers:
            raise GanSuiteError(f"draws: pass {name!r} of {self.net_name} needs masks for layers {self.layers}, "
                                f"got {sorted(masks)}")
        self.masks = {i: torch.as_tensor(m, dtype=self.dtype) for i, m in masks.items()}

    def _apply(self, index: int, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
        mask = self.masks.get(index)
        return inputs[0] if mask is None else inputs[0] * mask

    @contextlib.contextmanager
    def passes(self, names: Sequence[str], draws: dict[str, np.ndarray]) -> Iterator[None]:
        self.pending, self.draws = list(names), draws
        try:
            yield
            if self.pending:
                raise GanSuiteError(f"impl: the seed's loop skipped {self.net_name}'s passes {self.pending}")
        finally:
            self.pending, self.draws, self.masks = None, {}, {}


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """The seed's ``torch.ones``/``torch.zeros`` targets in the port's dtype."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


def mlp_sizes(spec: GANSpec) -> dict[str, int]:
    """``image_size``, ``hidden_size``, ``latent_size`` of an mlp-gan-shaped spec (784, 256, 64)."""
    first = spec.generator.layers[0]
    assert isinstance(first, Dense)
    return {"image_size": spec.generator.layers[4].out_features, "hidden_size": first.out_features,
            "latent_size": spec.generator.input_shape[0]}


def cgan_widths(spec: GANSpec) -> tuple[int, int, int]:
    """G's hidden widths (256, 512, 1024 for ``cgan``), which D runs in reverse."""
    dense = [layer.out_features for layer in spec.generator.layers if isinstance(layer, Dense)]
    return tuple(dense[:3])


def _p(spec: GANSpec, net: str) -> float:
    layers = spec.generator.layers if net == "G" else spec.discriminator.layers
    ps = {layer.p for layer in layers if isinstance(layer, Dropout)}
    return ps.pop() if len(ps) == 1 else float("nan")


#: Spec layer index -> the seed's module path. MLP GAN: the seed's D has no Flatten (the loop's
#: ``images.reshape(batch_size, -1)`` is the preset's D.0), so D's indices shift by one.
MLP_G_MODULES = {0: "0", 2: "2", 4: "4"}
MLP_D_MODULES = {1: "0", 3: "2", 5: "4"}
#: CGAN: EmbedConcat is ``label_emb``; the Linear layers are ``model[j]``; D.0 is ``x.view(...)``.
CGAN_G_MODULES = {0: "label_emb", 1: "model.0", 3: "model.2", 5: "model.4", 7: "model.6"}
CGAN_D_MODULES = {1: "label_emb", 2: "model.0", 5: "model.3", 8: "model.6", 11: "model.9"}
CGAN_D_DROPOUT = {4: "model.2", 7: "model.5", 10: "model.8"}  # the seed's three nn.Dropout(0.4)


class _Seed002Port(TorchPort):
    outputs = "probabilities"  # both D end in nn.Sigmoid()
    g_modules: dict[int, str] = {}
    d_modules: dict[int, str] = {}

    def module_key(self, name: str) -> str:
        modules = self.g_modules if name.startswith("G.") else self.d_modules
        return f"{modules[layer_index(name)]}.{name.rsplit('.', 1)[1]}"

    def _forward(self, net: str, *inputs: torch.Tensor) -> np.ndarray:
        with torch.no_grad():  # no BatchNorm in seed 002's nets: nothing to put back
            return self.nets[net](*inputs).numpy().astype(np.float64)

    def _reset_grad(self) -> None:
        # not in the excerpt (yunjey's): both optimisers' gradients to zero
        self.d_optimizer.zero_grad()
        self.g_optimizer.zero_grad()


class MlpGanPort(_Seed002Port):
    """Seed 002's 8.3 MLP GAN as a port of ``mlp-gan`` (module docstring)."""

    g_modules, d_modules = MLP_G_MODULES, MLP_D_MODULES

    def __init__(self, spec: GANSpec, params: Params, dtype: str) -> None:
        super().__init__(spec, params, dtype)
        sizes = mlp_sizes(spec)
        self.batch_size, self.latent_size = spec.train.batch_size, sizes["latent_size"]
        self.D, self.G = build_mlp_gan(sizes["image_size"], sizes["hidden_size"], sizes["latent_size"])
        self.D, self.G = self.D.to(device), self.G.to(device)
        self.nets = {"G": self.G, "D": self.D}
        self.load(params)  # in place of PyTorch's default init
        self.criterion = nn.BCELoss()
        self.d_optimizer = torch.optim.Adam(self.D.parameters(), lr=spec.train.optim_D.lr)
        self.g_optimizer = torch.optim.Adam(self.G.parameters(), lr=spec.train.optim_G.lr)

    def generate(self, z: np.ndarray) -> np.ndarray:
        fake_images = self._forward("G", torch.as_tensor(np.asarray(z), dtype=self.dtype))
        return fake_images.reshape(fake_images.shape[0], 1, 28, 28)  # as the seed saves them

    def discriminate(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        return self._forward("D", torch.as_tensor(x.reshape(len(x), -1), dtype=self.dtype)).reshape(len(x))

    def train_step(self, real: np.ndarray, z: np.ndarray, draws: dict[str, np.ndarray] | None = None) -> dict[str, float]:
        draws = draws or {}
        randn = Given("torch.randn noise", [torch.as_tensor(np.asarray(z), dtype=self.dtype),
                                            torch.as_tensor(draws["z_gen"], dtype=self.dtype)])
        images = torch.as_tensor(np.asarray(real), dtype=self.dtype)
        with default_dtype(self.dtype):
            d_loss, g_loss, _, _ = mlp_gan_iteration(self.D, self.G, self.criterion, self.d_optimizer,
                                                     self.g_optimizer, self._reset_grad, images, self.batch_size,
                                                     self.latent_size, randn)
        randn.done()
        return {"loss_D": d_loss.item(), "loss_G": g_loss.item()}


class CganPort(_Seed002Port):
    """Seed 002's 8.5 conditional GAN as a port of ``cgan`` (module docstring)."""

    g_modules, d_modules = CGAN_G_MODULES, CGAN_D_MODULES

    def __init__(self, spec: GANSpec, params: Params, dtype: str) -> None:
        super().__init__(spec, params, dtype)
        widths = cgan_widths(spec)
        if _p(spec, "D") != 0.4:
            raise GanSuiteError(f"impl: seed 002's Discriminator has nn.Dropout(0.4); model {spec.name!r} does not")
        self.G, self.D = Generator(widths).to(device), Discriminator(widths).to(device)
        self.nets = {"G": self.G, "D": self.D}
        self.load(params)  # in place of PyTorch's default init (nn.Embedding's N(0, 1) included)
        self.dropout = CanonicalDropout(self.D, "D", {i: self.D.get_submodule(path)
                                                     for i, path in CGAN_D_DROPOUT.items()}, self.dtype)
        self.criterion = nn.BCELoss()
        self.d_optimizer = torch.optim.Adam(self.D.parameters(), lr=spec.train.optim_D.lr)
        self.g_optimizer = torch.optim.Adam(self.G.parameters(), lr=spec.train.optim_G.lr)
        self.G.train()
        self.D.train()

    def generate(self, z: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        out = self._forward("G", torch.as_tensor(np.asarray(z), dtype=self.dtype), torch.as_tensor(labels))
        return out.reshape(out.shape[0], 1, 28, 28)  # the seed's images.unsqueeze(1)

    def discriminate(self, x: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        out = self._forward("D", torch.as_tensor(np.asarray(x), dtype=self.dtype), torch.as_tensor(labels))
        return out.reshape(len(x))

    def train_step(self, real: np.ndarray, z: np.ndarray, draws: dict[str, np.ndarray] | None = None) -> dict[str, float]:
        draws = draws or {}
        randn = Given("torch.randn noise", [torch.as_tensor(np.asarray(z), dtype=self.dtype),
                                            torch.as_tensor(draws["z_gen"], dtype=self.dtype)])
        randint = Given("torch.randint labels", [torch.as_tensor(draws["fake_labels"]),
                                                 torch.as_tensor(draws["fake_labels_gen"])], size_arg=2)
        images = torch.as_tensor(np.asarray(real), dtype=self.dtype)
        labels = torch.as_tensor(draws["labels"])
        with default_dtype(self.dtype), self.dropout.passes(passes_of(self.spec, "D"), draws):
            d_loss, g_loss = cgan_iteration(self.D, self.G, self.criterion, self.d_optimizer, self.g_optimizer,
                                            self._reset_grad, images, labels, randn, randint)
        randn.done()
        randint.done()
        return {"loss_D": d_loss.item(), "loss_G": g_loss.item()}
