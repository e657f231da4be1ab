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
#: Environment of a fast-mode process (benchmarks, the report's mixed-precision rows): oneDNN on. Each
#: framework reads its switch once per process, and parity refuses it (float32 error), so the test and
#: comparison envs turn it off and fast-mode work runs in a child process with this set. Measured
#: (full-size DCGAN, batch 64, float32, 2-core Zen 4): TensorFlow's tf.function 61.2 img/s with oneDNN
#: vs 44.9 under XLA; MXNet fast 11.5 img/s with oneDNN vs 10.4 without; MXNet's bf16 kernels exist
#: only in oneDNN (backends/mxnet/models.py).
FAST_ENV = {"tensorflow": {"TF_ENABLE_ONEDNN_OPTS": "1"}, "mxnet": {"MXNET_MKLDNN_ENABLED": "1"}}


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
