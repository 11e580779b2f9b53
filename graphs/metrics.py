"""Classification and ranking metrics in JAX, with masks for padding: they jit, vmap over seeds, and match
scikit-learn (`accuracy_score`, `precision/recall/f1_score(average="macro")`, `roc_auc_score`,
`average_precision_score`), ties included.

Every function takes a `mask` (or weight) of the same leading shape: entries with mask 0 (padding, nodes outside
the split) count nowhere.
"""

import jax.numpy as jnp
import optax

from lepton_jax import metrics as core_metrics
from lepton_jax.metrics import masked_mean


def cross_entropy(logits, labels, mask):
    """Mean softmax cross-entropy over the entries where `mask` is set. logits `(N, C)`, labels `(N,)` ints."""
    return masked_mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels), mask)


def accuracy(logits, labels, mask):
    return masked_mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32), mask)


def classification_metrics(logits, labels, mask) -> dict:
    """Accuracy and macro-averaged precision, recall and F1 over the entries where `mask` is set.

    As scikit-learn's macro averages: over the classes present in the labels or the predictions, with 0 for a
    class whose precision or recall is 0/0 (`lepton_jax.metrics.classification_scores`).
    """
    confusion = core_metrics.confusion_matrix(labels, jnp.argmax(logits, -1), logits.shape[-1], mask)
    scores = core_metrics.classification_scores(confusion)
    return {
        "accuracy": accuracy(logits, labels, mask),
        "precision": scores["precision"],
        "recall": scores["recall"],
        "macro_f1": scores["macro_f1"],
    }


def _weighted_counts_below(scores, weights):
    """For each entry: total weight of entries with a smaller score, and with a smaller or equal score."""
    order = jnp.argsort(scores)
    sorted_scores, cumulative = scores[order], jnp.cumsum(weights[order])
    cumulative = jnp.concatenate([jnp.zeros(1, cumulative.dtype), cumulative])
    below = cumulative[jnp.searchsorted(sorted_scores, scores, side="left")]
    below_or_equal = cumulative[jnp.searchsorted(sorted_scores, scores, side="right")]
    return below, below_or_equal


def roc_auc(scores, targets, mask=None):
    """Area under the ROC curve: the chance a positive outscores a negative, ties counting one half."""
    mask = jnp.ones_like(scores) if mask is None else mask.astype(scores.dtype)
    positive = targets.astype(scores.dtype) * mask
    negative = (1 - targets.astype(scores.dtype)) * mask
    neg_below, neg_below_or_equal = _weighted_counts_below(scores, negative)
    wins = jnp.sum(positive * (neg_below + neg_below_or_equal) / 2)
    return wins / jnp.maximum(positive.sum() * negative.sum(), 1.0)


def average_precision(scores, targets, mask=None):
    """`Σ_k (R_k - R_{k-1}) P_k` over descending score thresholds (scikit-learn's definition, no interpolation).

    Each positive contributes the precision at the threshold equal to its own score (all tied entries included),
    divided by the number of positives.
    """
    mask = jnp.ones_like(scores) if mask is None else mask.astype(scores.dtype)
    positive = targets.astype(scores.dtype) * mask
    # Entries scored at least as high as each entry: the count below-or-equal of the negated scores.
    _, selected = _weighted_counts_below(-scores, mask)
    _, true_selected = _weighted_counts_below(-scores, positive)
    precision = true_selected / jnp.maximum(selected, 1e-12)
    return jnp.sum(positive * precision) / jnp.maximum(positive.sum(), 1.0)
