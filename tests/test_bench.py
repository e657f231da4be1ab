"""The benchmark harness: FLOP counts against hand counts, the timing rule, a --quick run on this
env's backend (the oracle in the core env) writing rows with exactly the agreed keys and sane
numbers, for the GANs and for seed 002's VAE, one-line errors, and the summary merging two
backends' files into one table."""

from __future__ import annotations

import contextlib

import json
import math
import os
import time

import pytest

from gansuite.benchmarks.flops import forward_flops, iteration_flops, layer_macs, vae_iteration_flops
from gansuite.benchmarks.harness import ROW_KEYS, ROW_MODES, Config, skip_reason
from gansuite.benchmarks.peers import IDIOMATIC_MODE, IDIOMATIC_MODULES, MODES, MODULES, PEER_MODES, peer_class
from gansuite.benchmarks.run import main
from gansuite.benchmarks.summary import build_summary
from gansuite.benchmarks.summary import main as summary_main
from gansuite.benchmarks.timing import Budget, measure
from gansuite.benchmarks.workloads import Pool, TrainSteps
from gansuite.common.presets import preset
from gansuite.common.spec import Conv2d, ConvTranspose2d, NetSpec
from gansuite.common.vae import VAE_PRESETS

_declared = [b for b in os.environ.get("GANSUITE_BACKENDS", "").split(",") if b.strip()]
BACKEND = _declared[0] if _declared else "oracle"
#: Which seed loops exist for which backend (benchmarks/peers).
D2L_PEER = BACKEND in ("torch", "tensorflow", "mxnet")
TUTORIAL_PEER = BACKEND == "torch"
VAE_PEER = BACKEND == "torch"  # seed 002's VAE loop is PyTorch only
#: The idiomatic DCGAN peers (Keras, Flax, Gluon); PyTorch's idiomatic loop is the tutorial itself.
IDIOMATIC_PEER = (BACKEND, "tutorial") in IDIOMATIC_MODULES


# -- FLOPs ---------------------------------------------------------------------------------------


def test_gaussian_flops_match_a_hand_count():
    spec = preset("gaussian")
    g = 2 * (2 * 2)  # Dense(2, 2): 4 multiply-adds
    d = 2 * (2 * 5 + 5 * 3 + 3 * 1)  # Dense(2,5), Dense(5,3), Dense(3,1): 28 multiply-adds
    assert forward_flops(spec.generator) == g == 8
    assert forward_flops(spec.discriminator) == d == 56
    # 3 D forwards + 1 G forward + backwards (2x forward) through D, D, D and G.
    assert iteration_flops(spec, 8).per_example == 9 * d + 3 * g == 528
    assert iteration_flops(spec, 8).total == 528 * 8
    # d2l's update_G runs G forward a second time.
    assert iteration_flops(spec, 8, g_forwards=2).per_example == 9 * d + 4 * g


def test_dcgan_flops_match_a_hand_count():
    spec = preset("dcgan")
    d_macs = (32 * 32 * 64 * 3 * 16       # Conv 3->64, 4x4 kernel, output 32x32
              + 16 * 16 * 128 * 64 * 16   # 64->128, output 16x16
              + 8 * 8 * 256 * 128 * 16    # 128->256, output 8x8
              + 4 * 4 * 512 * 256 * 16    # 256->512, output 4x4
              + 1 * 1 * 1 * 512 * 16)     # 512->1, output 1x1
    g_macs = (1 * 1 * 100 * 512 * 16      # ConvTranspose 100->512 on a 1x1 input
              + 4 * 4 * 512 * 256 * 16    # 512->256 on 4x4
              + 8 * 8 * 256 * 128 * 16    # 256->128 on 8x8
              + 16 * 16 * 128 * 64 * 16   # 128->64 on 16x16
              + 32 * 32 * 64 * 3 * 16)    # 64->3 on 32x32
    assert forward_flops(spec.discriminator) == 2 * d_macs == 207_634_432
    assert forward_flops(spec.generator) == 2 * g_macs == 209_256_448
    assert iteration_flops(spec, 128).total == 128 * (9 * 2 * d_macs + 3 * 2 * g_macs)


def test_vae_flops_match_a_hand_count():
    """Seed 002's VAE at its batch 128: Dense multiply-adds x 2, backward = 2x forward."""
    spec = VAE_PRESETS["vae"]()
    encoder = 784 * 400            # fc1: Linear(784, 400)
    heads = 2 * (400 * 20)         # fc2 (mu) and fc3 (log_var): Linear(400, 20) each
    decoder = 20 * 400 + 400 * 784  # fc4: Linear(20, 400); fc5: Linear(400, 784)
    forward = 2 * (encoder + heads + decoder)
    assert forward == 1_302_400
    flops = vae_iteration_flops(spec, 128)
    assert flops.forward == forward and flops.per_example == 3 * forward == 3_907_200
    assert flops.total == 128 * 3 * forward == 500_121_600
    assert flops.as_dict()["per_iteration"] == flops.total


