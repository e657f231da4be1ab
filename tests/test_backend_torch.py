"""PyTorch backend: the shared contract (tests/backend_contract.py) plus torch specifics: the torch
seed systems' own code (benchmarks/peers, common/seeds.py) held to the float64 oracle."""

from __future__ import annotations

import numpy as np
import pytest

from backend_contract import BackendContract

from gansuite.common.oracle import OracleBackend
from gansuite.common.params import init_params
from gansuite.common.parity import parity_inputs, rel_err
from gansuite.common.presets import preset
from gansuite.common.protocol import BuildOptions
from gansuite.common.seeds import systems_for
from gansuite.common.tolerances import SEED_CODE, tolerance
from gansuite.common.verify import PortBackend, load_port, verify


class TestTorchBackend(BackendContract):
    backend_name = "torch"


#: Each torch seed system's port on its preset at test size (same classes and loop, narrower nets).
SEED_PORTS = [("gansuite.benchmarks.peers.tutorial_torch:SeedPort", "dcgan-tiny"),
              ("gansuite.benchmarks.peers.d2l_torch:SeedPort", "gaussian"),
              ("gansuite.benchmarks.peers.seed003_torch:SeedPort", "dcgan-mnist-tiny"),
              ("gansuite.benchmarks.peers.seed002_torch:MlpGanPort", "mlp-gan-tiny"),
              ("gansuite.benchmarks.peers.seed002_torch:CganPort", "cgan-tiny")]


def test_seed_ports_cover_the_torch_seed_systems():
    ports = {p for p, _ in SEED_PORTS}
    # seed 002's VAE is no GAN port: tests/test_backend_torch_vae.py holds its adapter to the oracle
    assert {s.port for s in systems_for("torch") if s.preset != "vae"} == ports
    assert {preset(m).name for _, m in SEED_PORTS} == {"dcgan-tiny", "gaussian", "dcgan-mnist-tiny",
                                                       "mlp-gan-tiny", "cgan-tiny"}


@pytest.mark.parametrize("impl,model", SEED_PORTS)
def test_seed_code_matches_oracle(impl, model):
    """gansuite verify on the seed's own code, float64: forward and one iteration within the oracle
    tolerances, 3 iterations of trajectory within the seed-code bound (common/tolerances.py)."""
    checks = verify(PortBackend(load_port(impl)), preset(model), "float64", 3)
    failed = [c for c in checks if not c.passed]
    assert not failed, failed
    assert {c.check for c in checks if c.tolerance is not None} == {"forward", "one iteration"}
    for c in checks:
        assert c.rel_err <= SEED_CODE, c


@pytest.mark.parametrize("model", ["cgan-tiny", "mlp-gan-tiny"])
def test_a_port_without_draws_is_refused_in_one_line(model):
    """A port written for plain GANs (no ``labels`` / ``draws`` keywords) on a conditional model with
    dropout (cgan-tiny) or one with fresh G noise (mlp-gan-tiny): one clear line, before any run."""
    from gansuite.common.errors import GanSuiteError

    plain = load_port("gansuite.benchmarks.peers.seed003_torch:SeedPort")  # train_step(real, z)
    with pytest.raises(GanSuiteError) as err:
        verify(PortBackend(plain), preset(model), "float64", 1)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("impl: ") and "draws=None" in msg, msg
    assert ("labels=None" in msg) == (model == "cgan-tiny"), msg


def test_seed002_cgan_port_uses_the_canonical_dropout_masks():
    """The CGAN port's nn.Dropout multiplies by the given masks: other masks, other D step; the
    pure forwards are the identity (no torch RNG): two calls agree exactly."""
    from gansuite.common.streams import Streams

    spec = preset("cgan-tiny")
    port = PortBackend(load_port("gansuite.benchmarks.peers.seed002_torch:CganPort"))
    batch, params = Streams(spec, 0).batch(0), init_params(spec, 0)
    st = port.build(spec, params, None, BuildOptions(dtype="float64"))
    d1 = port.discriminate(st, batch.real, "batch", batch.draws["labels"])
    np.testing.assert_array_equal(d1, port.discriminate(st, batch.real, "batch", batch.draws["labels"]))
    flipped = {k: (v if not k.startswith("mask/real/") else v[::-1].copy()) for k, v in batch.draws.items()}
    losses = []
    for draws in (batch.draws, batch.draws, flipped):
        st = port.build(spec, params, None, BuildOptions(dtype="float64"))
        losses.append(port.train_step(st, batch.real, batch.z, draws=draws).loss_D)
    assert losses[0] == losses[1] != losses[2]


