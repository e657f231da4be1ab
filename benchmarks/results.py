"""Result files: ``<out>/<device slug>/<backend>.json`` (a list of rows) and, beside it,
``<backend>.failures.json`` (configs that raised, with the one-line error) and
``<backend>.skipped.json`` (configs that cannot run here, with the one-line reason: MXNet's bf16 on
a CPU without AVX-512, a seed loop a framework has no tab for), so the summary can say why a row
a target needs is missing.

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
SKIPS_SUFFIX = ".skipped.json"
SKIP_KEY = ("backend", "model", "mode", "dtype")  # a skip holds for every batch size of its group


def key_of(entry: dict[str, Any]) -> tuple:
    return tuple(entry[k] for k in KEY)


def result_paths(out: Path, device_label: str, backend: str) -> tuple[Path, Path]:
    folder = out / slug(device_label)
    return folder / f"{backend}.json", folder / f"{backend}{FAILURES_SUFFIX}"


def group_of(entry: dict[str, Any]) -> tuple:
    """A skip's group: its SKIP_KEY values."""
    return tuple(entry[k] for k in SKIP_KEY)


def skip_entry(backend: str, model: str, mode: str, dtype: str, device: str, reason: str) -> dict[str, Any]:
    """One skipped group (every batch size of it), as ``<backend>.skipped.json`` holds it."""
    return {"backend": backend, "model": model, "mode": mode, "dtype": dtype, "device": device, "reason": reason}


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
                  failures: Iterable[dict[str, Any]], skips: Iterable[dict[str, Any]] = ()) -> tuple[Path, Path]:
    """Merge ``rows``, ``failures`` and ``skips`` into the backend's files under ``out``; return the
    rows' and the failures' paths."""
    rows, failures, skips = list(rows), list(failures), list(skips)
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
    # A group skipped now replaces its old entry; a group that ran now drops one (its rows say more).
    skip_path = fail_path.with_name(f"{backend}{SKIPS_SUFFIX}")
    ran = {group_of(e) for e in rows + failures}
    # One entry per group: a group's last reason stands (a config-level skip repeats it per batch size).
    by_group = {group_of(e): e for e in _read_list(skip_path) if group_of(e) not in ran}
    by_group.update({group_of(e): e for e in skips})
    all_skips = list(by_group.values())
    if all_skips:
        skip_path.write_text(json.dumps(all_skips, indent=1))
    elif skip_path.exists():
        skip_path.unlink()
    return rows_path, fail_path


def load_rows(results: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every valid row and every failure under ``results/<device>/``."""
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for path in sorted(results.glob("*/*.json")):
        if path.name.endswith(FAILURES_SUFFIX):
            failures.extend(_read_list(path))
            continue
        if path.name.endswith(SKIPS_SUFFIX):
            continue  # load_skips
        for i, row in enumerate(_read_list(path)):
            if not isinstance(row, dict) or set(row) != set(ROW_KEYS):
                raise GanSuiteError(f"results: {str(path)!r} row {i} does not have the row keys {', '.join(ROW_KEYS)}")
            rows.append(row)
    return rows, failures


def load_skips(results: Path) -> list[dict[str, Any]]:
    """Every skipped group under ``results/<device>/`` (skip_entry's records)."""
    return [e for path in sorted(results.glob(f"*/*{SKIPS_SUFFIX}")) for e in _read_list(path)]