def test_a_conv_and_its_transpose_count_the_same():
    """Adjoint operators do the same products: counting ConvTranspose by its input is consistent."""
    conv = NetSpec((3, 7, 7), (Conv2d(3, 2, 3, 2, 1),))
    convt = NetSpec((2, 4, 4), (ConvTranspose2d(2, 3, 3, 2, 1),))
    assert conv.output_shape == (2, 4, 4) and convt.output_shape == (3, 7, 7)
    assert forward_flops(conv) == forward_flops(convt) == 2 * (4 * 4 * 2 * 3 * 9)
    assert layer_macs(conv.layers[0], (3, 7, 7), (2, 4, 4)) == 864


# -- timing --------------------------------------------------------------------------------------


def test_compile_time_is_the_warmup_beyond_steady_state(monkeypatch):
    """measure's arithmetic on a simulated clock: the first call "compiles" for 50 ms, then 2 ms
    per iteration. (With real sleeps this failed in CI beside another env: a 2 ms sleep took 5 ms
    under load, so the block size came out 2, not 5.)"""
    from gansuite.benchmarks import timing

    now = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])
    calls: list[int] = []

    def run(n: int) -> None:
        now[0] += 0.05 if not calls else 0.002 * n
        calls.append(n)

    t = measure(run, lambda: None, Budget(warmup_calls=2, repeats=3, min_repeats=3, min_block_s=0.01,
                                          max_total_s=1.0))
    assert t.units_per_block == 5 and len(t.unit_s) == 3 and calls == [1, 1, 5, 5, 5]
    assert t.min_s <= t.median_s <= t.max_s
    assert t.min_s == pytest.approx(0.002) and t.max_s == pytest.approx(0.002)
    assert t.compile_s == pytest.approx(0.05 + 0.002 - 2 * 0.002)


def test_interleaved_ratios_leave_out_the_machines_drift(monkeypatch):
    """measure_paired on a simulated clock whose machine turns 1.7x slower halfway (this VM's drift
    between runs): a loop at 10 ms an iteration and 125-iteration calls at 0.1 ms an iteration. Every
    pair's ratio is 100, where two medians timed one before and one after the change would give 59x;
    the order alternates (a b, b a, ...) after each workload's warm-up calls."""
    from gansuite.benchmarks import timing
    from gansuite.benchmarks.timing import Workload, measure_paired

    now, order = [0.0], []

    def workload(name: str, seconds_per_unit: float) -> Workload:
        def run(n: int) -> None:
            order.append(name)
            now[0] += n * seconds_per_unit * (1.0 if len(order) <= 4 + 2 * 5 else 1.7)
        return Workload(run, lambda: None, 125 if name == "b" else 1)

    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])
    paired = measure_paired(workload("a", 0.010), workload("b", 125 * 0.0001),
                            Budget(warmup_calls=2, repeats=10, min_repeats=3, min_block_s=0.2, max_total_s=30.0))
    assert order == ["a", "a", "b", "b"] + ["a", "b", "b", "a"] * 5
    assert paired.ratios == pytest.approx([100.0] * 10)
    assert paired.a_s == pytest.approx([0.010] * 5 + [0.017] * 5) and paired.b_s[-1] == pytest.approx(0.00017)
    summary = paired.as_dict()
    assert summary["pairs"] == 10 and summary["ratio_min"] == pytest.approx(100.0) == summary["ratio_median"]


def test_the_cpu_peak_size_adapts_to_an_emulated_rate(monkeypatch):
    """A product that runs at ~1 GFLOP/s (PyTorch's bf16 on a CPU without bf16 kernels) is timed at the
    size that takes ~CALL_S a call, not at 2048 (14 s a call); a fast one keeps the full size."""
    from gansuite.benchmarks import peak

    def slow_maker(device, dtype, n, fast_math):
        return "fake", lambda: time.sleep(2.0 * n**3 / 1.1e9), lambda: None, lambda: None

    monkeypatch.setitem(peak._MAKERS, "fake", slow_maker)
    n = peak._adapted_size("fake", "cpu", "bfloat16", False, 2048)
    assert n % 128 == 0 and 512 <= n <= 640, n  # (1.1e9 FLOP/s * 0.5 s / 2) ** (1/3) = 650
    assert peak._adapted_size("fake", "cuda", "bfloat16", False, 8192) == 8192  # GPUs: the full size
    monkeypatch.setitem(peak._MAKERS, "quick", lambda device, dtype, n, fm: ("q", lambda: None, lambda: None,
                                                                             lambda: None))
    assert peak._adapted_size("quick", "cpu", "float32", False, 2048) == 2048


def test_bf16_rows_are_skipped_where_the_cpu_emulates_bf16():
    """More than EMULATED_BF16_SLOWDOWN slower in bf16 than in float32: skipped with both rates; within it
    (TensorFlow, JAX on an AVX2 CPU), timed; a GPU is never judged by this rule."""
    from gansuite.benchmarks.harness import EMULATED_BF16_SLOWDOWN, emulated_bf16_reason
    from gansuite.benchmarks.peak import Peak

    class Peaks:
        def __init__(self, f32, bf16):
            self.rates = {"float32": f32, "bfloat16": bf16}

        def get(self, framework, device, dtype, fast_math):
            return Peak(self.rates[dtype], "fake")

    reason = emulated_bf16_reason(Peaks(100.0, 1.2), "torch", "cpu")
    assert reason.startswith("torch's bfloat16 is emulated on this CPU") and "1.2 GFLOP/s against float32's 100" in reason
    assert "83x slower" in reason
    assert emulated_bf16_reason(Peaks(100.0, 100.0 / EMULATED_BF16_SLOWDOWN), "torch", "cpu") is None
    assert emulated_bf16_reason(Peaks(142.0, 105.0), "jax", "cpu") is None
    assert emulated_bf16_reason(Peaks(100.0, 1.0), "torch", "cuda") is None