def test_seed003_noise_rows_on_a_short_batch():
    """Seed 003's torch.randn(BATCH_SIZE, ...) on a short last batch: 4 real rows, 16 noise rows;
    each BCELoss averages its own batch. One iteration of the seed's loop vs the oracle."""
    spec = preset("dcgan-mnist-tiny")
    params, real, z = parity_inputs(spec, 0, 4)
    assert (len(real), len(z)) == (4, 16)
    port = PortBackend(load_port("gansuite.benchmarks.peers.seed003_torch:SeedPort"))
    oracle = OracleBackend()
    sp, so = port.build(spec, params, None, BuildOptions(dtype="float64")), oracle.build(spec, params, None, BuildOptions())
    a, b = port.train_step(sp, real, z), oracle.train_step(so, real, z)
    for k in ("loss_D", "loss_G"):
        assert abs(getattr(a, k) - getattr(b, k)) <= tolerance("float64", "loss") * abs(getattr(b, k)), k
    pa, pb = port.export_params(sp)[0], oracle.export_params(so)[0]
    worst = max(rel_err(pa[k], pb[k])[1] for k in pb)
    assert worst <= SEED_CODE, worst  # end-to-end parameters after Adam (common/tolerances.py)


def test_seed003_peer_trains():
    from gansuite.benchmarks.peers.seed003_torch import Peer

    peer = Peer(preset("dcgan-mnist-tiny"), 4, "cpu", 0)
    before = [p.detach().clone() for p in peer.gen.parameters()]
    peer.train(2)
    peer.sample(1)
    assert len(peer.D_losses) == 2 and all(np.isfinite(peer.D_losses + peer.G_losses))
    assert any(not bool((p == q).all()) for p, q in zip(peer.gen.parameters(), before))


def test_fix_gamma_batch_norm_has_no_weight():
    """MXNet's fix_gamma: no weight tensor in the module (so none in Adam), scale 1 in the forward."""
    from gansuite.common.registry import get_backend

    spec = preset("dcgan-mxnet-tiny")
    backend = get_backend("torch")
    st = backend.build(spec, init_params(spec, 0), None, BuildOptions(dtype="float64"))
    bn = st.G[1]
    assert bn.weight is None and "1.weight" not in st.G.state_dict()
    assert all(n != "1.weight" for n, _ in st.G.named_parameters())


def test_fast_mode_compiles_on_a_gpu_or_when_asked():
    """Fast mode on a CPU is eager (nothing beat it here: backend._compiles); torch.compile stays
    one option away and is held to the oracle: dcgan-tiny, one float32 iteration from host noise."""
    from gansuite.common.oracle import OracleBackend
    from gansuite.common.params import init_params
    from gansuite.common.protocol import SCALARS, BuildOptions
    from gansuite.common.registry import get_backend
    from gansuite.common.streams import Streams
    from gansuite.common.tolerances import tolerance

    be, spec = get_backend("torch"), preset("dcgan-tiny")
    params, b = init_params(spec, 0), Streams(spec, 0).batch(0)
    assert be.settings(be.build(spec, params, None, BuildOptions(mode="fast")))["compiled"] is False
    st = be.build(spec, params, None, BuildOptions(mode="fast", extra={"compile": True}))
    assert be.settings(st)["compiled"] is True
    out = be.train_step(st, b.real, b.z)
    o = OracleBackend()
    ref = o.train_step(o.build(spec, params, None, BuildOptions(dtype="float64")), b.real, b.z)
    for k in SCALARS:
        assert abs(getattr(out, k) - getattr(ref, k)) <= tolerance("float32", "loss") * abs(getattr(ref, k)), k


