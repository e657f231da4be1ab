"""Seed 002's variational autoencoder (section 8.1) as data, and its float64 NumPy oracle.

The chapter's model, transcribed (``image_size=784, h_dim=400, z_dim=20``)::

    fc1 = Linear(784, 400); fc2 = Linear(400, 20); fc3 = Linear(400, 20)   # encode
    fc4 = Linear(20, 400);  fc5 = Linear(400, 784)                          # decode
    h = relu(fc1(x)); mu, log_var = fc2(h), fc3(h)
    std = exp(log_var / 2); eps = randn_like(std); z = mu + eps * std
    x_reconst = sigmoid(fc5(relu(fc4(z))))
    reconst_loss = F.binary_cross_entropy(x_reconst, x, size_average=False)   # a SUM, logs clamped at -100
    kl_div = -0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp())
    loss = reconst_loss + kl_div                                              # not divided by the batch
    optimizer.zero_grad(); loss.backward(); optimizer.step()                 # Adam(lr=1e-3)

Canonical parameters (PyTorch's ``(out, in)`` Linear layout, as common/params.py), four nets:

=========  ============================  ===============================  ==================
net        what                          names (preset)                   the seed's
=========  ============================  ===============================  ==================
``E``      encoder trunk, x -> h         ``E.0.weight``, ``E.0.bias``      ``fc1``
``mu``     mean head, h -> mu            ``mu.0.weight``, ``mu.0.bias``    ``fc2``
``logvar`` log-variance head, h -> lv    ``logvar.0.weight/bias``          ``fc3``
``Dec``    decoder, z -> x_reconst       ``Dec.0.*`` and ``Dec.2.*``       ``fc4``, ``fc5``
=========  ============================  ===============================  ==================

``<net>.<layer index>.<tensor>``, the index into that net's layer list (ReLU/Sigmoid count, as in
``nn.Sequential``). Canonical order E, mu, logvar, Dec is the seed's ``model.parameters()`` order
(fc1..fc5), and the order ``init_vae_params`` draws in. :data:`SEED_002_NAMES` maps them to the
seed's ``state_dict`` keys.

Randomness: parameters from the params stream of common/params.py (``STREAM_PARAMS``, the same
``draw`` per init scheme, so a backend gets the same numbers); the batch order from the order
stream of common/streams.py (the same permutation per epoch as ``Streams``); ``eps`` (the seed's
``torch.randn_like(std)``) from its own stream :data:`STREAM_VAE_EPS`.

Data: the suite's images are in [-1, 1] (common/data.py: ``(u/255 - 0.5)/0.5``); the seed's
``transforms.ToTensor()`` gives [0, 1]: see :func:`to_unit_range`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from . import oracle_layers as L
from .data import Dataset
from .errors import GanSuiteError, SpecError
from .oracle import adam_update, net_backward, net_forward
from .params import STREAM_PARAMS, AdamState, Params, cast_params, draw
from .spec import (AdamSpec, DataSpec, Dense, Init, LeakyReLU, NetInit, NetSpec, ReLU, Sigmoid, Tanh,
                   _bool, _choice, _positive_int, _prod, _to_plain)
from .streams import STREAM_ORDER

#: The VAE's eps stream (SeedSequence word after the run seed). Taken elsewhere: 1 params,
#: 2 data, 3 order, 4 noise, 5 fixed noise, 6 labels (and the CLI's sample z), 7 fresh G noise
#: (and the digit classifier), 8 dropout masks.
STREAM_VAE_EPS = 9
#: The training loop's fixed draws (common/vae_training.py): the sampled grid's z and the
#: evaluation's eps, the same in every backend and every run with that seed.
STREAM_VAE_FIXED = 10

#: What one VAE iteration reports, the seed's three ``.item()`` values (summed over the batch).
VAE_SCALARS = ("reconstruction", "kl", "total")

VAE_NETS = ("E", "mu", "logvar", "Dec")
RECONSTRUCTIONS = ("bce_sum",)
KL_REDUCTIONS = ("sum",)
#: Layer kinds a VAE net may hold (no BatchNorm, Dropout or label embedding: nothing here feeds them).
VAE_LAYERS = (Dense, ReLU, LeakyReLU, Tanh, Sigmoid)

#: Canonical name -> seed 002's ``state_dict`` key, for the preset's topology (one hidden layer
#: each side): ``VAE.fc1`` .. ``VAE.fc5``.
SEED_002_NAMES = {
    f"{net}.{i}.{t}": f"{fc}.{t}"
    for (net, i), fc in {("E", 0): "fc1", ("mu", 0): "fc2", ("logvar", 0): "fc3", ("Dec", 0): "fc4",
                         ("Dec", 2): "fc5"}.items()
    for t in ("weight", "bias")
}

#: Seed 002 leaves every nn.Linear at PyTorch's default init (kaiming-uniform(a=sqrt 5) weights,
#: U(+-1/sqrt(fan_in)) biases).
TORCH_DEFAULT_INIT = NetInit(weight=Init("torch_default"), bias=Init("torch_default"))


# ---------------------------------------------------------------------------
# the spec


@dataclass(frozen=True)
class VAELossSpec:
    """``reconstruction``: ``"bce_sum"``, PyTorch's ``binary_cross_entropy(x_reconst, x,
    size_average=False)`` (each log clamped at -100, summed over pixels and batch); ``kl``:
    ``"sum"``, ``-0.5 * sum(1 + log_var - mu^2 - exp(log_var))`` over latent units and batch.
    The total is their sum, not divided by the batch (the seed's)."""

    reconstruction: str = "bce_sum"
    kl: str = "sum"

    def __post_init__(self) -> None:
        _choice("reconstruction", self.reconstruction, RECONSTRUCTIONS)
        _choice("kl", self.kl, KL_REDUCTIONS)


@dataclass(frozen=True)
class VAETrainSpec:
    """One optimizer over all four nets (the seed's ``Adam(model.parameters())``); the data order
    as the GANs' ``TrainSpec``: a permutation per epoch (``shuffle``), the last batch kept short
    unless ``drop_last``."""

    batch_size: int
    epochs: int
    optim: AdamSpec
    drop_last: bool = False
    shuffle: bool = True

    def __post_init__(self) -> None:
        _positive_int("batch_size", self.batch_size)
        _positive_int("epochs", self.epochs)
        if not isinstance(self.optim, AdamSpec):
            raise SpecError("optim", f"must be an AdamSpec, got {type(self.optim).__name__}")
        _bool("drop_last", self.drop_last)
        _bool("shuffle", self.shuffle)


@dataclass(frozen=True)
class VAESpec:
    """A VAE: encoder trunk ``encoder`` (flat x -> h), two ``Dense(h, latent)`` heads (mu, log_var,
    derived from ``latent``), the reparameterisation, and ``decoder`` (z -> x_reconst, ending in a
    Sigmoid: the BCE is on probabilities). ``init`` applies to every net."""

    name: str
    source: str
    encoder: NetSpec
    latent: int
    decoder: NetSpec
    loss: VAELossSpec
    train: VAETrainSpec
    init: NetInit
    data: DataSpec
    model: ClassVar[str] = "vae"

    def __post_init__(self) -> None:
        if not self.name:
            raise SpecError("name", "must not be empty")
        _positive_int("latent", self.latent)
        for where, net in (("encoder", self.encoder), ("decoder", self.decoder)):
            if not isinstance(net, NetSpec):
                raise SpecError(where, f"must be a NetSpec, got {type(net).__name__}")
            for i, layer in enumerate(net.layers):
                if not isinstance(layer, VAE_LAYERS):
                    raise SpecError(f"{where}.layers[{i}]", f"a {getattr(layer, 'kind', type(layer).__name__)} layer is not supported in a VAE; "
                                    f"allowed: {', '.join(c.kind for c in VAE_LAYERS)}")
        if len(self.encoder.input_shape) != 1:
            raise SpecError("encoder.input_shape", f"must be flat (the seed's x.view(-1, image_size)), "
                            f"got {self.encoder.input_shape}")
        if len(self.encoder.output_shape) != 1:
            raise SpecError("encoder.layers", f"must end flat, got shape {self.encoder.output_shape}")
        if self.decoder.input_shape != (self.latent,):
            raise SpecError("decoder.input_shape", f"is {self.decoder.input_shape} but latent is {self.latent}")
        if not isinstance(self.decoder.layers[-1], Sigmoid):
            raise SpecError("decoder.layers", f"must end in a sigmoid (loss.reconstruction {self.loss.reconstruction!r} "
                            f"takes probabilities), ends in {self.decoder.layers[-1].kind}")
        if self.decoder.output_shape != self.encoder.input_shape:
            raise SpecError("decoder.layers", f"output {self.decoder.output_shape} but the encoder takes "
                            f"{self.encoder.input_shape}")
        if self.data.kind == "gaussian":
            raise SpecError("data.kind", "a VAE reconstructs images; allowed: shapes, glyphs, idx, image_folder")
        features = _prod(self.data.example_shape())
        if features != self.features:
            raise SpecError("data", f"examples have shape {self.data.example_shape()} ({features} values) but the "
                            f"encoder takes {self.features}")

    @property
    def features(self) -> int:
        """Values per flattened example (784 for MNIST)."""
        return self.encoder.input_shape[0]

    @property
    def hidden(self) -> int:
        """Width of the encoder's output h, the heads' input."""
        return self.encoder.output_shape[0]

    def head(self) -> NetSpec:
        """The mu head and the log_var head, each: ``Dense(hidden, latent)``."""
        return NetSpec((self.hidden,), (Dense(self.hidden, self.latent),))

    def net(self, name: str) -> NetSpec:
        if name == "E":
            return self.encoder
        if name in ("mu", "logvar"):
            return self.head()
        if name == "Dec":
            return self.decoder
        raise GanSuiteError(f"net: unknown VAE net {name!r}; allowed: {', '.join(VAE_NETS)}")

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, **_to_plain(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @staticmethod
    def from_dict(d: Any) -> "VAESpec":
        return vae_spec_from_dict(d)


def _vae(name: str, source: str, features: int, hidden: int, latent: int, batch_size: int, epochs: int,
         data: DataSpec) -> VAESpec:
    return VAESpec(
        name=name, source=source,
        encoder=NetSpec((features,), (Dense(features, hidden), ReLU())),
        latent=latent,
        decoder=NetSpec((latent,), (Dense(latent, hidden), ReLU(), Dense(hidden, features), Sigmoid())),
        loss=VAELossSpec("bce_sum", "sum"),
        train=VAETrainSpec(batch_size=batch_size, epochs=epochs, optim=AdamSpec(lr=1e-3)),
        init=TORCH_DEFAULT_INIT,
        data=data)


def vae_preset() -> VAESpec:
    """Seed 002 (/work/shared/seeds/002_6c513667f1584e7e.txt), 8.1.3: ``VAE(image_size=784,
    h_dim=400, z_dim=20)``; ``num_epochs = 30, batch_size = 128, learning_rate = 0.001``;
    ``torch.optim.Adam(model.parameters(), lr=learning_rate)`` (betas, eps PyTorch's defaults);
    ``F.binary_cross_entropy(x_reconst, x, size_average=False)`` + the summed KL; every Linear at
    PyTorch's default init; MNIST through ``transforms.ToTensor()`` ([0, 1]), ``shuffle=True``.

    Data: the offline default is the suite's 28x28 glyph digits (10,000, as the seed-002 GAN
    presets); ``data.kind=idx`` with MNIST's ``train`` split is the seed's 60,000 images."""
    return _vae("vae", "seed 002, 8.1: the VAE (fc1..fc5, reparameterize, BCE sum + KL sum, Adam 1e-3)",
                784, 400, 20, 128, 30, DataSpec(kind="glyphs", n_examples=10000, image_size=28, channels=1))


def vae_tiny_preset() -> VAESpec:
    """The seed-002 VAE at test size: 784-32-4, batch 16, 2 epochs of 256 glyph digits."""
    return _vae("vae-tiny", "seed 002, 8.1 at test size (784-32-4)", 784, 32, 4, 16, 2,
                DataSpec(kind="glyphs", n_examples=256, image_size=28, channels=1))


#: The VAE presets (the GANs' are common/presets.PRESETS; ``gansuite train --model`` takes both).
VAE_PRESETS = {"vae": vae_preset, "vae-tiny": vae_tiny_preset}


def vae_spec_from_dict(d: Any) -> VAESpec:
    """A :meth:`VAESpec.to_dict` back into a spec (a checkpoint's ``spec``), validated as built;
    an unknown or missing key is a one-line SpecError naming it."""
    from .spec import _from_plain

    if not isinstance(d, dict):
        raise SpecError("spec", f"must be a table/object, got {type(d).__name__}")
    d = dict(d)
    if d.pop("model", "vae") != "vae":
        raise SpecError("model", "is not a VAE spec; allowed: vae")
    nested = {"encoder": NetSpec, "decoder": NetSpec, "loss": VAELossSpec, "init": NetInit, "data": DataSpec}
    known = {"name", "source", "latent", "train", *nested}
    unknown = sorted(set(d) - known)
    if unknown:
        raise SpecError("spec", f"unknown key {unknown[0]!r}; allowed: {', '.join(sorted(known))}")
    kwargs = {k: (_from_plain(nested[k], v, k) if k in nested else v) for k, v in d.items() if k != "train"}
    train = dict(d.get("train") or {})
    if "optim" in train:
        train["optim"] = _from_plain(AdamSpec, train["optim"], "train.optim")
    try:
        kwargs["train"] = VAETrainSpec(**train)
        return VAESpec(**kwargs)
    except TypeError as err:  # a required key is missing
        raise SpecError("spec", str(err).split(") ", 1)[-1].replace("__init__() ", "")) from None


# ---------------------------------------------------------------------------
# parameters


def vae_param_shapes(spec: VAESpec) -> dict[str, tuple[int, ...]]:
    """Every canonical tensor name and shape, in canonical order (E, mu, logvar, Dec)."""
    out: dict[str, tuple[int, ...]] = {}
    for net in VAE_NETS:
        for i, layer in enumerate(spec.net(net).layers):
            if isinstance(layer, Dense):
                out[f"{net}.{i}.weight"] = (layer.out_features, layer.in_features)
                if layer.bias:
                    out[f"{net}.{i}.bias"] = (layer.out_features,)
    return out


def init_vae_params(spec: VAESpec, seed: int, dtype: str | np.dtype = "float64") -> Params:
    """Draw every tensor in canonical order from ``SeedSequence([seed, STREAM_PARAMS])`` (numpy
    PCG64, float64) with common/params.py's ``draw``, then cast to ``dtype``."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), STREAM_PARAMS])))
    out: Params = {}
    for name, shape in vae_param_shapes(spec).items():
        net, i, kind = name.split(".")
        layer = spec.net(net).layers[int(i)]
        out[name] = draw(rng, spec.init.weight if kind == "weight" else spec.init.bias, shape, layer, kind)
    return cast_params(out, dtype)


# ---------------------------------------------------------------------------
# data and randomness


def to_unit_range(x: np.ndarray) -> np.ndarray:
    """The suite's [-1, 1] images (common/data.py) as the seed's ``ToTensor()`` [0, 1] pixels:
    ``(x + 1) * 0.5`` in float64.

    For data.py's ``x = (u/255 - 0.5)/0.5`` of a uint8 pixel ``u`` this gives ``fl(u/255)`` (the
    float64 nearest u/255) exactly for ``u >= 64`` (``u/255 - 0.5`` is then exact, Sterbenz), and
    for 40 of the values ``u < 64`` that plus or minus ``2**-55`` = 2.8e-17 (half an ulp of the
    rounded subtraction; at most 3.6e-15 relative, at u = 1). Rounded to float32 it is
    ToTensor's value ``float32(u) / 255`` for all 256 pixel values (tests/test_oracle_vae.py checks
    both). Apply it in float64 and cast afterwards, so every backend feeds the same bits."""
    return (np.asarray(x, np.float64) + 1.0) * 0.5


def _rng(*words: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(w) for w in words])))


def vae_eps(spec: VAESpec, seed: int, iteration: int, rows: int) -> np.ndarray:
    """The seed's ``eps = torch.randn_like(std)`` of iteration ``iteration``: standard normal float64
    ``(rows, latent)`` from ``SeedSequence([seed, STREAM_VAE_EPS, iteration])``; ``rows`` is that
    iteration's batch rows (the last batch may be short, as ``std`` is)."""
    _positive_int("rows", rows)
    return _rng(seed, STREAM_VAE_EPS, iteration).standard_normal((int(rows), spec.latent))


