"""Backend names -> implementations, imported lazily (each lives in its own env)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import BackendUnavailable, GanSuiteError
from .protocol import GANProtocol

#: name -> (module, the framework package it needs, the tox env that installs it)
BACKENDS: dict[str, tuple[str, str, str]] = {
    "oracle": ("gansuite.common.oracle", "numpy", "any"),
    "torch": ("gansuite.backends.torch", "torch", "torch"),
    "jax": ("gansuite.backends.jax", "jax", "jax"),
    "tensorflow": ("gansuite.backends.tensorflow", "tensorflow", "tensorflow"),
    "mxnet": ("gansuite.backends.mxnet", "mxnet", "mxnet"),
}
FRAMEWORK_BACKENDS = tuple(n for n in BACKENDS if n != "oracle")
#: Environment of a fast-mode process (benchmarks, the report's mixed-precision rows): oneDNN on for
#: TensorFlow and MXNet; PyTorch's TCMalloc and JAX's XLA flag are added below. Each
#: framework reads its switch once per process, and parity refuses it (float32 error), so the test and
#: comparison envs turn it off and fast-mode work runs in a child process with this set. Measured
#: (full-size DCGAN, batch 64, float32, 2-core Zen 4): TensorFlow's tf.function 61.2 img/s with oneDNN
#: vs 44.9 under XLA; MXNet fast 11.5 img/s with oneDNN vs 10.4 without; MXNet's bf16 kernels exist
#: only in oneDNN (backends/mxnet/models.py).
FAST_ENV = {"tensorflow": {"TF_ENABLE_ONEDNN_OPTS": "1"}, "mxnet": {"MXNET_MKLDNN_ENABLED": "1"}}

#: Where a TCMalloc library is looked for (the system's, then one installed beside this Python), and its names.
TCMALLOC_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
TCMALLOC_NAMES = ("libtcmalloc.so.4", "libtcmalloc_minimal.so.4", "libtcmalloc.so", "libtcmalloc_minimal.so")


def find_tcmalloc() -> str | None:
    """The path of a TCMalloc library on this Linux machine, or None (then the C library's malloc is used)."""
    if not sys.platform.startswith("linux"):
        return None
    for folder in (*TCMALLOC_DIRS, os.path.join(sys.prefix, "lib")):
        for name in TCMALLOC_NAMES:
            if os.path.isfile(os.path.join(folder, name)):
                return os.path.join(folder, name)
    return None


def loaded_allocator() -> str:
    """Which malloc this process runs ("tcmalloc", "jemalloc" or "glibc"), read from its memory map:
    recorded with every PyTorch row, since it moves small-tensor work by up to 2x."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    return next((name for name in ("tcmalloc", "jemalloc") if f"lib{name}" in maps), "glibc")


# PyTorch's fast processes preload TCMalloc where the machine has it, as PyTorch's own CPU launcher
# (python -m torch.backends.xeon.run_cpu) does by default. Its allocations of small tensors are ~2x
# cheaper than glibc's posix_memalign, and a compiled small model's loop is mostly allocations:
# the Gaussian GAN's compiled scan ran 12.3 us an iteration with it, against 23.7 with glibc
# (2026-12-07, batch 8, float32, one thread, AVX2 EPYC; jemalloc 13.6, TBB's malloc 17.6). Without
# the library (Debian: apt install libtcmalloc-minimal4) the rows run and record glibc.
_TCMALLOC = find_tcmalloc()
if _TCMALLOC is not None:
    FAST_ENV["torch"] = {"LD_PRELOAD": ":".join(p for p in (_TCMALLOC, os.environ.get("LD_PRELOAD", "")) if p)}

#: XLA:CPU's YNNPACK dot fusions for JAX's fast processes (jaxlib 0.10.2; the flag is experimental, so
#: it is set here, for the pinned env, not in the backend). Measured 2026-12-08, 2-core AVX-512 EPYC,
#: float32, processes alternated: full-size DCGAN at batch 64 51.4 and 48.2 img/s against 46.8 and 41.1
#: without (1.10x, 1.17x); the VAE 1.2-2.0x at batch 8 and 64; the Gaussian GAN within this VM's noise
#: either way. Its convolution probe (k4 s2, 64x32x32x128 -> 256, forward and backward) took 390
#: against 554 ms. Fast mode's oracle checks pass with it (tests/test_backend_jax.py, 73 tests).
JAX_FAST_XLA_FLAG = "--xla_cpu_experimental_ynn_fusion_type=dot"
FAST_ENV["jax"] = {"XLA_FLAGS": " ".join(f for f in (os.environ.get("XLA_FLAGS", ""), JAX_FAST_XLA_FLAG) if f)}


def get_backend(name: str) -> GANProtocol:
    if name not in BACKENDS:
        raise GanSuiteError(f"backend: unknown backend {name!r}; allowed: {', '.join(BACKENDS)}")
    module_name, package, env = BACKENDS[name]
    if name == "oracle":
        from .oracle import OracleBackend

        return OracleBackend()
    # find_spec, not import: a backend may have to set environment variables before its
    # framework is first imported (TF reads TF_ENABLE_ONEDNN_OPTS once, at import).
    if importlib.util.find_spec(package) is None:
        raise BackendUnavailable(
            f"backend: {name!r} needs the {package!r} package, which is not installed in this environment; "
            f"run it in its tox env (`tox -e {env}`) or `pip install 'gansuite[{env}]'`"
        ) from None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise BackendUnavailable(f"backend: {name!r} is not part of this installation ({err})") from None
    return module.Backend()


def available(name: str) -> tuple[bool, str | None]:
    """(True, None) if the backend imports here, else (False, the one-line reason)."""
    try:
        get_backend(name)
    except GanSuiteError as err:
        return False, str(err)
    return True, None


#: tox env names per purpose: ``cmp-torch`` (tox -m compare), ``bench-torch``, ``torch`` (the test env).
TOX_ENV_NAMES = {"compare": "cmp-{}", "bench": "bench-{}", "test": "{}"}


def backend_python(name: str, env_kinds: Sequence[str], build_hint: str) -> tuple[str | None, str | None]:
    """(the interpreter that runs backend ``name``, None) or (None, why there is none).

    Run through tox (``GANSUITE_TOX_WORKDIR`` set): the first of its tox envs, in the order of
    ``env_kinds`` (keys of TOX_ENV_NAMES), that has been built. Otherwise this interpreter if
    the framework imports here. The oracle runs anywhere."""
    if name == "oracle":
        return sys.executable, None
    workdir = os.environ.get("GANSUITE_TOX_WORKDIR")
    if workdir:
        envs = [TOX_ENV_NAMES[k].format(name) for k in env_kinds]
        for env in envs:
            candidate = Path(workdir) / env / "bin" / "python"
            if candidate.exists():
                return str(candidate), None
        return None, f"tox env {envs[0]} was not built ({build_hint} builds it)"
    ok, reason = available(name)
    return (sys.executable, None) if ok else (None, reason)
