"""Branch choices at activation kinks: when the oracle may follow a float32 backend's side.

ReLU and LeakyReLU have a kink at 0: their derivative jumps (0 -> 1, or 0.2 -> 1). A
float32 backend computes an activation input with a roundoff error of ~1e-6 of the layer's
scale, so an input that the float64 oracle puts at +3e-7 may be -1e-7 in float32. Both are
correct answers at float32 precision, yet the backend's backward then multiplies that one
element's gradient by 0.2 instead of 1. On a tensor whose gradient is a sum that nearly
cancels (a BatchNorm bias: its gradient is the sum of the incoming gradient over batch and
space), one such element moves the result by 1e-2 of its scale: measured on full-size DCGAN
at batch 8, D.3.bias in JAX and TensorFlow, 1 of 262,144 inputs of D's second LeakyReLU at
2.2e-7 from zero (margin 5e-5).

The check therefore works in two steps (common/parity.py):

1. Compare with the oracle's own float64 branches. If every gradient is within tolerance,
   done: nothing is conditioned.
2. Otherwise, list the *near-kink* elements: activation inputs within ``kink_margin`` of 0
   (the float32 forward tolerance times the layer input's largest magnitude, i.e. closer to
   the kink than the forward check can resolve). Flip the oracle's branch at those of them
   that explain the difference, greedily (each flip must cut the summed error by >= 10%),
   recompute the oracle's backward exactly, and compare again. The flips are reported.

Only elements the forward tolerance cannot place are ever flipped, so a real porting error
(a wrong slope, a wrong padding, a missing term) cannot be explained away: it changes far
more than a handful of elements, and those are nowhere near a kink.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .oracle import NetRun
from .oracle_layers import negative_slope
from .params import Params
from .spec import LeakyReLU, NetSpec, ReLU

#: Greedy acceptance: a flip must reduce the summed (error / tolerance) by at least this factor.
MIN_IMPROVEMENT = 0.9
#: Candidates are tried per round in windows of this many, largest potential effect first; when
#: no flip in a window helps, the next window is tried, where there are at most MAX_WINDOWS
#: windows' worth of candidates (``_windows``).
MAX_CANDIDATES = 64
MAX_WINDOWS = 4


@dataclass
class Kink:
    """One activation input near 0: where it is and how much flipping its branch can change."""

    run: str  # which forward pass, e.g. "D(fake)"
    layer: int  # index of the activation layer in its net
    index: int  # flat index into that layer's input
    x: float  # the oracle's (float64) input value
    margin: float  # |x| <= margin
    effect: float  # |incoming gradient| * (1 - negative slope): the size of the change a flip makes

    def describe(self) -> str:
        return f"{self.run} layer {self.layer} element {self.index} (x = {self.x:.2g}, margin {self.margin:.2g})"


def near_kinks(net: NetSpec, run: NetRun, label: str, relative_margin: float) -> list[Kink]:
    """Elements of every ReLU/LeakyReLU input of ``run`` within ``relative_margin * max|x|`` of 0.

    Needs a backward pass to have been run on ``run`` (for the incoming gradient)."""
    found = []
    for i, layer in enumerate(net.layers):
        if not isinstance(layer, (ReLU, LeakyReLU)):
            continue
        cache = run.caches[i]
        x = cache["x"]
        margin = relative_margin * float(np.max(np.abs(x)))
        dy = cache.get("dy")
        for flat in np.flatnonzero(np.abs(x) <= margin):
            effect = abs(float(dy.reshape(-1)[flat])) * (1.0 - negative_slope(layer)) if dy is not None else np.inf
            found.append(Kink(label, i, int(flat), float(x.reshape(-1)[flat]), margin, effect))
    return sorted(found, key=lambda k: -k.effect)


def set_flips(runs: dict[str, NetRun], flipped: list[Kink]) -> None:
    """Make the oracle's backward take the other branch at exactly ``flipped`` (and nowhere else)."""
    for label, run in runs.items():
        for cache in run.caches:
            if "flip" in cache:
                cache["flip"] = None
        for k in flipped:
            if k.run == label:
                cache = run.caches[k.layer]
                if cache.get("flip") is None:
                    cache["flip"] = np.zeros(cache["x"].shape, bool)
                cache["flip"].reshape(-1)[k.index] = True


