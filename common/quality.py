"""Image quality during training, scored by the same NumPy code for every backend.

``ImageQuality(dataset)`` fixes a real reference set once (``n`` examples, a fixed permutation)
and, where the dataset has labels (MNIST via IDX, the procedural glyph digits), trains the
suite's digit classifier on it (common/digits.py, deterministic). ``measure(fake)`` returns:

* ``swd``: the sliced Wasserstein distance on Laplacian-pyramid patches (mean over levels, x1e3;
  common/metrics.py), for any images;
* ``frechet_digits``: the Frechet distance in the classifier's features, where there are labels
  (at least ``CLASSIFIER_MIN_EXAMPLES``), on images pooled or resized to its 32x32 input
  (``to_scored_size``: seed 002's 28x28 digits are resized to 32x32 for both scores).

* ``label_error``: for a conditional G, the fraction of samples the classifier does not read as
  the label they were generated for.

All are "lower is better". Baselines for a run, measured by the same code: ``baselines()``
gives the scores of a collapsed G (every sample the data mean) and of uniform noise, so a curve
can be read against them. The classifier is cached per dataset within a process (the learning
tests score four backends on one dataset).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .data import Dataset
from .digits import SIDE, DigitClassifier, frechet_digits, train_classifier
from .metrics import SlicedWassersteinReference

QUALITY_EXAMPLES = 512  # real and fake images per measurement: SWD and a 64-d Gaussian fit are stable there
#: id(values) -> (values, classifier): the array is held so that its id cannot be reused by another dataset
_CLASSIFIERS: dict[int, tuple[np.ndarray, DigitClassifier]] = {}


#: Fewest labelled examples the classifier is trained on (a fifth, at most 1000, held out): below
#: that its features are not worth a distance, and the runs get the SWD only.
CLASSIFIER_MIN_EXAMPLES = 2000


def to_scored_size(images: np.ndarray) -> np.ndarray:
    """NCHW images as they are scored: as given where the side pools to the classifier's SIDE,
    else resized (bilinear, per channel, in float) to SIDE x SIDE. Seed 002's models make 28x28
    MNIST digits: 28 does not pool to 32, and at 28 the SWD's coarsest pyramid level (7x7, the
    patch size) holds MNIST's always-blank corners, whose real-set std of 0 turns any fake
    deviation there into 1e9. dcgan-digits' data pipeline resizes MNIST 28 -> 32 the same way."""
    x = np.asarray(images, np.float64)
    if x.ndim != 4 or (x.shape[2] % SIDE == 0 and x.shape[3] % SIDE == 0):
        return x
    from PIL import Image

    out = np.empty(x.shape[:2] + (SIDE, SIDE))
    for i, j in np.ndindex(*x.shape[:2]):
        out[i, j] = np.asarray(Image.fromarray(x[i, j].astype(np.float32), mode="F").resize((SIDE, SIDE), Image.BILINEAR))
    return out


def _classifier_for(dataset: Dataset) -> DigitClassifier | None:
    shape = dataset.values.shape[1:]
    if dataset.labels is None or dataset.n < CLASSIFIER_MIN_EXAMPLES or len(shape) != 3:
        return None
    key = id(dataset.values)
    if key not in _CLASSIFIERS:
        images = to_scored_size(dataset.get(np.arange(dataset.n)))
        _CLASSIFIERS[key] = (dataset.values, train_classifier(images, dataset.labels, holdout=min(1000, dataset.n // 5)))
    return _CLASSIFIERS[key][1]


@dataclass
class ImageQuality:
    dataset: Dataset
    n: int = QUALITY_EXAMPLES
    seed: int = 0
    real: np.ndarray = field(init=False, repr=False)
    classifier: DigitClassifier | None = field(init=False, repr=False)
    swd: SlicedWassersteinReference = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.n = min(self.n, self.dataset.n)
        order = np.random.default_rng(self.seed).permutation(self.dataset.n)[:self.n]
        self.real = to_scored_size(self.dataset.get(np.sort(order)))
        self.classifier = _classifier_for(self.dataset)
        self.swd = SlicedWassersteinReference(self.real)  # the real side of every measure's SWD

    def measure(self, fake: np.ndarray, labels: np.ndarray | None = None) -> dict[str, float]:
        """The scores of ``fake``; with ``labels`` (a conditional G's, one per sample) also
        ``label_error``: the fraction the classifier does not read as the label asked for (0.9
        for a G that ignores its labels)."""
        fake = to_scored_size(np.asarray(fake, np.float64)[:self.n])
        if len(fake) != self.n:
            raise ValueError(f"quality: expected {self.n} samples, got {len(fake)}")
        out = {"swd": self.swd.distance(fake)["mean"]}
        if self.classifier is not None:
            out["frechet_digits"] = frechet_digits(self.real, fake, self.classifier)
            if labels is not None:
                out["label_error"] = float(np.mean(self.classifier.predict(fake) != np.asarray(labels)[:self.n]))
        return out

    def baselines(self, labels: np.ndarray | None = None) -> dict[str, dict[str, float]]:
        """Scores of a collapsed G (every sample the data mean) and of uniform noise in [-1, 1]."""
        collapsed = np.broadcast_to(self.real.mean(axis=0), self.real.shape).copy()
        noise = np.random.default_rng(self.seed + 1).uniform(-1.0, 1.0, self.real.shape)
        return {"collapsed": self.measure(collapsed, labels), "noise": self.measure(noise, labels)}