def test_a_context_wraps_each_step_not_the_block():
    """torch.autocast caches its bf16 weight copies until its outermost region exits: a region
    around a whole timed block would run later steps on the first step's weights."""
    entered: list[int] = []

    class Region:
        def __enter__(self):
            entered.append(len(steps))

        def __exit__(self, *exc):
            return False

    steps: list[int] = []
    pool = Pool([1, 2], [3, 4])
    train = TrainSteps(lambda real, z: steps.append(real), lambda: None, pool, False, Region)
    train.run(3)
    assert steps == [1, 2, 1] and entered == [0, 1, 2]


# -- a --quick run on this env's backend ----------------------------------------------------------


def _targets_rows() -> dict[str, list[dict]]:
    """One run's rows at issue 16's two reference configurations (DCGAN batch 64, Gaussian batch 8)."""
    torch_bf16 = {**_row("torch", "fast", 64, 150.0, "dcgan"), "dtype": "bf16-mixed"}
    tf_bf16 = {**_row("tensorflow", "fast", 64, 66.0, "dcgan"), "dtype": "bf16-mixed"}
    tf_fast8 = _row("tensorflow", "fast", 8, 5000.0)
    tf_fast8["settings"]["epoch_scan"] = {"examples_per_s": 125000.0, "interleaved_with_seed_loop": {
        "seed_loop": "peer-d2l", "pairs": 10, "ratio_median": 1100.0, "ratio_min": 870.0, "ratio_max": 1320.0}}
    jax_fast8 = _row("jax", "fast", 8, 9000.0)
    jax_fast8["settings"]["epoch_scan"] = {"examples_per_s": 270000.0, "interleaved_with_seed_loop": {
        "skipped": "the d2l seed has no jax version (it covers: torch, mxnet, tensorflow)"}}
    return {"torch": [_row("torch", "peer-tutorial", 64, 50.0, "dcgan"), _row("torch", "fast", 64, 60.0, "dcgan"),
                      torch_bf16, _row("torch", "peer-d2l", 8, 3600.0), _row("torch", "fast", 8, 3240.0)],
            "tensorflow": [_row("tensorflow", "peer-idiomatic", 64, 50.0, "dcgan"),
                           _row("tensorflow", "fast", 64, 55.0, "dcgan"), tf_bf16,
                           _row("tensorflow", "peer-d2l", 8, 100.0), tf_fast8],
            "mxnet": [_row("mxnet", "peer-idiomatic", 64, 40.0, "dcgan"), _row("mxnet", "fast", 64, 38.0, "dcgan")],
            "jax": [_row("jax", "fast", 64, 20.0, "dcgan"), jax_fast8]}


def _write_targets_run(tmp_path) -> None:
    from gansuite.benchmarks.results import skip_entry

    (tmp_path / "cpu").mkdir()
    for backend, group in _targets_rows().items():
        (tmp_path / "cpu" / f"{backend}.json").write_text(json.dumps(group))
    skip = skip_entry("mxnet", "dcgan", "fast", "bf16-mixed", "cpu", "no bf16 kernels on this CPU")
    (tmp_path / "cpu" / "mxnet.skipped.json").write_text(json.dumps([skip]))


def test_summary_holds_issue_16s_targets_with_verdicts(tmp_path):
    """Every target is a ratio of two rows of the run: fast over the idiomatic peer (>= 1.0x), bf16 over
    float32 fast (>= 1.3x, or the recorded reason there is no bf16 row), the slowest-to-fastest ratio,
    and the Gaussian GAN's best fast form over the same framework's d2l loop (>= 100x): where the
    multi-step primitive and the d2l loop were also timed interleaved, that median ratio."""
    _write_targets_run(tmp_path)
    md = build_summary(tmp_path).read_text()
    targets = md.split("## Issue 16's targets")[1].split("\n## ")[0]
    assert "| PyTorch | — | 60 | 50 | **1.20x** met | 150 | **2.50x** met |" in targets
    assert "| TensorFlow | — | 55 | 50 | **1.10x** met | 66 | 1.20x not met |" in targets
    assert "| MXNet | — | 38 | 40 | 0.95x not met | — | no bf16 path here: no bf16 kernels on this CPU |" in targets
    assert "| JAX | — | 20 | — | no row | — | not measured |" in targets
    assert "**3.00x** (PyTorch 60 / JAX 20 examples/s)" in targets
    assert ("| TensorFlow | its d2l tab, 100 ex/s | 50.0x (5,000 ex/s) | 1,250x (125,000 ex/s) "
            "| 1,100x median of 10 pairs [870x-1,320x] | **1,100x** met |") in targets
    assert ("| PyTorch | its d2l tab, 3,600 ex/s | 0.90x (3,240 ex/s) | no multi-step primitive | not timed "
            "| 0.90x not met |") in targets
    assert ("| JAX | no d2l tab: PyTorch's, 3,600 ex/s | 2.50x (9,000 ex/s) | 75.0x (270,000 ex/s) "
            "| the d2l seed has no jax version (it covers: torch, mxnet, tensorflow) "
            "| 75.0x PyTorch's (no d2l tab of its own) |") in targets
    assert "| cpu | mxnet | dcgan | fast | bf16-mixed | no bf16 kernels on this CPU |" in md  # skipped configs


