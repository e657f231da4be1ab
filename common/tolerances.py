"""Every parity tolerance, in one place, with the reason for its size.

Error measure (``common.parity.rel_err``): per tensor, ``max|a - ref| / max|ref|``,
i.e. the worst element error in units of that tensor's scale. Elementwise
relative error is meaningless where a tensor crosses zero; the tensor scale is
what a roundoff bound is proportional to.

float32 (unit roundoff u = 2^-24 ~ 6e-8):
* forward: a conv output is a sum of up to C*k*k = 512*16 = 8192 products and
  passes through <= 5 conv/BN stages; a random-walk bound sqrt(8192) * u * 5
  ~ 3e-5 is pessimistic, the measured PyTorch error is 3e-7 (G) and 6e-7 (D) on
  dcgan-tiny (JAX 1.4e-6, TensorFlow 1.8e-6 worst): 1e-5.
* gradients: weight gradients reduce over B*H*W (16*32*32 = 16384 terms for
  dcgan-tiny), then flow back through BN whose backward subtracts two means
  (cancellation); a random-walk bound sqrt(16384) * u ~ 8e-6. Measured worst:
  PyTorch 2.6e-6, JAX 4.9e-6, TensorFlow 6.1e-6 (away from kinks: see "Kinks" below): 1e-5.
  D's gradient is a sum of its real-batch and fake-batch passes, measured in units of
  ``max(|g_real| + |g_fake|)`` (common.parity.summand_scale): where the two cancel, roundoff is
  proportional to the terms, not to their sum (d2l's MXNet tab at init: 1e-5 left of terms of 3e-2).
* losses and D(x) means: scalar reductions of the forward: 1e-5, relative to their own value.
  Note D(G(z)) after D's step can be ~1e-5 on full-size DCGAN (logit ~ -11): there its
  relative tolerance holds the logits to ~1e-5 absolute, stricter than the forward check;
  TensorFlow's oneDNN kernels miss it (1.4e-5) and parity mode turns them off.
* Adam: checked on its own (the backend's parameters after one step vs the
  oracle's Adam applied to the backend's OWN gradients), because Adam's first
  step is ``lr * g / (|g| + eps)``: for |g| near eps it turns any gradient
  roundoff into an O(lr) change, so an end-to-end parameter bound would measure
  gradient conditioning, not the port. Elementwise update, a few roundings: 1e-6.
* BN running statistics: forward quantities (means, variances): 1e-5.

float64 (u ~ 1.1e-16): the same reasoning scaled by 2^-29; measured 2e-16..3e-14
for PyTorch; 1e-12 for every per-step quantity. End-to-end parameters are NOT held to it:
Adam's sensitivity to its gradient, lr * eps / (|g| + eps)^2, is 8e3 for the 5.8e-9 gradient
of one G.12.weight element of full-size dcgan-mnist, so a 3e-17 gradient difference becomes
3.7e-12 of that tensor's scale after one iteration (measured: the torch backend 3.7e-12, the
seed-003 transcription 4.0e-12); they are held to ``SEED_CODE`` (below).

Kinks (common/kinks.py): an activation input within ``kink_margin(dtype)`` of 0 -- the
forward tolerance times the largest magnitude of that layer's input -- is closer to the
kink than the forward check can place it, so either branch of the derivative is a correct
answer at that precision. Only such elements may have the oracle follow the backend's
branch, and only when that explains a gradient that misses its tolerance (measured: one
element of 262,144, 2.2e-7 from 0 on a layer of scale 5 (margin 5e-5), moves D.3.bias by 2.1e-2 in
JAX and TensorFlow float32 on full-size DCGAN at batch 8).

Trajectories: the "divergence horizon" is the first iteration whose relative
error exceeds ``DIVERGENCE_THRESHOLD``.

Seed code vs preset (``SEED_CODE``): a seed document's own code, transcribed, against every
backend's run of its preset, float64, losses and parameters after every iteration of the
comparison's trajectory (Gaussian GANs: the full 2500 iterations; DCGANs: 3 at batch 8).
Two float64 implementations of the same arithmetic in a different operation order differ by
~1e-16 per operation; Adam's steps ``lr * g / (|g| + eps)`` amplify that where gradients are
near zero (above), so end-to-end parameters are held to 1e-10, not 1e-12. That bound depends on
the batch: on the first batch of glyph digits (dcgan, batch 8) D.6.bias[239]'s gradient is 2.7 eps,
left of two passes' parts of 8.8e-3 that cancel, and Adam's first step turns its float64 roundoff
(3.8e-17..6.6e-17 in the seed code, torch and JAX) into 2.8e-10..4.8e-10 of the tensor's scale
against the oracle (JAX vs seed 000's code: 2.0e-10, largest after iteration 1, then shrinking);
the oracle's own parameters move by up to 3.2e-10 under float64 roundoff there
(tests/test_oracle.py). So the comparison's batches are the shapes (common/experiments.COMPARE_DATA),
where the same roundoff moves them by 8e-12.
"""

