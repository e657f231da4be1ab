"""The few framework-specific facts the harness needs, each imported lazily.

The harness itself only speaks the backend protocol; what the protocol does not cover
(which framework a backend runs on, the GPU's name, starting a compile cache afresh)
lives here, one small branch per framework, so only the framework of the current
environment is ever imported.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
from typing import Any

from gansuite.common.registry import BACKENDS

#: Environment variables that change threads, kernels or compilation (recorded with every number).
ENV_VARS = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "KMP_AFFINITY", "KMP_BLOCKTIME",
    "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "TF_ENABLE_ONEDNN_OPTS", "TF_XLA_FLAGS",
    "TF_CPP_MIN_LOG_LEVEL", "XLA_FLAGS", "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION",
    "JAX_PLATFORMS", "JAX_ENABLE_X64", "MXNET_ENGINE_TYPE", "MXNET_CPU_WORKER_NTHREADS", "MXNET_MKLDNN_ENABLED",
    "MXNET_CUDNN_AUTOTUNE_DEFAULT", "CUDA_VISIBLE_DEVICES", "TORCHINDUCTOR_FREEZING", "TORCHINDUCTOR_MAX_AUTOTUNE",
    # Persistent compile caches make a second run's compile_s smaller than a first run's.
    "TORCHINDUCTOR_CACHE_DIR", "TORCHINDUCTOR_FX_GRAPH_CACHE", "TORCHINDUCTOR_FORCE_DISABLE_CACHES",
    "JAX_COMPILATION_CACHE_DIR", "PYTHONHASHSEED",
)


def framework_of(backend: str) -> str:
    """The Python package a backend computes with (``numpy`` for the oracle)."""
    return BACKENDS[backend][1]


def is_gpu(device: str) -> bool:
    return device in ("cuda", "gpu")


def environment() -> dict[str, Any]:
    """Host facts and thread/kernel variables that every row records."""
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "env": {k: os.environ.get(k) for k in ENV_VARS if os.environ.get(k) is not None},
    }


#: CPU features that decide which kernels run (bf16 needs AVX-512 in oneDNN; AMX is its matrix unit).
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")


def _cpuinfo(field: str) -> str | None:
    """The value of the first ``field`` line of Linux's /proc/cpuinfo, or None where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags() -> list[str]:
    """Which of CPU_FLAGS this CPU has (empty where /proc/cpuinfo is not readable)."""
    have = set((_cpuinfo("flags") or "").split())
    return [flag for flag in CPU_FLAGS if flag in have]


def cpu_flags_text(host: dict[str, Any]) -> str:
    """A row's recorded CPU flags (its ``settings.host``) in words."""
    if "cpu_flags" not in host:
        return "CPU flags not recorded"
    return ", ".join(host["cpu_flags"]) or "none of " + ", ".join(CPU_FLAGS)


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine() or "cpu"


def gpu_name(framework: str) -> str:
    """The accelerator's marketing name as the framework reports it (``cuda`` if it cannot)."""
    try:
        if framework == "torch":
            import torch

            return torch.cuda.get_device_name(0)
        if framework == "jax":
            import jax

            return jax.devices("gpu")[0].device_kind
        if framework == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "cuda")
    except Exception:  # no GPU or no name: the label falls back, the numbers are unaffected
        pass
    return "cuda"


def device_label(framework: str, device: str) -> str:
    """``cpu``, or the GPU's name (e.g. ``NVIDIA H100 80GB HBM3``): a row's ``device``."""
    return gpu_name(framework) if is_gpu(device) else "cpu"


def slug(label: str) -> str:
    """A folder name for a device label: ``NVIDIA H100 80GB HBM3`` -> ``nvidia-h100-80gb-hbm3``."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") or "device"


def fresh_compile_cache(framework: str) -> None:
    """Forget earlier compilations so a config's compile time is what a new process would pay.

    torch.compile caches per code object: G and D are both ``nn.Sequential``, so after a few
    batch sizes dynamo recompiles with dynamic shapes and, past its cache limit, silently
    falls back to eager, which would make later "fast" rows measure eager code. JAX and TF
    key their caches by input shapes (a new batch size compiles anew) and MXNet hybridizes
    per block instance, so they need nothing.
    """
    if framework == "torch":
        import torch._dynamo

        torch._dynamo.reset()


def numerics(framework: str, mode: str) -> dict[str, Any]:
    """The framework's process-wide switches that change numbers or speed, under the names its GAN
    backend's ``settings(state)`` records them (so ``harness.uses_fast_math`` reads either): for a
    workload whose protocol has no ``settings`` (the VAE's, common/vae_backend.py). ``mode`` only
    names what the backend derives from it per call (JAX's per-layer dot precision)."""
    if framework == "torch":
        import torch

        return {"threads": torch.get_num_threads(), "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
                "tf32_cudnn": torch.backends.cudnn.allow_tf32, "cudnn_benchmark": torch.backends.cudnn.benchmark,
                "mkldnn": torch.backends.mkldnn.enabled}
    if framework == "jax":
        import jax

        # backends/jax/vae.py: the GANs' rule, HIGHEST per-layer precision in parity, DEFAULT in fast.
        return {"x64": bool(jax.config.jax_enable_x64),
                "layer_precision": "highest" if mode == "parity" else "default",
                "default_matmul_precision": str(jax.config.jax_default_matmul_precision)}
    if framework == "tensorflow":
        import tensorflow as tf

        from gansuite.backends.tensorflow import onednn_enabled, op_determinism_enabled

        return {"tf32": tf.config.experimental.tensor_float_32_execution_enabled(),
                "determinism": op_determinism_enabled(), "onednn": onednn_enabled(),
                "threads_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                "threads_inter_op": tf.config.threading.get_inter_op_parallelism_threads()}
    if framework == "mxnet":
        from gansuite.backends.mxnet import ENV_FLAGS, onednn_enabled

        return {"onednn_enabled": onednn_enabled(), "env": {k: os.environ.get(k) for k in ENV_FLAGS}}
    return {}
