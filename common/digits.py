"""A digit-aware quality metric, framework-free: a Frechet distance in a small classifier's features.

The suite trains the classifier itself, in NumPy, deterministically (PCG64 init and order, plain
Adam), on the labelled digits it has (the MNIST test set in ``../shared/data/mnist``), so every
backend's samples are scored by the same numbers and nothing is downloaded. Images are average-
pooled to 32x32 (the DCGAN presets make 64x64), so the same classifier scores any of them.

``frechet_digits(real, fake, clf)`` fits a Gaussian to each set's penultimate-layer features and
returns their exact squared Frechet distance (common.metrics.frechet_gaussian), the FID recipe
with a classifier of the suite's own instead of Inception.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import frechet_gaussian

SIDE = 32  # input resolution of the classifier
HIDDEN = (256, 64)  # the 64-wide layer is the feature space


def pool_to(images: np.ndarray, side: int = SIDE) -> np.ndarray:
    """NCHW images in [-1, 1] -> ``(N, side*side)``: channel mean, then average pooling by an integer factor."""
    x = np.asarray(images, np.float64).mean(axis=1)
    n, h, w = x.shape
    if h % side or w % side:
        raise ValueError(f"images of {h}x{w} do not pool to {side}x{side}")
    fh, fw = h // side, w // side
    return x.reshape(n, side, fh, side, fw).mean(axis=(2, 4)).reshape(n, side * side)


@dataclass
class DigitClassifier:
    weights: list[np.ndarray]
    biases: list[np.ndarray]
    holdout_accuracy: float

    def features(self, images: np.ndarray) -> np.ndarray:
        """Penultimate-layer activations (ReLU) of NCHW images in [-1, 1]."""
        h = pool_to(images)
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            h = np.maximum(h @ w + b, 0.0)
        return h

    def predict(self, images: np.ndarray) -> np.ndarray:
        return np.argmax(self.features(images) @ self.weights[-1] + self.biases[-1], axis=1)


def train_classifier(images: np.ndarray, labels: np.ndarray, seed: int = 0, epochs: int = 8,
                     batch: int = 128, lr: float = 1e-3, holdout: int = 1000) -> DigitClassifier:
    """An MLP 1024-256-64-10 (ReLU, softmax cross-entropy, Adam), trained on all but the last
    ``holdout`` examples; its accuracy on those is recorded. Same inputs, same classifier."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), 7])))
    x, y = pool_to(images), np.asarray(labels, np.int64)
    x_train, y_train, x_hold, y_hold = x[:-holdout], y[:-holdout], x[-holdout:], y[-holdout:]
    sizes = [x.shape[1], *HIDDEN, 10]
    ws = [rng.normal(0.0, np.sqrt(2.0 / a), (a, b)) for a, b in zip(sizes[:-1], sizes[1:])]  # He init
    bs = [np.zeros(b) for b in sizes[1:]]
    params = ws + bs
    m, v = [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params]
    t = 0
    for _ in range(epochs):
        order = rng.permutation(len(x_train))
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            acts = [x_train[idx]]
            for w, b in zip(ws[:-1], bs[:-1]):
                acts.append(np.maximum(acts[-1] @ w + b, 0.0))
            logits = acts[-1] @ ws[-1] + bs[-1]
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            d = p
            d[np.arange(len(idx)), y_train[idx]] -= 1.0
            d /= len(idx)
            gw, gb = [None] * len(ws), [None] * len(bs)
            for i in reversed(range(len(ws))):
                gw[i], gb[i] = acts[i].T @ d, d.sum(axis=0)
                if i:
                    d = (d @ ws[i].T) * (acts[i] > 0)
            t += 1
            for j, (p_, g) in enumerate(zip(params, gw + gb)):
                m[j] = 0.9 * m[j] + 0.1 * g
                v[j] = 0.999 * v[j] + 0.001 * g * g
                p_ -= lr * (m[j] / (1 - 0.9**t)) / (np.sqrt(v[j] / (1 - 0.999**t)) + 1e-8)
    clf = DigitClassifier(ws, bs, 0.0)
    images_hold = x_hold.reshape(-1, 1, SIDE, SIDE)
    clf.holdout_accuracy = float(np.mean(clf.predict(images_hold) == y_hold))
    return clf


def frechet_digits(real: np.ndarray, fake: np.ndarray, clf: DigitClassifier) -> float:
    """Squared Frechet distance between Gaussian fits of the two sets' classifier features."""
    fr, ff = clf.features(real), clf.features(fake)
    return frechet_gaussian(fr.mean(axis=0), np.cov(fr, rowvar=False), ff.mean(axis=0), np.cov(ff, rowvar=False))
