"""Seed 002's VAE through the training loop, checkpoints and CLI, on the float64 oracle (any env).

Resume is exact (an interrupted run resumed gives the bits of an uninterrupted one), checkpoints
carry their family so a VAE checkpoint given to a GAN command (and the reverse) is refused in one
line with nothing written, and ``gansuite sample`` draws the seed's sampled grid from a VAE."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from gansuite.common.checkpoint import checkpoint_family, load_checkpoint, load_vae_checkpoint
from gansuite.common.errors import GanSuiteError
from gansuite.common.training import RunConfig
from gansuite.common.vae import vae_tiny_preset
from gansuite.common.vae_backend import OracleVAE
from gansuite.common.vae_training import train_vae

ITERATIONS = 12


def _cfg(out, **kw) -> RunConfig:
    return RunConfig(spec=vae_tiny_preset(), backend=OracleVAE(), out_dir=out, dtype="float64",
                     iterations=ITERATIONS, checkpoint_every=4, quality_every=3, progress=False, log_every=100, **kw)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gansuite.common.cli", *args], capture_output=True, text=True)


def test_interrupted_run_resumes_to_the_same_bits(tmp_path, monkeypatch):
    straight = train_vae(_cfg(tmp_path / "straight"))
    oracle = OracleVAE()
    real_step, calls = oracle.train_step, {"n": 0}

    def interrupt_at_7(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(oracle, "train_step", interrupt_at_7)
    cfg = _cfg(tmp_path / "resumed")
    cfg.backend = oracle
    with pytest.raises(GanSuiteError, match="interrupted at iteration 7; checkpoint saved"):
        train_vae(cfg)
    assert load_vae_checkpoint(tmp_path / "resumed" / "checkpoint.safetensors").next_iteration == 7
    monkeypatch.setattr(oracle, "train_step", real_step)
    cfg.resume = True
    resumed = train_vae(cfg)
    a = load_vae_checkpoint(tmp_path / "straight" / "checkpoint.safetensors")
    b = load_vae_checkpoint(tmp_path / "resumed" / "checkpoint.safetensors")
    assert a.opt.step == b.opt.step == ITERATIONS == a.next_iteration == b.next_iteration
    for k in a.params:
        np.testing.assert_array_equal(b.params[k], a.params[k], err_msg=k)
        np.testing.assert_array_equal(b.opt.m[k], a.opt.m[k], err_msg=k)
        np.testing.assert_array_equal(b.opt.v[k], a.opt.v[k], err_msg=k)
    assert sorted(a.history) == sorted(b.history)
    for k in a.history:
        np.testing.assert_array_equal(b.history[k], a.history[k], err_msg=k)
    assert resumed["eval"]["over_training"] == straight["eval"]["over_training"]
    for name in ("losses.png", "sampled.png", "reconst.png", "summary.json"):
        assert (tmp_path / "resumed" / name).stat().st_size > 0


def test_eval_loss_falls_and_starts_at_the_seed_value(tmp_path):
    """The untrained decoder outputs ~0.5 per pixel: the BCE per example starts near 784 ln 2 = 543;
    20 iterations (1.25 epochs of vae-tiny) lower the evaluation loss."""
    cfg = _cfg(tmp_path)
    cfg.iterations = 20
    evals = train_vae(cfg)["eval"]["over_training"]
    assert evals[0]["iteration"] == 0 and evals[-1]["iteration"] == 20
    assert 0.9 * 784 * np.log(2) < evals[0]["reconstruction"] < 1.1 * 784 * np.log(2)
    assert evals[-1]["total"] < evals[0]["total"] - 10, (evals[0], evals[-1])


def test_family_is_checked_in_one_line_and_nothing_is_written(tmp_path):
    train_vae(_cfg(tmp_path / "vae"))
    ck = tmp_path / "vae" / "checkpoint.safetensors"
    assert checkpoint_family(ck) == "vae"
    before = ck.read_bytes()
    with pytest.raises(GanSuiteError) as info:
        load_checkpoint(ck)
    assert str(info.value).count("\n") == 0 and "is a VAE checkpoint (model 'vae-tiny')" in str(info.value)
    res = _cli("train", "--backend", "oracle", "--model", "dcgan-tiny", "--dtype", "float64", "--out",
               str(tmp_path / "vae"), "--resume", "--iterations", "2", "--no-progress")
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0, res.stderr
    assert "is a VAE checkpoint" in res.stderr and "Traceback" not in res.stderr
    assert ck.read_bytes() == before
    # the reverse: a GAN checkpoint where a VAE run resumes
    res = _cli("train", "--backend", "oracle", "--model", "gaussian", "--dtype", "float64", "--out",
               str(tmp_path / "gan"), "--iterations", "2", "--no-progress")
    assert res.returncode == 0, res.stderr
    res = _cli("train", "--backend", "oracle", "--model", "vae-tiny", "--dtype", "float64", "--out",
               str(tmp_path / "gan"), "--resume", "--iterations", "2", "--no-progress")
    assert res.returncode == 2 and "is a GAN checkpoint (model 'gaussian'), not a VAE one" in res.stderr, res.stderr


def test_sample_draws_the_seeds_grid_and_refuses_a_label(tmp_path):
    train_vae(_cfg(tmp_path))
    ck = str(tmp_path / "checkpoint.safetensors")
    res = _cli("sample", "--checkpoint", ck, "--backend", "oracle", "--dtype", "float64", "--n", "16", "--out",
               str(tmp_path / "grid.png"))
    assert res.returncode == 0 and "16 samples from vae-tiny, iteration 12" in res.stdout, res.stderr
    assert (tmp_path / "grid.png").stat().st_size > 0
    res = _cli("sample", "--checkpoint", ck, "--backend", "oracle", "--dtype", "float64", "--label", "3", "--out",
               str(tmp_path / "label.png"))
    assert res.returncode == 2 and res.stderr.strip() == "error: label: model 'vae-tiny' is not conditional; omit --label"
    assert not (tmp_path / "label.png").exists()


def test_cli_trains_a_vae_and_reports_its_losses(tmp_path):
    res = _cli("train", "--backend", "oracle", "--model", "vae-tiny", "--dtype", "float64", "--out", str(tmp_path),
               "--iterations", "4", "--no-progress", "--set", "train.batch_size=8")
    assert res.returncode == 0, res.stderr
    brief = json.loads(res.stdout[res.stdout.index("{"):])
    assert brief["model"] == "vae-tiny" and brief["iterations"] == 4
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["examples_per_s"] > 0 and set(summary["final_per_example"]) == {"reconstruction", "kl", "total"}
    ck = load_vae_checkpoint(tmp_path / "checkpoint.safetensors")
    assert ck.spec.train.batch_size == 8 and ck.opt.step == 4
    res = _cli("train", "--backend", "oracle", "--model", "vae-tiny", "--out", str(tmp_path / "x"),
               "--set", "latent=0")
    assert res.returncode == 2 and res.stderr.startswith("error: latent:"), res.stderr
    res = _cli("train", "--backend", "oracle", "--model", "vae-small", "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and "vae-tiny" in res.stderr and "dcgan" in res.stderr, res.stderr


def test_tensorboard_gets_every_iterations_losses_and_each_evaluation(tmp_path):
    """--tensorboard on a VAE run: the per-example losses of every iteration, as in the checkpoint's
    history, and the evaluation loss at each evaluation, read back with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, logs = tmp_path / "run", tmp_path / "tb"
    res = _cli("train", "--backend", "oracle", "--model", "vae-tiny", "--dtype", "float64", "--out", str(out),
               "--iterations", "6", "--quality-every", "3", "--no-progress", "--set", "train.batch_size=8",
               "--tensorboard", str(logs))
    assert res.returncode == 0, res.stderr
    acc = EventAccumulator(str(logs))
    acc.Reload()
    assert {"loss/reconstruction", "loss/kl", "loss/total", "speed/examples_per_s", "eval/reconstruction",
            "eval/kl", "eval/total"} <= set(acc.Tags()["scalars"])
    history = load_vae_checkpoint(out / "checkpoint.safetensors").history
    for k in ("reconstruction", "kl", "total"):
        events = acc.Scalars(f"loss/{k}")
        assert [e.step for e in events] == list(range(1, 7))
        np.testing.assert_allclose([e.value for e in events], history[k], rtol=1e-6)  # TensorBoard keeps float32
    evals = acc.Scalars("eval/total")
    assert [e.step for e in evals] == [0, 3, 6]
    np.testing.assert_allclose([e.value for e in evals], history["eval/total"], rtol=1e-6)
    assert evals[-1].value < evals[0].value
