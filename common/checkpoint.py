"""Checkpoints: canonical params + Adam state + history in one safetensors file.

Any backend writes and reads the same file (canonical layout), so a checkpoint
from one framework trains on in another. Writes are atomic (temp file in the
same folder, fsync, rename, fsync the folder): a crash mid-write leaves the
previous checkpoint intact.

Metadata (strings): ``format``, ``spec`` (JSON), ``seed``, ``next_iteration``,
``backend``, ``dtype``, ``mode``, ``versions`` (JSON).
Tensors: ``param/<name>``, ``opt.<net>.*`` (see params.flatten_opt_state),
``history/<scalar>`` (per-iteration values so far).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import GanSuiteError, SpecError
from .params import OptState, Params, flatten_opt_state, param_shapes, trainable_names, unflatten_opt_state
from .spec import GANSpec

FORMAT = "gansuite-checkpoint-1"


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
    from safetensors.numpy import save

    path = Path(path)
    tensors: dict[str, np.ndarray] = {f"param/{k}": np.ascontiguousarray(v) for k, v in ckpt.params.items()}
    tensors.update({k: np.ascontiguousarray(v).reshape(np.shape(v) or (1,)) if k.endswith(".step")
                    else np.ascontiguousarray(v) for k, v in flatten_opt_state(ckpt.opt).items()})
    tensors.update({f"history/{k}": np.ascontiguousarray(v, dtype=np.float64) for k, v in ckpt.history.items()})
    metadata = {
        "format": FORMAT,
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


def load_checkpoint(path: str | os.PathLike, expect_model: str | None = None) -> Checkpoint:
    """Read and validate a checkpoint; every problem is one GanSuiteError line."""
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
    meta = {k: v for k, v in metadata.items() if k not in ("format", "spec", "seed", "next_iteration")}
    return Checkpoint(spec, params, opt, int(metadata.get("seed", 0)), int(metadata.get("next_iteration", 0)),
                      history, meta)
