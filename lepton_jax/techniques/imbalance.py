"""Class imbalance: class-weighted and focal losses, class-balanced batches, and imbalanced training sets to study
them, reached by the same config keys from every trainer that classifies.

    counts = np.bincount(train_labels, minlength=num_classes)       # (K,) the training set's class counts
    loss_fn = imbalance.classification_loss(config, counts)         # once; in the step: loss_fn(logits, labels)
    epoch = epochs.make_epoch(step, batch_size, mesh, sampler=imbalance.sampler(config, lambda data: data[1]))
    keep = imbalance.training_subset(config, train_labels)          # None, or the examples an imbalanced set keeps

The keys (declared once, with the shared ones, in `lepton_jax.config.KEYS`; `lepton_jax.config.technique_keys(c,
"imbalance")` puts them, all off, in the config of a trainer that honours them):

  class_weighting        none | inverse (w_k = n / (K n_k), scikit-learn's "balanced") | sqrt_inverse (its square
                         root) | effective (Cui et al. 2019: w_k proportional to (1 - beta) / (1 - beta^n_k), the
                         inverse of the class's "effective number" of examples, scaled to sum to K)
  effective_number_beta  beta of `effective`: 0 weighs every class alike, beta -> 1 tends to `inverse`
  focal_gamma            > 0: the softmax focal loss (Lin et al. 2017), -(1 - p_y)^gamma log p_y, instead of
                         cross-entropy (the class weights are its alpha); 0: off
  balanced_sampling      each epoch draws its batches with every class equally likely (with replacement) instead
                         of a permutation of the training set
  imbalance              none | step | linear: train on an imbalanced subset of the training set (Buda et al. 2018)
  imbalance_ratio        rho, the largest class count over the smallest, for `imbalance`

With every key off nothing changes: `classification_loss` is the plain mean cross-entropy (bit for bit what the
trainers computed before), `sampler` is None (the epoch's permutation), `training_subset` is None (every example).

A weighted loss is normalised by the batch's total weight, as torch's `CrossEntropyLoss(weight=...)` is:
sum_i w_{y_i} l_i / sum_i w_{y_i}. So the weights say which examples count, not how large the loss is (any scale of
the weights gives the same loss), and the focal loss with gamma 0 is the (weighted) cross-entropy. K and n count the
classes present in the training set; a class without examples gets weight 0 (it is never a label there).
Balanced sampling and class weights each remove the imbalance; both at once correct it twice (a minority class
then outweighs a majority one by about rho).
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lepton_jax import config as config_lib
from lepton_jax.metrics import masked_mean


def settings(config) -> dict:
    """The imbalance keys of `config`, checked (`lepton_jax.config.technique_settings`)."""
    return config_lib.technique_settings(config, "imbalance")


# ---- Losses -----------------------------------------------------------------------------------------------------


def class_weights(class_counts, kind: str, beta: float = 0.999) -> np.ndarray:
    """(K,) float32 weights of the classes from their training counts; 0 for a class with no examples.

    Args:
      class_counts: (K,) the number of training examples of each class.
      kind: "inverse" (n / (K n_k)), "sqrt_inverse" (sqrt(n / (K n_k))) or "effective" ((1 - beta) / (1 - beta^n_k),
        scaled to sum to K); n is the total count and K the number of classes with examples.
      beta: the effective number's beta, in [0, 1).
    """
    counts = np.asarray(class_counts, np.float64)
    present = counts > 0
    safe = np.where(present, counts, 1.0)
    if kind in ("inverse", "sqrt_inverse"):
        weights = counts.sum() / (present.sum() * safe)
        if kind == "sqrt_inverse":
            weights = np.sqrt(weights)
    elif kind == "effective":
        weights = (1.0 - beta) / (1.0 - np.power(beta, safe))  # beta^n_k < 1 for n_k >= 1
        weights = weights * present.sum() / weights[present].sum()
    else:
        raise ValueError(f"class weights must be one of inverse, sqrt_inverse, effective, got '{kind}'")
    return np.where(present, weights, 0.0).astype(np.float32)


def weighted_cross_entropy(logits, labels, class_weights) -> jax.Array:
    """(B,) `w_y * ce`: each example's softmax cross-entropy times its class's weight (average with
    `weighted_mean`, which divides by the weights' sum, as torch's `CrossEntropyLoss(weight=...)`).

    Args:
      logits: (B, K) float.
      labels: (B,) ints in [0, K).
      class_weights: (K,) float.
    """
    return class_weights[labels] * optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def focal_loss(logits, labels, gamma: float, class_weights=None) -> jax.Array:
    """(B,) the softmax focal loss `-w_y (1 - p_y)^gamma log p_y` (Lin et al. 2017; alpha as class weights), from
    the log-softmax so that neither a confident nor a hopeless example overflows (average with `weighted_mean`).

    Args:
      logits: (B, K) float.
      labels: (B,) ints in [0, K).
      gamma: the focusing exponent (>= 0; 0 is cross-entropy).
      class_weights: (K,) float, or None for 1.
    """
    log_p = jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1)[:, 0]  # (B,) log p_y
    one_minus_p = -jnp.expm1(log_p)  # accurate where p_y is near 1
    # (1 - p)^gamma with a finite gradient at p = 1 for gamma < 1: the power sees 1 there, and the result is 0.
    positive = one_minus_p > 0
    modulating = jnp.where(positive, jnp.power(jnp.where(positive, one_minus_p, 1.0), gamma), 0.0)
    losses = -modulating * log_p
    return losses if class_weights is None else class_weights[labels] * losses


def weighted_mean(losses, labels, class_weights=None, mask=None) -> jax.Array:
    """The batch's loss: `sum w_y m l / sum w_y m` over the examples (`m` the mask, 0 for padding); the plain (masked)
    mean when `class_weights` is None. 0 when no example counts.

    Args:
      losses: (B,) per-example losses, already times `w_y` (`weighted_cross_entropy`, `focal_loss`).
      labels: (B,) ints.
      class_weights: (K,) float, or None.
      mask: (B,) 0/1, or None.
    """
    if class_weights is None:
        return jnp.mean(losses) if mask is None else masked_mean(losses, mask)
    weights = class_weights[labels]
    if mask is not None:
        weights = weights * mask.astype(weights.dtype)
        losses = losses * mask.astype(losses.dtype)
    total = jnp.sum(weights)
    return jnp.where(total > 0, jnp.sum(losses) / jnp.where(total > 0, total, 1.0), 0.0)


def cross_entropy(logits, labels, mask=None) -> jax.Array:
    """The plain loss, what `classification_loss` gives with every key off: the mean softmax cross-entropy of
    logits (B, K) and labels (B,), over the examples where `mask` (B,) is set when given."""
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return losses.mean() if mask is None else masked_mean(losses, mask)


def classification_loss(config, class_counts=None) -> Callable[..., jax.Array]:
    """The classification loss the config asks for: `loss_fn(logits, labels, mask=None) -> ()`.

    Built once by the trainer; with `class_weighting` none and `focal_gamma` 0 it is exactly the mean softmax
    cross-entropy (`optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()`, or its mean over `mask`).

    Args:
      config: the config (its imbalance keys; absent keys are off).
      class_counts: (K,) the training set's class counts; needed when `class_weighting` is not none.
    """
    values = settings(config)
    kind, gamma = values["class_weighting"], values["focal_gamma"]
    if kind == "none" and not gamma:
        return cross_entropy
    weights = None
    if kind != "none":
        if class_counts is None:
            raise ValueError(f"class_weighting={kind} needs the training set's class counts")
        weights = jnp.asarray(class_weights(class_counts, kind, values["effective_number_beta"]))

    def loss_fn(logits, labels, mask=None):
        if gamma:
            losses = focal_loss(logits, labels, gamma, weights)
        else:
            losses = weighted_cross_entropy(logits, labels, weights)
        return weighted_mean(losses, labels, weights, mask)

    return loss_fn


# ---- Class-balanced batches ----------------------------------------------------------------------------------------


def balanced_batches(key: jax.Array, labels: jax.Array, num_batches: int, batch_size: int) -> jax.Array:
    """(num_batches, batch_size) int32 example indices drawn with replacement, each draw picking a class uniformly
    among those in `labels`, then an example of it uniformly: example i has probability 1 / (C n_{y_i}), C the number
    of classes present. A drop-in for `epochs.epoch_batches`; jittable (the sizes are static, the classes not).

    Args:
      key: the epoch's key.
      labels: (N,) ints (any values; a class is a distinct value).
      num_batches, batch_size: the output's shape.
    """
    n = labels.shape[0]
    # Examples grouped by class: class r (the r-th smallest label value) fills order[starts[r]:ends[r]].
    order = jnp.argsort(labels, stable=True)  # (N,)
    grouped = labels[order]
    first = jnp.concatenate([jnp.ones(1, bool), grouped[1:] != grouped[:-1]])  # (N,) a class's first position
    num_classes = jnp.sum(first)
    starts = jnp.nonzero(first, size=n, fill_value=n)[0]  # (N,); past the last class: n
    ends = jnp.concatenate([starts[1:], jnp.full(1, n, starts.dtype)])
    class_key, example_key = jax.random.split(key)
    shape = (num_batches, batch_size)
    rank = jax.random.randint(class_key, shape, 0, num_classes)  # the class of each draw
    start = starts[rank]
    offset = jax.random.randint(example_key, shape, 0, ends[rank] - start)  # the example within its class
    return order[start + offset].astype(jnp.int32)


def sampler(config, labels_of: Callable) -> Callable | None:
    """`epochs.make_epoch`'s `sampler` the config asks for: class-balanced batches (`balanced_batches`) when
    `balanced_sampling` is set, else None (the epoch's permutation).

    Args:
      config: the config.
      labels_of: `data -> (N,) labels`, the labels in the epoch's dataset pytree (e.g. `lambda data: data[1]`).
    """
    if not settings(config)["balanced_sampling"]:
        return None
    return lambda key, data, num_batches, batch_size: balanced_batches(key, labels_of(data), num_batches, batch_size)


# ---- Imbalanced training sets ------------------------------------------------------------------------------------


def imbalance_counts(class_counts, kind: str, rho: float, minority_classes: Sequence[int] | None = None) -> np.ndarray:
    """(K,) int64 the counts an imbalanced subset keeps of each class (Buda et al. 2018).

    Every class is first brought to n, the smallest count among the classes present (so the subset's largest
    count over its smallest is rho, up to rounding); then "step" keeps n of each majority class and n / rho of each
    minority class, and "linear" keeps n (1 - (1 - 1/rho) r / (C - 1)) of the class at rank r (the r-th smallest
    label of the C present): n for the first, n / rho for the last. Counts are rounded half up, at least 1; a class
    without examples keeps 0.

    Args:
      class_counts: (K,) the counts of the full set.
      kind: "step" or "linear".
      rho: the ratio, >= 1.
      minority_classes: "step"'s minority classes; None: the upper half of the present classes (the last C // 2).
        "linear" takes None.
    """
    counts = np.asarray(class_counts, np.int64)
    if kind not in config_lib.IMBALANCES[1:]:
        raise ValueError(f"imbalance must be one of {', '.join(config_lib.IMBALANCES[1:])}, got '{kind}'")
    if not rho >= 1:
        raise ValueError(f"the imbalance ratio must be >= 1, got {rho}")
    classes = np.flatnonzero(counts)  # the present classes, in label order
    n = counts[classes].min()
    kept = np.zeros_like(counts)
    if kind == "step":
        if minority_classes is None:
            minority_classes = classes[len(classes) - len(classes) // 2 :]
        minority = np.asarray(minority_classes, np.int64)
        if not np.isin(minority, classes).all():
            raise ValueError(f"minority classes {sorted(minority.tolist())} are not all among {classes.tolist()}")
        kept[classes] = n
        kept[minority] = max(1, int(np.floor(n / rho + 0.5)))
    else:
        if minority_classes is not None:
            raise ValueError("linear imbalance orders the classes by label: it takes no minority_classes")
        slope = (1.0 - 1.0 / rho) / max(len(classes) - 1, 1)
        kept[classes] = np.maximum(1, np.floor(n * (1.0 - slope * np.arange(len(classes))) + 0.5))
    return kept


def imbalance_subset(
    labels, kind: str, rho: float, minority_classes: Sequence[int] | None = None, seed: int = 0
) -> np.ndarray:
    """Sorted int64 indices of an imbalanced subset of a labelled set (`imbalance_counts` says how many of each
    class); each class's examples drawn at random without replacement, the same for the same `seed`.

    Args:
      labels: (N,) non-negative ints.
      kind, rho, minority_classes: as `imbalance_counts`.
      seed: the draw's seed.
    """
    labels = np.asarray(labels)
    kept = imbalance_counts(np.bincount(labels), kind, rho, minority_classes)
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:count] for c, count in enumerate(kept) if count]
    return np.sort(np.concatenate(chosen))


def training_subset(config, labels) -> np.ndarray | None:
    """The examples of the training set `imbalance` keeps (`imbalance_subset` with `imbalance_ratio`, the minority
    half, drawn with `config.seed`: one subset for all the run's seeds), or None when `imbalance` is none."""
    values = settings(config)
    if values["imbalance"] == "none":
        return None
    return imbalance_subset(labels, values["imbalance"], values["imbalance_ratio"], seed=config.get("seed", 0))