def test_readme_block_is_rewritten_between_its_markers_only(tmp_path):
    from gansuite.benchmarks.results import load_rows, load_skips
    from gansuite.benchmarks.targets import README_BEGIN, README_END, update_readme
    from gansuite.common.errors import GanSuiteError

    _write_targets_run(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"# top\n{README_BEGIN}\nold table\n{README_END}\nbottom\n")
    update_readme(readme, load_rows(tmp_path)[0], load_skips(tmp_path), "results/bench/summary.md")
    text = readme.read_text()
    assert text.startswith(f"# top\n{README_BEGIN}\n") and text.endswith(f"{README_END}\nbottom\n")
    assert "old table" not in text and "| MXNet | — | 38 | 40 | 0.95x not met |" in text
    assert "Measured ? on test, 2 CPUs" in text and "[results/bench/summary.md](results/bench/summary.md)" in text
    readme.write_text("no markers\n")
    with pytest.raises(GanSuiteError, match="^readme: .* must hold one"):
        update_readme(readme, [], [], "summary.md")


def test_a_skipped_group_is_recorded_with_its_reason_and_dropped_once_it_runs(tmp_path):
    from gansuite.benchmarks.results import load_skips, skip_entry, write_results

    skip = skip_entry("oracle", "gaussian", "fast", "float32", "cpu", "the oracle has no fast mode")
    write_results(tmp_path, "cpu", "oracle", [], [], [skip, skip])  # e.g. one per batch size
    assert load_skips(tmp_path) == [skip]
    write_results(tmp_path, "cpu", "oracle", [], [], [{**skip, "reason": "newer"}])
    assert load_skips(tmp_path) == [{**skip, "reason": "newer"}]
    write_results(tmp_path, "cpu", "oracle", [{**_row("oracle", "fast", 8, 10.0)}], [])
    assert load_skips(tmp_path) == [] and not (tmp_path / "cpu" / "oracle.skipped.json").exists()


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    first = main(["--backend", BACKEND, "--out", str(out), "--models", "gaussian", "--modes", "parity,fast,peer",
                  "--quick"])
    # A second run into the same folder adds its rows to the first's.
    second = main(["--backend", BACKEND, "--out", str(out), "--models", "dcgan-tiny", "--modes", "parity,peer",
                   "--quick"])
    return out, (first, second)


def test_quick_run_writes_rows_with_exactly_the_agreed_keys(quick_run):
    out, codes = quick_run
    assert codes == (0, 0)
    rows = json.loads((out / "cpu" / f"{BACKEND}.json").read_text())
    assert not (out / "cpu" / f"{BACKEND}.failures.json").exists()
    expected = {("gaussian", "parity", 8), ("gaussian", "parity", 64), ("dcgan-tiny", "parity", 2)}
    if BACKEND != "oracle":  # the oracle has no fast mode
        expected |= {("gaussian", "fast", 8), ("gaussian", "fast", 64)}
    if D2L_PEER:
        expected |= {("gaussian", "peer-d2l", 8), ("gaussian", "peer-d2l", 64)}
    if TUTORIAL_PEER:
        expected |= {("dcgan-tiny", "peer-tutorial", 2)}
    if IDIOMATIC_PEER:
        expected |= {("dcgan-tiny", IDIOMATIC_MODE, 2)}
    assert {(r["model"], r["mode"], r["batch_size"]) for r in rows} == expected
    for r in rows:
        assert list(r) == list(ROW_KEYS)
        assert r["backend"] == BACKEND and r["device"] == "cpu" and r["dtype"] == "float32"
        for key in ("examples_per_s", "step_ms_median", "step_ms_min", "step_ms_max", "gflops_per_s",
                    "fraction_of_peak", "peak_mem_mb"):
            assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, (key, r[key])
        assert math.isfinite(r["compile_s"]) and r["compile_s"] >= 0
        assert r["step_ms_min"] <= r["step_ms_median"] <= r["step_ms_max"]
        assert r["fraction_of_peak"] < 1.5  # a training step cannot beat the framework's own matmul by much