def vae_fixed_draws(spec: VAESpec, seed: int, n: int) -> dict[str, np.ndarray]:
    """``{"z", "eps"}``, each standard normal float64 ``(n, latent)`` from
    ``SeedSequence([seed, STREAM_VAE_FIXED])``: the seed's ``z = torch.randn(batch_size, z_dim)``
    of the sampled grid, and the eps of the training loop's evaluation."""
    _positive_int("n", n)
    rng = _rng(seed, STREAM_VAE_FIXED)
    return {"z": rng.standard_normal((int(n), spec.latent)), "eps": rng.standard_normal((int(n), spec.latent))}


def vae_iterations_per_epoch(spec: VAESpec, n: int) -> int:
    bs = spec.train.batch_size
    per = n // bs if spec.train.drop_last else -(-n // bs)
    if per == 0:
        raise SpecError("train.batch_size", f"{bs} exceeds the dataset size {n} with drop_last=true")
    return per


def vae_indices(spec: VAESpec, seed: int, iteration: int, n: int) -> np.ndarray:
    """Example indices of iteration ``iteration``: the same per-epoch permutation as
    ``Streams.permutation`` (``SeedSequence([seed, STREAM_ORDER, epoch])``), or the dataset order
    without ``train.shuffle``; ``batch_size`` at a time, the last batch short unless drop_last."""
    epoch, k = divmod(int(iteration), vae_iterations_per_epoch(spec, n))
    order = _rng(seed, STREAM_ORDER, epoch).permutation(n) if spec.train.shuffle else np.arange(n)
    bs = spec.train.batch_size
    return order[k * bs:(k + 1) * bs]


