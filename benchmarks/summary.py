"""Merge every backend's rows under ``results/bench/<device>/`` into ``summary.md`` with plots.

    python -m gansuite.benchmarks.summary --results results/bench [--readme README.md]

Per (model, device), GANs and seed 002's VAE alike: a table of every row, each non-peer row
with its throughput as a ratio to the seed's own loop at the same batch size (the same
framework's peer where the seeds have one, else the PyTorch peer, named in the cell); a plot of
throughput against batch size per backend and mode; and bars of parity vs fast vs peer at one
batch size.
"""

from __future__ import annotations

import os
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable

from gansuite.common.errors import ArgumentParser, GanSuiteError, run_main

from .frameworks import cpu_flags_text, slug
from .harness import PEER_MODES, ROW_MODES
from .peers import IDIOMATIC_MODE, idiomatic_row_mode
from .results import load_rows, load_skips
from .targets import targets_section, update_readme

REFERENCE_PEER_BACKEND = "torch"  # every seed loop has a PyTorch version (benchmarks/peers MODULES)


def _mode_rank(row: dict[str, Any]) -> int:
    return ROW_MODES.index(row["mode"]) if row["mode"] in ROW_MODES else len(ROW_MODES)


def _sort_key(row: dict[str, Any]) -> tuple:
    return (row["backend"], _mode_rank(row), row["dtype"], row["batch_size"])


def is_peer(row: dict[str, Any]) -> bool:
    return row["mode"].startswith("peer-")


