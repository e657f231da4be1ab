"""The VAE tests every backend must pass (seed 002, 8.1), written once.

A backend's ``tests/test_backend_<name>_vae.py`` subclasses :class:`VAEContract` and sets
``backend_name``. Every number is asserted against the float64 oracle of common/vae.py, on the
same canonical parameters, batches (``vae_batch``: the glyph digits in [0, 1], flattened) and
eps (stream 9), with the tolerances of common/tolerances.py:

* forward (x_reconst, mu, log_var): ``forward``;
* the three losses: ``loss`` (relative: each is a sum over the batch's 784 x B pixels);
* gradients: ``grad``; parameters and Adam moments after the step: ``adam``, against the
  oracle's Adam applied to the backend's own gradients (see :func:`_check_one_iteration`);
* a float64 trajectory of :data:`TRAJECTORY` iterations: parameters to ``SEED_CODE`` (1e-10):
  the same float64 expressions in another order, a few ulp per op, compounded by Adam.
"""

from __future__ import annotations

import numpy as np
import pytest

from gansuite.common.data import load_dataset
from gansuite.common.errors import GanSuiteError
from gansuite.common.params import AdamState
from gansuite.common.parity import rel_err
from gansuite.common.protocol import DTYPES, BuildOptions
from gansuite.common.tolerances import SEED_CODE, tolerance
from gansuite.common.vae import (init_vae_params, vae_batch, vae_fixed_draws, vae_param_shapes, vae_preset,
                                 vae_tiny_preset)
from gansuite.common.vae_backend import OracleVAE, get_vae_backend
from gansuite.common.vae_compare import adam_rows

#: Float64 iterations held to SEED_CODE (vae-tiny, batch 16: past the first epoch's 16 batches).
TRAJECTORY = 20
#: The full-size seed VAE (784-400-20) at a small batch keeps the numpy oracle to a second.
FULL_BATCH = 8


def _spec(model: str):
    return vae_preset() if model == "vae" else vae_tiny_preset()


_DATA: dict[str, object] = {}


def _dataset(spec):
    if spec.name not in _DATA:
        _DATA[spec.name] = load_dataset(spec.data, 0)
    return _DATA[spec.name]


def _batch(spec, it: int, rows: int | None = None):
    x, eps = vae_batch(spec, _dataset(spec), 0, it)
    return (x, eps) if rows is None else (x[:rows], eps[:rows])


def _worst(got: dict, ref: dict) -> tuple[float, str]:
    worst = max(((rel_err(got[k], ref[k])[1], k) for k in ref), default=(0.0, ""))
    return worst


def _check_one_iteration(vae, spec, x, eps, dtype: str, mode: str) -> None:
    """One iteration from init_vae_params(spec, 0), checked in two parts, as the GANs' one-step
    check (common/parity.py):

    1. the losses before the step and every gradient vs the oracle's;
    2. Adam, isolated (common/vae_compare.adam_rows, the comparison's own rows): the parameters
       and moments after the step vs the oracle's Adam applied to the backend's OWN gradients
       from the same (dtype-rounded) start (measured against the oracle's own step instead:
       4.7e-4 of E.0.weight's scale on the full-size VAE in float32, Adam's first step
       amplifying gradient roundoff)."""
    params = init_vae_params(spec, 0)
    oracle = OracleVAE()
    ref = oracle.train_step(oracle.build(spec, params, None, BuildOptions(dtype="float64")), x, eps, with_grads=True)
    st = vae.build(spec, params, None, BuildOptions(dtype=dtype, mode=mode))
    out = vae.train_step(st, x, eps, with_grads=True)
    for k in ("reconstruction", "kl", "total"):
        got, want = getattr(out, k), getattr(ref, k)
        assert abs(got - want) <= tolerance(dtype, "loss") * abs(want), (k, got, want)
    assert set(out.grads) == set(vae_param_shapes(spec))
    err, worst = _worst(out.grads, ref.grads)
    assert err <= tolerance(dtype, "grad"), ("grad", worst, err)
    assert vae.export_params(st)[1].step == 1
    for row in adam_rows(vae, st, spec, params, out.grads, dtype):
        assert row["passed"], (row["name"], row["max_rel_err"], row["tolerance"])