from __future__ import annotations

TOLERANCES: dict[str, dict[str, float]] = {
    "float32": {
        "forward": 1e-5,
        "loss": 1e-5,
        "grad": 1e-5,
        "adam": 1e-6,
        "running_stats": 1e-5,
    },
    "float64": {
        "forward": 1e-12,
        "loss": 1e-12,
        "grad": 1e-12,
        "adam": 1e-12,
        "running_stats": 1e-12,
    },
}

DIVERGENCE_THRESHOLD = 1e-3
SEED_CODE = 1e-10
#: Data-parallel vs one worker on the full batch (tests/dp_contract.py: every parameter, running
#: stat, Adam moment and per-iteration scalar after a few iterations, relative to the tensor's
#: scale). The maths is the same; only the order of sums differs (BatchNorm statistics and
#: gradients summed per worker, then across workers). float64: SEED_CODE, as for other
#: reorderings of the same float64 expressions. float32: a few ulp per reordered sum, carried by
#: Adam's first steps (whose update is ~lr * sign(g) where |g| is small): 1e-4 of scale.
DATA_PARALLEL = {"float64": SEED_CODE, "float32": 1e-4}
#: Per-worker (unsynchronised) BatchNorm must miss one worker's run by this many tolerances at
#: least: other maths, not roundoff (tests/dp_contract.py's trap).
DATA_PARALLEL_TRAP_FACTOR = 100

#: (model, dtype) whose one-iteration check is ill-conditioned at that precision, with the
#: measured cause. Seed 003 initialises BatchNorm gamma ~ N(0, 0.02) (mean 0, not 1): many of G's
#: channels have |gamma| ~ 1e-4, so G's ReLU inputs gamma * xhat sit within float32 roundoff of 0
#: by the thousand (10,405 near-kink inputs in one G step at batch 8), and one roundoff moves
#: which branch each takes. Measured on the float64 oracle itself (tests/test_oracle.py):
#: perturbing G's BatchNorm outputs by float32 roundoff (6e-8 of their scale) moves its G
#: gradients by 4.6e-2 and 7.6e-2 (two draws), against 1.8e-6..3.0e-6 for the tutorial's DCGAN.
#: No float32 implementation can be held to 1e-5 there; such rows are held to this bound, the
#: order of the oracle's own float32 sensitivity, and marked in the report. float64 is exact.
#: The same holds at test size: dcgan-mnist-tiny (batch 4 of glyph digits) moves by 1.2e-2 in one
#: of two roundoff draws; TensorFlow's float32 G.12.bias gradient there was 1.4e-5 off (abs 1.5e-8).
#: The backend tests hold such rows' gradient-derived checks (grad, adam) to this bound, and the
#: comparison holds the pairwise one-iteration rows (two float32 backends, each rounded onto its
#: own branches) to it too: torch vs TensorFlow on dcgan-mnist, batch 8 of shapes, 5.7e-3 in CI.
ILL_CONDITIONED = {
    ("dcgan-mnist", "float32"): 1e-1,
    ("dcgan-mnist-tiny", "float32"): 1e-1,
}
#: The one-iteration checks that follow from the gradients (common/parity.py Row.check).
GRADIENT_DERIVED = ("grad", "adam")