def flip_signature(run: NetRun) -> tuple:
    """Which branches of ``run`` are flipped now (hashable): lets callers skip an unchanged backward."""
    return tuple((i, tuple(np.flatnonzero(c["flip"]))) for i, c in enumerate(run.caches)
                 if isinstance(c, dict) and c.get("flip") is not None)


def _windows(remaining: list[Kink]) -> list[list[Kink]]:
    """A round's candidate windows, in order of effect, MAX_CANDIDATES each: all of them where
    there are few candidates (at most MAX_WINDOWS * MAX_CANDIDATES). With thousands (seed 003's
    float32 G step, ill-conditioned: 10,405 at batch 8, common/tolerances.py) no handful of flips
    explains the backend, and each window costs MAX_CANDIDATES full backward passes (measured:
    the widened search kept the comparison's torch run on dcgan-mnist float32 busy for over 6
    minutes); there the first window is all that is tried, as before."""
    if len(remaining) > MAX_WINDOWS * MAX_CANDIDATES:
        return [remaining[:MAX_CANDIDATES]]
    return [remaining[i:i + MAX_CANDIDATES] for i in range(0, len(remaining), MAX_CANDIDATES)]


def follow_backend_branches(
    runs: dict[str, NetRun],
    candidates: list[Kink],
    recompute: Callable[[], Params],
    score: Callable[[Params], float],
    good_enough: Callable[[Params], bool],
) -> tuple[Params, list[Kink]]:
    """Greedily flip near-kink branches while that lowers ``score`` (summed error / tolerance of
    the backend's gradients vs the oracle's) by >= 10% per flip, until ``good_enough`` (every
    gradient within tolerance); return the final oracle gradients and the flips made.
    ``recompute`` reruns the oracle's backward with the current flips.

    ``candidates`` may come from several passes (D on the real and on the fake batch), each list
    sorted on its own: they are ranked together here, so the per-round window of MAX_CANDIDATES
    holds the largest effects of all passes, not the first pass's list and a few of the next.
    (Measured, JAX float32 at batch 8 of glyph digits: the one input JAX rounded across its kink,
    in D(fake), was 71st of 96 in D(real) + D(fake) order but 34th by effect, on dcgan; 65th and
    29th on dcgan-mxnet. Outside the window it was never tried, and on dcgan a spurious flip at
    0.9 of its margin was taken instead: D.3.bias 1.55e-2, D.0.weight 7.8e-4 left unexplained.)
    A round whose first window holds no helpful flip goes on to the next windows (``_windows``):
    the effect ranks by the incoming gradient alone, not by what a flip does to the tensors
    that are off, so the one that explains them may rank below 64. (CI's machine, MXNet float32,
    dcgan: G.3.weight 9.6e-5 off after the 64-window search; it does not reproduce on the
    development machine, whose float32 rounding puts no input across a kink there, so whether the
    explaining flip lay below the window is not measured.)"""
    candidates = sorted(candidates, key=lambda k: -k.effect)
    flipped: list[Kink] = []
    grads = recompute()
    best = score(grads)
    while not good_enough(grads):
        trial_best: tuple[float, Kink, Params] | None = None
        for window in _windows([c for c in candidates if c not in flipped]):
            for k in window:
                set_flips(runs, flipped + [k])
                g = recompute()
                s = score(g)
                if s < MIN_IMPROVEMENT * best and (trial_best is None or s < trial_best[0]):
                    trial_best = (s, k, g)
            if trial_best is not None:  # the best of the first window that holds a helpful flip
                break
        if trial_best is None:
            break
        best, kink, grads = trial_best
        flipped.append(kink)
    set_flips(runs, flipped)
    return grads, flipped
