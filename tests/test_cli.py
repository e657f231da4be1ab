"""The CLI end to end on this env's backend (the oracle in the core env): outputs, exact
resume (also after SIGKILL), sampling, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from gansuite.common.checkpoint import load_checkpoint
from gansuite.common.cli import main
from gansuite.common.registry import FRAMEWORK_BACKENDS, available

from shared_data import require_mnist

_declared = [b for b in os.environ.get("GANSUITE_BACKENDS", "").split(",") if b.strip()]
BACKEND = _declared[0] if _declared else "oracle"


def run_cli(*args: str) -> int:
    return main(list(args))


def test_train_gaussian_writes_everything(tmp_path):
    out = tmp_path / "run"
    assert run_cli("train", "--backend", BACKEND, "--model", "gaussian", "--out", str(out),
                   "--iterations", "250", "--no-progress") == 0
    for name in ("checkpoint.safetensors", "summary.json", "losses.png", "samples.png"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == BACKEND and summary["iterations"] == 250
    g = summary["gaussian"]
    assert g["true_mean"] == [1.0, 2.0] and np.allclose(g["true_cov"], [[1.01, 1.95], [1.95, 4.25]])
    assert g["frechet_distance"] < 9.0  # moved from ~10 at init after 2 epochs
    assert [e["epoch"] for e in g["per_epoch"]] == [1, 2]
    assert g["per_epoch"][-1]["frechet_distance"] == pytest.approx(g["frechet_distance"])


def test_resume_continues_exactly(tmp_path):
    a, b = tmp_path / "straight", tmp_path / "split"
    common = ["--backend", BACKEND, "--model", "dcgan-tiny", "--no-progress", "--checkpoint-every", "2",
              "--quality-every", "3", "--set", "train.batch_size=4"]
    assert run_cli("train", *common, "--out", str(a), "--iterations", "6") == 0
    assert run_cli("train", *common, "--out", str(b), "--iterations", "3") == 0
    assert run_cli("train", *common, "--out", str(b), "--iterations", "6", "--resume") == 0
    ca, cb = load_checkpoint(a / "checkpoint.safetensors"), load_checkpoint(b / "checkpoint.safetensors")
    assert ca.next_iteration == cb.next_iteration == 6
    for k in ca.params:
        np.testing.assert_array_equal(cb.params[k], ca.params[k], err_msg=k)
    np.testing.assert_array_equal(cb.history["loss_D"], ca.history["loss_D"])
    # The quality measured over training survives the resume: same iterations, same numbers.
    qa, qb = (json.loads((d / "summary.json").read_text())["quality"]["over_training"] for d in (a, b))
    assert [r["iteration"] for r in qb] == [0.0, 3.0, 6.0] and qb == qa
    swd = json.loads((b / "summary.json").read_text())["swd"]
    assert set(swd) == {"level0_64px", "level1_32px", "level2_16px", "mean"} and swd["mean"] > 0
    assert (b / "progress.gif").is_file()
    assert run_cli("sample", "--checkpoint", str(b / "checkpoint.safetensors"), "--backend", BACKEND,
                   "--n", "16", "--out", str(tmp_path / "grid.png")) == 0
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    """Kill -9 a training process after its first checkpoint, resume, compare with a clean run."""
    args = ["train", "--backend", BACKEND, "--model", "dcgan-tiny", "--no-progress", "--checkpoint-every", "3",
            "--set", "train.batch_size=4", "--iterations", "24", "--quality-every", "12"]
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen([sys.executable, "-m", "gansuite.common.cli", *args, "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = killed / "checkpoint.safetensors"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), proc.stderr.read().decode()
    at = load_checkpoint(ckpt).next_iteration
    assert run_cli(*args, "--out", str(killed), "--resume") == 0
    assert run_cli(*args, "--out", str(clean)) == 0
    ck, cc = load_checkpoint(ckpt), load_checkpoint(clean / "checkpoint.safetensors")
    assert ck.next_iteration == cc.next_iteration == 24 and at < 24
    for k in cc.params:
        np.testing.assert_array_equal(ck.params[k], cc.params[k], err_msg=k)


@pytest.mark.parametrize("args,message", [
    (["train", "--backend", "caffe", "--out", "{tmp}"], "error: backend: unknown backend 'caffe'; allowed: oracle, torch"),
    (["train", "--model", "biggan", "--out", "{tmp}"], "error: model: unknown model 'biggan'; allowed: gaussian"),
    (["train", "--set", "train.batch_size=0", "--out", "{tmp}"], "error: train.batch_size: must be a positive integer"),
    (["train", "--set", "train.batch_size=big", "--out", "{tmp}"], "error: train.batch_size: expects an integer"),
    (["train", "--set", "optim.lr=1", "--out", "{tmp}"], "error: optim.lr: unknown key 'optim'"),
    (["train", "--dtype", "float16", "--out", "{tmp}"], "error: dtype: must be one of float32, float64"),
    (["train", "--mode", "turbo", "--out", "{tmp}"], "error: mode: must be one of parity, fast"),
    (["train", "--model", "dcgan-tiny", "--data", "{tmp}/nowhere", "--out", "{tmp}"], "error: data.path: '"),
    (["train", "--backend", BACKEND, "--out", "{tmp}/file.txt/sub"], "error: out: cannot write to"),
    (["sample", "--checkpoint", "{tmp}/none.safetensors"], "error: checkpoint: '"),
    # seed 002: a conditional model on data without labels, refused before any work; a flat MLP
    # on images of another size
    (["train", "--backend", BACKEND, "--model", "cgan-tiny", "--set", "data.kind=shapes", "--out", "{tmp}/c"],
     "error: data: model 'cgan-tiny' is conditional but data kind 'shapes' has no labels; allowed: glyphs"),
    (["train", "--backend", BACKEND, "--model", "mlp-gan-tiny", "--set", "data.image_size=32", "--out", "{tmp}/m"],
     "error: data: examples have shape (1, 32, 32) but the generator outputs (1, 28, 28)"),
])
def test_bad_input_is_one_line_no_traceback(tmp_path, capsys, args, message):
    (tmp_path / "file.txt").write_text("x")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert run_cli(*argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message), err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_conditional_sampling_takes_labels_in_range_only(tmp_path, capsys):
    """``gansuite sample --label`` on a CGAN checkpoint: a class outside 0..9 is one line, and
    --label on an unconditional model too; nothing is written for either."""
    assert run_cli("train", "--backend", BACKEND, "--model", "cgan-tiny", "--iterations", "1", "--no-progress",
                   "--out", str(tmp_path / "run")) == 0
    ckpt = str(tmp_path / "run" / "checkpoint.safetensors")
    capsys.readouterr()
    assert run_cli("sample", "--backend", BACKEND, "--checkpoint", ckpt, "--label", "10", "--out", str(tmp_path / "s.png")) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: label: must be in 0..9 for model 'cgan-tiny', got 10", err
    assert not (tmp_path / "s.png").exists()
    assert run_cli("sample", "--backend", BACKEND, "--checkpoint", ckpt, "--label", "3", "--out", str(tmp_path / "s3.png")) == 0
    assert (tmp_path / "s3.png").exists()


def test_missing_framework_names_its_tox_env(capsys, tmp_path):
    missing = [b for b in FRAMEWORK_BACKENDS if b not in _declared and not available(b)[0]]
    if not missing:
        pytest.skip("every framework backend is importable in this environment")
    assert run_cli("train", "--backend", missing[0], "--out", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert f"tox -e {missing[0]}" in err and len(err.strip().splitlines()) == 1


def test_corrupt_image_folder_is_one_line(tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "x.jpg").write_bytes(b"not a jpeg")
    assert run_cli("train", "--backend", BACKEND, "--model", "dcgan-tiny", "--data", str(tmp_path / "imgs"),
                   "--out", str(tmp_path / "o")) == 2
    assert "cannot decode image" in capsys.readouterr().err


class _DivergesAt:
    """The env's real backend, except that iteration ``at`` reports a NaN loss_G (as an
    overflow would): the guard, not the arithmetic, is under test."""

    def __init__(self, backend, at: int):
        self._backend, self._at, self._calls = backend, at, 0

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def train_step(self, state, real, z, with_grads=False, draws=None):
        out = self._backend.train_step(state, real, z, with_grads, draws)
        self._calls += 1
        if self._calls == self._at + 1:
            out.loss_G = float("nan")
        return out


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    from gansuite.common.errors import GanSuiteError
    from gansuite.common.presets import preset
    from gansuite.common.registry import get_backend
    from gansuite.common.training import RunConfig, train

    out = tmp_path / "nan"
    cfg = RunConfig(spec=preset("gaussian"), backend=_DivergesAt(get_backend(BACKEND), at=7), out_dir=out,
                    iterations=20, checkpoint_every=3, progress=False)
    with pytest.raises(GanSuiteError) as info:
        train(cfg)
    msg = str(info.value)
    assert msg.startswith("training diverged at iteration 7: loss_G is nan; last good checkpoint: "), msg
    assert msg.endswith("(resumes at iteration 6)") and "\n" not in msg
    ck = load_checkpoint(out / "checkpoint.safetensors")
    assert ck.next_iteration == 6 and len(ck.history["loss_D"]) == 6


def test_bench_command_passes_its_exit_status(capsys):
    assert run_cli("bench", "--backend", "nope") == 2
    assert capsys.readouterr().err.strip().startswith("error: backend: unknown backend 'nope'")


@pytest.mark.skipif("torch" not in _declared, reason="the d2l PyTorch transcription runs in the torch env")
def test_verify_holds_a_seed_transcription_to_the_oracle_as_a_user_runs_it():
    """`gansuite verify` on d2l's PyTorch tab (benchmarks/peers/d2l_torch.py), in a subprocess."""
    proc = subprocess.run([sys.executable, "-m", "gansuite.common.cli", "verify", "--impl",
                           "gansuite.benchmarks.peers.d2l_torch:SeedPort", "--model", "gaussian",
                           "--iterations", "50"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in proc.stdout.splitlines()
            if line.startswith("| ") and "---" not in line}
    for key in [("forward", "G(z)"), ("forward", "D(x) logits"), ("one iteration", "losses"),
                ("one iteration", "parameters")]:
        assert key in rows and rows[key].rstrip().endswith("| ok |"), proc.stdout


@pytest.mark.parametrize("impl,message", [
    ("nowhere.py:Port", "error: impl: file 'nowhere.py' does not exist"),
    ("gansuite.common.spec:NoSuchClass", "error: impl: 'gansuite.common.spec' defines no class 'NoSuchClass'"),
    ("gansuite.common.spec:GANSpec", "error: impl: GANSpec lacks generate, discriminate, train_step, export_params"),
    ("justaname", "error: impl: expected FILE.py:CLASS or module:CLASS, got 'justaname'"),
])
def test_verify_rejects_a_bad_impl_in_one_line(impl, message, capsys):
    assert run_cli("verify", "--impl", impl, "--model", "gaussian") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err, err


def test_no_progress_prints_a_log_line_every_n_iterations(tmp_path, capsys):
    assert run_cli("train", "--backend", BACKEND, "--model", "gaussian", "--out", str(tmp_path / "run"),
                   "--iterations", "120", "--no-progress", "--log-every", "50") == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if " iteration " in l and "loss_D" in l]
    assert [l.split(" iteration ")[1].split()[0] for l in lines] == ["50/120", "100/120", "120/120"], lines
    for line in lines:
        for field in ("loss_D", "loss_G", "D(x)", "D(G(z))", "ex/s", "ETA"):
            assert field in line, line


