"""The one error type users see: a single line naming the field and what is allowed.

Every bad-input path in the suite (spec values, CLI overrides, checkpoints, data
folders, missing frameworks) raises :class:`GanSuiteError`; the CLI prints its
message on one line and exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, NoReturn


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


def run_main(body: Callable[[], int]) -> int:
    """The one error-exit block of the ``python -m gansuite.benchmarks.*`` entry points: a
    GanSuiteError prints one line and exits 2, ``--help`` exits with its own status, Ctrl-C 130."""
    try:
        return body()
    except GanSuiteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except SystemExit as err:  # --help
        return int(err.code or 0)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
