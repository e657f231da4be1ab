"""The tests every backend must pass, written once.

A backend's test file subclasses :class:`BackendContract` and sets
``backend_name``; nothing else. All numbers are asserted against the float64
oracle (common/oracle.py) with the tolerances of common/tolerances.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest

from gansuite.common.metrics import gaussian_report
from gansuite.common.oracle import OracleBackend
from gansuite.common.parity import check_forward, check_one_step, failures
from gansuite.common.params import init_params, param_shapes
from gansuite.common.presets import preset
from gansuite.common.protocol import BuildOptions
from gansuite.common.registry import FAST_ENV, get_backend
from gansuite.common.streams import Streams
from gansuite.common.tolerances import ADAM_FIRST_STEP_LR, GRADIENT_DERIVED, ILL_CONDITIONED
from gansuite.common.trace import load_trace, run_trace, save_trace
from gansuite.common.gallery import BEATS_COLLAPSED, IMPROVEMENT, LEARNING_ITERATIONS, learning_run, learning_verdict

from shared_data import require_mnist

from gansuite.common.protocol import DTYPES
# (model, batch size for the oracle comparison): full-size DCGAN at a small batch keeps the
# float64 numpy oracle to a few seconds while exercising every real layer shape. Every seed
# preset is here, at test size: d2l's three tabs, the tutorial, seed 003 (batch 4 real rows
# against 16 noise rows: its fixed-size noise on a short last batch) and seed 004.
# Seed 002's MLP GAN and conditional GAN (labels, dropout masks from common/draws.py, BCELoss on
# D's Sigmoid output, the G step's fresh z) at test size and at full size on a small batch.
PARITY_CASES = [("gaussian", None), ("gaussian-mxnet", None), ("gaussian-tensorflow", None), ("dcgan-tiny", None),
                ("dcgan-mnist-tiny", 4), ("dcgan-mxnet-tiny", 4), ("dcgan", 4), ("mlp-gan-tiny", None),
                ("cgan-tiny", None), ("mlp-gan", 8), ("cgan", 4)]
#: The seed presets' options in fast mode (compiled, device noise) as well.
FAST_MODELS = ["gaussian", "dcgan-tiny", "gaussian-mxnet", "dcgan-mnist-tiny", "dcgan-mxnet-tiny", "mlp-gan-tiny",
               "cgan-tiny"]


def _assert_rows(rows) -> None:
    msg = failures(rows)
    assert not msg, "\n" + msg


class BackendContract:
    backend_name: str = ""

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls):
        # No skip here: in an env built for this backend, a missing framework is a failure.
        return get_backend(cls.backend_name)

    # -- shapes ---------------------------------------------------------------

    @pytest.mark.parametrize("model", ["gaussian", "dcgan-tiny", "dcgan-mnist-tiny", "dcgan-mxnet-tiny",
                                       "mlp-gan-tiny", "cgan-tiny"])
    def test_output_shapes(self, backend, model):
        spec = preset(model)
        st = backend.build(spec, init_params(spec, 0), None, BuildOptions(dtype="float32"))
        z = Streams(spec, 0).noise(0, 3)
        labels = np.array([0, 9, 4]) if spec.conditional else None
        x = backend.generate(st, z, "batch", labels)
        assert x.shape == (3, *spec.generator.output_shape)
        assert x.dtype == np.float64
        assert backend.discriminate(st, x, "batch", labels).shape == (3,)
        exported, opt = backend.export_params(st)
        assert {k: v.shape for k, v in exported.items()} == param_shapes(spec)
        assert list(exported) == list(param_shapes(spec)), "canonical order"
        assert opt.G.step == 0 and opt.D.step == 0

    # -- parity with the oracle --------------------------------------------------

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("model,batch", PARITY_CASES)
    def test_forward_matches_oracle(self, backend, model, batch, dtype):
        spec = preset(model)
        rows = check_forward(backend, spec, dtype, batch_size=batch)
        if spec.has_batch_norm:
            # Eval-mode forward (running statistics) from params the oracle trained for 2
            # iterations, so running_mean != 0 and running_var carries the UNBIASED variance.
            oracle = OracleBackend()
            st = oracle.build(spec, init_params(spec, 0), None, BuildOptions())
            for b in Streams(spec, 0).iterate(0, 2):
                b = b.cut(batch or len(b.real), spec.train.noise_rows(batch or len(b.real)))
                oracle.train_step(st, b.real, b.z, draws=b.draws)
            trained, _ = oracle.export_params(st)
            rows += check_forward(backend, spec, dtype, batch_size=batch, bn="running", params=trained)
        _assert_rows(rows)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("model,batch", PARITY_CASES)
    def test_one_iteration_matches_oracle(self, backend, model, batch, dtype):
        rows = check_one_step(backend, preset(model), dtype, batch_size=batch)
        bound = ILL_CONDITIONED.get((model, dtype))
        if bound is not None:  # measured cause in common/tolerances.py: the oracle's own float32 sensitivity
            rows = [replace(r, tolerance=max(r.tolerance, bound)) if r.check in GRADIENT_DERIVED else r for r in rows]
        _assert_rows(rows)

    def test_forward_changes_no_state(self, backend):
        spec = preset("dcgan-tiny")
        st = backend.build(spec, init_params(spec, 0), None, BuildOptions(dtype="float64"))
        before, _ = backend.export_params(st)
        backend.generate(st, Streams(spec, 0).noise(0, 4))
        backend.discriminate(st, Streams(spec, 0).real(0))
        after, _ = backend.export_params(st)
        for k in before:
            np.testing.assert_array_equal(after[k], before[k], err_msg=k)

    # -- training ---------------------------------------------------------------

    def test_gaussian_gan_converges(self, backend):
        """d2l's full 20-epoch run, seeds 0..4 (fixed, not chosen): median exact Frechet
        distance to N(b, A^T A) <= 0.5 (about 10 at init)."""
        spec = preset("gaussian")
        fds = [gaussian_report(spec, run_trace(backend, spec, seed, "float32", 2500).params)["frechet_distance"]
               for seed in range(5)]
        assert np.median(fds) <= 0.5, f"Frechet distances per seed: {fds}"

    def test_same_seed_is_bit_identical(self, backend):
        spec = preset("dcgan-tiny")
        a = run_trace(backend, spec, 3, "float32", 3)
        b = run_trace(backend, spec, 3, "float32", 3)
        for k in a.scalars:
            np.testing.assert_array_equal(a.scalars[k], b.scalars[k], err_msg=k)
        for k in a.params:
            np.testing.assert_array_equal(a.params[k], b.params[k], err_msg=k)

    @pytest.mark.parametrize("model", ["gaussian", "dcgan-tiny", "dcgan-mxnet-tiny", "cgan-tiny"])
    def test_checkpoint_round_trip_and_resume(self, backend, model):
        """Export -> build -> export is exact, and 2 + 2 iterations through an export
        equal 4 uninterrupted ones (Adam moments and step counters included); export_weights is
        export_params's params."""
        spec = preset(model)
        streams = Streams(spec, 1)
        opts = BuildOptions(dtype="float64")
        straight = backend.build(spec, init_params(spec, 1), None, opts)
        split = backend.build(spec, init_params(spec, 1), None, opts)
        for b in streams.iterate(0, 2):
            backend.train_step(straight, b.real, b.z, draws=b.draws)
            backend.train_step(split, b.real, b.z, draws=b.draws)
        params, opt = backend.export_params(split)
        weights = backend.export_weights(split)  # the trajectories' read: the same params, no moments
        assert weights.keys() == params.keys()
        for k in params:
            np.testing.assert_array_equal(weights[k], params[k], err_msg=k)
        resumed = backend.build(spec, params, opt, opts)
        params2, opt2 = backend.export_params(resumed)
        for k in params:
            np.testing.assert_array_equal(params2[k], params[k], err_msg=k)
        for net in ("G", "D"):
            assert opt2[net].step == opt[net].step == 2
            for k in opt[net].m:
                np.testing.assert_array_equal(opt2[net].m[k], opt[net].m[k], err_msg=k)
                np.testing.assert_array_equal(opt2[net].v[k], opt[net].v[k], err_msg=k)
        for b in streams.iterate(2, 4):
            backend.train_step(straight, b.real, b.z, draws=b.draws)
            backend.train_step(resumed, b.real, b.z, draws=b.draws)
        p_straight, _ = backend.export_params(straight)
        p_resumed, _ = backend.export_params(resumed)
        for k in p_straight:
            np.testing.assert_array_equal(p_resumed[k], p_straight[k], err_msg=k)

    def test_oracle_checkpoint_trains_on(self, backend):
        """A checkpoint written by another implementation (the oracle, 2 steps) trains on here
        and agrees with the oracle continuing from the same checkpoint."""
        spec = preset("gaussian")
        streams, oracle = Streams(spec, 2), OracleBackend()
        ref = oracle.build(spec, init_params(spec, 2), None, BuildOptions())
        for b in streams.iterate(0, 2):
            oracle.train_step(ref, b.real, b.z)
        params, opt = oracle.export_params(ref)
        st = backend.build(spec, params, opt, BuildOptions(dtype="float64"))
        for b in streams.iterate(2, 4):
            oracle.train_step(ref, b.real, b.z)
            backend.train_step(st, b.real, b.z)
        p_ref, _ = oracle.export_params(ref)
        p, _ = backend.export_params(st)
        for k in p_ref:
            np.testing.assert_allclose(p[k], p_ref[k], rtol=0, atol=1e-12, err_msg=k)

    @pytest.mark.parametrize("model", FAST_MODELS)
    def test_fast_mode_trains(self, backend, model):
        """Compiled step with device-side noise: runs, stays finite, changes the params."""
        spec = preset(model)
        p0 = init_params(spec, 0)
        st = backend.build(spec, p0, None, BuildOptions(dtype="float32", mode="fast", seed=0))
        streams = Streams(spec, 0)
        for b in streams.iterate(0, 3):
            out = backend.train_step(st, b.real, None, draws=b.draws)  # only the real labels are kept
            assert all(np.isfinite(v) for v in out.scalars().values()), out
        p, opt = backend.export_params(st)
        assert opt.G.step == 3 and opt.D.step == 3
        assert any(not np.array_equal(p[k], p0[k]) for k in p)

    @pytest.mark.parametrize("model", ["dcgan-tiny", "dcgan-mnist-tiny", "dcgan-mxnet-tiny", "mlp-gan-tiny", "cgan-tiny"])
    def test_fast_mode_matches_oracle_with_host_noise(self, backend, model):
        """Compilation may reorder float32 arithmetic but must not change the maths:
        one fast-mode iteration with host noise (and host draws: labels, masks) vs the oracle,
        losses within 1e-4."""
        spec = preset(model)
        params = init_params(spec, 0)
        b = Streams(spec, 0).batch(0)
        st = backend.build(spec, params, None, BuildOptions(dtype="float32", mode="fast"))
        out = backend.train_step(st, b.real, b.z, draws=b.draws)
        ref = OracleBackend()
        ref_out = ref.train_step(ref.build(spec, params, None, BuildOptions()), b.real, b.z, draws=b.draws)
        for k in ("loss_D", "D_x", "D_G_z1", "loss_G", "D_G_z2"):  # the G step too (fresh z_gen where the preset draws one)
            assert abs(getattr(out, k) - getattr(ref_out, k)) <= 1e-4 * max(1.0, abs(getattr(ref_out, k))), k

    def test_fast_mode_pure_forward_leaves_training_unchanged(self, backend):
        """generate/discriminate between fast-mode steps (the trainer's sample frames) change nothing the
        next step computes: one iteration after them moves the parameters as one without them, within
        Adam's first-step bound (ADAM_FIRST_STEP_LR: a roundoff difference can flip a near-zero
        gradient). Run as fast mode runs, in a process with common/registry.py's FAST_ENV (oneDNN on):
        there MXNet's inference-mode forward reordered G's transposed-convolution weights in place and
        the next Adam step moved the wrong elements (743 lr)."""
        code = textwrap.dedent(f"""
            import numpy as np
            from gansuite.common.overrides import apply_overrides
            from gansuite.common.params import init_params
            from gansuite.common.presets import preset
            from gansuite.common.protocol import BuildOptions
            from gansuite.common.registry import get_backend
            from gansuite.common.streams import Streams
            spec = apply_overrides(preset("dcgan"), ["train.batch_size=8"])  # full size: all 5 layer kinds
            backend, params, b = get_backend({self.backend_name!r}), init_params(spec, 0), Streams(spec, 0).batch(0)
            after = []
            for forward_first in (False, True):
                st = backend.build(spec, params, None, BuildOptions(dtype="float32", mode="fast"))
                if forward_first:
                    backend.generate(st, b.z)
                    backend.discriminate(st, b.real)
                backend.train_step(st, b.real, b.z, draws=b.draws)
                after.append(backend.export_params(st)[0])
            lr = {{"G": spec.train.optim_G.lr, "D": spec.train.optim_D.lr}}
            print("WORST", max(float(np.max(np.abs(after[1][k] - after[0][k]))) / lr[k[0]]
                               for k in after[0] if "running" not in k and "num_batches" not in k))
        """)
        env = {**os.environ, **FAST_ENV.get(self.backend_name, {})}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        worst = float(next(l for l in out.stdout.splitlines() if l.startswith("WORST")).split()[1])
        assert worst <= ADAM_FIRST_STEP_LR, f"{worst:.3g} learning rates"

    def test_trace_file_round_trip(self, backend, tmp_path):
        spec = preset("gaussian")
        tr = run_trace(backend, spec, 0, "float32", 5, snapshot_every=2)
        back = load_trace(save_trace(tmp_path / "t.npz", tr))
        assert back.meta["backend"] == self.backend_name and back.iterations == 5
        assert sorted(back.snapshots) == [1, 3]
        for k in tr.params:
            np.testing.assert_array_equal(back.params[k], tr.params[k])

    # -- learning real digits -----------------------------------------------------

    def test_dcgan_learns_mnist_digits(self, backend, tmp_path):
        """The learning check (common/gallery.py): dcgan-digits, 300 iterations on the MNIST test
        set, float32 parity mode. The digit Frechet distance (the suite's numpy classifier) must
        fall to a quarter of the initial G's and to half of a collapsed G's (every sample the
        data mean). Measured on torch: 552 -> 51, collapsed 278 (README's gallery per backend)."""
        summary = learning_run(backend, tmp_path, require_mnist())
        v = learning_verdict(summary)
        rows = summary["quality"]["over_training"]
        assert [r["iteration"] for r in rows] == list(range(0, LEARNING_ITERATIONS + 1, 50))
        assert v["final"] <= v["initial"] / IMPROVEMENT, v
        assert v["final"] <= v["collapsed"] / BEATS_COLLAPSED, v
        # The sliced Wasserstein distance agrees: lower than at the start and than collapsed.
        assert rows[-1]["swd"] < rows[0]["swd"] / 2, rows
        assert rows[-1]["swd"] < summary["quality"]["baselines"]["collapsed"]["swd"], summary["quality"]