def test_quick_rows_are_consistent_with_their_settings(quick_run):
    out, _ = quick_run
    for r in json.loads((out / "cpu" / f"{BACKEND}.json").read_text()):
        s = r["settings"]
        step_s = r["step_ms_median"] / 1e3
        assert r["examples_per_s"] == pytest.approx(r["batch_size"] / step_s)
        # A peer's G forwards per iteration are its own (d2l and the Keras/Flax loops decode fresh noise).
        g_forwards = 1
        if r["mode"] in PEER_MODES:
            peer, mode = peer_class(BACKEND, preset(r["model"]), r["mode"])
            assert mode == r["mode"], mode
            g_forwards = peer.g_forwards
        flops = iteration_flops(preset(r["model"]), r["batch_size"], g_forwards).total
        assert s["flops"]["per_iteration"] == flops
        assert r["gflops_per_s"] == pytest.approx(flops / step_s / 1e9)
        assert r["fraction_of_peak"] == pytest.approx(r["gflops_per_s"] / s["peak"]["gflops"])
        assert s["versions"] and s["host"]["cpu_count"] == os.cpu_count()
        assert s["timing"]["repeats"] >= 3 and len(s["timing"]["warmup_calls_s"]) == 2
        assert s["sampling"]["examples_per_s"] > 0
        if r["mode"] in ("parity", "fast"):
            assert s["backend"].get("mode", r["mode"]) == r["mode"]  # the oracle records no settings
            assert s["timing"]["noise"] == ("device RNG (train_step z=None)" if r["mode"] == "fast" else "host pool")
        interleaved = s.get("epoch_scan", {}).get("interleaved_with_seed_loop")
        if interleaved is not None:  # a timed train_epoch, against the seed's loop in alternating blocks
            if D2L_PEER:
                assert interleaved["seed_loop"] == "peer-d2l" and interleaved["pairs"] >= 3
                assert interleaved["ratio_min"] <= interleaved["ratio_median"] <= interleaved["ratio_max"]
            else:
                assert interleaved["skipped"].startswith("the d2l seed has no")