def test_bf16_mixed_fast_step_stays_near_the_oracle():
    """Fast mode's bf16 mixed precision (extra={"mixed_precision": "mixed_bfloat16"}): torch.autocast
    around each pass's forwards (models._autocast). One dcgan-tiny iteration's scalars are within
    MIXED_BF16_LOSS of the float64 oracle and further from it than float32's tolerance (autocast
    took); D's first convolution returned bfloat16 while its weight, BatchNorm buffers and Adam
    moments stayed float32; generate returns float32. D's step moves D(G(z)) by more than
    MIXED_BF16_LOSS here, so a G step run on autocast's stale pre-step bf16 copies of D (one region
    across the D step) would miss D_G_z2. Refused in parity mode and for float64 with one line."""
    import torch

    from gansuite.backends.torch import models
    from gansuite.common.errors import GanSuiteError
    from gansuite.common.protocol import MIXED_BF16
    from gansuite.common.registry import get_backend
    from gansuite.common.streams import Streams
    from gansuite.common.tolerances import MIXED_BF16_LOSS

    backend, spec = get_backend("torch"), preset("dcgan-tiny")
    params, batch = init_params(spec, 0), Streams(spec, 0).batch(0)
    oracle = OracleBackend()
    ref = oracle.train_step(oracle.build(spec, params, None, BuildOptions()), batch.real, batch.z)
    assert abs(ref.D_G_z2 - ref.D_G_z1) > MIXED_BF16_LOSS  # stale D weights in the G step would show
    mixed = {"mixed_precision": MIXED_BF16}
    st = backend.build(spec, params, None, BuildOptions(dtype="float32", mode="fast", extra=mixed))
    assert backend.settings(st)["mixed_precision"] == "mixed_bfloat16"
    conv = st.D[0]
    assert isinstance(conv, torch.nn.Conv2d)
    seen: list[tuple[torch.dtype, torch.dtype]] = []
    hook = conv.register_forward_hook(lambda mod, args, out: seen.append((args[0].dtype, out.dtype)))
    out = backend.train_step(st, batch.real, batch.z)
    hook.remove()
    # D runs three times per iteration (real, fake, the G step): float32 in, bfloat16 out each time
    assert seen == [(torch.float32, torch.bfloat16)] * 3, seen
    assert conv.weight.dtype == torch.float32 and st.opt_D.state[conv.weight]["exp_avg"].dtype == torch.float32
    assert {b.dtype for n, b in st.D.named_buffers() if "running" in n} == {torch.float32}
    errs = {k: abs(getattr(out, k) - getattr(ref, k)) / max(1.0, abs(getattr(ref, k)))
            for k in ("loss_D", "D_x", "D_G_z1", "loss_G", "D_G_z2")}
    assert max(errs.values()) <= MIXED_BF16_LOSS, errs
    assert max(errs.values()) > tolerance("float32", "loss"), errs
    # the pure forward: G's first layer in bfloat16, its output handed back in float32
    seen.clear()
    hook = st.G[0].register_forward_hook(lambda mod, args, out: seen.append((args[0].dtype, out.dtype)))
    sample = models.forward(st, "G", torch.as_tensor(batch.z, dtype=torch.float32), "batch", None)
    hook.remove()
    assert seen == [(torch.float32, torch.bfloat16)] and sample.dtype == torch.float32, (seen, sample.dtype)
    for options in (BuildOptions(dtype="float32", mode="parity", extra=mixed),
                    BuildOptions(dtype="float64", mode="fast", extra=mixed)):
        with pytest.raises(GanSuiteError, match=r"^extra.mixed_precision: .*allowed: 'mixed_bfloat16'"):
            backend.build(spec, params, None, options)


def _assert_epoch_scalars(outs, steps):
    """train_epoch's per-iteration scalars (``outs``, its calls in order) against ``steps``, one
    train_step each: float64 round-off (tolerances.py)."""
    from gansuite.common.protocol import SCALARS
    from gansuite.common.tolerances import tolerance

    for k in SCALARS:
        got = np.concatenate([o[k] for o in outs])
        np.testing.assert_allclose(got, [getattr(s, k) for s in steps], rtol=tolerance("float64", "loss"), atol=0)


def _assert_same_state(be, state, ref, steps):
    """Parameters, both Adam moments and the step counts of ``state`` against ``ref``'s, within
    float64 round-off of each tensor's scale (tolerances.py)."""
    from gansuite.common.tolerances import tolerance

    (p, o), (p_ref, o_ref) = be.export_params(state), be.export_params(ref)
    for k in p_ref:
        np.testing.assert_allclose(p[k], p_ref[k], rtol=0, atol=tolerance("float64", "adam") * max(1.0, np.abs(p_ref[k]).max()))
    for net in ("G", "D"):
        assert o[net].step == o_ref[net].step == steps
        for k in o_ref[net].m:
            for got, want in ((o[net].m[k], o_ref[net].m[k]), (o[net].v[k], o_ref[net].v[k])):
                np.testing.assert_allclose(got, want, rtol=0, atol=tolerance("float64", "adam") * max(1e-8, np.abs(want).max()))


