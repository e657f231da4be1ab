"""MXNet's multi-step primitive (backends/mxnet/epoch.py): iterations unrolled into bound executors,
with a hand-derived backward (MXNet 1.9.1 has no symbolic gradient). It must train exactly as
``train_step`` does, one call per iteration: the same scalars, parameters, Adam moments and step
counts, to float64 round-off, for every layer its backward is written for, each reduction, both
Adam forms, host and device noise, and calls that split into several executors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gansuite.common.errors import GanSuiteError
from gansuite.common.params import init_params
from gansuite.common.presets import preset
from gansuite.common.protocol import SCALARS, BuildOptions
from gansuite.common.registry import get_backend
from gansuite.common.streams import Streams

from epoch_specs import every_layer_spec

BACKEND = get_backend("mxnet")


def _pair(spec, dtype="float64"):
    options = BuildOptions(dtype=dtype, mode="fast", seed=0)
    return (BACKEND.build(spec, init_params(spec, 0), None, options),
            BACKEND.build(spec, init_params(spec, 0), None, options))


def _batches(spec, n):
    streams = Streams(spec, 0)
    batches = [streams.batch(i) for i in range(n)]
    return np.stack([b.real for b in batches]), np.stack([b.z for b in batches])


def _assert_same_training(a, b, epoch_scalars, step_scalars, rtol, step_floor=False):
    """Scalars, parameters, Adam moments and steps equal within ``rtol`` of each tensor's largest
    value; with ``step_floor`` a parameter's unit is at least its net's learning rate (Adam moves a
    parameter by up to lr a step, so float32 round-off accrues in units of lr, however near zero the
    parameter ends: the Gaussian GAN's D.4.bias ends ~0.005 after steps of 0.05)."""
    for k in SCALARS:
        got, want = epoch_scalars[k], np.array([s[k] for s in step_scalars])
        assert np.max(np.abs(got - want)) <= rtol * np.max(np.abs(want)), k
    (pa, oa), (pb, ob) = BACKEND.export_params(a), BACKEND.export_params(b)
    train = a.spec.train
    for k in pb:
        floor = (train.optim_G if k.startswith("G.") else train.optim_D).lr if step_floor else 0.0
        assert np.max(np.abs(pa[k] - pb[k])) <= rtol * max(np.max(np.abs(pb[k])), floor), k
    for net in ("G", "D"):
        ma, mb = getattr(oa, net), getattr(ob, net)
        assert ma.step == mb.step
        for k in mb.m:
            assert np.max(np.abs(ma.m[k] - mb.m[k])) <= rtol * np.max(np.abs(mb.m[k])), (net, "m", k)
            assert np.max(np.abs(ma.v[k] - mb.v[k])) <= rtol * np.max(np.abs(mb.v[k])), (net, "v", k)


@pytest.mark.parametrize("model", ["every-layer", "every-layer-uneven", "gaussian", "gaussian-mxnet",
                                   "gaussian-tensorflow"])
def test_train_epoch_trains_as_train_step_does(model, monkeypatch):
    """Host noise, float64: two train_epoch calls (3 and 4 iterations, with executors of 2 iterations
    and a remainder of 1: epoch.CHUNK patched to 2) against 7 train_step calls on the same numbers.
    Measured: at most 5e-14 of each quantity's scale (round-off: the same maths in another order,
    epoch.py's Adam multiplied out, the loss scale folded into Adam's coefficients), 2.6e-13 for
    d2l's MXNet tab, whose D's last bias gradient is a cancelling sum of terms ~2500x larger
    (parity.summand_scale); bounded here at 1e-12. The models: every layer (mean reduction,
    PyTorch's Adam: 1.1e-14), the same with 6 real rows and 8 of z (a per-row loss scale: 6.3e-15),
    d2l's PyTorch tab (sum, PyTorch's Adam: 5.0e-14), its MXNet tab (per_example reduction,
    eps-hat Adam) and its TF tab (sum, eps-hat: 2.1e-14)."""
    from gansuite.backends.mxnet import epoch

    monkeypatch.setattr(epoch, "CHUNK", 2)
    spec = preset(model) if model.startswith("gaussian") else every_layer_spec()
    if model == "every-layer-uneven":  # 6 real rows, 8 of z: the mean's scale differs per row
        spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, noise_batch="batch_size"))
    a, b = _pair(spec)
    reals, zs = _batches(spec, 7)
    if model == "every-layer-uneven":
        reals = reals[:, :6]
    first, second = BACKEND.train_epoch(a, reals[:3], zs[:3]), BACKEND.train_epoch(a, reals[3:], zs[3:])
    scalars = {k: np.concatenate([first[k], second[k]]) for k in SCALARS}
    steps = [BACKEND.train_step(b, r, z).scalars() for r, z in zip(reals, zs)]
    _assert_same_training(a, b, scalars, steps, 1e-12)


