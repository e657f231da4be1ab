"""Result files: ``<out>/<device slug>/<backend>.json`` (a list of rows) and, beside it,
``<backend>.failures.json`` (configs that raised, with the one-line error).

A run merges into the existing files: a new row or failure replaces the entry with the
same (backend, model, mode, dtype, batch_size), so a GPU script can add its bf16 rows to
the float32 ones and a re-run of one model leaves the other model's rows in place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from gansuite.common.errors import GanSuiteError

from .frameworks import slug
from .harness import ROW_KEYS, check_row

KEY = ("backend", "model", "mode", "dtype", "batch_size")
FAILURES_SUFFIX = ".failures.json"


def key_of(entry: dict[str, Any]) -> tuple:
    return tuple(entry[k] for k in KEY)


def result_paths(out: Path, device_label: str, backend: str) -> tuple[Path, Path]:
    folder = out / slug(device_label)
    return folder / f"{backend}.json", folder / f"{backend}{FAILURES_SUFFIX}"


def _read_list(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise GanSuiteError(f"results: {str(path)!r} is not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, list):
        raise GanSuiteError(f"results: {str(path)!r} must hold a JSON list of rows")
    return data


def write_results(out: Path, device_label: str, backend: str, rows: Iterable[dict[str, Any]],
                  failures: Iterable[dict[str, Any]]) -> tuple[Path, Path]:
    """Merge ``rows`` and ``failures`` into the backend's files under ``out``; return both paths."""
    rows, failures = list(rows), list(failures)
    rows_path, fail_path = result_paths(out, device_label, backend)
    try:
        rows_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise GanSuiteError(f"out: cannot write to {str(out)!r} ({err.strerror})") from None
    fresh = {key_of(e) for e in rows} | {key_of(e) for e in failures}
    kept_rows = [r for r in _read_list(rows_path) if key_of(r) not in fresh]
    kept_fail = [f for f in _read_list(fail_path) if key_of(f) not in fresh]
    merged = sorted(kept_rows + rows, key=lambda r: (r["model"], r["mode"], r["dtype"], r["batch_size"]))
    for row in merged:
        try:
            check_row(row)
        except ValueError as err:
            raise GanSuiteError(f"results: a row of {str(rows_path)!r} is malformed ({err}); move the file away") from None
    rows_path.write_text(json.dumps(merged, indent=1))
    all_fail = kept_fail + failures
    if all_fail:
        fail_path.write_text(json.dumps(all_fail, indent=1))
    elif fail_path.exists():
        fail_path.unlink()
    return rows_path, fail_path


def load_rows(results: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every valid row and every failure under ``results/<device>/``."""
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for path in sorted(results.glob("*/*.json")):
        if path.name.endswith(FAILURES_SUFFIX):
            failures.extend(_read_list(path))
            continue
        for i, row in enumerate(_read_list(path)):
            if not isinstance(row, dict) or set(row) != set(ROW_KEYS):
                raise GanSuiteError(f"results: {str(path)!r} row {i} does not have the row keys {', '.join(ROW_KEYS)}")
            rows.append(row)
    return rows, failures
