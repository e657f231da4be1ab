"""One benchmark config -> one result row, written against the family interface only.

A config is (backend, model, mode, dtype, device, batch size). The model's family
(benchmarks/families.py: the GANs, seed 002's VAE) gives its protocol, parameters, pool and
FLOPs. For a backend mode (parity | fast) the harness builds a state from the canonical
parameters, times ``train_step`` on a pool of pre-generated host batches (a GAN's fast mode:
``z=None``, noise drawn on the device; the VAE takes eps from the pool in both modes), times
sampling (``generate``; the VAE's ``decode``) the same way, reads peak memory, and turns the
median step time into examples/s, GFLOP/s (benchmarks/flops.py) and a fraction of the
framework's measured matrix-product peak (benchmarks/peak.py). A peer mode times a seed's own
loop (benchmarks/peers/) the same way. Framework specifics (device names, memory counters,
autocast, compile caches) come from small lazily-importing modules beside this one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

from gansuite.common.protocol import DTYPES as PROTOCOL_DTYPES
from gansuite.common.protocol import BuildOptions

from . import memory
from .families import family_of
from .frameworks import environment, framework_of, fresh_compile_cache, is_gpu
from .mixed import MIXED_DTYPES, mixed_precision
from .peak import Peak, measure_peak
from .peers import PEER_MODES, peer_class
from .timing import Budget, Timing, Workload, measure, measure_paired
from .workloads import EpochScan, PeerSampling, PeerTraining

#: A result row has exactly these keys; anything else goes inside "settings".
ROW_KEYS = ("backend", "model", "mode", "device", "dtype", "batch_size", "examples_per_s", "step_ms_median",
            "step_ms_min", "step_ms_max", "compile_s", "gflops_per_s", "fraction_of_peak", "peak_mem_mb", "settings")
BACKEND_MODES = ("parity", "fast")
ROW_MODES = ("eager", *BACKEND_MODES, *PEER_MODES)  # the peer modes: peers.MODES, one per seed loop
DTYPES = (*PROTOCOL_DTYPES, *MIXED_DTYPES)  # the protocol's, plus the benchmark-only mixed precision
#: A step slower than this is not timed again as a ``train_epoch`` scan: dispatch overhead is then
#: negligible, and on XLA:CPU the scan of the full DCGAN's fast step was pathological (its first
#: 4-iteration call took 215 s, against 1.7 s per step through train_step; measured 2026-12-03).
SCAN_MAX_STEP_S = 0.05
#: What a row's timing includes, recorded with it.
CLOCK = "time.perf_counter, backend.sync() before every read; warm-up calls timed apart"


class Skip(Exception):
    """A config that cannot run here (no fast mode, no bf16 path, no peer): the reason, one line."""


@dataclass(frozen=True)
class Config:
    backend: str
    model: str
    mode: str
    dtype: str
    device: str
    batch_size: int
    device_label: str = "cpu"
    seed: int = 0
    quick: bool = False

    def describe(self) -> str:
        return f"{self.backend} {self.model} {self.mode} {self.dtype} batch {self.batch_size}"


class PeakCache:
    """Each (framework, device, dtype, math mode) peak is measured once per run."""

    def __init__(self, quick: bool, echo: Callable[[str], None] = print):
        self.quick, self.echo = quick, echo
        self._peaks: dict[tuple, Peak] = {}

    def get(self, framework: str, device: str, dtype: str, fast_math: bool) -> Peak:
        key = (framework, device, dtype, fast_math)
        if key not in self._peaks:
            self._peaks[key] = peak = measure_peak(framework, device, dtype, fast_math, self.quick)
            self.echo(f"  peak {framework} {device} {dtype}: {peak.gflops:.1f} GFLOP/s ({peak.method})")
        return self._peaks[key]


#: A CPU's bf16 rows are skipped where the framework's bf16 matrix product is more than this many times
#: slower than its float32 one: the arithmetic is emulated there, and every row would time the
#: emulation. Measured 2026-12-07 on an AVX2-only AMD EPYC (no avx512_bf16, no AMX): PyTorch's bf16
#: torch.mm 1.2 GFLOP/s against ~100 in float32, a 128->256 k4 s2 convolution at batch 64 27x slower
#: (a full-size DCGAN bf16 iteration would take minutes); TensorFlow's and JAX's bf16 products there
#: were within 1.4x of float32, and run.
EMULATED_BF16_SLOWDOWN = 4.0


def emulated_bf16_reason(peaks: PeakCache, framework: str, device: str) -> str | None:
    """Why this CPU's bf16 rows of ``framework`` are not timed (its bf16 is emulated), or None."""
    if is_gpu(device):
        return None
    f32, bf16 = (peaks.get(framework, device, dtype, False) for dtype in ("float32", "bfloat16"))
    if bf16.gflops * EMULATED_BF16_SLOWDOWN >= f32.gflops:
        return None
    return (f"{framework}'s bfloat16 is emulated on this CPU (no native bf16 kernels): its bf16 matrix product "
            f"runs {bf16.gflops:.3g} GFLOP/s against float32's {f32.gflops:.3g}, {f32.gflops / bf16.gflops:.0f}x "
            f"slower (more than {EMULATED_BF16_SLOWDOWN:.0f}x), so a bf16 row would time the emulation")


