"""Checkpoint files: exact round trip, atomic replace, and one-line errors for bad files."""

from __future__ import annotations

import numpy as np
import pytest

from gansuite.common.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from gansuite.common.errors import GanSuiteError
from gansuite.common.metrics import frechet_gaussian, gaussian_report
from gansuite.common.oracle import OracleBackend
from gansuite.common.params import init_params
from gansuite.common.presets import preset
from gansuite.common.protocol import BuildOptions
from gansuite.common.streams import Streams


def _trained_checkpoint(model: str = "dcgan-tiny", steps: int = 2) -> Checkpoint:
    spec = preset(model)
    oracle = OracleBackend()
    st = oracle.build(spec, init_params(spec, 0), None, BuildOptions())
    for b in Streams(spec, 0).iterate(0, steps):
        oracle.train_step(st, b.real[:4], b.z[:4])
    params, opt = oracle.export_params(st)
    return Checkpoint(spec, params, opt, 0, steps, {"loss_D": np.arange(steps, dtype=float)}, {"backend": "oracle"})


def test_round_trip_is_exact(tmp_path):
    ck = _trained_checkpoint()
    back = load_checkpoint(save_checkpoint(tmp_path / "c.safetensors", ck))
    assert back.spec == ck.spec and back.next_iteration == 2 and back.seed == 0
    assert list(back.params) == list(ck.params)
    for k in ck.params:
        np.testing.assert_array_equal(back.params[k], ck.params[k])
    for net in ("G", "D"):
        assert back.opt[net].step == 2
        for k in ck.opt[net].m:
            np.testing.assert_array_equal(back.opt[net].m[k], ck.opt[net].m[k])
            np.testing.assert_array_equal(back.opt[net].v[k], ck.opt[net].v[k])
    np.testing.assert_array_equal(back.history["loss_D"], [0.0, 1.0])
    assert back.meta["backend"] == "oracle"
    assert not list(tmp_path.glob(".*.tmp")), "temp file left behind"


def test_save_replaces_atomically(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, _trained_checkpoint(steps=1))
    save_checkpoint(path, _trained_checkpoint(steps=2))
    assert load_checkpoint(path).next_iteration == 2


def test_bad_checkpoints_give_one_line_errors(tmp_path):
    good = save_checkpoint(tmp_path / "good.safetensors", _trained_checkpoint())
    blob = good.read_bytes()
    cases = {
        "missing.safetensors": (None, "does not exist"),
        "truncated.safetensors": (blob[: len(blob) // 2], "is truncated or corrupt"),
        "garbage.safetensors": (b"\x00" * 64, "is truncated or corrupt"),
    }
    for name, (content, message) in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(GanSuiteError) as info:
            load_checkpoint(tmp_path / name)
        assert message in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(GanSuiteError, match="is a 'dcgan-tiny' checkpoint, not 'gaussian'"):
        load_checkpoint(good, expect_model="gaussian")


def test_wrong_shaped_tensor_is_named(tmp_path):
    ck = _trained_checkpoint()
    ck.params["D.2.weight"] = ck.params["D.2.weight"][:, :4]
    with pytest.raises(GanSuiteError, match=r"tensor 'D.2.weight' has shape \(16, 4, 4, 4\), the spec needs \(16, 8, 4, 4\)"):
        load_checkpoint(save_checkpoint(tmp_path / "c.safetensors", ck))


def test_frechet_distance_exact_values():
    m, c = np.array([1.0, 2.0]), np.array([[2.0, 0.3], [0.3, 1.0]])
    assert frechet_gaussian(m, c, m, c) == pytest.approx(0.0, abs=1e-12)
    # 1-D closed form: (m1-m2)^2 + (s1 - s2)^2
    assert frechet_gaussian(np.array([0.0]), np.array([[4.0]]), np.array([3.0]), np.array([[1.0]])) == pytest.approx(10.0)
    spec = preset("gaussian")
    rep = gaussian_report(spec, init_params(spec, 0))
    assert 5 < rep["frechet_distance"] < 15  # tiny N(0, 0.02) generator vs N(b, A^T A)
