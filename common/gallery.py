"""Every backend learning real digits: the learning check's run, and the pictures README shows.

One configuration, used twice:

* the learning test of every backend (tests/backend_contract.py) trains ``LEARNING_MODEL`` for
  ``LEARNING_ITERATIONS`` on the MNIST test set (../shared/data/mnist) and asserts the quality
  margins below;
* ``gansuite gallery`` (``python3 -m tox -e gallery``) runs that same training in each backend's
  own environment, from the same canonical start, and writes ``results/gallery/``: the four
  sample grids side by side, the loss curves, the quality metrics against iterations on one
  plot, and ``gallery.md`` / ``gallery.json`` with the numbers.

float32 runs of different frameworks drift apart (the comparison report measures where), so the
grids differ in detail; the point is that all four learn from the same start.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import plots
from .checkpoint import load_checkpoint
from .errors import GanSuiteError
from .protocol import BuildOptions, GANProtocol
from .registry import backend_python
from .spec import GANSpec
from .training import CHECKPOINT

LEARNING_MODEL = "dcgan-digits"
LEARNING_ITERATIONS = 300  # ~1 min on torch and 2 cores: digits are recognisable by then (README)
QUALITY_EVERY = 50
#: What the learning test asserts, on the digit Frechet distance (lower is better). Measured on
#: torch (CPU, float32, parity): 552 at the start, 51 after 300 iterations, 278 for a collapsed G.
IMPROVEMENT = 4.0  # final <= initial / 4
BEATS_COLLAPSED = 2.0  # final <= collapsed / 2
#: Where CI and README keep the MNIST test set: ``../shared`` beside the repository, relative to
#: the repository root that tox and README's commands run in (the installed package is elsewhere).
MNIST_DIR = Path("..") / "shared" / "data" / "mnist"


def learning_spec(data: Path = MNIST_DIR) -> GANSpec:
    """``LEARNING_MODEL`` on the MNIST test split (10,000 digits, 28x28 resized to 32x32)."""
    from .cli import resolve_spec  # cli imports this module for `gansuite gallery`

    return resolve_spec(LEARNING_MODEL, None, data, None, [], "test")


def learning_run(backend: GANProtocol, out_dir: Path, data: Path = MNIST_DIR, log_every: int = 100,
                 model: str = LEARNING_MODEL, iterations: int = LEARNING_ITERATIONS,
                 quality_every: int = QUALITY_EVERY) -> dict[str, Any]:
    """Train the learning configuration (or ``model`` for ``iterations``) on one backend on the
    MNIST test split; returns its summary.json."""
    from .cli import resolve_spec
    from .training import RunConfig, train

    spec = learning_spec(data) if model == LEARNING_MODEL else resolve_spec(model, None, data, None, [], "test")
    return train(RunConfig(spec=spec, backend=backend, out_dir=out_dir, iterations=iterations,
                           progress=False, log_every=log_every, quality_every=quality_every,
                           checkpoint_every=iterations))


@dataclass(frozen=True)
class SeedLearning:
    """A seed-002 GAN's learning check: its run on the MNIST test set (torch, float32, parity) and
    the margins on the digit Frechet distance (final <= initial / improvement, and <= a collapsed
    G's / beats_collapsed)."""

    iterations: int
    improvement: float
    beats_collapsed: float
    measured: str  # the numbers the margins were set from


#: Seed 002's GANs learn much more slowly per iteration than a DCGAN (the chapter trains the MLP
#: GAN 200 epochs and the CGAN 30 of 60,000 digits); these runs are what CI affords on 2 cores.
SEED002_LEARNING = {
    "mlp-gan": SeedLearning(6000, 2.2, 1.1, "torch, parity float32, MNIST test set: digit FD 560 -> 271 (2000 "
                                          "iterations), 246 (4000), 201 (6000); collapsed G 273; SWD 1642 -> 311, "
                                          "collapsed 508"),
    "cgan": SeedLearning(3000, 2.5, 1.3, "torch, parity float32, MNIST test set: digit FD 574 -> 260 (500 "
                                         "iterations), 223 (2000), 161 (3000); collapsed G 273; SWD 1718 -> 459; "
                                         "label_error 0.92 -> 0.93: the conditioning is not learned yet at this "
                                         "length (0.9 = labels ignored)"),
}
#: The margins leave >= 20% of room below the measured final FDs: float32 trajectories on another
#: CPU diverge from these within tens of iterations (the comparison's trajectories), and runs of
#: the same preset from the same start landed within ~10% of each other at equal length (mlp-gan:
#: fast mode 218 at 5000 iterations, parity 246 at 4000 and 201 at 6000).


def seed002_verdict(summary: dict[str, Any], check: SeedLearning) -> dict[str, Any]:
    v = learning_verdict(summary)
    return {**v, "improved": v["final"] <= v["initial"] / check.improvement,
            "beats_collapsed": v["final"] <= v["collapsed"] / check.beats_collapsed}


def learning_verdict(summary: dict[str, Any]) -> dict[str, Any]:
    """The learning test's numbers and whether they pass its margins."""
    q = summary["quality"]
    initial = q["over_training"][0]["frechet_digits"]
    final = q["over_training"][-1]["frechet_digits"]
    collapsed = q["baselines"]["collapsed"]["frechet_digits"]
    return {"initial": initial, "final": final, "collapsed": collapsed,
            "improved": final <= initial / IMPROVEMENT, "beats_collapsed": final <= collapsed / BEATS_COLLAPSED}


#: The seed's own loop on the default offline data: seed 000's transcription (benchmarks/peers)
#: trains the ``dcgan`` preset's default run (5 epochs of 2048 glyph digits at batch 128) from the
#: canonical start. "Not collapsed" means both: the digit Frechet distance at the end is below
#: half a collapsed G's, and the samples vary as much as a quarter of the data does (mean
#: per-pixel standard deviation over the samples; a collapsed G has 0).
SEED_LOOP_PORT, SEED_LOOP_MODEL = "gansuite.benchmarks.peers.tutorial_torch:SeedPort", "dcgan"
DIVERSITY = 0.25


def pixel_diversity(images: np.ndarray) -> float:
    """Mean over pixels of the standard deviation across the set: 0 for a collapsed G."""
    return float(np.asarray(images, np.float64).std(axis=0).mean())


def seed_loop_run(port_target: str = SEED_LOOP_PORT, model: str = SEED_LOOP_MODEL, iterations: int | None = None,
                  quality_every: int = 20, seed: int = 0, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """A seed's own training loop on the preset's default data, scored as the backends are."""
    from .params import init_params
    from .presets import preset
    from .quality import ImageQuality
    from .streams import Streams
    from .training import generate_many
    from .verify import PortBackend, load_port

    spec = preset(model)
    port, streams = PortBackend(load_port(port_target)), Streams(spec, seed)
    state = port.build(spec, init_params(spec, seed), None, BuildOptions(dtype="float32"))
    quality = ImageQuality(streams.dataset, seed=seed)
    total = iterations or streams.total_iterations
    rows = []

    def measure(done: int) -> None:
        fake = generate_many(port, state, streams.fixed_noise(quality.n))
        rows.append({"iteration": done, **quality.measure(fake), "diversity": pixel_diversity(fake)})
        echo(f"  {port_target.rsplit(':', 1)[0].rsplit('.', 1)[-1]} on {model}: iteration {done}/{total} "
             + " ".join(f"{k} {v:.4g}" for k, v in rows[-1].items() if k != "iteration"))

    measure(0)
    for batch in streams.iterate(0, total):
        port.train_step(state, batch.real, batch.z)
        if (batch.iteration + 1) % quality_every == 0 or batch.iteration + 1 == total:
            measure(batch.iteration + 1)
    data_diversity = pixel_diversity(quality.real)
    final, collapsed = rows[-1], quality.baselines()["collapsed"]
    return {"port": port_target, "model": model, "data": streams.dataset.description, "iterations": total,
            "over_training": rows, "collapsed": collapsed, "data_diversity": data_diversity,
            "classifier_holdout_accuracy": quality.classifier.holdout_accuracy if quality.classifier else None,
            "not_collapsed": bool(final["frechet_digits"] <= collapsed["frechet_digits"] / BEATS_COLLAPSED
                                  and final["diversity"] >= DIVERSITY * data_diversity)}


#: The gallery's two datasets: the MNIST test set (--data) and the default offline glyph digits.
DATASETS = {"mnist": "MNIST test set (10,000 digits, 28x28 -> 32x32)",
            "glyphs": "procedural glyph digits (the default offline data, 10,000 at 32x32)"}


PARTS = (*DATASETS, "seed-loop")


def drive(out: Path, backends: list[str], data: Path = MNIST_DIR, parts: tuple[str, ...] = PARTS,
          echo: Callable[[str], None] = print) -> dict[str, Any]:
    """The learning run in every backend's interpreter (the test envs through tox) on both
    datasets, the seed-000 loop on the default data (torch env), then the pictures. Each part
    writes its own JSON (``<part>.json``); gallery.md is rebuilt from the parts present, so a
    part can be rerun alone."""
    if "mnist" in parts and not any(data.glob("t10k-images-idx3-ubyte*")):
        raise GanSuiteError(f"data: no MNIST test set (t10k-images-idx3-ubyte[.gz]) in {str(data)!r}")
    pythons = {}
    for name in sorted({*backends, *(["torch"] if "seed-loop" in parts else [])}):
        py, reason = backend_python(name, ["test", "compare"], "`python3 -m tox` (the test envs)")
        if py is None:
            raise GanSuiteError(f"backends: {name} cannot run here ({reason})")
        pythons[name] = py
    out.mkdir(parents=True, exist_ok=True)
    for dataset in (d for d in DATASETS if d in parts):
        summaries: dict[str, dict[str, Any]] = {}
        for name in backends:
            run_dir = out / dataset / name
            data_args = ["--data", str(data), "--split", "test"] if dataset == "mnist" else []
            cmd = [pythons[name], "-m", "gansuite.common.cli", "train", "--backend", name, "--model", LEARNING_MODEL,
                   *data_args, "--iterations", str(LEARNING_ITERATIONS), "--quality-every", str(QUALITY_EVERY),
                   "--checkpoint-every", str(LEARNING_ITERATIONS), "--no-progress", "--log-every", "100",
                   "--out", str(run_dir)]
            echo(f"  {name}: {LEARNING_MODEL} on {dataset}, {LEARNING_ITERATIONS} iterations")
            _run(cmd, f"{name}: the learning run on {dataset}")
            summaries[name] = json.loads((run_dir / "summary.json").read_text())
        part = write_gallery(out / dataset, dataset, summaries)
        (out / f"{dataset}.json").write_text(json.dumps(part, indent=1, default=str))
    if "seed-loop" in parts:
        echo(f"  torch: seed 000's own loop on the {SEED_LOOP_MODEL} preset's default data")
        _run([pythons["torch"], "-m", "gansuite.common.cli", "gallery-seed-loop", "--out", str(out / "seed-loop.json")],
             "the seed-000 loop")
    result = {p: json.loads((out / f"{p}.json").read_text()) for p in PARTS if (out / f"{p}.json").exists()}
    write_markdown(out, result)
    return result


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    if proc.returncode != 0:
        raise GanSuiteError(f"{what} failed (exit {proc.returncode}); see the log above")


def write_gallery(out: Path, dataset: str, summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One dataset's pictures (out/samples.png, quality.png, losses.png) and rows."""
    plots.save_quality_curves({n: s["quality"] for n, s in summaries.items()}, out / "quality.png",
                              f"{LEARNING_MODEL} on {dataset}, float32 parity mode, same start (lower is better)")
    plots.save_panels({n: out / n / "samples.png" for n in summaries}, out / "samples.png")
    histories = {n: load_checkpoint(out / n / CHECKPOINT).history for n in summaries}
    plots.save_loss_overlay(histories, out / "losses.png", f"{LEARNING_MODEL} on {dataset}: losses per backend")
    rows = []
    for name, s in summaries.items():
        q = s["quality"]
        rows.append({"backend": name, "versions": s["versions"], "iterations": s["iterations"],
                     "seconds": s["seconds"], "examples_per_s": s["examples_per_s"],
                     "swd_initial": q["over_training"][0]["swd"], "swd_final": q["over_training"][-1]["swd"],
                     "swd_collapsed": q["baselines"]["collapsed"]["swd"],
                     "classifier_holdout_accuracy": q["digit_classifier_holdout_accuracy"], **learning_verdict(s)})
    return {"model": LEARNING_MODEL, "iterations": LEARNING_ITERATIONS, "data": DATASETS[dataset],
            "margins": {"improvement": IMPROVEMENT, "beats_collapsed": BEATS_COLLAPSED}, "rows": rows}


def write_markdown(out: Path, result: dict[str, Any]) -> Path:
    lines = [f"# {LEARNING_MODEL} learning digits on every backend", "",
             "Written by `gansuite gallery` (`python3 -m tox -e gallery`, after the test envs are built): "
             f"{LEARNING_ITERATIONS} iterations, batch 64, float32, parity mode, seed 0, the same canonical start "
             "on every backend. Digit FD: the Frechet distance in the features of the suite's own NumPy "
             "classifier, trained on each dataset's labels (common/digits.py); SWD: sliced Wasserstein "
             "distance x1e3 (common/metrics.py). Lower is better; 'collapsed G' is every sample the data mean. "
             "Speed is measured by the benchmarks, not here (the runs may share the CPU).", ""]
    for dataset in (d for d in DATASETS if d in result):
        part = result[dataset]
        lines += [f"## {part['data']}", "", f"![samples]({dataset}/samples.png)", "",
                  f"![quality]({dataset}/quality.png)", "", f"![losses]({dataset}/losses.png)", "",
                  "| backend | digit FD start | digit FD end | collapsed G | SWD start | SWD end | collapsed G | "
                  "passes the learning test's margins |", "|---|---|---|---|---|---|---|---|"]
        for r in part["rows"]:
            lines.append(f"| {r['backend']} | {r['initial']:.1f} | {r['final']:.1f} | {r['collapsed']:.1f} | "
                         f"{r['swd_initial']:.0f} | {r['swd_final']:.0f} | {r['swd_collapsed']:.0f} | "
                         f"{'yes' if r['improved'] and r['beats_collapsed'] else 'no'} |")
        lines.append("")
    if "seed-loop" not in result:
        path = out / "gallery.md"
        path.write_text("\n".join(lines))
        return path
    sl = result["seed-loop"]
    first, last = sl["over_training"][0], sl["over_training"][-1]
    lines += ["## Seed 000's own loop on the default offline data", "",
              f"The tutorial's code (`{sl['port']}`) trains the `{sl['model']}` preset's default run "
              f"({sl['iterations']} iterations; {sl['data']}) from the canonical start. Criterion for 'not "
              f"collapsed': digit FD at the end <= collapsed G's / {BEATS_COLLAPSED:g}, and sample diversity "
              f"(mean per-pixel std over the samples) >= {DIVERSITY:g} x the data's.", "",
              "| | digit FD | SWD | diversity |", "|---|---|---|---|",
              f"| initial G | {first['frechet_digits']:.1f} | {first['swd']:.0f} | {first['diversity']:.3f} |",
              f"| after {sl['iterations']} iterations | {last['frechet_digits']:.1f} | {last['swd']:.0f} | "
              f"{last['diversity']:.3f} |",
              f"| collapsed G / data | {sl['collapsed']['frechet_digits']:.1f} | {sl['collapsed']['swd']:.0f} | "
              f"data {sl['data_diversity']:.3f} |", "",
              f"Not collapsed: **{'yes' if sl['not_collapsed'] else 'no'}**.", ""]
    path = out / "gallery.md"
    path.write_text("\n".join(lines))
    return path
