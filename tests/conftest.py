"""Which backend tests are collected.

Each tox env sets ``GANSUITE_BACKENDS`` to the backends it installs (e.g. ``torch``).
Test files named ``test_backend_<name>.py`` (and ``test_backend_<name>_<topic>.py``) are collected only in envs that list
``<name>``; there, a framework that fails to import is a test FAILURE, never a skip.
Without the variable (a developer running pytest by hand) every backend test file is
collected, and a backend whose framework is missing is skipped with the reason shown.

``test_crossbackend.py`` reads a comparison report that the tox env ``crossbackend`` writes
first (GANSUITE_CROSSBACKEND_REPORT); it is collected only there.
"""

from __future__ import annotations

import os

import pytest

from gansuite.common.registry import FRAMEWORK_BACKENDS, available

_declared = os.environ.get("GANSUITE_BACKENDS")
EXPECTED = None if _declared is None else {b.strip() for b in _declared.split(",") if b.strip()}

collect_ignore = []
collect_ignore_glob: list[str] = []
if EXPECTED is not None:
    unknown = EXPECTED - set(FRAMEWORK_BACKENDS)
    if unknown:
        raise pytest.UsageError(f"GANSUITE_BACKENDS names unknown backends {sorted(unknown)}")
    collect_ignore = [f"test_backend_{name}.py" for name in FRAMEWORK_BACKENDS if name not in EXPECTED]
    # and a backend's further files, test_backend_<name>_<topic>.py (e.g. torch's learning runs)
    collect_ignore_glob = [f"test_backend_{name}_*.py" for name in FRAMEWORK_BACKENDS if name not in EXPECTED]
if not os.environ.get("GANSUITE_CROSSBACKEND_REPORT"):
    collect_ignore.append("test_crossbackend.py")


def pytest_collection_modifyitems(config, items):
    if EXPECTED is not None:
        return
    for item in items:
        name = getattr(item.cls, "backend_name", None) if item.cls else None
        if name:
            ok, reason = available(name)
            if not ok:
                item.add_marker(pytest.mark.skip(reason=reason))