def uses_fast_math(device: str, dtype: str, settings: dict[str, Any]) -> bool:
    """Whether float32 products may run as TF32 on this GPU, read from the recorded settings."""
    if not is_gpu(device) or dtype != "float32":
        return False
    return bool(settings.get("tf32_matmul") or settings.get("tf32_cudnn") or settings.get("tf32")
                or settings.get("layer_precision") == "default")


def sampling_budget(budget: Budget) -> Budget:
    return replace(budget, warmup_calls=2, repeats=min(budget.repeats, 5), max_total_s=budget.max_total_s / 3)


def combination_reason(mode: str, dtype: str) -> str | None:
    """Why ``mode`` never runs in ``dtype``, on any machine (a seed loop in bf16, parity in mixed
    precision), or None: what a run echoes but does not record as a skip."""
    if mode in PEER_MODES and dtype != "float32":
        return f"the seed loops run in float32 only, not {dtype}"
    if dtype in MIXED_DTYPES and mode != "fast":
        return f"{dtype} is a fast-mode setting; parity runs exact float32/float64"
    return None


def skip_reason(cfg: Config) -> str | None:
    """Why ``cfg`` cannot run in this environment, or None. Cheap: builds nothing."""
    if (never := combination_reason(cfg.mode, cfg.dtype)) is not None:
        return never
    if cfg.mode in PEER_MODES:
        cls, mode = peer_class(cfg.backend, family_of(cfg.model).spec(cfg.model), cfg.mode)
        if cls is None:
            return mode
        if mode != cfg.mode:
            return f"model {cfg.model!r} is reproduced by {mode}, not {cfg.mode}"
        return None
    if cfg.backend == "oracle" and cfg.mode == "fast":
        return "the oracle has no fast mode (no compiler, no device RNG)"
    if cfg.dtype in MIXED_DTYPES:
        mixed = mixed_precision(framework_of(cfg.backend), cfg.device, cfg.dtype, family_of(cfg.model).name)
        if isinstance(mixed, str):
            return mixed
    return None


def bench_config(cfg: Config, budget: Budget, peaks: PeakCache) -> dict[str, Any]:
    """Run one config and return its row; raises :class:`Skip` for configs that cannot run here."""
    reason = skip_reason(cfg)
    if reason is not None:
        raise Skip(reason)
    if cfg.mode in PEER_MODES:
        return _bench_peer(cfg, budget, peaks)
    return _bench_backend(cfg, budget, peaks)


