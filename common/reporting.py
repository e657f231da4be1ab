"""Training that reports itself: a progress bar on a terminal, log lines elsewhere, TensorBoard.

* On a terminal with progress on: a rich progress bar with the latest losses, D(x), D(G(z)) and
  examples/s.
* With ``--no-progress``, or when stdout is not a terminal (a CI log, ``nohup``, a pipe): one log
  line every ``log_every`` iterations (and at the last) with the iteration, losses, D(x),
  D(G(z)) before/after D's step, examples/s and the ETA.
* ``--tensorboard DIR``: the same scalars (and any quality metric) as TensorBoard event files,
  written by tensorboardX, which needs no deep-learning framework.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable

from .protocol import StepOutput

#: TensorBoard tag of each StepOutput scalar.
TAGS = {"loss_D": "loss/D", "loss_G": "loss/G", "D_x": "D/real", "D_G_z1": "D/fake_before_D_step",
        "D_G_z2": "D/fake_after_D_step"}


def _eta(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class TrainingReporter:
    """One object the training loop tells about every iteration; it decides how to show it."""

    def __init__(self, description: str, total: int, start: int, progress: bool, log_every: int,
                 tensorboard: Path | None = None, echo: Callable[[str], None] | None = None) -> None:
        self.description, self.total, self.start, self.log_every = description, total, start, max(1, log_every)
        self.echo = echo or (lambda line: print(line, flush=True))
        self.bar_enabled = progress and sys.stdout.isatty()
        self.t0 = time.perf_counter()
        self.bar: Any = None
        if self.bar_enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), TextColumn("{task.fields[stats]}"))
            self.bar.start()
            self.task = self.bar.add_task(description, total=total, completed=start, stats="")
        self.writer: Any = None
        if tensorboard is not None:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(logdir=str(tensorboard))

    def step(self, done: int, out: StepOutput, examples: int) -> None:
        """Iteration ``done`` (1-based) finished; ``examples`` real examples seen since the start."""
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        rate = examples / elapsed
        stats = (f"loss_D {out.loss_D:.3f} loss_G {out.loss_G:.3f} D(x) {out.D_x:.3f} "
                 f"D(G(z)) {out.D_G_z1:.3f}/{out.D_G_z2:.3f} {rate:.0f} ex/s")
        if self.writer is not None:
            for k, tag in TAGS.items():
                self.writer.add_scalar(tag, getattr(out, k), done)
            self.writer.add_scalar("speed/examples_per_s", rate, done)
        if self.bar is not None:
            self.bar.update(self.task, completed=done, stats=stats)
        elif done % self.log_every == 0 or done == self.total:
            eta = elapsed / max(done - self.start, 1) * (self.total - done)
            self.echo(f"{self.description} iteration {done}/{self.total}  {stats}  ETA {_eta(eta)}")

    def metric(self, tag: str, value: float, done: int) -> None:
        """A quality metric at iteration ``done`` (TensorBoard and the log)."""
        if self.writer is not None:
            self.writer.add_scalar(tag, value, done)
        if self.bar is None:
            self.echo(f"{self.description} iteration {done}/{self.total}  {tag} {value:.4g}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
        if self.writer is not None:
            self.writer.close()
