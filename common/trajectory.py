"""Trajectory maths of the comparison: what is recorded per iteration, and how two runs are compared.

A trajectory is :func:`common.trace.run_trace` on the shared streams with, after every
iteration, a fixed subsample of every canonical tensor recorded (:func:`run_trajectory`).
:func:`trajectory_error` turns two trajectories into a per-iteration relative error, and
:func:`divergence_iteration` finds where it first passes a threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .params import Params, param_shapes
from .protocol import SCALARS, GANProtocol
from .spec import GANSpec
from .trace import run_trace

SUBSAMPLE_PER_TENSOR = 256  # trajectory parameter error is measured on these entries of every tensor
GAUSSIAN_FULL_RUN = 2500  # d2l's 20 epochs of 125 batches
DCGAN_ITERATIONS = 3  # the float64 oracle's cost bounds the DCGAN trajectories (CI runs all six presets)
#: Seed 002's VAE (common/vae_compare.py): the first epoch's 32 batches of 8 and 8 more, so the
#: second epoch's permutation is reached; the oracle needs well under a second per iteration.
VAE_TRAJECTORY = 40


def trajectory_iterations(model: str) -> int:
    """Iterations of a model's comparison trajectory: the Gaussian GANs' full run; the VAE 40;
    DCGANs and seed 002's MLP GANs 3."""
    if model == "vae":
        return VAE_TRAJECTORY
    return GAUSSIAN_FULL_RUN if model.startswith("gaussian") else DCGAN_ITERATIONS


def subsample_indices(spec: GANSpec, seed: int = 0) -> dict[str, np.ndarray]:
    """A fixed set of flat indices per tensor (all entries of small tensors)."""
    return subsample_indices_of(param_shapes(spec), seed)


def subsample_indices_of(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    """:func:`subsample_indices` for any model family's shape table (name -> shape, canonical order)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        out[name] = np.arange(size) if size <= SUBSAMPLE_PER_TENSOR else np.sort(
            rng.choice(size, SUBSAMPLE_PER_TENSOR, replace=False))
    return out


def subsample(params: Params, idx: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(params[k], np.float64).reshape(-1)[i] for k, i in idx.items()])


def run_trajectory(backend: GANProtocol, spec: GANSpec, dtype: str, iterations: int, seed: int = 0,
                   mode: str = "parity", extra: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Per-iteration scalars and parameter subsample (after each iteration) on the shared streams
    (host-fed noise and draws in either ``mode``; ``extra``: the build's options, run_trace)."""
    idx = subsample_indices(spec)
    params = np.empty((iterations, sum(len(i) for i in idx.values())))

    def record(iteration: int, state: Any) -> None:
        params[iteration] = subsample(backend.export_weights(state), idx)

    trace = run_trace(backend, spec, seed, dtype, iterations, mode=mode, after_step=record, extra=extra)
    scalars = np.stack([trace.scalars[k] for k in SCALARS], axis=1)
    sizes = np.array([len(i) for i in idx.values()])
    return {"scalars": scalars, "params": params, "tensor_sizes": sizes, "tensor_names": np.array(list(idx))}


def trajectory_error(traj: dict[str, np.ndarray], ref: dict[str, np.ndarray], part: str = "all") -> np.ndarray:
    """Per-iteration relative error: the worst of the two losses (relative) and of every tensor's
    subsample (max abs error over the tensor's scale in the reference); ``part`` "losses" or
    "params" for one of the two. Both runs are cut to the shorter one."""
    n = min(len(traj["scalars"]), len(ref["scalars"]))
    # a GAN's two losses; a VAE's trajectory names its own columns (reconstruction, KL, total)
    loss_cols = (list(ref["loss_columns"]) if "loss_columns" in ref
                 else [SCALARS.index("loss_D"), SCALARS.index("loss_G")])
    a, r = traj["scalars"][:n, loss_cols], ref["scalars"][:n, loss_cols]
    err = np.max(np.abs(a - r) / np.maximum(np.abs(r), 1e-300), axis=1)
    if part == "losses":
        return err
    if part == "params":
        err = np.zeros(n)
    bounds = np.concatenate([[0], np.cumsum(ref["tensor_sizes"])])
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        diff = np.max(np.abs(traj["params"][:n, lo:hi] - ref["params"][:n, lo:hi]), axis=1)
        scale = np.maximum(np.max(np.abs(ref["params"][:n, lo:hi]), axis=1), 1e-300)
        err = np.maximum(err, diff / scale)
    return err


def divergence_iteration(err: np.ndarray, threshold: float) -> int | None:
    over = np.nonzero(~(err <= threshold))[0]  # NaN counts as diverged
    return int(over[0]) if len(over) else None
