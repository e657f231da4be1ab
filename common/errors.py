"""The one error type users see: a single line naming the field and what is allowed.

Every bad-input path in the suite (spec values, CLI overrides, checkpoints, data
folders, missing frameworks) raises :class:`GanSuiteError`; the CLI prints its
message on one line and exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
from typing import NoReturn


class GanSuiteError(Exception):
    """A user-facing error. ``str(err)`` is one line."""


class SpecError(GanSuiteError, ValueError):
    """An invalid spec value. The message starts with the dotted field path."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.detail = message
        super().__init__(f"{field}: {message}")

    def under(self, prefix: str) -> "SpecError":
        """The same error with its field path prefixed (``prefix.field``)."""
        return SpecError(f"{prefix}.{self.field}" if self.field else prefix, self.detail)


class BackendUnavailable(GanSuiteError):
    """A backend whose framework is not importable in this environment."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are a GanSuiteError (one line, no usage block), for the
    ``python -m gansuite.benchmarks.*`` entry points."""

    def error(self, message: str) -> NoReturn:
        raise GanSuiteError(message)
