"""Measured matrix-product peak of a framework on a device, the denominator of fraction_of_peak.

A datasheet rate is only a lead (METHOD.md): the ceiling that matters is what this
framework's own matrix product reaches here, in this dtype and math mode. One large
square product ``n x n @ n x n`` (``2 n^3`` FLOPs) on random data, warmed up, timed
``repeats`` times with a device sync before each clock read; the median is the peak.
``fast_math`` lets float32 use TF32 tensor cores on GPUs (the fast modes allow it, parity
does not), so each mode is compared with the ceiling of the arithmetic it actually uses.

On a CPU the size adapts to the rate: where a dtype is emulated (PyTorch's bfloat16 on a CPU
without avx512_bf16 or AMX: 1.2 GFLOP/s against float32's ~100, 2026-12-07), a 2048 product takes
14 s a call, so a probe at :data:`PROBE_N` sets ``n`` for about :data:`CALL_S` a call, at most
:func:`matmul_size`'s (float32 and native bfloat16 stay at the full size).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

from gansuite.common.errors import GanSuiteError

from .frameworks import is_gpu


@dataclass(frozen=True)
class Peak:
    gflops: float
    method: str  # e.g. "torch.mm 2048x2048 float32, median of 10"

    def as_dict(self) -> dict[str, Any]:
        return {"gflops": self.gflops, "method": self.method}


def matmul_size(device: str, quick: bool) -> int:
    """Large enough to be compute-bound; small enough to take well under a second on a CPU."""
    if is_gpu(device):
        return 4096 if quick else 8192
    return 512 if quick else 2048


PROBE_N = 256  # the CPU's rate probe: a product this size takes at most ~30 ms even when emulated
CALL_S = 0.5  # seconds per timed call on a CPU that the adapted size aims at


def _adapted_size(framework: str, device: str, dtype: str, fast_math: bool, largest: int) -> int:
    """``largest`` on a GPU; on a CPU the size (a multiple of 128, at least PROBE_N) whose product takes
    about CALL_S at the rate a PROBE_N product runs."""
    if is_gpu(device) or largest <= PROBE_N:
        return largest
    _, run, sync, restore = _MAKERS[framework](device, dtype, PROBE_N, fast_math)
    try:
        run()  # warm-up
        sync()
        t0 = time.perf_counter()
        run()
        sync()
        rate = 2.0 * PROBE_N**3 / max(time.perf_counter() - t0, 1e-9)  # FLOP/s
    finally:
        restore()
    fits = int((rate * CALL_S / 2.0) ** (1 / 3)) // 128 * 128
    return max(PROBE_N, min(largest, fits))


def measure_peak(framework: str, device: str, dtype: str, fast_math: bool = False, quick: bool = False) -> Peak:
    if framework not in _MAKERS:
        raise GanSuiteError(f"peak: no matrix-product probe for framework {framework!r}")
    n = _adapted_size(framework, device, dtype, fast_math, matmul_size(device, quick))
    repeats = 3 if quick else 10
    name, run, sync, restore = _MAKERS[framework](device, dtype, n, fast_math)
    try:
        for _ in range(2):  # warm-up: library handles, kernel selection, jit compilation
            run()
        sync()
        times = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            run()
            sync()
            times.append(time.perf_counter() - t0)
    finally:
        restore()
    seconds = statistics.median(times)
    math = ", tf32 allowed" if fast_math and dtype == "float32" and is_gpu(device) else ""
    return Peak(2.0 * n**3 / seconds / 1e9, f"{name} {n}x{n} {dtype}{math}, median of {repeats}")


Probe = tuple[str, Callable[[], None], Callable[[], None], Callable[[], None]]


def _unsupported(framework: str, dtype: str) -> GanSuiteError:
    return GanSuiteError(f"peak: {framework} has no {dtype} matrix product here")


def _torch(device: str, dtype: str, n: int, fast_math: bool) -> Probe:
    import torch

    dev = torch.device("cuda" if is_gpu(device) else "cpu")
    dt = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}.get(dtype)
    if dt is None:
        raise _unsupported("torch", dtype)
    gen = torch.Generator(device=dev)
    gen.manual_seed(0)
    a = torch.randn(n, n, device=dev, dtype=dt, generator=gen)
    b = torch.randn(n, n, device=dev, dtype=dt, generator=gen)
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = fast_math

    def restore() -> None:
        torch.backends.cuda.matmul.allow_tf32 = old

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    return "torch.mm", lambda: torch.mm(a, b), sync, restore


def _jax(device: str, dtype: str, n: int, fast_math: bool) -> Probe:
    import jax
    import jax.numpy as jnp
    from jax import lax

    dt = {"float32": jnp.float32, "float64": jnp.float64, "bfloat16": jnp.bfloat16}.get(dtype)
    if dt is None:
        raise _unsupported("jax", dtype)
    dev = jax.devices("gpu" if is_gpu(device) else "cpu")[0]
    k1, k2 = jax.random.split(jax.random.key(0))
    a = jax.device_put(jax.random.normal(k1, (n, n), dt), dev)
    b = jax.device_put(jax.random.normal(k2, (n, n), dt), dev)
    precision = None if fast_math else lax.Precision.HIGHEST
    dot = jax.jit(lambda x, y: jnp.dot(x, y, precision=precision))
    last: list[Any] = []

    def run() -> None:
        last[:] = [dot(a, b)]

    def sync() -> None:
        if last:
            last[0].block_until_ready()

    return "jnp.dot (jit)", run, sync, lambda: None


def _tensorflow(device: str, dtype: str, n: int, fast_math: bool) -> Probe:
    import tensorflow as tf

    dt = {"float32": tf.float32, "float64": tf.float64, "bfloat16": tf.bfloat16}.get(dtype)
    if dt is None:
        raise _unsupported("tensorflow", dtype)
    place = "/GPU:0" if is_gpu(device) else "/CPU:0"
    with tf.device(place):
        a = tf.cast(tf.random.stateless_normal((n, n), seed=(0, 1)), dt)
        b = tf.cast(tf.random.stateless_normal((n, n), seed=(0, 2)), dt)
    old = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(fast_math)

    def run() -> None:
        with tf.device(place):
            tf.matmul(a, b)

    def sync() -> None:
        # Eager CPU ops have finished when they return; GPU kernels are queued asynchronously.
        if is_gpu(device):
            tf.test.experimental.sync_devices()

    return "tf.matmul", run, sync, lambda: tf.config.experimental.enable_tensor_float_32_execution(old)


def _mxnet(device: str, dtype: str, n: int, fast_math: bool) -> Probe:
    import mxnet as mx

    ctx = mx.gpu(0) if is_gpu(device) else mx.cpu()
    if dtype == "bfloat16" and not is_gpu(device):
        # The bf16 rows' compute (backends/mxnet/models.py: AMP on oneDNN): MXNet has no bfloat16 numpy
        # dtype, so the operands are amp_cast from float32, and `dot` has no bf16 kernel; FullyConnected
        # (x W^T, the same 2 n^3 FLOPs) runs oneDNN's bf16 GEMM (needs MXNET_MKLDNN_ENABLED=1, as
        # the bf16 rows' process has: benchmarks/drive.py).
        from mxnet.contrib.amp import amp

        a, b = (mx.nd.amp_cast(mx.nd.random.normal(shape=(n, n), ctx=ctx), dtype=amp.bfloat16) for _ in range(2))
        return ("mx.nd.FullyConnected (oneDNN bf16)",
                lambda: mx.nd.FullyConnected(a, b, no_bias=True, num_hidden=n), mx.nd.waitall, lambda: None)
    if dtype not in ("float32", "float64"):
        raise _unsupported("mxnet", dtype)
    a = mx.nd.random.normal(shape=(n, n), ctx=ctx, dtype=dtype)
    b = mx.nd.random.normal(shape=(n, n), ctx=ctx, dtype=dtype)
    return "mx.nd.dot", lambda: mx.nd.dot(a, b), mx.nd.waitall, lambda: None


def _numpy(device: str, dtype: str, n: int, fast_math: bool) -> Probe:
    import numpy as np

    if is_gpu(device) or dtype not in ("float32", "float64"):
        raise _unsupported("numpy", f"{dtype} on {device}")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    return "np.dot", lambda: np.dot(a, b), lambda: None, lambda: None


_MAKERS: dict[str, Callable[[str, str, int, bool], Probe]] = {
    "torch": _torch, "jax": _jax, "tensorflow": _tensorflow, "mxnet": _mxnet, "numpy": _numpy}