class VAEContract:
    backend_name: str = ""

    @pytest.fixture(scope="class")
    @classmethod
    def vae(cls):
        # No skip: in an env built for this backend, a missing framework is a failure.
        return get_vae_backend(cls.backend_name)

    # -- one forward and one iteration vs the oracle ------------------------------------------

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("model", ["vae-tiny", "vae"])
    def test_forward_matches_oracle(self, vae, model, dtype):
        spec = _spec(model)
        params = init_vae_params(spec, 0)
        x, eps = _batch(spec, 0, FULL_BATCH if model == "vae" else None)
        st = vae.build(spec, params, None, BuildOptions(dtype=dtype))
        ref = OracleVAE().forward(OracleVAE().build(spec, params, None, BuildOptions(dtype="float64")), x, eps)
        got = vae.forward(st, x, eps)
        err, worst = _worst(got, ref)
        assert err <= tolerance(dtype, "forward"), (worst, err)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("mode", ["parity", "fast"])
    def test_decode_matches_oracle(self, vae, mode, dtype):
        """``Dec(z)``, the seed's sampled grid (``model.decode(z)``), in both modes."""
        spec = _spec("vae")
        params = init_vae_params(spec, 0)
        z = vae_fixed_draws(spec, 0, FULL_BATCH)["z"]
        oracle = OracleVAE()
        ref = oracle.decode(oracle.build(spec, params, None, BuildOptions(dtype="float64")), z)
        got = vae.decode(vae.build(spec, params, None, BuildOptions(dtype=dtype, mode=mode)), z)
        assert got.shape == (FULL_BATCH, spec.features)
        assert rel_err(got, ref)[1] <= tolerance(dtype, "forward")

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("model", ["vae-tiny", "vae"])
    def test_one_iteration_matches_oracle(self, vae, model, dtype):
        spec = _spec(model)
        _check_one_iteration(vae, spec, *_batch(spec, 0, FULL_BATCH if model == "vae" else None), dtype, "parity")

    def test_float64_trajectory_matches_oracle(self, vae):
        """TRAJECTORY iterations over real batches (the last batch of an epoch is short: 256 = 16 x
        16, so a second epoch starts with a new permutation): parameters to SEED_CODE."""
        spec = _spec("vae-tiny")
        params = init_vae_params(spec, 0)
        oracle = OracleVAE()
        ref_state = oracle.build(spec, params, None, BuildOptions(dtype="float64"))
        st = vae.build(spec, params, None, BuildOptions(dtype="float64"))
        for it in range(TRAJECTORY):
            x, eps = _batch(spec, it)
            out, ref = vae.train_step(st, x, eps), oracle.train_step(ref_state, x, eps)
            assert out.total == pytest.approx(ref.total, rel=SEED_CODE, abs=0), it
        err, worst = _worst(vae.export_params(st)[0], oracle.export_params(ref_state)[0])
        assert err <= SEED_CODE, (worst, err)

    # -- fast mode --------------------------------------------------------------------------

    def test_fast_mode_matches_oracle(self, vae):
        """Compiled, eps still from the host: one float32 iteration at the float32 tolerances, on
        a full batch and on a short last batch (another shape for the compiled step)."""
        spec = _spec("vae-tiny")
        for rows in (None, 5):
            _check_one_iteration(vae, spec, *_batch(spec, 0, rows), "float32", "fast")

    # -- state in and out -------------------------------------------------------------------

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_resume_equals_uninterrupted(self, vae, dtype):
        """Export after 2 iterations, build a new state from that (params + Adam), 2 more: the
        same bits as 4 iterations straight (no tensor or step counter is lost in between)."""
        spec = _spec("vae-tiny")
        params = init_vae_params(spec, 0)
        straight = vae.build(spec, params, None, BuildOptions(dtype=dtype))
        for it in range(4):
            vae.train_step(straight, *_batch(spec, it))
        first = vae.build(spec, params, None, BuildOptions(dtype=dtype))
        for it in range(2):
            vae.train_step(first, *_batch(spec, it))
        p, opt = vae.export_params(first)
        assert opt.step == 2 and set(p) == set(vae_param_shapes(spec))
        resumed = vae.build(spec, p, opt, BuildOptions(dtype=dtype))
        for it in range(2, 4):
            vae.train_step(resumed, *_batch(spec, it))
        (p1, o1), (p2, o2) = vae.export_params(straight), vae.export_params(resumed)
        assert o1.step == o2.step == 4
        for k in p1:
            np.testing.assert_array_equal(p2[k], p1[k], err_msg=k)
            np.testing.assert_array_equal(o2.m[k], o1.m[k], err_msg=k)
            np.testing.assert_array_equal(o2.v[k], o1.v[k], err_msg=k)

    def test_forward_changes_no_state(self, vae):
        spec = _spec("vae-tiny")
        params = init_vae_params(spec, 0)
        st = vae.build(spec, params, AdamState(), BuildOptions(dtype="float64"))
        vae.forward(st, *_batch(spec, 0))
        p, opt = vae.export_params(st)
        assert opt.step == 0
        for k in params:
            np.testing.assert_array_equal(p[k], params[k], err_msg=k)

    # -- bad input ----------------------------------------------------------------------------

    def test_bad_input_is_one_line(self, vae):
        spec = _spec("vae-tiny")
        params = init_vae_params(spec, 0)
        st = vae.build(spec, params, None, BuildOptions(dtype="float64"))
        x, eps = _batch(spec, 0)
        for call, field in ((lambda: vae.train_step(st, x[:, :100], eps), "x"),
                            (lambda: vae.train_step(st, x, eps[:3]), "eps"),
                            (lambda: vae.build(spec, {k: v for k, v in params.items() if k != "Dec.2.bias"}, None,
                                               BuildOptions()), "params"),
                            (lambda: vae.build(spec, params, None, BuildOptions(dtype="float16")), "dtype"),
                            (lambda: vae.build(spec, params, None, BuildOptions(
                                mode="fast", extra={"mixed_precision": "mixed_bfloat16"})), "extra.mixed_precision")):
            with pytest.raises(GanSuiteError) as info:
                call()
            msg = str(info.value)
            assert msg.startswith(f"{field}:") and "\n" not in msg, msg
