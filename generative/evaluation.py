"""Numbers for generated images: FID and KID in a classifier's feature space, and mode coverage.

The feature space is the penultimate layer (256 ReLU units) of the small CNN of `lepton_jax/vision/classifier.py`,
trained on the same dataset, not Inception: for MNIST-like data these numbers are comparable between models of this
project and runs of it, not with FIDs published in Inception space.

- FID (Heusel et al. 2017): ||mu_1 - mu_2||^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)), in float64 on the host; the
  trace of the matrix square root is taken from the eigenvalues of S_1^(1/2) S_2 S_1^(1/2) (symmetric, so `eigh`),
  which is stable where `sqrtm(S_1 S_2)` picks up imaginary noise.
- KID (Binkowski et al. 2018): unbiased MMD^2 with the kernel (x.y / d + 1)^3, averaged over random subsets.
- The floor: real training images vs real test images (same number as the generated set) — no model can be
  expected to get below what a second real sample gets.
- Coverage: the classifier's predicted-class histogram over generated images, its largest relative deviation from
  uniform (a class is covered when within +-30 % of 1/classes) and the mean top-class confidence.
"""

from typing import Any

import jax
import numpy as np

from lepton_jax.vision import classifier
from lepton_jax.vision import data as image_data

FEATURE_CHUNK = 500  # images per forward pass of the feature network
COVERAGE_TOLERANCE = 0.3


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two (N, D) feature sets."""
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    values, vectors = np.linalg.eigh(cov_a)
    sqrt_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = sqrt_a @ cov_b @ sqrt_a
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt)


def kid(
    features_a: np.ndarray, features_b: np.ndarray, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Kernel Inception Distance: mean and std over `num_subsets` of the unbiased polynomial-kernel MMD^2."""
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    m = min(subset_size, len(a), len(b))
    dim = a.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(num_subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        k_xx = (x @ x.T / dim + 1) ** 3
        k_yy = (y @ y.T / dim + 1) ** 3
        k_xy = (x @ y.T / dim + 1) ** 3
        off_diag = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
        values.append(off_diag - 2 * k_xy.mean())
    return float(np.mean(values)), float(np.std(values))


def coverage(probs: np.ndarray, tolerance: float = COVERAGE_TOLERANCE) -> dict:
    """Mode coverage from (N, classes) predicted probabilities.

    Returns:
      `class_fractions` (classes,), `max_relative_deviation` (max over classes of |fraction * classes - 1|),
      `classes_covered` (classes within `tolerance` of uniform) and `mean_confidence`.
    """
    probs = np.asarray(probs)
    num_classes = probs.shape[1]
    fractions = np.bincount(probs.argmax(1), minlength=num_classes) / len(probs)
    deviation = np.abs(fractions * num_classes - 1)
    return {
        "class_fractions": fractions,
        "max_relative_deviation": float(deviation.max()),
        "classes_covered": int((deviation <= tolerance).sum()),
        "mean_confidence": float(probs.max(1).mean()),
    }


class FeatureExtractor:
    """The classifier's penultimate features and class probabilities, one compiled function for every set."""

    def __init__(self, model: classifier.CNN, params: Any, chunk: int = FEATURE_CHUNK):
        self.params = params

        def forward(params, images):  # (chunk, H, W, 1) -> (chunk, D), (chunk, classes)
            features = model.apply(params, images, method=classifier.CNN.features)
            logits = model.apply(params, features, method=lambda m, f: m.head(f))
            return features, jax.nn.softmax(logits)

        self._forward = jax.jit(forward)
        self.chunk = chunk

    def __call__(self, images) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W, 1) images in [0, 1] -> (features (N, D), probabilities (N, classes)) as numpy arrays."""
        images = np.asarray(images, np.float32)
        n = len(images)
        pad = -n % self.chunk
        if pad:
            images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), np.float32)])
        features, probs = [], []
        for start in range(0, len(images), self.chunk):  # fixed chunk shape: compiled once
            f, p = self._forward(self.params, images[start : start + self.chunk])
            features.append(np.asarray(f))
            probs.append(np.asarray(p))
        return np.concatenate(features)[:n], np.concatenate(probs)[:n]


class SampleEvaluator:
    """Scores generated images against a dataset's real test images; holds the real features once."""

    def __init__(self, extractor: FeatureExtractor, data: image_data.ImageData, num_samples: int, seed: int = 0):
        self.extractor = extractor
        self.num_samples = num_samples
        rng = np.random.default_rng(seed)
        test = data.test_images[rng.permutation(len(data.test_images))[:num_samples]]
        train = data.train_images[rng.permutation(len(data.train_images))[: len(test)]]
        self.test_features, _ = extractor(test)
        train_features, _ = extractor(train)
        self.floor = fid(train_features, self.test_features)
        self.kid_floor = kid(train_features, self.test_features)[0]

    def __call__(self, samples: np.ndarray) -> dict:
        """Metrics of one set of generated images (N, H, W, 1) in [0, 1]."""
        features, probs = self.extractor(samples)
        kid_mean, kid_std = kid(features, self.test_features)
        cov = coverage(probs)
        out = {
            "eval/fid": fid(features, self.test_features),
            "eval/kid": kid_mean,
            "eval/kid_subset_std": kid_std,
            "eval/max_class_deviation": cov["max_relative_deviation"],
            "eval/classes_covered": cov["classes_covered"],
            "eval/mean_confidence": cov["mean_confidence"],
        }
        for i, fraction in enumerate(cov["class_fractions"]):
            out[f"eval/class_fraction_{i}"] = float(fraction)
        return out

    def floors(self) -> dict:
        return {"eval/fid_floor": self.floor, "eval/kid_floor": self.kid_floor}