@pytest.mark.parametrize("args,message", [
    (["--backend", "caffe"], "error: backend: unknown backend 'caffe'; allowed: oracle, torch"),
    (["--backend", "oracle", "--models", "biggan"], "error: model: unknown model 'biggan'; allowed: gaussian"),
    (["--backend", "oracle", "--modes", "turbo"], "error: modes: unknown value 'turbo'; allowed: parity, fast, peer"),
    (["--backend", "oracle", "--dtypes", "float16"], "error: dtypes: unknown value 'float16'"),
    (["--backend", "oracle", "--device", "tpu"], "error: device: unknown device 'tpu'; allowed: cpu, cuda"),
    (["--backend", "oracle", "--batch-sizes", "8,zero"], "error: batch-sizes: must be positive integers"),
    (["--backend", "oracle", "--modes", "fast"], "error: nothing to run"),
    (["--models", "gaussian"], "error: the following arguments are required: --backend"),
])
def test_bad_input_is_one_line_no_traceback(tmp_path, capsys, args, message):
    assert main([*args, "--out", str(tmp_path), "--quick"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message), err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_a_failing_config_is_recorded_and_the_others_still_run(tmp_path, monkeypatch):
    import gansuite.benchmarks.run as run_module

    real = run_module.bench_config

    def flaky(cfg, budget, peaks):
        if cfg.batch_size == 64:
            raise RuntimeError("kernel exploded\nsecond line")
        return real(cfg, budget, peaks)

    monkeypatch.setattr(run_module, "bench_config", flaky)
    assert main(["--backend", "oracle", "--out", str(tmp_path), "--models", "gaussian", "--modes", "parity",
                 "--quick"]) == 1
    rows = json.loads((tmp_path / "cpu" / "oracle.json").read_text())
    failures = json.loads((tmp_path / "cpu" / "oracle.failures.json").read_text())
    assert [r["batch_size"] for r in rows] == [8]
    assert [(f["batch_size"], f["error"]) for f in failures] == [(64, "RuntimeError: kernel exploded second line")]


# -- the VAE through the same harness --------------------------------------------------------------

#: XLA:CPU compiles each VAE step in ~4 s on the shared 2 cores: JAX times parity only, so the test
#: stays near 5 s (fast mode is the same harness path with mode="fast", timed in the other envs).
VAE_MODES = "parity,peer" if BACKEND == "jax" else "parity,fast,peer"


@pytest.fixture(scope="module")
def vae_quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-vae")
    code = main(["--backend", BACKEND, "--out", str(out), "--models", "vae-tiny", "--modes", VAE_MODES, "--quick"])
    return out, code


def test_quick_vae_rows_have_the_agreed_keys_and_the_vae_flops(vae_quick_run):
    out, code = vae_quick_run
    assert code == 0
    assert not (out / "cpu" / f"{BACKEND}.failures.json").exists()
    rows = json.loads((out / "cpu" / f"{BACKEND}.json").read_text())
    expected = {("vae-tiny", "parity", 16)}
    if "fast" in VAE_MODES and BACKEND != "oracle":
        expected.add(("vae-tiny", "fast", 16))
    if VAE_PEER:
        expected.add(("vae-tiny", "peer-seed002", 16))
    assert {(r["model"], r["mode"], r["batch_size"]) for r in rows} == expected
    flops = vae_iteration_flops(VAE_PRESETS["vae-tiny"](), 16).total
    for r in rows:
        assert list(r) == list(ROW_KEYS)
        assert r["backend"] == BACKEND and r["device"] == "cpu" and r["dtype"] == "float32"
        for key in ("examples_per_s", "step_ms_median", "gflops_per_s", "fraction_of_peak", "peak_mem_mb"):
            assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, (key, r[key])
        assert r["fraction_of_peak"] < 1.5
        s = r["settings"]
        step_s = r["step_ms_median"] / 1e3
        assert r["examples_per_s"] == pytest.approx(16 / step_s)
        assert s["flops"]["per_iteration"] == flops
        assert r["gflops_per_s"] == pytest.approx(flops / step_s / 1e9)
        assert s["sampling"]["examples_per_s"] > 0 and "decode" in s["sampling"]["what"]
        if r["mode"] == "peer-seed002":
            assert "VaeSeedCode.train_step" in s["timing"]["includes"]
        else:
            assert s["backend"].get("mode", r["mode"]) == r["mode"]  # the oracle records no settings
            assert s["timing"]["noise"] == "host pool"  # the VAE protocol takes eps from the host in both modes


def test_vae_peer_and_bf16_skips_are_one_line_reasons():
    reason = skip_reason(Config(BACKEND, "vae-tiny", "peer-seed002", "float32", "cpu", 16))
    if VAE_PEER:
        assert reason is None
    else:
        assert reason == f"the seed002-vae seed has no {BACKEND} version (it covers: torch)"
    assert "float32 only" in skip_reason(Config(BACKEND, "vae", "peer-seed002", "float64", "cpu", 16))
    if BACKEND == "torch":  # CPU autocast runs the VAE; CUDA autocast refuses its BCE on probabilities
        assert skip_reason(Config("torch", "vae", "fast", "bf16-mixed", "cpu", 16)) is None
        assert "unsafe to autocast" in skip_reason(Config("torch", "vae", "fast", "bf16-mixed", "cuda", 16))
        assert skip_reason(Config("torch", "dcgan", "fast", "bf16-mixed", "cuda", 16)) is None


def test_bf16_mixed_is_set_at_build_for_every_gan_backend():
    """Every GAN backend takes bf16-mixed at build (MIXED_BF16 in BuildOptions.extra, no context around
    the step: PyTorch's backend enters autocast itself, per pass); parity rows are refused; the VAE has
    a path only under PyTorch's autocast (a context), elsewhere one line says why."""
    from gansuite.benchmarks.mixed import mixed_precision
    from gansuite.common.protocol import MIXED_BF16

    for framework in ("torch", "tensorflow", "jax", "mxnet"):
        path = mixed_precision(framework, "cpu", "bf16-mixed", "gan")
        assert path.extra == {"mixed_precision": MIXED_BF16} and path.context is contextlib.nullcontext, framework
        assert mixed_precision(framework, "cpu", "float32", "gan").extra == {}
        assert skip_reason(Config(framework, "dcgan", "fast", "bf16-mixed", "cpu", 16)) is None
        assert "parity runs exact" in skip_reason(Config(framework, "dcgan", "parity", "bf16-mixed", "cpu", 16))
        if framework != "torch":
            vae = skip_reason(Config(framework, "vae", "fast", "bf16-mixed", "cpu", 16))
            assert vae.startswith(f"the {framework} backend has no bf16 mixed-precision path for the vae family")
    if BACKEND == "torch":  # autocast around the VAE's step (building the context imports torch)
        assert mixed_precision("torch", "cpu", "bf16-mixed", "vae").extra == {}


def test_peer_modes_are_listed_once_for_rows_and_peers():
    assert set(MODES) == {seed for _, seed in MODULES} and set(PEER_MODES) == {*MODES.values(), IDIOMATIC_MODE}
    assert ROW_MODES[-len(PEER_MODES):] == PEER_MODES and "peer-seed002" in PEER_MODES


# -- summary ------------------------------------------------------------------------------------


def _row(backend: str, mode: str, batch: int, examples_per_s: float, model: str = "gaussian") -> dict:
    step_ms = 1e3 * batch / examples_per_s
    return {"backend": backend, "model": model, "mode": mode, "device": "cpu", "dtype": "float32",
            "batch_size": batch, "examples_per_s": examples_per_s, "step_ms_median": step_ms,
            "step_ms_min": 0.9 * step_ms, "step_ms_max": 1.2 * step_ms, "compile_s": 0.5, "gflops_per_s": 0.01,
            "fraction_of_peak": 1e-4, "peak_mem_mb": 300.0,
            "settings": {"versions": {backend: "1.0"}, "host": {"cpu_count": 2, "cpu_model": "test", "env": {}},
                         "quick": True}}


def test_summary_merges_two_backends_into_one_table(tmp_path):
    (tmp_path / "cpu").mkdir()
    torch_rows = [_row("torch", "peer-d2l", 8, 100.0), _row("torch", "parity", 8, 200.0),
                  _row("torch", "fast", 8, 400.0), _row("torch", "parity", 64, 900.0)]
    jax_rows = [_row("jax", "parity", 8, 50.0), _row("jax", "fast", 8, 150.0)]
    jax_rows[1]["settings"]["epoch_scan"] = {"examples_per_s": 12000.0}  # backend.train_epoch, timed on that state
    (tmp_path / "cpu" / "torch.json").write_text(json.dumps(torch_rows))
    (tmp_path / "cpu" / "jax.json").write_text(json.dumps(jax_rows))
    md = build_summary(tmp_path).read_text()
    table = [line for line in md.splitlines() if line.startswith("| torch |") or line.startswith("| jax |")]
    assert len(table) == len(torch_rows) + len(jax_rows)
    assert "| torch | parity | float32 | 8 | 200 |" in md and md.count("| jax |") >= 2
    cells = {tuple(c.strip() for c in line.split("|")[1:5]): line.split("|")[-3].strip() for line in table}
    assert cells[("torch", "parity", "float32", "8")] == "2.00x"
    assert cells[("torch", "fast", "float32", "8")] == "4.00x"
    assert cells[("jax", "parity", "float32", "8")] == "0.50x (torch peer)"  # JAX has no d2l tab
    assert cells[("torch", "parity", "float32", "64")] == "—"  # no peer measured at batch 64
    assert "| cpu | gaussian | jax | float32 | 8 | torch peer-d2l | 0.50x | 1.50x | 120.00x |" in md
    assert "| cpu | gaussian | torch | float32 | 8 | torch peer-d2l | 2.00x | 4.00x | — |" in md  # no train_epoch
    for name in ("throughput-gaussian-cpu.png", "modes-gaussian-cpu.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_names_the_slowest_to_fastest_framework_and_bf16_ratios(tmp_path):
    """Issue 16's comparison of frameworks at their best: per model and batch, every fast float32 row,
    bf16-mixed over float32 where both ran, and the fastest over the slowest framework."""
    (tmp_path / "cpu").mkdir()
    bf16 = {**_row("torch", "fast", 64, 150.0, "dcgan"), "dtype": "bf16-mixed"}
    rows = {"torch": [_row("torch", "fast", 64, 100.0, "dcgan"), bf16],
            "jax": [_row("jax", "fast", 64, 40.0, "dcgan"), _row("jax", "parity", 64, 10.0, "dcgan")],
            "mxnet": [_row("mxnet", "fast", 8, 1000.0)]}  # alone at its model and batch: no comparison
    for backend, r in rows.items():
        (tmp_path / "cpu" / f"{backend}.json").write_text(json.dumps(r))
    md = build_summary(tmp_path).read_text()
    assert ("| cpu | dcgan | 64 | jax 40; torch 100 (bf16-mixed 150, 1.50x) | torch / jax: 2.50x |" in md), md
    assert "| cpu | gaussian | 8 |" not in md


def test_summary_shows_the_vae_with_its_seed_loop_ratio(tmp_path):
    """The VAE's rows go through the GANs' tables (one model per table; one model here, so the
    test draws two plots, not four)."""
    (tmp_path / "cpu").mkdir()
    torch_rows = [_row("torch", "peer-seed002", 16, 1000.0, "vae"), _row("torch", "parity", 16, 1500.0, "vae"),
                  _row("torch", "fast", 16, 3000.0, "vae")]
    (tmp_path / "cpu" / "torch.json").write_text(json.dumps(torch_rows))
    (tmp_path / "cpu" / "mxnet.json").write_text(json.dumps([_row("mxnet", "parity", 16, 500.0, "vae")]))
    md = build_summary(tmp_path).read_text()
    assert "## vae on cpu" in md
    vae_table = md.split("## vae on cpu")[1].split("## ")[0]
    assert "| torch | peer-seed002 | float32 | 16 | 1000 |" in vae_table and vae_table.count("(peer)") == 1
    assert "| torch | parity | float32 | 16 | 1500 |" in vae_table and "| 1.50x |" in vae_table
    assert "| 3.00x |" in vae_table and "| 0.50x (torch peer) |" in vae_table
    assert "| cpu | vae | torch | float32 | 16 | torch peer-seed002 | 1.50x | 3.00x | — |" in md
    assert "peer-seed002" in md.split("## ")[1]  # the introduction names every seed loop


def test_summary_compares_each_framework_with_its_idiomatic_loop(tmp_path):
    """'vs idiomatic': a backend row over the same framework's idiomatic DCGAN (peer-idiomatic; for
    PyTorch the tutorial's loop), which the 'vs seed loop' column does not take for the seed's loop."""
    (tmp_path / "cpu").mkdir()
    rows = {"torch": [_row("torch", "peer-tutorial", 64, 50.0, "dcgan"), _row("torch", "fast", 64, 60.0, "dcgan")],
            "tensorflow": [_row("tensorflow", "peer-idiomatic", 64, 40.0, "dcgan"),
                           _row("tensorflow", "fast", 64, 60.0, "dcgan")]}
    for backend, group in rows.items():
        (tmp_path / "cpu" / f"{backend}.json").write_text(json.dumps(group))
    md = build_summary(tmp_path).read_text()
    cells = {tuple(c.strip() for c in line.split("|")[1:3]): [c.strip() for c in line.split("|")[-3:-1]]
             for line in md.splitlines() if line.startswith(("| torch |", "| tensorflow |"))}
    assert cells[("torch", "fast")] == ["1.20x", "1.20x"]  # the tutorial is both the seed's and PyTorch's idiom
    assert cells[("tensorflow", "fast")] == ["1.20x (torch peer)", "1.50x"]
    assert cells[("tensorflow", "peer-idiomatic")] == ["(peer)", "(idiomatic)"]
    assert "'vs idiomatic'" in md


def test_plan_adds_the_idiomatic_loop_where_the_framework_has_one():
    from gansuite.benchmarks.run import plan

    configs, skipped = plan(BACKEND, ["dcgan"], ["peer"], ["float32"], "cpu", "cpu", [64], True, 0)
    modes = {c.mode for c in configs}
    if BACKEND in ("tensorflow", "jax", "mxnet"):
        assert "peer-idiomatic" in modes, skipped
    else:
        assert "peer-idiomatic" not in modes
        assert any(e["mode"] == "peer-idiomatic" and e["reason"].startswith("no idiomatic") for e in skipped), skipped


def test_summary_rejects_files_without_the_row_keys(tmp_path, capsys):
    (tmp_path / "cpu").mkdir()
    bad = _row("torch", "parity", 8, 1.0)
    bad["extra"] = 1
    (tmp_path / "cpu" / "torch.json").write_text(json.dumps([bad]))
    assert summary_main(["--results", str(tmp_path)]) == 2
    assert "does not have the row keys" in capsys.readouterr().err
    assert summary_main(["--results", str(tmp_path / "missing")]) == 2


def test_onednn_frameworks_bench_parity_and_fast_in_separate_processes():
    """TensorFlow and MXNet read their oneDNN switch once per process and parity needs it off:
    the driver runs their parity rows as the env has it and the other modes with oneDNN on.
    PyTorch's fast and peer rows preload TCMalloc where the machine has it, its parity rows not;
    JAX's fast and peer rows run with XLA's YNNPACK dot fusions, its parity rows without."""
    from gansuite.benchmarks.drive import FAST_ENV, processes
    from gansuite.common.registry import find_tcmalloc

    tcmalloc = find_tcmalloc()
    if tcmalloc is None:
        assert processes("torch", ["--quick"]) == [(["--quick"], {})]
    else:
        assert processes("torch", ["--quick"]) == [(["--quick", "--modes", "parity"], {}),
                                                   (["--quick", "--modes", "fast,peer"], {"LD_PRELOAD": tcmalloc})]
    assert processes("tensorflow", ["--quick"]) == [
        (["--quick", "--modes", "parity"], {}),
        (["--quick", "--modes", "fast,peer"], {"TF_ENABLE_ONEDNN_OPTS": "1"})]
    assert processes("mxnet", ["--modes", "fast", "--quick"]) == [(["--quick", "--modes", "fast"], FAST_ENV["mxnet"])]
    assert processes("mxnet", ["--modes", "parity"]) == [(["--modes", "parity"], {})]
    # JAX: XLA:CPU's YNNPACK dot fusions in fast and peer processes only (registry.JAX_FAST_XLA_FLAG)
    (parity_args, parity_env), (fast_args, fast_env) = processes("jax", ["--quick"])
    assert parity_args == ["--quick", "--modes", "parity"] and parity_env == {}
    assert fast_args == ["--quick", "--modes", "fast,peer"]
    assert fast_env["XLA_FLAGS"].split()[-1] == "--xla_cpu_experimental_ynn_fusion_type=dot"


def test_tcmalloc_is_found_where_it_lies_and_the_allocator_is_read_from_the_memory_map(tmp_path, monkeypatch):
    """find_tcmalloc looks through TCMALLOC_DIRS for TCMALLOC_NAMES (None where none lies);
    loaded_allocator names what this process's memory map holds: glibc unless one was preloaded."""
    import os
    import subprocess
    import sys

    from gansuite.common import registry

    monkeypatch.setattr(registry, "TCMALLOC_DIRS", (str(tmp_path),))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    assert registry.find_tcmalloc() is None
    (tmp_path / "libtcmalloc_minimal.so.4").write_bytes(b"")
    assert registry.find_tcmalloc() == str(tmp_path / "libtcmalloc_minimal.so.4")
    monkeypatch.undo()

    def allocator(preload: str | None) -> str:
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
        env.update({"LD_PRELOAD": preload} if preload else {})
        code = "from gansuite.common.registry import loaded_allocator; print(loaded_allocator())"
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              check=True).stdout.strip()

    assert allocator(None) == "glibc"
    if registry.find_tcmalloc() is not None:  # this machine has one: a preloaded process says so
        assert allocator(registry.find_tcmalloc()) == "tcmalloc"


# -- data-parallel scaling rows (benchmarks/scaling.py) --------------------------------------------


def test_scaling_takes_the_steady_state_from_two_run_lengths():
    """Process start, build and compilation are in both runs: their difference per extra iteration
    is the steady-state cost (a 3 s start-up and 40 ms per iteration, exactly)."""
    from gansuite.benchmarks.scaling import markdown, steady_seconds_per_iteration

    assert steady_seconds_per_iteration((5, 3.0 + 5 * 0.04), (45, 3.0 + 45 * 0.04)) == pytest.approx(0.04)
    with pytest.raises(Exception, match="iterations: the long run must be longer"):
        steady_seconds_per_iteration((45, 1.0), (5, 0.5))
    rows = [{"backend": "torch", "model": "dcgan-tiny", "workers": w, "engine": e, "seconds_per_iteration": s,
             "speedup_vs_one_worker": 0.04 / s} for w, e, s in ((1, "one worker", 0.04), (2, "DDP", 0.05))]
    md = markdown(rows)
    assert "no scaling testbed" in md and "| torch | dcgan-tiny | 2 | DDP | 50.0 | 0.80x |" in md


def test_scaling_bad_input_is_one_line(capsys, tmp_path):
    from gansuite.benchmarks.scaling import main

    for argv, field in ((["--backends", "oracle"], "backends"), (["--iterations", "5"], "iterations"),
                        (["--workers", "0"], "workers")):
        assert main([*argv, "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {field}:") and "\n" not in err, err
