"""PyTorch backend: the shared contract (tests/backend_contract.py) plus torch specifics."""

from __future__ import annotations

from backend_contract import BackendContract


class TestTorchBackend(BackendContract):
    backend_name = "torch"
