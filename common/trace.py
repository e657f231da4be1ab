"""Traces: N parity-mode iterations of one backend, saved as one ``.npz`` any env can read.

Keys: ``meta`` (a JSON string: backend, versions, model, spec, seed, dtype, mode,
settings), one ``(N,)`` array per scalar in ``protocol.SCALARS``, ``param/<name>``
for the final canonical params, and ``snap/<iteration>/<name>`` for parameter
snapshots taken AFTER the given 0-based iteration (``snapshot_every``).
Only numpy and json are needed to read one (no pickle).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .files import write_npz_atomically
from .params import Params, init_params
from .protocol import SCALARS, GANProtocol, BuildOptions
from .spec import GANSpec
from .streams import Streams


@dataclass
class Trace:
    meta: dict[str, Any]
    scalars: dict[str, np.ndarray]
    params: Params
    snapshots: dict[int, Params] = field(default_factory=dict)

    @property
    def iterations(self) -> int:
        return int(len(self.scalars["loss_D"]))


def run_trace(backend: GANProtocol, spec: GANSpec, seed: int, dtype: str, iterations: int,
              snapshot_every: int = 0, params: Params | None = None, mode: str = "parity",
              after_step: Callable[[int, Any], None] | None = None, extra: dict[str, Any] | None = None) -> Trace:
    """Train ``iterations`` steps on the shared streams and record everything.

    ``after_step(iteration, state)``, if given, runs after every iteration (the comparison's
    trajectories record a parameter subsample there: common/trajectory.py). ``extra``: the build's
    ``BuildOptions.extra`` (fast mode's mixed precision: common/mixed_compare.py); noise and draws still
    come from the host."""
    streams = Streams(spec, seed)
    start = init_params(spec, seed) if params is None else params
    state = backend.build(spec, start, None, BuildOptions(dtype=dtype, mode=mode, seed=seed, extra=dict(extra or {})))
    scalars = {k: np.empty(iterations) for k in SCALARS}
    snapshots: dict[int, Params] = {}
    for batch in streams.iterate(0, iterations):
        out = backend.train_step(state, batch.real, batch.z, draws=batch.draws)
        for k, v in out.scalars().items():
            scalars[k][batch.iteration] = v
        if after_step is not None:
            after_step(batch.iteration, state)
        if snapshot_every and (batch.iteration + 1) % snapshot_every == 0:
            snapshots[batch.iteration] = backend.export_weights(state)
    final, _ = backend.export_params(state)
    meta = {
        "backend": backend.name,
        "versions": backend.versions(),
        "model": spec.name,
        "spec": spec.to_dict(),
        "seed": int(seed),
        "dtype": dtype,
        "mode": mode,
        "iterations": int(iterations),
        "settings": backend.settings(state),
    }
    return Trace(meta, scalars, final, snapshots)


def save_trace(path: str | os.PathLike, trace: Trace) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"meta": np.asarray(json.dumps(trace.meta, default=str))}
    arrays.update(trace.scalars)
    arrays.update({f"param/{k}": v for k, v in trace.params.items()})
    for it, snap in trace.snapshots.items():
        arrays.update({f"snap/{it}/{k}": v for k, v in snap.items()})
    return write_npz_atomically(path, arrays)


def load_trace(path: str | os.PathLike) -> Trace:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        scalars = {k: z[k] for k in SCALARS}
        params = {k[len("param/"):]: z[k] for k in z.files if k.startswith("param/")}
        snapshots: dict[int, Params] = {}
        for k in z.files:
            if k.startswith("snap/"):
                _, it, name = k.split("/", 2)
                snapshots.setdefault(int(it), {})[name] = z[k]
    return Trace(meta, scalars, params, dict(sorted(snapshots.items())))
