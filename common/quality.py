"""Image quality during training, scored by the same NumPy code for every backend.

``ImageQuality(dataset)`` fixes a real reference set once (``n`` examples, a fixed permutation)
and, where the dataset has labels (MNIST via IDX, the procedural glyph digits), trains the
suite's digit classifier on it (common/digits.py, deterministic). ``measure(fake)`` returns:

* ``swd``: the sliced Wasserstein distance on Laplacian-pyramid patches (mean over levels, x1e3;
  common/metrics.py), for any images;
* ``frechet_digits``: the Frechet distance in the classifier's features, where there are labels
  (at least ``CLASSIFIER_MIN_EXAMPLES``) and the images pool to its 32x32 input.

Both are "lower is better". Baselines for a run, measured by the same code: ``baselines()``
gives the scores of a collapsed G (every sample the data mean) and of uniform noise, so a curve
can be read against them. The classifier is cached per dataset within a process (the learning
tests score four backends on one dataset).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .data import Dataset
from .digits import SIDE, DigitClassifier, frechet_digits, train_classifier
from .metrics import swd_images

QUALITY_EXAMPLES = 512  # real and fake images per measurement: SWD and a 64-d Gaussian fit are stable there
#: id(values) -> (values, classifier): the array is held so that its id cannot be reused by another dataset
_CLASSIFIERS: dict[int, tuple[np.ndarray, DigitClassifier]] = {}


#: Fewest labelled examples the classifier is trained on (a fifth, at most 1000, held out): below
#: that its features are not worth a distance, and the runs get the SWD only.
CLASSIFIER_MIN_EXAMPLES = 2000


def _classifier_for(dataset: Dataset) -> DigitClassifier | None:
    shape = dataset.values.shape[1:]
    if (dataset.labels is None or dataset.n < CLASSIFIER_MIN_EXAMPLES or len(shape) != 3
            or shape[1] % SIDE or shape[2] % SIDE):
        return None
    key = id(dataset.values)
    if key not in _CLASSIFIERS:
        _CLASSIFIERS[key] = (dataset.values, train_classifier(dataset.get(np.arange(dataset.n)), dataset.labels,
                                                              holdout=min(1000, dataset.n // 5)))
    return _CLASSIFIERS[key][1]


@dataclass
class ImageQuality:
    dataset: Dataset
    n: int = QUALITY_EXAMPLES
    seed: int = 0
    real: np.ndarray = field(init=False, repr=False)
    classifier: DigitClassifier | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.n = min(self.n, self.dataset.n)
        order = np.random.default_rng(self.seed).permutation(self.dataset.n)[:self.n]
        self.real = self.dataset.get(np.sort(order))
        self.classifier = _classifier_for(self.dataset)

    def measure(self, fake: np.ndarray) -> dict[str, float]:
        fake = np.asarray(fake, np.float64)[:self.n]
        if len(fake) != self.n:
            raise ValueError(f"quality: expected {self.n} samples, got {len(fake)}")
        out = {"swd": swd_images(self.real, fake)["mean"]}
        if self.classifier is not None:
            out["frechet_digits"] = frechet_digits(self.real, fake, self.classifier)
        return out

    def baselines(self) -> dict[str, dict[str, float]]:
        """Scores of a collapsed G (every sample the data mean) and of uniform noise in [-1, 1]."""
        collapsed = np.broadcast_to(self.real.mean(axis=0), self.real.shape).copy()
        noise = np.random.default_rng(self.seed + 1).uniform(-1.0, 1.0, self.real.shape)
        return {"collapsed": self.measure(collapsed), "noise": self.measure(noise)}
