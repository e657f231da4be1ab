"""Seed 002's VAE in the comparison: the same artifacts as the GANs' (common/experiments.py), so
common/report.py holds it to the oracle, pairwise and against the seed's own code as it does them.

Per backend and dtype, into ``out/artifacts/<backend>/``:

* rows (``rows.json``, model ``vae``): ``forward`` (x_reconst, mu, log_var), and the one-iteration
  checks ``loss`` (reconstruction, KL, total), ``grad`` (every tensor) and ``adam`` (parameters
  and moments vs the oracle's Adam on the backend's own gradients, as the GANs' one-step check);
* ``outputs-vae-<dtype>.npz``: those forwards and the iteration's losses and gradients, which
  the report compares between every pair of backends;
* ``traj-vae-<dtype>.npz``: :data:`VAE_TRAJECTORY` iterations, the three losses and a fixed
  subsample of every tensor after each (common/trajectory.py's format, with ``loss_columns``);
* on torch, ``seedtraj-002-vae-torch.npz``: the seed's own VAE and loop
  (benchmarks/peers/seed002_vae_torch.py) over the same float64 trajectory.

The compared spec is the full-size seed VAE (784-400-20) at batch 8 on 256 glyph digits, as the
seed-002 GANs (common/experiments.COMPARE_DATA_FLAT).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .data import Dataset
from .oracle import adam_update
from .overrides import apply_overrides
from .params import Params
from .parity import Row, rel_err
from .protocol import BuildOptions
from .tolerances import tolerance
from .trajectory import VAE_TRAJECTORY, subsample, subsample_indices_of
from .vae import VAE_SCALARS, VAESpec, init_vae_params, vae_batch, vae_param_shapes, vae_preset
from .vae_backend import OracleVAE, VAEProtocol

VAE_MODEL = "vae"


def vae_compare_spec() -> VAESpec:
    return apply_overrides(vae_preset(), ["train.batch_size=8", "data.n_examples=256"])


def _row(check: str, name: str, a: Any, ref: Any, dtype: str, quantity: str) -> dict[str, Any]:
    err, rel = rel_err(a, ref)
    return {"model": VAE_MODEL, "dtype": dtype, **Row(check, name, err, rel, tolerance(dtype, quantity)).as_dict()}


def vae_rows_and_outputs(vae: VAEProtocol, spec: VAESpec, dtype: str,
                         dataset: Dataset) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """The rows vs the oracle (none for the oracle itself) and the outputs for pairwise checks,
    from ``init_vae_params(spec, 0)`` on the first batch."""
    params = init_vae_params(spec, 0)
    x, eps = vae_batch(spec, dataset, 0, 0)
    st = vae.build(spec, params, None, BuildOptions(dtype=dtype))
    fwd = vae.forward(st, x, eps)
    out = vae.train_step(st, x, eps, with_grads=True)
    outputs = {f"forward/{k}": v for k, v in fwd.items()}
    outputs.update({f"scalar/{k}": np.asarray(getattr(out, k)) for k in VAE_SCALARS})
    outputs.update({f"grad/{k}": np.asarray(v, np.float64) for k, v in out.grads.items()})
    if vae.name == "oracle":
        return [], outputs
    oracle = OracleVAE()
    ref_state = oracle.build(spec, params, None, BuildOptions(dtype="float64"))
    ref_fwd = oracle.forward(ref_state, x, eps)
    ref = oracle.train_step(ref_state, x, eps, with_grads=True)
    rows = [_row("forward", k, fwd[k], ref_fwd[k], dtype, "forward") for k in ref_fwd]
    rows += [_row("loss", k, getattr(out, k), getattr(ref, k), dtype, "loss") for k in VAE_SCALARS]
    rows += [_row("grad", k, out.grads[k], ref.grads[k], dtype, "grad") for k in ref.grads]
    rows += adam_rows(vae, st, spec, params, out.grads, dtype)
    return rows, outputs


def adam_rows(vae: VAEProtocol, state: Any, spec: VAESpec, params: Params, grads: Params,
              dtype: str) -> list[dict[str, Any]]:
    """Adam, isolated, after a first step from ``params``: the state's parameters and moments vs
    the oracle's Adam applied to the backend's OWN gradients from the same dtype-rounded start (as
    the GANs' one-step check: Adam's first step, ``lr * g / (|g| + eps)``, turns float32 roundoff in
    a near-zero gradient into an O(lr) parameter difference, so comparing with the oracle's own
    step would test the gradient's sign, not the optimizer)."""
    new_params, new_opt = vae.export_params(state)
    rows = []
    for k in vae_param_shapes(spec):
        start = np.asarray(params[k], dtype=dtype).astype(np.float64)
        zeros = np.zeros_like(start)
        p, m, v = adam_update(start, np.asarray(grads[k], np.float64), zeros, zeros, 1, spec.train.optim)
        rows += [_row("adam", k, new_params[k], p, dtype, "adam"), _row("adam", k + " (m)", new_opt.m[k], m, dtype, "adam"),
                 _row("adam", k + " (v)", new_opt.v[k], v, dtype, "adam")]
    return rows


def vae_trajectory(vae: VAEProtocol, spec: VAESpec, dtype: str, iterations: int,
                   dataset: Dataset) -> dict[str, np.ndarray]:
    """``iterations`` steps on the shared batches and eps: per iteration the three losses and a
    fixed subsample of every tensor (the format of common/trajectory.run_trajectory)."""
    idx = subsample_indices_of(vae_param_shapes(spec))
    st = vae.build(spec, init_vae_params(spec, 0), None, BuildOptions(dtype=dtype))
    scalars = np.empty((iterations, len(VAE_SCALARS)))
    params = np.empty((iterations, sum(len(i) for i in idx.values())))
    for it in range(iterations):
        out = vae.train_step(st, *vae_batch(spec, dataset, 0, it))
        scalars[it] = [getattr(out, k) for k in VAE_SCALARS]
        params[it] = subsample(vae.export_params(st)[0], idx)
    return {"scalars": scalars, "params": params, "tensor_sizes": np.array([len(i) for i in idx.values()]),
            "tensor_names": np.array(list(idx)), "loss_columns": np.arange(len(VAE_SCALARS))}