def _bench_backend(cfg: Config, budget: Budget, peaks: PeakCache) -> dict[str, Any]:
    framework = framework_of(cfg.backend)
    family = family_of(cfg.model)
    mixed = mixed_precision(framework, cfg.device, cfg.dtype, family.name)
    if isinstance(mixed, str):
        raise Skip(mixed)
    if cfg.dtype in MIXED_DTYPES and (emulated := emulated_bf16_reason(peaks, framework, cfg.device)) is not None:
        raise Skip(emulated)
    context, precision = mixed.context, mixed.description
    build_dtype = "float32" if cfg.dtype in MIXED_DTYPES else cfg.dtype
    backend = family.protocol(cfg.backend)
    spec = family.at_batch(family.spec(cfg.model), cfg.batch_size)
    pool = family.make_pool(spec, cfg.seed, build_dtype)
    params = family.init_params(spec, cfg.seed, build_dtype)
    if cfg.mode == "fast":
        fresh_compile_cache(framework)
    host_reset = memory.reset_host_peak()
    device_reset = memory.reset_device_peak(framework, cfg.device)

    t0 = time.perf_counter()
    state = backend.build(spec, params, None, BuildOptions(dtype=build_dtype, device=cfg.device, mode=cfg.mode,
                                                           seed=cfg.seed, extra=dict(mixed.extra)))
    build_s = time.perf_counter() - t0
    train = family.train_steps(backend, state, pool, cfg.mode, context)
    timing = measure(train.run, train.sync, budget)
    # What the backend itself counted as compilation for train_step (JAX: AOT compile; TF: trace +
    # XLA compile + first step; MXNet: first hybridized call), before sampling compiles more.
    backend_compile = getattr(state, "compile_s", None)
    sampler = family.sampling(backend, state, pool)
    sampling = measure(sampler.run, sampler.sync, sampling_budget(budget))
    scan: Timing | str | None = None
    epoch: EpochScan | None = None
    if callable(getattr(backend, "train_epoch", None)):  # an optional extra (every framework backend; not the oracle)
        scan, epoch = _measure_scan(backend, state, pool, cfg, budget, timing)
    peak_mem, mem_details = memory.peak_memory(framework, cfg.device, host_reset, device_reset)
    # After the memory peak is read: the seed's loop is its own model, not this row's.
    interleaved = _interleave_with_seed_loop(epoch, cfg, budget) if epoch is not None else None

    be_settings = family.settings(backend, state, framework)
    # The oracle computes in float64 whatever dtype is asked: its ceiling is numpy's float64 product.
    compute_dtype = "float64" if cfg.backend == "oracle" else ("bfloat16" if cfg.dtype in MIXED_DTYPES else cfg.dtype)
    peak = peaks.get(framework, cfg.device, compute_dtype, uses_fast_math(cfg.device, cfg.dtype, be_settings))
    flops = family.iteration_flops(spec, cfg.batch_size)
    settings = {
        "backend": be_settings,
        "versions": backend.versions(),
        "host": environment(),
        "precision": precision if cfg.dtype in MIXED_DTYPES else f"{cfg.dtype} (computed as {compute_dtype})",
        "build_s": build_s,
        "backend_compile_s": backend_compile if backend_compile is not None else be_settings.get("compile_s"),
        "timing": {**timing.as_dict(), "clock": CLOCK, "input_pool_batches": len(pool),
                   "noise": family.noise(cfg.mode)},
        "flops": flops.as_dict(),
        "peak": peak.as_dict(),
        "memory": mem_details,
        "sampling": _secondary(sampling, cfg.batch_size, family.sampling_flops(spec, cfg.batch_size), peak,
                               family.sampling_what
                               + mixed.sampling),
        "seed": cfg.seed,
        "quick": cfg.quick,
    }
    if isinstance(scan, str):
        settings["epoch_scan"] = {"skipped": scan}
    elif scan is not None:
        settings["epoch_scan"] = _secondary(scan, cfg.batch_size, flops.total, peak,
                                            f"backend.train_epoch: {scan.iterations_per_unit} iterations per call "
                                            "(one compiled scan), stacked inputs copied to the device each call")
        settings["epoch_scan"]["interleaved_with_seed_loop"] = interleaved
    return make_row(cfg, timing, flops.total, peak, peak_mem, settings)


