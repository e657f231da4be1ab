"""Checkpoints: canonical params + Adam state + history in one safetensors file.

Any backend writes and reads the same file (canonical layout), so a checkpoint
from one framework trains on in another. Writes are atomic (temp file in the
same folder, fsync, rename, fsync the folder): a crash mid-write leaves the
previous checkpoint intact.

Metadata (strings): ``format``, ``spec`` (JSON), ``seed``, ``next_iteration``,
``backend``, ``dtype``, ``mode``, ``versions`` (JSON), and ``family``: absent or ``"gan"`` for a
GAN, ``"vae"`` for seed 002's VAE (:func:`save_vae_checkpoint`). Each loader refuses the other
family's file in one line, naming it, so a VAE checkpoint given to a GAN command (or the
reverse) fails before anything is built or written.
Tensors: ``param/<name>``, ``opt.<net>.*`` (see params.flatten_opt_state; a VAE has one
optimizer: ``opt.step``, ``opt.m.<name>``, ``opt.v.<name>``), ``history/<scalar>``
(per-iteration values so far).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import GanSuiteError, SpecError
from .params import AdamState, OptState, Params, flatten_opt_state, param_shapes, trainable_names, unflatten_opt_state
from .spec import GANSpec

FORMAT = "gansuite-checkpoint-1"
FAMILIES = ("gan", "vae")


@dataclass
class Checkpoint:
    spec: GANSpec
    params: Params
    opt: OptState
    seed: int
    next_iteration: int
    history: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)  # backend, dtype, mode, versions


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(path: str | os.PathLike, ckpt: Checkpoint) -> Path:
    tensors: dict[str, np.ndarray] = {f"param/{k}": np.ascontiguousarray(v) for k, v in ckpt.params.items()}
    tensors.update({k: np.ascontiguousarray(v).reshape(np.shape(v) or (1,)) if k.endswith(".step")
                    else np.ascontiguousarray(v) for k, v in flatten_opt_state(ckpt.opt).items()})
    return _write(path, tensors, ckpt, "gan")


def _write(path: str | os.PathLike, tensors: dict[str, np.ndarray], ckpt: Any, family: str) -> Path:
    """History and metadata added to ``tensors``, written atomically."""
    from safetensors.numpy import save

    path = Path(path)
    tensors.update({f"history/{k}": np.ascontiguousarray(v, dtype=np.float64) for k, v in ckpt.history.items()})
    metadata = {
        "format": FORMAT,
        "family": family,
        "spec": json.dumps(ckpt.spec.to_dict()),
        "seed": str(ckpt.seed),
        "next_iteration": str(ckpt.next_iteration),
        **{k: (v if isinstance(v, str) else json.dumps(v)) for k, v in ckpt.meta.items()},
    }
    blob = save(tensors, metadata=metadata)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def checkpoint_family(path: str | os.PathLike) -> str:
    """``"gan"`` or ``"vae"``: which loader a checkpoint file needs (one line if it is no checkpoint)."""
    return _read(path)[0].get("family", "gan")


def _read(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, np.ndarray], str]:
    """(metadata, tensors, the error prefix) of a gansuite checkpoint file, or one GanSuiteError line."""
    from safetensors import safe_open

    path = Path(path)
    where = f"checkpoint: {str(path)!r}"
    if not path.is_file():
        raise GanSuiteError(f"{where} does not exist")
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types for truncation/corruption
        raise GanSuiteError(f"{where} is truncated or corrupt ({type(err).__name__}: {str(err).splitlines()[0][:120]})") from None
    if metadata.get("format") != FORMAT:
        raise GanSuiteError(f"{where} is not a gansuite checkpoint (format {metadata.get('format')!r}, expected {FORMAT!r})")
    family = metadata.get("family", "gan")  # files from before the VAE have no family: GANs
    if family not in FAMILIES:
        raise GanSuiteError(f"{where} holds an unknown model family {family!r}; allowed: {', '.join(FAMILIES)}")
    return metadata, tensors, where


def _refuse_family(metadata: dict[str, str], where: str, want: str) -> None:
    family = metadata.get("family", "gan")
    if family != want:
        model = json.loads(metadata.get("spec", "{}")).get("name", "?")
        hint = "a VAE command (gansuite train/sample with a VAE model)" if family == "vae" else "a GAN command"
        raise GanSuiteError(f"{where} is a {family.upper()} checkpoint (model {model!r}), not a {want.upper()} one; "
                            f"give it to {hint}")


def load_checkpoint(path: str | os.PathLike, expect_model: str | None = None) -> Checkpoint:
    """Read and validate a GAN checkpoint; every problem is one GanSuiteError line."""
    metadata, tensors, where = _read(path)
    _refuse_family(metadata, where, "gan")
    try:
        spec = GANSpec.from_json(metadata["spec"])
    except (SpecError, KeyError) as err:
        raise GanSuiteError(f"{where} holds an invalid spec ({err})") from None
    if expect_model is not None and spec.name != expect_model:
        raise GanSuiteError(f"{where} is a {spec.name!r} checkpoint, not {expect_model!r}")
    params = {k[len("param/"):]: v for k, v in tensors.items() if k.startswith("param/")}
    shapes = param_shapes(spec)
    for name, shape in shapes.items():
        if name not in params:
            raise GanSuiteError(f"{where} lacks tensor {name!r}")
        if tuple(params[name].shape) != shape:
            raise GanSuiteError(f"{where}: tensor {name!r} has shape {tuple(params[name].shape)}, the spec needs {shape}")
    extra = sorted(set(params) - set(shapes))
    if extra:
        raise GanSuiteError(f"{where} has tensors the spec does not know: {extra[:3]}")
    params = {k: params[k] for k in shapes}  # canonical order
    opt = unflatten_opt_state({k: (v.reshape(()) if k.endswith(".step") else v)
                               for k, v in tensors.items() if k.startswith("opt.")})
    for net in ("G", "D"):
        for name in trainable_names(spec, net):
            for which in ("m", "v"):
                moments = getattr(opt[net], which)
                if name not in moments or tuple(moments[name].shape) != shapes[name]:
                    raise GanSuiteError(f"{where}: Adam state {which} of {name!r} is missing or mis-shaped")
    history = {k[len("history/"):]: v for k, v in tensors.items() if k.startswith("history/")}
    meta = {k: v for k, v in metadata.items() if k not in ("format", "family", "spec", "seed", "next_iteration")}
    return Checkpoint(spec, params, opt, int(metadata.get("seed", 0)), int(metadata.get("next_iteration", 0)),
                      history, meta)


# -- seed 002's VAE: one optimizer over all its nets --------------------------------------------


@dataclass
class VAECheckpoint:
    spec: Any  # common.vae.VAESpec (imported lazily: vae.py imports this package's siblings)
    params: Params
    opt: AdamState
    seed: int
    next_iteration: int
    history: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def save_vae_checkpoint(path: str | os.PathLike, ckpt: VAECheckpoint) -> Path:
    tensors: dict[str, np.ndarray] = {f"param/{k}": np.ascontiguousarray(v) for k, v in ckpt.params.items()}
    tensors["opt.step"] = np.asarray([ckpt.opt.step], dtype=np.int64)
    tensors.update({f"opt.m.{k}": np.ascontiguousarray(v) for k, v in ckpt.opt.m.items()})
    tensors.update({f"opt.v.{k}": np.ascontiguousarray(v) for k, v in ckpt.opt.v.items()})
    return _write(path, tensors, ckpt, "vae")


def load_vae_checkpoint(path: str | os.PathLike, expect_model: str | None = None) -> VAECheckpoint:
    """Read and validate a VAE checkpoint; every problem is one GanSuiteError line."""
    from .vae import vae_param_shapes, vae_spec_from_dict

    metadata, tensors, where = _read(path)
    _refuse_family(metadata, where, "vae")
    try:
        spec = vae_spec_from_dict(json.loads(metadata["spec"]))
    except (SpecError, KeyError, json.JSONDecodeError) as err:
        raise GanSuiteError(f"{where} holds an invalid VAE spec ({err})") from None
    if expect_model is not None and spec.name != expect_model:
        raise GanSuiteError(f"{where} is a {spec.name!r} checkpoint, not {expect_model!r}")
    shapes = vae_param_shapes(spec)
    out: dict[str, Params] = {"param/": {}, "opt.m.": {}, "opt.v.": {}}
    for prefix, got in out.items():
        for name, shape in shapes.items():
            value = tensors.get(prefix + name)
            if value is None or tuple(value.shape) != shape:
                raise GanSuiteError(f"{where}: tensor {prefix + name!r} is missing or mis-shaped (the spec needs {shape})")
            got[name] = value
    extra = sorted(k for k in tensors if k.startswith("param/") and k[len("param/"):] not in shapes)
    if extra or "opt.step" not in tensors:
        raise GanSuiteError(f"{where} has tensors the spec does not know ({extra[:3]}) or no Adam step")
    history = {k[len("history/"):]: v for k, v in tensors.items() if k.startswith("history/")}
    meta = {k: v for k, v in metadata.items() if k not in ("format", "family", "spec", "seed", "next_iteration")}
    opt = AdamState(int(tensors["opt.step"].reshape(-1)[0]), out["opt.m."], out["opt.v."])
    return VAECheckpoint(spec, out["param/"], opt, int(metadata.get("seed", 0)),
                         int(metadata.get("next_iteration", 0)), history, meta)
