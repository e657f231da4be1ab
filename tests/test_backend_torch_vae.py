"""Seed 002's VAE (section 8.1) transcribed in PyTorch, in float64, against the oracle of
common/vae.py: the same canonical parameters, the same x and eps (``torch.randn_like`` replaced
by the eps stream), three iterations of the seed's loop body; losses, gradients, updated
parameters and Adam moments must agree to 1e-12 relative (of each tensor's largest entry).

Runs in the torch env (``python3 -m tox -e torch``); tests/conftest.py collects it only in envs
that declare torch."""

from __future__ import annotations


import numpy as np
import pytest
import torch  # the torch env: tests/conftest.py collects this file only there

from gansuite.common.data import load_dataset
from gansuite.common.vae import (SEED_002_NAMES, init_vae_params, vae_backward, vae_batch, vae_forward,
                                 vae_loss, vae_state, vae_step, vae_tiny_preset)

# Tolerance: both sides compute the same float64 expressions; they differ by summation order
# (BLAS mm, torch's and numpy's reductions) and Adam's arrangement (torch: lerp, addcmul,
# sqrt(v)/sqrt(bc2) + eps; the oracle: m/bc1 / (sqrt(v/bc2) + eps)): a few ulp per op. Relative
# to each tensor's largest entry, so entries that cancel to ~0 (a parameter a step moved through
# zero) are not held to a relative bound their value cannot carry.
RTOL = 1e-12


# The seed's code (8.1.3, step 4), line for line: benchmarks/peers/seed002_vae_torch.py (the
# comparison runs the same transcription as the "seed code vs preset" row 002-vae-torch).
from gansuite.benchmarks.peers.seed002_vae_torch import VAE, VaeSeedCode, seed_iteration  # noqa: E402


# -- harness ----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _seed_model(spec, params):
    model = VAE(image_size=spec.features, h_dim=spec.hidden, z_dim=spec.latent).double()
    model.load_state_dict({SEED_002_NAMES[k]: torch.from_numpy(np.array(v)) for k, v in params.items()})
    return model


def _feed_eps(monkeypatch, eps: np.ndarray) -> None:
    """``torch.randn_like(std)`` returns the eps stream's draws (checked to have std's shape)."""
    eps_t = torch.from_numpy(eps)

    def randn_like(std, *args, **kwargs):
        assert tuple(std.shape) == eps.shape and std.dtype == torch.float64
        return eps_t.clone()

    monkeypatch.setattr(torch, "randn_like", randn_like)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def test_three_seed_iterations_match_the_oracle(monkeypatch):
    spec = vae_tiny_preset()
    dataset = load_dataset(spec.data, 0)
    params = init_vae_params(spec, 0)
    model = _seed_model(spec, params)
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.train.optim.lr)
    state = vae_state(spec, params)
    named = dict(model.named_parameters())
    worst = {"loss": 0.0, "grad": 0.0, "param": 0.0, "moment": 0.0}
    for it in range(3):
        x, eps = vae_batch(spec, dataset, 0, it)
        _feed_eps(monkeypatch, eps)
        seed_losses = seed_iteration(model, optimizer, torch.from_numpy(x.copy()))
        out = vae_step(state, x, eps, with_grads=True)
        for s, o in zip(seed_losses, (out.reconstruction, out.kl, out.total)):
            worst["loss"] = max(worst["loss"], abs(s - o) / abs(o))
            assert s == pytest.approx(o, rel=RTOL, abs=0)
        for name, key in SEED_002_NAMES.items():
            p = named[key]
            worst["grad"] = max(worst["grad"], _rel(p.grad.numpy(), out.grads[name]))
            worst["param"] = max(worst["param"], _rel(p.detach().numpy(), state.params[name]))
            adam = optimizer.state[p]
            assert int(adam["step"]) == state.opt.step == it + 1
            worst["moment"] = max(worst["moment"], _rel(adam["exp_avg"].numpy(), state.opt.m[name]),
                                  _rel(adam["exp_avg_sq"].numpy(), state.opt.v[name]))
    print("seed vs oracle, worst relative (of each tensor's max) over 3 steps:",
          {k: f"{v:.1e}" for k, v in worst.items()})
    assert all(v <= RTOL for v in worst.values()), worst
    moved = max(_rel(state.params[k], params[k]) for k in params)
    assert moved > 1e-3  # three steps did move the parameters


def test_the_seed_clamps_the_bce_like_the_oracle(monkeypatch):
    """Saturated reconstructions (exactly 0 and 1) where x disagrees: 100 per pixel in both, and
    the same (zero, finite) gradients through the saturated sigmoid."""
    spec = vae_tiny_preset()
    params = init_vae_params(spec, 0)
    params["Dec.2.weight"][:] = 0.0
    sign = np.where(np.arange(spec.features) % 2 == 0, 1.0, -1.0)
    params["Dec.2.bias"][:] = 1000.0 * sign
    x = np.stack([(sign < 0).astype(np.float64), np.where(sign > 0, 0.25, 0.75)])
    eps = np.random.default_rng(0).standard_normal((2, spec.latent))
    model = _seed_model(spec, params)
    _feed_eps(monkeypatch, eps)
    seed = seed_iteration(model, torch.optim.Adam(model.parameters(), lr=1e-3), torch.from_numpy(x.copy()))
    out = vae_forward(params, spec, x, eps)
    oracle = vae_loss(spec, out)
    assert seed[0] == oracle[0] == 100.0 * spec.features + 75.0 * spec.features
    assert seed[2] == pytest.approx(oracle[2], rel=RTOL)
    grads = vae_backward(params, spec, x, eps, out)
    for name, key in SEED_002_NAMES.items():
        g = dict(model.named_parameters())[key].grad.numpy()
        assert np.isfinite(g).all()
        np.testing.assert_allclose(g, grads[name], rtol=RTOL, atol=RTOL * max(np.abs(grads[name]).max(), 1e-300))


def test_seed_code_adapter_matches_the_oracle_over_the_compare_trajectory():
    """The adapter the comparison runs (VaeSeedCode: the seed's class and loop behind the VAE
    protocol) over the comparison's float64 trajectory: parameters to SEED_CODE."""
    from gansuite.common.protocol import BuildOptions
    from gansuite.common.tolerances import SEED_CODE
    from gansuite.common.vae_backend import OracleVAE
    from gansuite.common.vae_compare import VAE_TRAJECTORY, vae_compare_spec

    spec = vae_compare_spec()
    dataset = load_dataset(spec.data, 0)
    params = init_vae_params(spec, 0)
    seed, oracle = VaeSeedCode(), OracleVAE()
    a = seed.build(spec, params, None, BuildOptions(dtype="float64"))
    b = oracle.build(spec, params, None, BuildOptions(dtype="float64"))
    for it in range(VAE_TRAJECTORY):
        x, eps = vae_batch(spec, dataset, 0, it)
        assert seed.train_step(a, x, eps).total == pytest.approx(oracle.train_step(b, x, eps).total, rel=SEED_CODE)
    (pa, oa), (pb, ob) = seed.export_params(a), oracle.export_params(b)
    assert oa.step == ob.step == VAE_TRAJECTORY
    assert max(_rel(pa[k], pb[k]) for k in pb) <= SEED_CODE


# -- the torch backend's VAE (backends/torch/vae.py) through the contract every backend passes --

from vae_contract import VAEContract  # noqa: E402


class TestTorchVAE(VAEContract):
    backend_name = "torch"