def tolerance(dtype: str, quantity: str) -> float:
    return TOLERANCES[dtype][quantity]


def kink_margin(dtype: str) -> float:
    """Relative distance from an activation kink below which a backend's branch may differ."""
    return TOLERANCES[dtype]["forward"]


#: bf16 mixed precision (a fast-mode benchmark setting: benchmarks/mixed.py): one iteration's
#: losses and D means vs the float64 oracle, relative to max(1, |value|). bf16 keeps 8 significant
#: bits (unit roundoff u = 2^-9 ~ 2e-3 for round-to-nearest; 2^-8 ~ 3.9e-3 spacing): each Dense or
#: convolution rounds its inputs and weights to bf16 and accumulates in float32, so each of the 4-5
#: such layers a loss passes through adds ~u relative; 5 x 3.9e-3 ~ 2e-2. Measured (Keras
#: mixed_bfloat16, CPU, batch 8): dcgan-tiny 5.3e-3 (oneDNN off) and 2.5e-3 (on), full-size dcgan
#: 3.4e-3, mlp-gan 4.8e-5.
MIXED_BF16_LOSS = 2e-2
#: Per quantity, one fast-mode bf16-mixed iteration of full-size dcgan (batch 8) against the float64
#: oracle (common/mixed_compare.py; the report's mixed-precision section), each error measured as there.
#: * forward (G(z), D(x), relative to the tensor's scale): every Dense/conv rounds its inputs and weights
#:   to bf16 (u = 2^-9) and the 5 layers' errors add; BatchNorm renormalises each layer, so the error per
#:   element is ~ 5 x 2 roundings x u ~ 2e-2 RMS at worst and the largest of ~1e5 elements a few times
#:   the RMS. Measured (CPU, batch 8): in the comparison report (2026-12-06, fast mode's process, oneDNN
#:   on) the worst tensor is D(x), 1.0e-2 (TensorFlow) to 1.5e-2 (PyTorch); Keras with oneDNN off gave
#:   G(z) 4.0e-2: 1e-1.
#: * scalar: MIXED_BF16_LOSS (above), measured 4.9e-3.
#: * grad: bf16 resolves the one-iteration gradients only to tenths of their scale. D's gradients go
#:   back through 5 bf16 layers, their fake-batch part through G(z)'s 4e-2 error; every BatchNorm
#:   backward subtracts two means (cancellation, error relative to a far smaller result); LeakyReLU and
#:   ReLU inputs within ~1e-2 of 0 take the other branch. Measured worst tensor (the report, 2026-12-06):
#:   D step 0.23 (D.8.weight, every framework; JAX 0.16); G step 0.33-0.38 (G.3.weight: PyTorch, JAX,
#:   TensorFlow), MXNet 0.11 (its transposed convolutions stay float32); Keras with oneDNN off 0.44.
#:   The bound is 1: a gradient of the wrong sign (error 2) or a missing term fails, a port's small
#:   error does not show at this precision (the float32/float64 parity rows hold those).
#: * param_lr: parameters after Adam, max abs error in units of the learning rate: ADAM_FIRST_STEP_LR.
#: Two runs of Adam's FIRST step from the same parameters, whatever their gradients, in units of the
#: learning rate: each moves every element by lr * g / (|g| + eps), at most lr, so two correct runs differ
#: by at most 2 lr (equality where a near-zero gradient changed sign: measured 2.00 between bf16 and the
#: float64 oracle, 0.32 float32), plus the float32 storage of the parameters: BatchNorm weights are ~1,
#: whose half ulp (6e-8) is 3e-4 lr (measured 2.00045 lr). An Adam without bias correction moves by up to
#: 3.16 lr and fails; so does a step that updates the wrong elements (MXNet's oneDNN weight reorder after
#: an inference-mode forward: 743 lr, backends/mxnet/models.py).
ADAM_FIRST_STEP_LR = 2.0 + 1e-3
MIXED_BF16_TOLERANCES = {
    "forward": 1e-1,
    "scalar": MIXED_BF16_LOSS,
    "grad": 1.0,
    "param_lr": ADAM_FIRST_STEP_LR,
}