def test_tensorboard_event_files_read_back(tmp_path):
    """--tensorboard writes every scalar per iteration (tensorboardX); TensorBoard's own reader gets them back."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, logs = tmp_path / "run", tmp_path / "tb"
    assert run_cli("train", "--backend", BACKEND, "--model", "gaussian", "--out", str(out), "--iterations", "250",
                   "--no-progress", "--tensorboard", str(logs)) == 0
    acc = EventAccumulator(str(logs))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss/D", "loss/G", "D/real", "D/fake_before_D_step", "D/fake_after_D_step",
            "quality/frechet_distance"} <= tags
    loss_d = acc.Scalars("loss/D")
    assert [e.step for e in loss_d] == list(range(1, 251))
    history = load_checkpoint(out / "checkpoint.safetensors").history["loss_D"]
    np.testing.assert_allclose([e.value for e in loss_d], history, rtol=1e-6)  # TensorBoard keeps float32
    assert [e.step for e in acc.Scalars("quality/frechet_distance")] == [125, 250]  # one per epoch


def test_image_quality_goes_to_tensorboard_and_the_summary(tmp_path):
    """An image model's quality (SWD here: dcgan-tiny's 256 glyphs are too few for the digit
    classifier) is measured at the start, every --quality-every and at the end: TensorBoard
    scalars and summary["quality"], with the collapsed-G and noise baselines."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, logs = tmp_path / "run", tmp_path / "tb"
    assert run_cli("train", "--backend", BACKEND, "--model", "dcgan-tiny", "--out", str(out), "--iterations", "5",
                   "--set", "train.batch_size=4", "--quality-every", "2", "--no-progress",
                   "--tensorboard", str(logs)) == 0
    acc = EventAccumulator(str(logs))
    acc.Reload()
    q = json.loads((out / "summary.json").read_text())["quality"]
    assert q["metrics"] == ["swd"] and [r["iteration"] for r in q["over_training"]] == [0.0, 2.0, 4.0, 5.0]
    assert [e.step for e in acc.Scalars("quality/swd")] == [0, 2, 4, 5]
    np.testing.assert_allclose([e.value for e in acc.Scalars("quality/swd")],
                               [r["swd"] for r in q["over_training"]], rtol=1e-6)
    assert q["baselines"]["noise"]["swd"] > 0 and q["baselines"]["collapsed"]["swd"] > 0
    assert (out / "quality.png").stat().st_size > 0


def test_log_every_must_be_positive(capsys):
    assert run_cli("train", "--model", "gaussian", "--out", "/tmp/x", "--log-every", "0") == 2
    assert capsys.readouterr().err.strip() == "error: log-every: must be a positive integer, got 0"


def test_train_on_the_shared_mnist_test_split(tmp_path, capsys):
    """`--data ../shared/data/mnist` holds only t10k: without --split the error names the split
    it has; with --split test it trains (seed 003's nets at test size, 2 iterations)."""
    mnist = str(require_mnist())
    args = ["train", "--backend", BACKEND, "--model", "dcgan-mnist-tiny", "--data", mnist, "--iterations", "2",
            "--quality-every", "2", "--no-progress"]
    assert run_cli(*args, "--out", str(tmp_path / "a")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: data.split: ") and err.endswith("has no 'train' split (train-images-*); it holds: test"), err
    assert run_cli(*args, "--split", "test", "--out", str(tmp_path / "b")) == 0
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["iterations"] == 2
