"""The random draws of one iteration besides the batch and z: labels, the G step's fresh noise and
dropout masks, from common/ so every backend trains on the same numbers (parity mode).

``iteration_draws`` returns a flat dict of float64 / int64 arrays, canonical layout:

=========================  ==================  ==================================================
key                        shape               when
=========================  ==================  ==================================================
``labels``                 ``(B,)`` int64      conditional GAN: the real batch's labels (dataset)
``fake_labels``            ``(Bz,)`` int64     conditional: the D step's fake labels
                                               (seed 002: ``torch.randint(0, 10, (batch_size,))``)
``z_gen``                  ``(Bz, *latent)``   ``train.g_noise = "fresh"``: the G step's new z
``fake_labels_gen``        ``(Bz,)`` int64     conditional and fresh: the G step's new labels
``mask/<pass>/<net>.<i>``  ``(rows, *shape)``  every Dropout layer i of net G or D in each pass
                                               that runs it: ``keep / (1 - p)``, keep ~ Bernoulli(1-p)
=========================  ==================  ==================================================

Passes (:data:`PASSES`): D runs on ``real``, on ``fake`` (the D step) and on ``gen`` (the G
step); G runs in ``fake`` and, with fresh noise, again in ``gen``. ``B`` is the real batch's rows,
``Bz`` the noise rows (``train.noise_rows``). The mask is stored pre-scaled, as PyTorch's
``F.dropout`` multiplies ``x * (keep / (1 - p))``: every backend multiplies by this one array.
"""

from __future__ import annotations

import numpy as np

from .errors import GanSuiteError
from .spec import Dropout, GANSpec, NetSpec

STREAM_LABELS = 6
STREAM_NOISE_GEN = 7
STREAM_DROPOUT = 8

PASSES = ("real", "fake", "gen")
_NET_IDS = {"G": 0, "D": 1}

Draws = dict[str, np.ndarray]


def _rng(*words: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(w) for w in words])))


def passes_of(spec: GANSpec, net: str) -> tuple[str, ...]:
    """The passes in which ``net`` runs in one iteration (the keys of its dropout masks)."""
    if net == "D":
        return PASSES
    return ("fake", "gen") if spec.train.g_noise == "fresh" else ("fake",)


def mask_key(pass_name: str, net: str, index: int) -> str:
    return f"mask/{pass_name}/{net}.{index}"


def pass_masks(draws: Draws, pass_name: str, net: str) -> dict[int, np.ndarray]:
    """Layer index -> mask of net ``net`` in pass ``pass_name`` (empty if it has no dropout)."""
    prefix = f"mask/{pass_name}/{net}."
    return {int(k[len(prefix):]): v for k, v in draws.items() if k.startswith(prefix)}


def _dropout_layers(net: NetSpec) -> list[tuple[int, Dropout, tuple[int, ...]]]:
    shapes = [net.input_shape, *net.shapes()]
    return [(i, layer, shapes[i]) for i, layer in enumerate(net.layers) if isinstance(layer, Dropout)]


def raise_missing_labels(spec: GANSpec) -> None:
    raise GanSuiteError(f"data: model {spec.name!r} is conditional but data kind {spec.data.kind!r} has "
                        "no labels; allowed: glyphs, or idx with its labels file")


def iteration_draws(spec: GANSpec, seed: int, iteration: int, real_labels: np.ndarray | None,
                    real_rows: int) -> Draws:
    """Every draw of iteration ``iteration`` (see the module docstring); empty for a plain GAN."""
    out: Draws = {}
    rows = spec.train.noise_rows(real_rows)
    fresh = spec.train.g_noise == "fresh"
    if spec.conditional:
        if real_labels is None:
            raise_missing_labels(spec)
        out["labels"] = np.asarray(real_labels, np.int64)
        out["fake_labels"] = _rng(seed, STREAM_LABELS, iteration, 0).integers(0, spec.num_classes, rows)
        if fresh:
            out["fake_labels_gen"] = _rng(seed, STREAM_LABELS, iteration, 1).integers(0, spec.num_classes, rows)
    if fresh:
        out["z_gen"] = _rng(seed, STREAM_NOISE_GEN, iteration).standard_normal((rows, *spec.latent_shape))
    for net, net_spec in (("G", spec.generator), ("D", spec.discriminator)):
        for i, layer, shape in _dropout_layers(net_spec):
            for pass_id, pass_name in enumerate(PASSES):
                if pass_name not in passes_of(spec, net):
                    continue
                n = real_rows if pass_name == "real" else rows
                keep = _rng(seed, STREAM_DROPOUT, iteration, pass_id, _NET_IDS[net], i).random((n, *shape)) >= layer.p
                out[mask_key(pass_name, net, i)] = keep / (1.0 - layer.p)
    return out


def cut_draws(draws: Draws, real_rows: int, noise_rows: int) -> Draws:
    """The draws of a batch cut to its first ``real_rows`` examples and ``noise_rows`` noise rows."""
    return {k: v[:real_rows] if k == "labels" or k.startswith("mask/real/") else v[:noise_rows]
            for k, v in draws.items()}


def check_labels(labels: np.ndarray | None, spec: GANSpec, rows: int, field: str = "labels") -> np.ndarray | None:
    """A conditional model's labels: present, ``rows`` of them, integers in 0..num_classes-1.
    Labels given to an unconditional model are refused too (they would be silently ignored)."""
    if not spec.conditional:
        if labels is not None:
            raise GanSuiteError(f"{field}: model {spec.name!r} is not conditional; give no labels")
        return None
    k = spec.num_classes
    if labels is None:
        raise GanSuiteError(f"{field}: model {spec.name!r} is conditional; give one label in 0..{k - 1} per row")
    arr = np.asarray(labels)
    if arr.shape != (rows,) or not np.issubdtype(arr.dtype, np.integer) or arr.min(initial=0) < 0 \
            or arr.max(initial=0) >= k:
        raise GanSuiteError(f"{field}: must be {rows} integers in 0..{k - 1}; got "
                            f"{arr.dtype} of shape {arr.shape}" + (f", values {arr.min()}..{arr.max()}" if arr.size else ""))
    return arr.astype(np.int64)


def check_draws(spec: GANSpec, draws: Draws | None, real_rows: int | None, noise_rows: int) -> Draws:
    """The draws an iteration of ``spec`` needs, present and valid (one-line error naming the missing
    one); ``real_rows`` None checks the G step's only."""
    draws = draws or {}
    need = []
    if spec.conditional:
        need += ["fake_labels"] + (["labels"] if real_rows is not None else [])
        need += ["fake_labels_gen"] if spec.train.g_noise == "fresh" else []
    need += ["z_gen"] if spec.train.g_noise == "fresh" else []
    missing = [k for k in need if k not in draws]
    if spec.has_dropout and not any(k.startswith("mask/") for k in draws):
        missing.append("mask/... (dropout masks)")
    if missing:
        raise GanSuiteError(f"draws: model {spec.name!r} needs {', '.join(missing)} from common/draws.py "
                            "(Streams.batch(i).draws)")
    if real_rows is not None and "labels" in draws:
        check_labels(draws["labels"], spec, real_rows, "draws.labels")
    for k in ("fake_labels", "fake_labels_gen"):
        if k in draws:
            check_labels(draws[k], spec, noise_rows, f"draws.{k}")
    return draws