def peer_for(row: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The seed loop's row to compare ``row`` with: same device, model and batch size; the same
    backend's peer if there is one, else the PyTorch peer."""
    candidates = [r for r in rows if is_peer(r) and r["mode"] != IDIOMATIC_MODE
                  and (r["device"], r["model"], r["batch_size"]) == (row["device"], row["model"], row["batch_size"])]
    for backend in (row["backend"], REFERENCE_PEER_BACKEND):
        for r in candidates:
            if r["backend"] == backend:
                return r
    return None


def idiomatic_for(row: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The same framework's idiomatic loop of the model (same device, model, batch size, dtype): its
    peer-idiomatic row, or for PyTorch the tutorial's loop (peers.IDIOMATIC_MODULES)."""
    for r in rows:
        if (r["backend"], r["device"], r["model"], r["batch_size"], r["dtype"], r["mode"]) == (
                row["backend"], row["device"], row["model"], row["batch_size"], row["dtype"],
                idiomatic_row_mode(row["backend"])):
            return r
    return None


def idiomatic_cell(row: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    if is_peer(row):
        return "(idiomatic)" if idiomatic_for(row, rows) is row else "—"
    ref = idiomatic_for(row, rows)
    return "—" if ref is None else f"{row['examples_per_s'] / ref['examples_per_s']:.2f}x"


def ratio_cell(row: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    if is_peer(row):
        return "(peer)"
    peer = peer_for(row, rows)
    if peer is None:
        return "—"
    ratio = row["examples_per_s"] / peer["examples_per_s"]
    return f"{ratio:.2f}x" + ("" if peer["backend"] == row["backend"] else f" ({peer['backend']} peer)")


def _fmt(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:,.0f}"


def table(rows: list[dict[str, Any]], all_rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| backend | mode | dtype | batch | examples/s | step ms median (min–max) | compile s | GFLOP/s "
             "| % of peak | peak MB | vs seed loop | vs idiomatic |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=_sort_key):
        lines.append(
            f"| {r['backend']} | {r['mode']} | {r['dtype']} | {r['batch_size']} | {_fmt(r['examples_per_s'], 4)} "
            f"| {_fmt(r['step_ms_median'])} ({_fmt(r['step_ms_min'])}–{_fmt(r['step_ms_max'])}) "
            f"| {r['compile_s']:.2f} | {_fmt(r['gflops_per_s'])} | {100 * r['fraction_of_peak']:.2g} "
            f"| {r['peak_mem_mb']:.0f} | {ratio_cell(r, all_rows)} | {idiomatic_cell(r, all_rows)} |")
    return lines


def ratio_table(rows: list[dict[str, Any]]) -> list[str]:
    """Parity and fast throughput over the seed loop's, per backend, batch size and dtype."""
    by_key: dict[tuple, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        if not is_peer(r):
            by_key[(r["device"], r["model"], r["backend"], r["dtype"], r["batch_size"])][r["mode"]] = r
    lines = ["| device | model | backend | dtype | batch | seed loop | parity / seed | fast / seed "
             "| fast multi-step / seed |",
             "|---|---|---|---|---:|---|---:|---:|---:|"]
    for key in sorted(by_key):
        modes = by_key[key]
        any_row = next(iter(modes.values()))
        peer = peer_for(any_row, rows)
        if peer is None:
            continue
        cells = [f"{modes[m]['examples_per_s'] / peer['examples_per_s']:.2f}x" if m in modes else "—"
                 for m in ("parity", "fast")]
        # The multi-step primitive (backend.train_epoch: k iterations per compiled call), timed on the
        # fast row's own state (harness._measure_scan), where the backend has one and it was timed.
        scan = modes.get("fast", {}).get("settings", {}).get("epoch_scan", {}).get("examples_per_s")
        cells.append("—" if scan is None else f"{scan / peer['examples_per_s']:.2f}x")
        device, model, backend, dtype, batch = key
        lines.append(f"| {device} | {model} | {backend} | {dtype} | {batch} | {peer['backend']} {peer['mode']} "
                     f"| {cells[0]} | {cells[1]} | {cells[2]} |")
    return lines if len(lines) > 2 else []


def best_table(rows: list[dict[str, Any]]) -> list[str]:
    """Per (device, model, batch) measured in fast float32 by several frameworks: each framework's fast
    row, bf16-mixed over float32 where both ran, and the slowest-to-fastest framework ratio (issue 16:
    each framework at its best, compared)."""
    fast = [r for r in rows if r["mode"] == "fast"]
    keys = sorted({(r["device"], r["model"], r["batch_size"]) for r in fast if r["dtype"] == "float32"})
    lines = []
    for device, model, batch in keys:
        at = {(r["backend"], r["dtype"]): r["examples_per_s"] for r in fast
              if (r["device"], r["model"], r["batch_size"]) == (device, model, batch)}
        f32 = {b: v for (b, d), v in at.items() if d == "float32"}
        if len(f32) < 2:
            continue
        slow, quick = min(f32, key=f32.get), max(f32, key=f32.get)
        cells = []
        for b in sorted(f32):
            bf16 = at.get((b, "bf16-mixed"))
            cells.append(f"{b} {_fmt(f32[b])}" + (f" (bf16-mixed {_fmt(bf16)}, {bf16 / f32[b]:.2f}x)" if bf16 else ""))
        lines.append(f"| {device} | {model} | {batch} | {'; '.join(cells)} | {quick} / {slow}: "
                     f"{f32[quick] / f32[slow]:.2f}x |")
    if not lines:
        return []
    return ["| device | model | batch | fast float32 examples/s (bf16-mixed, ratio) | slowest to fastest |",
            "|---|---|---:|---|---|", *lines]


def _series_label(r: dict[str, Any]) -> str:
    return f"{r['backend']} {r['mode']}" + ("" if r["dtype"] == "float32" else f" {r['dtype']}")


def plot_throughput(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    plt = _pyplot()
    series: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        series[_series_label(r)].append(r)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label in sorted(series):
        pts = sorted(series[label], key=lambda r: r["batch_size"])
        ax.plot([r["batch_size"] for r in pts], [r["examples_per_s"] for r in pts], marker="o",
                linestyle="--" if is_peer(pts[0]) else "-", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("training examples / s")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reference_batch(rows: list[dict[str, Any]]) -> int:
    """The batch size measured by the most (backend, mode, dtype) series; ties go to the larger."""
    counts = Counter(r["batch_size"] for r in rows)
    return max(counts, key=lambda b: (counts[b], b))


def plot_modes(rows: list[dict[str, Any]], path: Path, title: str) -> int:
    """Grouped bars per backend at the reference batch size; returns that batch size."""
    plt = _pyplot()
    batch = reference_batch(rows)
    at = [r for r in rows if r["batch_size"] == batch]
    backends = sorted({r["backend"] for r in at})
    kinds = sorted({(r["mode"], r["dtype"]) for r in at}, key=lambda k: (ROW_MODES.index(k[0])
                                                                           if k[0] in ROW_MODES else 99, k[1]))
    width = 0.8 / max(1, len(kinds))
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(backends) + 2), 4.5))
    for j, (mode, dtype) in enumerate(kinds):
        xs, ys = [], []
        for i, b in enumerate(backends):
            match = [r for r in at if (r["backend"], r["mode"], r["dtype"]) == (b, mode, dtype)]
            if match:
                xs.append(i + (j - (len(kinds) - 1) / 2) * width)
                ys.append(match[0]["examples_per_s"])
        bars = ax.bar(xs, ys, width, label=mode + ("" if dtype == "float32" else f" {dtype}"))
        ax.bar_label(bars, labels=[f"{y:.3g}" for y in ys], fontsize=7)
    ax.set_xticks(range(len(backends)), backends)
    ax.set_ylabel("training examples / s")
    ax.set_title(f"{title}, batch {batch}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return batch


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on servers/CI
    import matplotlib.pyplot as plt

    return plt


def settings_lines(rows: list[dict[str, Any]]) -> list[str]:
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: (r["device"], r["backend"], is_peer(r))):
        seen.setdefault((r["device"], r["backend"]), r)
    lines = []
    for (device, backend), r in sorted(seen.items()):
        s = r["settings"]
        host = s.get("host", {})
        versions = ", ".join(f"{k} {v}" for k, v in s.get("versions", {}).items())
        env = ", ".join(f"{k}={v}" for k, v in host.get("env", {}).items()) or "none set"
        lines.append(f"- **{backend} on {device}**: {versions}; {host.get('cpu_count')} CPUs "
                     f"({host.get('cpu_model')}; {cpu_flags_text(host)}); thread/kernel variables: {env}; "
                     f"quick run: {s.get('quick')}; measured {host.get('date', '(date not recorded)')}")
    return lines


def build_summary(results: Path) -> Path:
    rows, failures = load_rows(results)
    if not rows:
        raise GanSuiteError(f"results: no rows under {str(results)!r} (expected <device>/<backend>.json files)")
    plots = results / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    md = ["# Benchmarks", "",
          "Training throughput of one full iteration (a GAN's D step + G step; the VAE's one Adam step over "
          "encoder, heads and decoder) at each batch size: the median over "
          "timed blocks after warm-up; compile_s is what the warm-up calls took beyond steady state. "
          "GFLOP/s counts the multiply-adds of Dense/Conv/ConvTranspose (benchmarks/flops.py); % of peak is "
          "relative to a large matrix product in the same framework, device and dtype (benchmarks/peak.py). "
          f"'vs seed loop' is throughput over the seed document's own loop "
          f"({' / '.join(m for m in PEER_MODES if m != IDIOMATIC_MODE)}) at the "
          "same batch size; 'vs idiomatic' over the same framework's DCGAN written the way its users write one "
          "(peer-idiomatic: a Keras train_step override, Flax + optax, hybridized Gluon; PyTorch's is the "
          "tutorial). Every row's settings (versions, threads, TF32, compile flags) are in its JSON.", ""]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["model"], r["device"])].append(r)
    for (model, device), group in sorted(groups.items()):
        name = f"{slug(model)}-{slug(device)}"
        title = f"{model} on {device}"
        plot_throughput(group, plots / f"throughput-{name}.png", title)
        batch = plot_modes(group, plots / f"modes-{name}.png", title)
        md += [f"## {title}", "", *table(group, rows), "",
               f"![throughput vs batch size](plots/throughput-{name}.png)",
               f"![parity vs fast vs seed loop at batch {batch}](plots/modes-{name}.png)", ""]
    skips = load_skips(results)
    targets = targets_section(rows, skips)
    if targets:
        md += ["## Issue 16's targets (ratios within this run)", "", *targets]
    best = best_table(rows)
    if best:
        md += ["## Frameworks at their best (fast mode)", "", *best, ""]
    ratios = ratio_table(rows)
    if ratios:
        md += ["## Ours vs the seed loops", "", *ratios, ""]
    if skips:
        md += ["## Skipped configs (cannot run here)", "", "| device | backend | model | mode | dtype | reason |",
               "|---|---|---|---|---|---|"]
        md += [f"| {e['device']} | {e['backend']} | {e['model']} | {e['mode']} | {e['dtype']} "
               f"| {str(e['reason']).replace('|', '/')} |" for e in sorted(skips, key=lambda e: tuple(map(str, e.values())))]
        md.append("")
    if failures:
        md += ["## Failed configs", "", "| device | backend | model | mode | dtype | batch | error |",
               "|---|---|---|---|---|---:|---|"]
        md += [f"| {f.get('device')} | {f['backend']} | {f['model']} | {f['mode']} | {f['dtype']} | {f['batch_size']} "
               f"| {str(f.get('error', '')).replace('|', '/')} |" for f in failures]
        md.append("")
    md += ["## Settings", "", *settings_lines(rows), ""]
    out = results / "summary.md"
    out.write_text("\n".join(md))
    return out


def write_summary(results: Path, readme: Path | None = None, echo: Callable[[str], None] = print) -> Path:
    """summary.md and its plots, and with ``readme`` that file's generated block (targets.update_readme)."""
    summary = build_summary(results)
    echo(f"wrote {summary}")
    if readme is not None:
        update_readme(readme, load_rows(results)[0], load_skips(results),
                      Path(os.path.relpath(summary, readme.resolve().parent)).as_posix())
        echo(f"wrote {readme}'s benchmark block")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m gansuite.benchmarks.summary", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results/bench"))
    parser.add_argument("--readme", type=Path, default=None, help="a README whose generated block to rewrite")
    def body() -> int:
        args = parser.parse_args(argv)
        if not args.results.is_dir():
            raise GanSuiteError(f"results: {str(args.results)!r} is not a folder")
        write_summary(args.results, args.readme)
        return 0

    return run_main(body)

if __name__ == "__main__":
    sys.exit(main())
