"""Steady-state timing with warm-up and compile time kept apart (framework-neutral).

``measure`` calls ``run(1)`` a few times first (warm-up: tracing, compilation, allocator
growth, autotuning) and times each of those calls alone. Then it times ``repeats``
blocks of ``n`` units, ``n`` chosen so that one block lasts at least ``min_block_s``
(a clock read per iteration would be noise for a 1 ms step), with ``sync()`` (the
backend's device barrier) before every clock read. The median block time per unit is the
steady state; compile time is what the warm-up calls took beyond that many steady units.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Budget:
    """How long to measure one config."""

    warmup_calls: int = 3
    repeats: int = 10  # blocks timed (at most)
    min_repeats: int = 3  # kept even when one block is slower than the whole budget
    min_block_s: float = 0.2
    max_total_s: float = 30.0  # for the timed blocks, warm-up not included

    @staticmethod
    def quick() -> "Budget":
        return Budget(warmup_calls=2, repeats=3, min_repeats=3, min_block_s=0.02, max_total_s=1.5)


@dataclass
class Timing:
    warmup_s: list[float]  # wall time of each warm-up call of one unit
    unit_s: list[float]  # per repeat: block time / units in the block
    units_per_block: int
    iterations_per_unit: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median_s(self) -> float:
        """Seconds per iteration, median over blocks."""
        return statistics.median(self.unit_s) / self.iterations_per_unit

    @property
    def min_s(self) -> float:
        return min(self.unit_s) / self.iterations_per_unit

    @property
    def max_s(self) -> float:
        return max(self.unit_s) / self.iterations_per_unit

    @property
    def compile_s(self) -> float:
        """Time of the warm-up calls beyond as many steady-state units (never negative)."""
        steady_unit = statistics.median(self.unit_s)
        return max(0.0, sum(self.warmup_s) - len(self.warmup_s) * steady_unit)

    def as_dict(self) -> dict[str, Any]:
        return {"warmup_calls_s": self.warmup_s, "block_ms_per_iteration": [1e3 * u / self.iterations_per_unit
                                                                             for u in self.unit_s],
                "repeats": len(self.unit_s), "iterations_per_block": self.units_per_block * self.iterations_per_unit,
                **self.extra}


def _timed(run: Callable[[int], None], sync: Callable[[], None], units: int) -> float:
    sync()
    t0 = time.perf_counter()
    run(units)
    sync()
    return time.perf_counter() - t0


def _warm_up(run: Callable[[int], None], sync: Callable[[], None], budget: Budget) -> tuple[list[float], int, float]:
    """The warm-up calls of one unit, each timed alone; the units a block needs to last ``min_block_s``;
    and the estimated seconds of such a block."""
    warmup = [_timed(run, sync, 1) for _ in range(max(1, budget.warmup_calls))]
    estimate = max(warmup[-1], 1e-7)  # the last warm-up call is the best guess of a steady unit
    units = max(1, math.ceil(budget.min_block_s / estimate))
    return warmup, units, estimate * units


def measure(run: Callable[[int], None], sync: Callable[[], None], budget: Budget,
            iterations_per_unit: int = 1) -> Timing:
    """Time ``run(n)`` (``n`` units of ``iterations_per_unit`` iterations each)."""
    warmup, units, block_s = _warm_up(run, sync, budget)
    affordable = int(budget.max_total_s // block_s)
    repeats = max(budget.min_repeats, min(budget.repeats, affordable))
    blocks = [_timed(run, sync, units) / units for _ in range(repeats)]
    return Timing(warmup, blocks, units, iterations_per_unit)


@dataclass(frozen=True)
class Workload:
    """What :func:`measure_paired` times: ``run(n)`` does n units of ``iterations_per_unit`` iterations."""

    run: Callable[[int], None]
    sync: Callable[[], None]
    iterations_per_unit: int = 1


@dataclass
class Paired:
    """Two workloads timed in alternating blocks: seconds per iteration of each, one entry per pair."""

    a_s: list[float]
    b_s: list[float]

    @property
    def ratios(self) -> list[float]:
        """Per pair, a's time per iteration over b's: how many times faster b ran in the same minute."""
        return [a / b for a, b in zip(self.a_s, self.b_s)]

    def as_dict(self) -> dict[str, Any]:
        ratios = self.ratios
        return {"pairs": len(ratios), "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
                "ratio_max": max(ratios), "a_ms_per_iteration": [1e3 * s for s in self.a_s],
                "b_ms_per_iteration": [1e3 * s for s in self.b_s]}


def measure_paired(a: Workload, b: Workload, budget: Budget) -> Paired:
    """``a`` and ``b`` timed in alternating blocks (a b, b a, a b, ...), each block lasting at least
    ``min_block_s``; one ratio per pair. A ratio of two rows timed minutes apart also measures how the
    machine's speed moved in between (this shared 2-core VM: up to 1.7x between runs of the same code);
    a pair's two blocks are seconds apart, and the alternating order cancels a steady drift."""
    plan = [_warm_up(w.run, w.sync, budget) for w in (a, b)]  # each: warm-up, units per block, block seconds
    affordable = int(budget.max_total_s // (plan[0][2] + plan[1][2]))
    pairs = max(budget.min_repeats, min(budget.repeats, affordable))
    per_iteration: tuple[list[float], list[float]] = ([], [])
    for p in range(pairs):
        for which in ((0, 1) if p % 2 == 0 else (1, 0)):
            w, units = (a, b)[which], plan[which][1]
            per_iteration[which].append(_timed(w.run, w.sync, units) / (units * w.iterations_per_unit))
    return Paired(*per_iteration)
