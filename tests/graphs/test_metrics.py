"""The JAX metrics against scikit-learn, with masks, ties and missing classes."""

import jax
import numpy as np
import pytest
from sklearn import metrics as sk

from graphs import metrics

_classification = jax.jit(metrics.classification_metrics)
_auc = jax.jit(metrics.roc_auc)
_ap = jax.jit(metrics.average_precision)


@pytest.mark.parametrize("seed", range(4))
def test_classification_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n, classes = 150, 6
    logits = rng.normal(size=(n, classes)).astype(np.float32)
    labels = rng.integers(0, classes - 1, n)  # the last class never occurs in the labels...
    logits[:, -1] -= 10.0 * (seed % 2)  # ...and, for odd seeds, never in the predictions either
    mask = rng.random(n) < 0.6
    got = {k: float(v) for k, v in _classification(logits, labels, mask).items()}
    y, p = labels[mask], logits.argmax(1)[mask]
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(y, p), abs=1e-6)
    for name, fn in (("precision", sk.precision_score), ("recall", sk.recall_score), ("macro_f1", sk.f1_score)):
        assert got[name] == pytest.approx(fn(y, p, average="macro", zero_division=0), abs=1e-6), name


@pytest.mark.parametrize("seed", range(4))
def test_auc_and_average_precision_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = 300
    scores = rng.normal(size=n).astype(np.float32)
    if seed % 2:
        scores = np.round(scores, 1)  # many ties
    targets = (rng.random(n) < 0.3 + 0.1 * scores).astype(np.int32)
    mask = rng.random(n) < 0.8
    y, s = targets[mask], scores[mask]
    assert float(_auc(scores, targets, mask)) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-5)
    assert float(_ap(scores, targets, mask)) == pytest.approx(sk.average_precision_score(y, s), abs=1e-5)
    assert float(_auc(s, y, np.ones_like(y))) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-5)


def test_perfect_and_reversed_rankings():
    targets = np.array([0, 0, 1, 1, 1])
    scores = np.arange(5, dtype=np.float32)
    assert float(metrics.roc_auc(scores, targets)) == pytest.approx(1.0)
    assert float(metrics.average_precision(scores, targets)) == pytest.approx(1.0)
    assert float(metrics.roc_auc(-scores, targets)) == pytest.approx(0.0)
