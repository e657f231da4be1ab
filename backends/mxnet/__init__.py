"""MXNet Gluon backend (mxnet 1.9.1, the last release; needs numpy 1.23).

oneDNN (MKLDNN) is switched OFF here, before this backend runs any MXNet operator:

* Why: the pip wheel of MXNet 1.9.1 runs float32 convolutions on CPU through oneDNN,
  which is measurably less accurate than MXNet's native im2col + OpenBLAS path
  (full-size DCGAN, batch 4, one iteration vs the float64 oracle: D(G(z)) after D's
  step 1.1e-5 relative with oneDNN, over the 1e-5 float32 tolerance; 1.2e-6 native;
  D logits on the same fake 4.2e-6 vs 1.3e-6). float64 never uses oneDNN.
* How: MXNet reads ``MXNET_MKLDNN_ENABLED`` ONCE, at the first operator that asks, and
  never again (measured: flipping it after an operator ran changes nothing; setting it
  after ``import mxnet`` but before any operator works, which matters because
  ``common.registry`` imports ``mxnet`` before this package). It cannot follow
  BuildOptions.mode per build as ``torch.backends.mkldnn.enabled`` does, so it is off for
  the whole process unless the user set the variable. A process started with
  ``MXNET_MKLDNN_ENABLED=1`` (e.g. to benchmark fast mode with oneDNN) gets an error
  from any parity-mode build (backend.py), never silently wrong numbers.
* Cost: fast mode is slower without oneDNN (full-size DCGAN, batch 16, float32, 2-core
  CPU: 1.54 s per iteration vs 1.20 with oneDNN); benchmarks of fast mode can run in a
  process started with ``MXNET_MKLDNN_ENABLED=1``, recorded by ``settings()``.
"""

from __future__ import annotations

import os

#: Environment variables that change MXNet's numbers or speed; recorded by ``settings()``.
ENV_FLAGS = (
    "MXNET_MKLDNN_ENABLED",
    "MXNET_ENFORCE_DETERMINISM",
    "MXNET_ENGINE_TYPE",
    "MXNET_CPU_WORKER_NTHREADS",
    "MXNET_SUBGRAPH_BACKEND",
    "MXNET_STORAGE_FALLBACK_LOG_VERBOSE",
)

os.environ.setdefault("MXNET_MKLDNN_ENABLED", "0")
# MXNET_ENFORCE_DETERMINISM is left alone: it restricts cuDNN algorithm choice (GPU only); on
# CPU runs are bit-reproducible without it (tests: test_same_seed_is_bit_identical).
# With oneDNN off, MXNet logs a multi-line "Storage type fallback detected" notice for the
# first BatchNorm-like op it dispatches to the native kernel; harmless (its own text says so).
os.environ.setdefault("MXNET_STORAGE_FALLBACK_LOG_VERBOSE", "0")


def onednn_enabled() -> bool:
    """Whether MXNet's oneDNN kernels are on: built into the wheel and not switched off by the environment."""
    import mxnet as mx

    off = os.environ.get("MXNET_MKLDNN_ENABLED", "1").strip().lower() in ("0", "false")
    return mx.runtime.Features().is_enabled("MKLDNN") and not off


_BF16_PROBE: list[str | None] = []


def onednn_bf16_error() -> str | None:
    """None if oneDNN runs bfloat16 on this CPU, else the error it gives (call with oneDNN on).

    oneDNN's bf16 kernels need AVX-512 (``avx512_core``, emulated; ``avx512_bf16`` or AMX, native).
    Without it MXNet 1.9.1 fails at the first bf16 operator's execution with "MXNetError: could not
    create a primitive descriptor iterator" (measured on an AMD EPYC without AVX-512: Convolution and
    FullyConnected alike; the AVX-512 EPYC of the bf16 benchmarks runs them). Probed once per process,
    a 16x16 FullyConnected on amp_cast bf16 operands; MXNet's engine goes on normally after the error."""
    if not _BF16_PROBE:
        import mxnet as mx
        from mxnet.contrib.amp.amp import bfloat16

        try:
            a = mx.nd.amp_cast(mx.nd.ones((16, 16)), dtype=bfloat16)
            mx.nd.FullyConnected(a, a, no_bias=True, num_hidden=16).wait_to_read()
            _BF16_PROBE.append(None)
        except mx.base.MXNetError as e:
            _BF16_PROBE.append(str(e).strip().splitlines()[-1])
    return _BF16_PROBE[0]


def onednn_bf16_refusal() -> str | None:
    """The one line that refuses bf16 on this CPU (the build's error and the benchmark's skip reason
    share it), or None where oneDNN has bf16 kernels. Call with oneDNN on."""
    from gansuite.common.protocol import NO_BF16_KERNELS

    error = onednn_bf16_error()
    return None if error is None else f"{NO_BF16_KERNELS} for MXNet's oneDNN (it needs AVX-512; '{error}')"


from .backend import MxnetBackend as Backend  # noqa: E402  (after the environment is set)

__all__ = ["Backend"]