def test_train_epoch_equals_as_many_train_steps():
    """The multi-step primitive (backend.train_epoch: torch.compile over torch's scan operator, on a
    functional copy of the iteration over flat vectors): gaussian-mxnet (the eps-hat Adam, MXNet's
    per-example loss and its 1/B) from host noise, float64, against train_step per iteration: every
    scalar, parameter, moment and step count within float64 round-off (tolerances.py, float64: the
    same maths, sums in another order). Two calls of different lengths (one compilation: the scan
    length is dynamic), then a write_adam (new moment tensors: the flat views are rebuilt) and a
    train_step after the scan, which must see the scan's state."""
    from gansuite.common.protocol import BuildOptions, OptState
    from gansuite.common.registry import get_backend
    from gansuite.common.streams import Streams

    be, spec = get_backend("torch"), preset("gaussian-mxnet")
    streams, params, opts = Streams(spec, 0), init_params(spec, 0), BuildOptions(dtype="float64", mode="fast")
    reals = np.stack([streams.real(i) for i in range(12)])
    zs = np.stack([streams.noise(i) for i in range(12)])
    stepped, scanned = be.build(spec, params, None, opts), be.build(spec, params, None, opts)
    steps = [be.train_step(stepped, reals[i], zs[i]) for i in range(12)]
    outs = [be.train_epoch(scanned, reals[:7], zs[:7]), be.train_epoch(scanned, reals[7:11], zs[7:11])]
    _assert_epoch_scalars(outs, steps[:11])
    p_scan, o_scan = be.export_params(scanned)
    replaced = OptState()
    for net in ("G", "D"):  # the same moments, as new tensors: the flat views must be rebuilt
        replaced[net].step, replaced[net].m, replaced[net].v = o_scan[net].step, dict(o_scan[net].m), dict(o_scan[net].v)
    rebuilt = be.build(spec, p_scan, replaced, opts)
    be.train_epoch(rebuilt, reals[11:12], zs[11:12])
    be.train_step(scanned, reals[11], zs[11])  # a train_step after the scan: its state, through the views
    for state in (scanned, rebuilt):
        _assert_same_state(be, state, stepped, 12)


def test_train_epoch_runs_every_dense_layer_as_train_step():
    """train_epoch's functional nets hold 2-D activations feature-major between dense layers and go
    back to batch-first for a reshape (train._functional_net): on nets with every layer it takes
    (ReLU, a bias-free Dense, Reshape and Flatten, LeakyReLU, Sigmoid; tests/epoch_specs.py), the
    mean reduction with a D loss scale, and 6 real rows against 8 of z, 5 iterations in two calls
    train as 5 train_steps do: float64 round-off (tolerances.py) in every scalar, parameter and moment."""
    import dataclasses

    from gansuite.common.protocol import BuildOptions
    from gansuite.common.registry import get_backend
    from gansuite.common.streams import Streams

    from epoch_specs import every_layer_spec

    be, spec = get_backend("torch"), every_layer_spec()
    spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, noise_batch="batch_size"))
    streams, params, opts = Streams(spec, 0), init_params(spec, 0), BuildOptions(dtype="float64", mode="fast")
    reals = np.stack([streams.real(i)[:6] for i in range(5)])
    zs = np.stack([streams.noise(i) for i in range(5)])
    assert reals.shape[1] == 6 and zs.shape[1] == 8
    stepped, scanned = be.build(spec, params, None, opts), be.build(spec, params, None, opts)
    steps = [be.train_step(stepped, reals[i], zs[i]) for i in range(5)]
    outs = [be.train_epoch(scanned, reals[:2], zs[:2]), be.train_epoch(scanned, reals[2:], zs[2:])]
    _assert_epoch_scalars(outs, steps)
    _assert_same_state(be, scanned, stepped, 5)


def test_train_epoch_is_refused_in_one_line_where_it_cannot_run():
    """train_epoch compiles dense nets in fast mode, float32/float64 only: parity, BatchNorm or
    convolutions, per-iteration draws and bf16-mixed are refused in one line naming the reason, and
    train_epoch_refusal says the same without building anything (the trainer and the benchmarks
    ask it before choosing the primitive)."""
    from gansuite.common.errors import GanSuiteError
    from gansuite.common.protocol import MIXED_BF16, BuildOptions
    from gansuite.common.registry import get_backend
    from gansuite.common.streams import Streams

    be = get_backend("torch")
    cases = [("gaussian", BuildOptions(dtype="float64"), "parity mode"),
             ("dcgan-tiny", BuildOptions(mode="fast"), "has ConvTranspose2d"),
             ("mlp-gan-tiny", BuildOptions(mode="fast"), "needs per-iteration draws"),
             ("gaussian", BuildOptions(mode="fast", extra={"mixed_precision": MIXED_BF16}), "bf16-mixed")]
    assert be.train_epoch_refusal(preset("gaussian"), BuildOptions(mode="fast")) is None
    for model, opts, reason in cases:
        spec = preset(model)
        assert reason in be.train_epoch_refusal(spec, opts)
        state = be.build(spec, init_params(spec, 0), None, opts)
        with pytest.raises(GanSuiteError, match=reason) as err:
            be.train_epoch(state, np.stack([Streams(spec, 0).real(0)]))
        assert "\n" not in str(err.value)