def _measure_scan(backend: Any, state: Any, pool: Any, cfg: Config, budget: Budget,
                  steps: Timing) -> tuple[Timing | str, EpochScan | None]:
    """A backend's optional ``train_epoch`` (JAX: ``lax.scan`` over stacked batches), timed like
    ``train_step``, and the workload it timed; or why it was not (one call must hold several
    iterations to mean anything) and None."""
    refusal = getattr(backend, "train_epoch_refusal", None)  # PyTorch's compiled scan: dense nets only
    reason = refusal(state.spec, state.options) if refusal is not None else None
    if reason is not None:
        return reason, None
    if steps.median_s > SCAN_MAX_STEP_S:
        return (f"a {steps.median_s * 1e3:.0f} ms step has no per-call dispatch to remove (the scan is for small "
                f"models; > {SCAN_MAX_STEP_S * 1e3:.0f} ms per step it is not timed)"), None
    # At least one epoch of the model's own data per call (the benchmark's spec holds only the pool):
    # the trainer's unit (common/training.py ends a multi-step call at each of the Gaussian GAN's
    # epochs, 125 iterations at batch 8). Fewer would time the per-call work (MXNet's train_epoch
    # moves the state in and out, ~1 ms) as much as the iterations: behind a ~9 ms step, MXNet's
    # timing block held 21-28 iterations.
    per_epoch = -(-family_of(cfg.model).spec(cfg.model).data.n_examples // cfg.batch_size)
    scan = EpochScan(backend, state, pool, cfg.mode == "fast", max(len(pool), steps.units_per_block, per_epoch))
    expected = steps.median_s * scan.k * (2 + budget.min_repeats)
    if expected > 2 * budget.max_total_s:
        return f"~{expected:.0f} s for {scan.k}-iteration calls exceeds this run's budget", None
    return measure(scan.run, scan.sync, replace(budget, warmup_calls=2), iterations_per_unit=scan.k), scan


def _interleave_with_seed_loop(epoch: EpochScan, cfg: Config, budget: Budget) -> dict[str, Any]:
    """The multi-step primitive and the seed's own loop (the Gaussian GAN's: d2l's, this framework's
    tab) timed in alternating blocks in this process (timing.measure_paired): issue 16's 100x as one
    ratio per pair of blocks seconds apart. The rows' ratio also holds whatever the machine's speed did
    in the minutes between the two rows (up to 1.7x on the shared 2-core VM)."""
    spec = family_of(cfg.model).spec(cfg.model)
    cls, mode = peer_class(cfg.backend, spec)
    if cls is None:
        return {"skipped": mode}
    loop = PeerTraining(cls(spec, cfg.batch_size, cfg.device, cfg.seed))
    paired = measure_paired(Workload(loop.run, loop.sync), Workload(epoch.run, epoch.sync, epoch.k), budget)
    return {"seed_loop": mode, **paired.as_dict()}


def _bench_peer(cfg: Config, budget: Budget, peaks: PeakCache) -> dict[str, Any]:
    family = family_of(cfg.model)
    spec = family.spec(cfg.model)
    cls, reason = peer_class(cfg.backend, spec, cfg.mode)
    if cls is None:
        raise Skip(reason)
    host_reset = memory.reset_host_peak()
    device_reset = memory.reset_device_peak(cls.framework, cfg.device)
    t0 = time.perf_counter()
    peer = cls(spec, cfg.batch_size, cfg.device, cfg.seed)
    build_s = time.perf_counter() - t0
    training = PeerTraining(peer)
    timing = measure(training.run, training.sync, budget)
    sampler = PeerSampling(peer)
    sampling = measure(sampler.run, sampler.sync, sampling_budget(budget))
    peak_mem, mem_details = memory.peak_memory(cls.framework, cfg.device, host_reset, device_reset)
    peer_settings = peer.settings()
    peak = peaks.get(cls.framework, cfg.device, "float32", uses_fast_math(cfg.device, "float32", peer_settings))
    flops = family.iteration_flops(spec, cfg.batch_size, cls)
    settings = {
        "peer": peer_settings,
        "versions": peer.versions(),
        "host": environment(),
        "precision": "float32",
        "build_s": build_s,
        "timing": {**timing.as_dict(), "clock": CLOCK.replace("backend.sync()", "peer sync"),
                   "includes": cls.includes},
        "flops": flops.as_dict(),
        "peak": peak.as_dict(),
        "memory": mem_details,
        "sampling": _secondary(sampling, cfg.batch_size, family.sampling_flops(spec, cfg.batch_size), peak,
                               cls.sampling_what),
        "seed": cfg.seed,
        "quick": cfg.quick,
    }
    return make_row(cfg, timing, flops.total, peak, peak_mem, settings)


def _secondary(timing: Timing, batch_size: int, flops: int, peak: Peak, what: str) -> dict[str, Any]:
    """A measurement that is not the row's headline (sampling, the JAX scan), in the row's units."""
    return {"what": what, "examples_per_s": batch_size / timing.median_s, "step_ms_median": 1e3 * timing.median_s,
            "step_ms_min": 1e3 * timing.min_s, "step_ms_max": 1e3 * timing.max_s, "compile_s": timing.compile_s,
            "gflops_per_s": flops / timing.median_s / 1e9,
            "fraction_of_peak": flops / timing.median_s / 1e9 / peak.gflops, "timing": timing.as_dict()}


def make_row(cfg: Config, timing: Timing, flops_per_iteration: int, peak: Peak, peak_mem_mb: float,
             settings: dict[str, Any]) -> dict[str, Any]:
    gflops = flops_per_iteration / timing.median_s / 1e9
    row = {
        "backend": cfg.backend, "model": cfg.model, "mode": cfg.mode, "device": cfg.device_label,
        "dtype": cfg.dtype, "batch_size": cfg.batch_size,
        "examples_per_s": cfg.batch_size / timing.median_s,
        "step_ms_median": 1e3 * timing.median_s, "step_ms_min": 1e3 * timing.min_s, "step_ms_max": 1e3 * timing.max_s,
        "compile_s": timing.compile_s, "gflops_per_s": gflops, "fraction_of_peak": gflops / peak.gflops,
        "peak_mem_mb": peak_mem_mb, "settings": settings,
    }
    check_row(row)
    return row


def check_row(row: dict[str, Any]) -> None:
    """Raise ValueError unless ``row`` has exactly ROW_KEYS and sane numbers."""
    if set(row) != set(ROW_KEYS):
        raise ValueError(f"row keys {sorted(row)} differ from {sorted(ROW_KEYS)}")
    if row["mode"] not in ROW_MODES:
        raise ValueError(f"row mode {row['mode']!r} is not one of {ROW_MODES}")
    for key in ("examples_per_s", "step_ms_median", "step_ms_min", "step_ms_max", "gflops_per_s",
                "fraction_of_peak", "peak_mem_mb"):
        value = row[key]
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"row {key} = {value!r} is not a positive finite number")
    if not (isinstance(row["compile_s"], (int, float)) and math.isfinite(row["compile_s"]) and row["compile_s"] >= 0):
        raise ValueError(f"row compile_s = {row['compile_s']!r} is not a finite number >= 0")
    if not row["step_ms_min"] <= row["step_ms_median"] <= row["step_ms_max"]:
        raise ValueError("row step times are not ordered min <= median <= max")
    if not isinstance(row["batch_size"], int) or row["batch_size"] <= 0 or not isinstance(row["settings"], dict):
        raise ValueError("row batch_size must be a positive integer and settings a dict")