def vae_batch(spec: VAESpec, dataset: Dataset, seed: int, iteration: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, eps) of one iteration: x ``(B, features)`` float64 in [0, 1] (``to_unit_range`` of the
    suite's [-1, 1] batch, flattened C-order as ``x.view(-1, image_size)``), eps ``(B, latent)``."""
    x = to_unit_range(dataset.get(vae_indices(spec, seed, iteration, dataset.n)))
    x = x.reshape(x.shape[0], -1)
    return x, vae_eps(spec, seed, iteration, x.shape[0])


# ---------------------------------------------------------------------------
# the oracle (float64, hand-written backward)


def check_vae_inputs(spec: VAESpec, x: np.ndarray, eps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x`` as ``(B, features)`` (images are flattened C-order, the seed's ``x.view(-1, 784)``) and
    ``eps`` as ``(B, latent)``, both float64; a one-line error otherwise."""
    x = np.asarray(x, np.float64)
    if x.ndim < 2 or _prod(x.shape[1:]) != spec.features:
        raise GanSuiteError(f"x: must be (batch, {spec.features}) or (batch, *{spec.data.example_shape()}); "
                            f"got shape {x.shape}")
    x = x.reshape(x.shape[0], spec.features)
    eps = np.asarray(eps, np.float64)
    if eps.shape != (x.shape[0], spec.latent):
        raise GanSuiteError(f"eps: must have shape {(x.shape[0], spec.latent)} (one row per example), "
                            f"got {eps.shape}")
    return x, eps


def vae_forward(params: Params, spec: VAESpec, x: np.ndarray, eps: np.ndarray) -> dict[str, Any]:
    """The seed's ``forward`` with ``eps`` given: a dict of float64 arrays ``x`` (flattened),
    ``mu``, ``log_var``, ``std``, ``z``, ``x_reconst``, plus ``runs`` (net -> the forward caches
    :func:`vae_backward` reuses). Operations in the seed's order: ``std = exp(log_var / 2)``,
    ``z = mu + eps * std``."""
    x, eps = check_vae_inputs(spec, x, eps)
    h, run_e = net_forward(spec.encoder, params, "E", x)
    mu, run_mu = net_forward(spec.head(), params, "mu", h)
    log_var, run_lv = net_forward(spec.head(), params, "logvar", h)
    std = np.exp(log_var / 2)
    z = mu + eps * std
    x_reconst, run_dec = net_forward(spec.decoder, params, "Dec", z)
    return {"x": x, "eps": eps, "mu": mu, "log_var": log_var, "std": std, "z": z, "x_reconst": x_reconst,
            "runs": {"E": run_e, "mu": run_mu, "logvar": run_lv, "Dec": run_dec}}


def _kl_terms(mu: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    return 1 + log_var - mu**2 - np.exp(log_var)


def vae_loss(spec: VAESpec, out: dict[str, Any], x: np.ndarray | None = None) -> tuple[float, float, float]:
    """(reconstruction, kl, total) of a :func:`vae_forward` result, the seed's: ``reconst_loss =
    F.binary_cross_entropy(x_reconst, x, size_average=False)`` (each log clamped at -100, the sum
    over batch and pixels), ``kl_div = -0.5 * sum(1 + log_var - mu^2 - exp(log_var))``,
    ``total = reconst_loss + kl_div``. ``x`` defaults to the forward's own input."""
    x = out["x"] if x is None else np.asarray(x, np.float64).reshape(out["x_reconst"].shape)
    reconstruction, _ = L.bce_probabilities(out["x_reconst"], x, "sum")
    kl = float(-0.5 * np.sum(_kl_terms(out["mu"], out["log_var"])))
    return reconstruction, kl, reconstruction + kl


def vae_backward(params: Params, spec: VAESpec, x: np.ndarray, eps: np.ndarray,
                 out: dict[str, Any] | None = None) -> Params:
    """d total / d every parameter, by hand (``out``: a :func:`vae_forward` of the same inputs, or
    None to run it). With R the BCE sum and K the KL:

    * dR/dx_reconst = ``(p - x) / max(p (1 - p), 1e-12)`` (PyTorch's BCE backward), then back
      through the decoder to dR/dz;
    * ``z = mu + eps * std``, ``std = exp(log_var / 2)``: dmu = dz, dlog_var = dz * eps * std / 2;
    * dK/dmu = mu, dK/dlog_var = -0.5 (1 - exp(log_var));
    * both heads back to h (their input gradients summed), then through the encoder."""
    if out is None:
        out = vae_forward(params, spec, x, eps)
    x, eps = check_vae_inputs(spec, x, eps)
    runs, mu, log_var, std = out["runs"], out["mu"], out["log_var"], out["std"]
    _, d_reconst = L.bce_probabilities(out["x_reconst"], x, "sum")
    dz, grads = net_backward(spec.decoder, params, "Dec", runs["Dec"], d_reconst)
    d_mu = dz + mu
    d_log_var = dz * eps * std / 2 - 0.5 * (1 - np.exp(log_var))
    dh_mu, g_mu = net_backward(spec.head(), params, "mu", runs["mu"], d_mu)
    dh_lv, g_lv = net_backward(spec.head(), params, "logvar", runs["logvar"], d_log_var)
    _, g_e = net_backward(spec.encoder, params, "E", runs["E"], dh_mu + dh_lv)
    grads = {**g_e, **g_mu, **g_lv, **grads}
    return {name: grads[name] for name in vae_param_shapes(spec)}


@dataclass
class VAEState:
    """The oracle's VAE: float64 params and one Adam state for all of them (one optimizer)."""

    spec: VAESpec
    params: Params
    opt: AdamState = field(default_factory=AdamState)


def vae_state(spec: VAESpec, params: Params, opt: AdamState | None = None) -> VAEState:
    """A state holding float64 copies of ``params`` (and of ``opt``, or zero moments at step 0)."""
    shapes = vae_param_shapes(spec)
    missing = [k for k in shapes if k not in params]
    if missing:
        raise GanSuiteError(f"params: missing {', '.join(missing)} (vae_param_shapes names every tensor)")
    p = {k: np.array(params[k], dtype=np.float64) for k in shapes}
    for k, shape in shapes.items():
        if p[k].shape != shape:
            raise GanSuiteError(f"params.{k}: must have shape {shape}, got {p[k].shape}")
    if opt is None:
        opt = AdamState(0, {k: np.zeros(s) for k, s in shapes.items()}, {k: np.zeros(s) for k, s in shapes.items()})
    else:
        opt = AdamState(int(opt.step), {k: np.array(v, np.float64) for k, v in opt.m.items()},
                        {k: np.array(v, np.float64) for k, v in opt.v.items()})
    return VAEState(spec, p, opt)


@dataclass(frozen=True)
class VAEStepOutput:
    """Losses at the parameters BEFORE the step (what the seed's ``loss.item()`` reports)."""

    reconstruction: float
    kl: float
    total: float
    grads: Params | None = None


def vae_step(state: VAEState, x: np.ndarray, eps: np.ndarray, with_grads: bool = False) -> VAEStepOutput:
    """One iteration of the seed's loop: forward, loss, ``optimizer.zero_grad()`` (fresh
    gradients), ``loss.backward()``, ``optimizer.step()`` (Adam in ``train.optim``'s form, one
    step counter for every parameter)."""
    spec = state.spec
    out = vae_forward(state.params, spec, x, eps)
    reconstruction, kl, total = vae_loss(spec, out)
    grads = vae_backward(state.params, spec, x, eps, out)
    adam, cfg = state.opt, spec.train.optim
    adam.step += 1
    for name in vae_param_shapes(spec):
        state.params[name], adam.m[name], adam.v[name] = adam_update(
            state.params[name], grads[name], adam.m[name], adam.v[name], adam.step, cfg)
    return VAEStepOutput(reconstruction, kl, total, grads if with_grads else None)
