"""The training loop's multi-step path (common/training.py): in fast mode a backend with the
multi-step primitive (``train_epoch``: JAX's lax.scan, TensorFlow's tf.while_loop, PyTorch's compiled scan,
MXNet's unrolled executors) runs runs of
consecutive iterations in one call, each call ending where something reads the state (a
checkpoint, the Gaussian GAN's per-epoch Frechet distance, the end), and trains exactly as one
``train_step`` per iteration does. A backend without one (the oracle) keeps one call
per iteration: asserted in its env too."""

from __future__ import annotations

import os

import numpy as np

from gansuite.common.checkpoint import load_checkpoint
from gansuite.common.presets import preset
from gansuite.common.registry import get_backend
from gansuite.common.training import MULTI_STEP_MAX, RunConfig, multi_step, train

_declared = [b for b in os.environ.get("GANSUITE_BACKENDS", "").split(",") if b.strip()]
BACKEND = _declared[0] if _declared else "oracle"
HAS_PRIMITIVE = BACKEND in ("jax", "tensorflow", "torch", "mxnet")


def _cfg(backend, out, **kw) -> RunConfig:
    settings = {"dtype": "float64", "mode": "fast", "seed": 3, "iterations": 300, "checkpoint_every": 100,
                "progress": False, "log_every": 10**9, **kw}
    return RunConfig(spec=preset("gaussian"), backend=backend, out_dir=out, **settings)


def test_fast_mode_runs_the_multi_step_primitive_where_the_backend_has_one(tmp_path):
    backend = get_backend(BACKEND)
    assert multi_step(backend, preset("gaussian"), _cfg(backend, tmp_path)) is HAS_PRIMITIVE
    assert not multi_step(backend, preset("gaussian"), _cfg(backend, tmp_path, mode="parity"))
    for model in ("cgan-tiny", "mlp-gan-tiny"):  # labels, fresh z, dropout: per-iteration draws
        assert not multi_step(backend, preset(model), _cfg(backend, tmp_path))
    if not HAS_PRIMITIVE:
        assert not callable(getattr(backend, "train_epoch", None))
        return
    calls: list[int] = []
    real_epoch = backend.train_epoch

    def counted(state, reals, zs=None):
        calls.append(len(reals))
        return real_epoch(state, reals, zs)

    backend.train_epoch = counted
    try:
        chunked = train(_cfg(backend, tmp_path / "multi"))
    finally:
        del backend.train_epoch
    # 125 iterations per epoch (1000 examples, batch 8): calls end at 100, 125, 200, 250, 300
    assert calls == [100, 25, 75, 50, 50] and max(calls) <= MULTI_STEP_MAX
    single = train(_cfg(backend, tmp_path / "single", extra={"multi_step": False}))
    assert chunked["iterations_per_call"] == f"up to {MULTI_STEP_MAX}" and single["iterations_per_call"] == 1
    a = load_checkpoint(tmp_path / "multi" / "checkpoint.safetensors")
    b = load_checkpoint(tmp_path / "single" / "checkpoint.safetensors")
    for k in ("loss_D", "loss_G", "D_x"):  # the same device noise, the same steps: float64 round-off
        np.testing.assert_allclose(a.history[k], b.history[k], rtol=1e-12, atol=0)
    for k in b.params:
        np.testing.assert_allclose(a.params[k], b.params[k], rtol=1e-10, atol=1e-14)
    per_epoch = [(e["epoch"], e["frechet_distance"]) for e in chunked["gaussian"]["per_epoch"]]
    assert [e for e, _ in per_epoch] == [1, 2]  # measured after each epoch's last call
    np.testing.assert_allclose([fd for _, fd in per_epoch],
                               [e["frechet_distance"] for e in single["gaussian"]["per_epoch"]], rtol=1e-10)