def test_train_epoch_draws_the_noise_train_step_draws(mx):
    """Device noise: the graph's per-iteration normal draws are the same numbers as one
    ``device_noise`` per train_step, in order (MXNet's CPU sampler fills a (B, 2) draw from the
    same generator states either way), over a call of several executors (40 iterations, CHUNK 8)."""
    spec = preset("gaussian")
    a, b = _pair(spec)
    reals, _ = _batches(spec, 40)
    mx.random.seed(5)
    scalars = BACKEND.train_epoch(a, reals)
    mx.random.seed(5)
    steps = [BACKEND.train_step(b, r, None).scalars() for r in reals]
    _assert_same_training(a, b, scalars, steps, 1e-12)


def test_train_epoch_between_train_steps_in_float32():
    """Float32 fast mode, whose train_step runs MXNet's fused adam_update on a scaled first moment
    (train.SpecAdam._fused_update): train_epoch reads that moment back to the spec's and writes it
    scaled again. 3 steps, 5 iterations in train_epoch, 2 steps against 10 steps: measured at most
    1.1e-6 of a tensor's scale (D's last bias's v; the scalars 1.1e-7, the parameters 7e-7 of lr:
    float32 round-off through 10 iterations), bounded at 1e-5."""
    spec = preset("gaussian")
    a, b = _pair(spec, "float32")
    reals, zs = _batches(spec, 10)
    steps_a = [BACKEND.train_step(a, r, z).scalars() for r, z in zip(reals[:3], zs[:3])]
    middle = BACKEND.train_epoch(a, reals[3:8], zs[3:8])
    steps_a += [{k: float(middle[k][i]) for k in SCALARS} for i in range(5)]
    steps_a += [BACKEND.train_step(a, r, z).scalars() for r, z in zip(reals[8:], zs[8:])]
    steps_b = [BACKEND.train_step(b, r, z).scalars() for r, z in zip(reals, zs)]
    _assert_same_training(a, b, {k: np.array([s[k] for s in steps_a]) for k in SCALARS}, steps_b, 1e-5,
                          step_floor=True)


@pytest.fixture(scope="module")
def mx():
    import mxnet

    return mxnet


@pytest.mark.parametrize("model, options, message", [
    ("gaussian", BuildOptions(dtype="float64", mode="parity"), "train_epoch is fast mode's"),
    ("dcgan-tiny", BuildOptions(dtype="float32", mode="fast"), "model 'dcgan-tiny' has ConvTranspose2d"),
    ("mlp-gan-tiny", BuildOptions(dtype="float32", mode="fast"), "needs per-iteration draws"),
])
def test_train_epoch_refuses_in_one_line(model, options, message):
    spec = preset(model)
    assert message in BACKEND.train_epoch_refusal(spec, options)
    state = BACKEND.build(spec, init_params(spec, 0), None, options)
    reals = np.stack([Streams(spec, 0).batch(0).real] * 2)
    with pytest.raises(GanSuiteError, match=message) as err:
        BACKEND.train_epoch(state, reals)
    assert "\n" not in str(err.value)
