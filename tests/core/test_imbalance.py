"""The class-imbalance tools (`lepton_jax/techniques/imbalance.py`) and the classification metrics
(`lepton_jax/metrics.py`): the losses and class weights against hand computations, the balanced sampler's
frequencies against their binomial spread, the imbalanced subsets' exact counts, the metrics against scikit-learn,
the keys off = the plain cross-entropy bit for bit, and the keys' launch checks."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import struct
from sklearn import metrics as sk
from sklearn.utils.class_weight import compute_class_weight

from lepton_jax import config as config_lib
from lepton_jax import epochs, parallel
from lepton_jax import metrics as core_metrics
from lepton_jax.errors import UserError
from lepton_jax.techniques import imbalance

# A worked example: 4 examples of 3 classes, class 0 three times as frequent as the others in the batch.
LOGITS = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], [1.0, -2.0, 0.5]], np.float32)
LABELS = np.array([0, 2, 1, 0], np.int32)
WEIGHTS = np.array([0.5, 2.0, 3.0], np.float32)


def config(**values):
    config = ml_collections.ConfigDict({"seed": 0, **values})
    return config_lib.technique_keys(config_lib.training_keys(config), "imbalance")


def log_p_y(logits, labels):
    """log softmax(logits)[y] in float64, by hand."""
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    return log_probs[np.arange(len(labels)), labels]


def test_weighted_cross_entropy_is_torch_normalised():
    ce = -log_p_y(LOGITS, LABELS)
    w = WEIGHTS[LABELS].astype(np.float64)
    expected = (w * ce).sum() / w.sum()  # torch.nn.CrossEntropyLoss(weight=WEIGHTS)(logits, labels)
    # Jitted: one program each instead of every operation compiled one by one.
    weighted_mean = jax.jit(imbalance.weighted_mean)
    per_example = jax.jit(imbalance.weighted_cross_entropy)(LOGITS, LABELS, WEIGHTS)
    np.testing.assert_allclose(per_example, w * ce, rtol=1e-6)
    loss = weighted_mean(per_example, LABELS, WEIGHTS)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
    assert abs(expected - ce.mean()) > 0.1  # the weights matter here
    # The scale of the weights does not change the loss; a mask drops examples from both sums.
    scaled = weighted_mean(per_example * 10, LABELS, WEIGHTS * 10)
    np.testing.assert_allclose(float(scaled), expected, rtol=1e-6)
    mask = np.array([1, 1, 0, 1])
    masked = weighted_mean(per_example, LABELS, WEIGHTS, mask)
    np.testing.assert_allclose(float(masked), (mask * w * ce).sum() / (mask * w).sum(), rtol=1e-6)


def test_focal_loss_by_hand():
    logits, labels = jnp.asarray(LOGITS), jnp.asarray(LABELS)
    ce = -log_p_y(LOGITS, LABELS)
    np.testing.assert_allclose(imbalance.focal_loss(logits, labels, 0.0), ce, rtol=1e-6)
    p = np.exp(-ce)
    for gamma in (0.5, 2.0):
        np.testing.assert_allclose(imbalance.focal_loss(logits, labels, gamma), (1 - p) ** gamma * ce, rtol=1e-5)
    w = WEIGHTS[LABELS]
    focal = imbalance.focal_loss(logits, labels, 2.0, jnp.asarray(WEIGHTS))
    np.testing.assert_allclose(focal, w * (1 - p) ** 2 * ce, rtol=1e-5)
    # Config: focal with weights is normalised by the weights, and gamma 0 with weights is the weighted CE.
    counts = np.array([30, 10, 5])
    inverse = imbalance.class_weights(counts, "inverse")[LABELS]
    got = imbalance.classification_loss(config(focal_gamma=2.0, class_weighting="inverse"), counts)(logits, labels)
    np.testing.assert_allclose(float(got), (inverse * (1 - p) ** 2 * ce).sum() / inverse.sum(), rtol=1e-5)


def test_focal_loss_is_finite_where_the_model_is_certain():
    """p_y = 1 in float32 (and p_y = 0): the loss and its gradient stay finite, for gamma below 1 too."""
    logits = jnp.array([[100.0, 0.0, 0.0], [0.0, 100.0, 0.0]])
    labels = jnp.array([0, 0])
    # gamma traced: one compiled program for both values
    value_and_grad = jax.jit(jax.value_and_grad(lambda x, g: imbalance.focal_loss(x, labels, g).mean()))
    for gamma in (0.5, 2.0):
        loss, grad = value_and_grad(logits, gamma)
        assert np.isfinite(float(loss)) and np.isfinite(np.asarray(grad)).all()
        np.testing.assert_allclose(float(loss), 100.0 / 2, rtol=1e-5)  # the hopeless example: -log p = 100


def test_class_weights_by_hand():
    counts = np.array([80, 15, 5, 0])  # n = 100 over K = 3 present classes; class 3 absent
    np.testing.assert_allclose(
        imbalance.class_weights(counts, "inverse"), [100 / 240, 100 / 45, 100 / 15, 0.0], rtol=1e-6
    )
    labels = np.repeat(np.arange(3), counts[:3])
    np.testing.assert_allclose(  # scikit-learn's "balanced" weights are the same
        imbalance.class_weights(counts, "inverse")[:3], compute_class_weight("balanced", classes=np.arange(3), y=labels)
    )
    np.testing.assert_allclose(
        imbalance.class_weights(counts, "sqrt_inverse"), np.sqrt([100 / 240, 100 / 45, 100 / 15, 0.0]), rtol=1e-6
    )
    beta = 0.9
    raw = np.array([(1 - beta) / (1 - beta**n) for n in counts[:3]])
    np.testing.assert_allclose(imbalance.class_weights(counts, "effective", beta)[:3], 3 * raw / raw.sum(), rtol=1e-6)
    np.testing.assert_allclose(imbalance.class_weights(counts, "effective", 0.0), [1, 1, 1, 0])  # beta 0: equal
    with pytest.raises(ValueError, match="one of inverse, sqrt_inverse, effective"):
        imbalance.class_weights(counts, "balanced")


def test_nothing_configured_is_the_plain_cross_entropy_bit_for_bit():
    rng = np.random.default_rng(0)  # NumPy's draws: nothing to compile
    logits = jnp.asarray(rng.normal(size=(64, 10)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 10, 64), jnp.int32)
    mask = jnp.asarray(rng.random(64) < 0.5)
    loss_fn = imbalance.classification_loss(config(), np.bincount(np.asarray(labels), minlength=10))
    plain = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    np.testing.assert_array_equal(loss_fn(logits, labels), plain.mean())
    np.testing.assert_array_equal(
        jax.jit(loss_fn)(logits, labels),
        jax.jit(lambda a, b: optax.softmax_cross_entropy_with_integer_labels(a, b).mean())(logits, labels),
    )
    np.testing.assert_array_equal(loss_fn(logits, labels, mask), core_metrics.masked_mean(plain, mask))
    # A config saved before the keys existed is the same; any key on changes the loss.
    assert imbalance.classification_loss(ml_collections.ConfigDict())(logits, labels) == plain.mean()
    counts = np.array([50, 5, 1, 1, 1, 1, 1, 1, 1, 2])
    for on in ({"class_weighting": "inverse"}, {"focal_gamma": 1.0}):
        assert imbalance.classification_loss(config(**on), counts)(logits, labels) != plain.mean()


# Both sampler tests draw 40 batches of 500 from 1000 labels: one compiled program.
balanced_batches = jax.jit(imbalance.balanced_batches, static_argnums=(2, 3))


def test_balanced_batches_are_uniform_over_classes():
    """99:1 labels: each draw is a minority example with probability 1/2, each minority example with 1/20."""
    labels = np.r_[np.zeros(990, np.int32), np.ones(10, np.int32)]
    labels = jnp.asarray(np.random.default_rng(0).permutation(labels))
    num_batches, batch_size = 40, 500
    draws = balanced_batches(jax.random.key(0), labels, num_batches, batch_size)
    assert draws.shape == (num_batches, batch_size) and draws.dtype == jnp.int32
    draws = np.asarray(draws).ravel()
    m = draws.size
    share = float(np.mean(np.asarray(labels)[draws]))
    assert abs(share - 0.5) < 5 * np.sqrt(0.25 / m)  # 5 binomial standard deviations
    minority = np.flatnonzero(np.asarray(labels) == 1)
    per_example = np.bincount(draws, minlength=1000)[minority]
    expected, spread = m / 20, np.sqrt(m / 20 * (1 - 1 / 20))
    assert np.all(np.abs(per_example - expected) < 5 * spread)
    # A permutation would draw about 1 % minority: the sampler really rebalances.
    permuted = np.asarray(epochs.epoch_batches(jax.random.key(0), 1000, 500)).ravel()
    assert float(np.mean(np.asarray(labels)[permuted])) < 0.02


def test_balanced_batches_with_absent_and_scattered_classes():
    """Classes 2, 5 and 7 only (counts 900, 94, 6): a third each."""
    labels = jnp.asarray(np.random.default_rng(1).permutation(np.repeat([2, 5, 7], [900, 94, 6])).astype(np.int32))
    draws = np.asarray(balanced_batches(jax.random.key(3), labels, 40, 500)).ravel()
    shares = np.array([np.mean(np.asarray(labels)[draws] == c) for c in (2, 5, 7)])
    assert np.all(np.abs(shares - 1 / 3) < 5 * np.sqrt(2 / 9 / draws.size)), shares


@struct.dataclass
class State:
    rng: jax.Array


def test_make_epoch_draws_with_the_sampler():
    """`make_epoch(..., sampler=...)` trains on the sampler's batches; without one, on the permutation."""

    labels = jnp.asarray(np.r_[np.zeros(95, np.int32), np.ones(5, np.int32)])
    data = (jnp.zeros((100, 1)), labels)

    def step(state, batch, key):
        return state, {"minority": jnp.mean(batch[1].astype(jnp.float32))}

    mesh = parallel.make_mesh()
    cfg = config(balanced_sampling=True)
    states = State(jax.random.split(jax.random.key(0), 2))
    balanced = epochs.make_epoch(step, 10, mesh, sampler=imbalance.sampler(cfg, lambda d: d[1]))
    _, metrics = balanced(states, data)
    assert np.all(np.abs(np.asarray(metrics["minority"]) - 0.5) < 5 * np.sqrt(0.25 / 100))
    assert imbalance.sampler(config(), lambda d: d[1]) is None
    _, metrics = epochs.make_epoch(step, 10, mesh)(State(jax.random.split(jax.random.key(0), 2)), data)
    np.testing.assert_allclose(metrics["minority"], 0.05)  # a permutation sees each example once


def test_imbalance_subset_counts():
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(10), 100))
    step = imbalance.imbalance_subset(labels, "step", 10, seed=0)
    assert np.bincount(labels[step]).tolist() == [100] * 5 + [10] * 5
    assert len(np.unique(step)) == len(step) and np.all(np.diff(step) > 0)
    linear = imbalance.imbalance_subset(labels, "linear", 10, seed=0)
    assert np.bincount(labels[linear]).tolist() == [100, 90, 80, 70, 60, 50, 40, 30, 20, 10]
    chosen = imbalance.imbalance_subset(labels, "step", 100, minority_classes=[1, 3], seed=0)
    assert np.bincount(labels[chosen], minlength=10).tolist() == [100, 1, 100, 1] + [100] * 6
    # Deterministic for a seed, another subset for another seed.
    np.testing.assert_array_equal(step, imbalance.imbalance_subset(labels, "step", 10, seed=0))
    assert not np.array_equal(step, imbalance.imbalance_subset(labels, "step", 10, seed=1))
    # Uneven classes (as MNIST's) are first brought to the smallest count: the ratio is rho.
    uneven = rng.permutation(np.repeat(np.arange(4), [120, 100, 130, 110]))
    kept = np.bincount(uneven[imbalance.imbalance_subset(uneven, "step", 4, seed=0)]).tolist()
    assert kept == [100, 100, 25, 25]
    kept = np.bincount(uneven[imbalance.imbalance_subset(uneven, "linear", 4, seed=0)]).tolist()
    assert kept == [100, 75, 50, 25]
    with pytest.raises(ValueError, match="one of step, linear"):
        imbalance.imbalance_subset(labels, "long_tail", 10)
    with pytest.raises(ValueError, match="not all among"):
        imbalance.imbalance_subset(labels, "step", 10, minority_classes=[11])
    # The config: none keeps every example; step with the config's ratio and seed.
    assert imbalance.training_subset(config(), labels) is None
    np.testing.assert_array_equal(
        imbalance.training_subset(config(imbalance="step", imbalance_ratio=10.0), labels), step
    )


@functools.partial(jax.jit, static_argnums=2)
def classification_metrics(labels, predictions, num_classes, mask=None):
    """The metrics under test, jitted as one program (each operation compiled alone would cost more)."""
    args = (labels, predictions, num_classes, mask)
    return {
        "confusion": core_metrics.confusion_matrix(*args),
        "balanced_accuracy": core_metrics.balanced_accuracy(*args),
        "macro_f1": core_metrics.macro_f1(*args),
        "recall": core_metrics.per_class_recall(*args),
    }


@pytest.mark.parametrize("seed", range(3))
def test_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n, k = 200, 5
    labels = rng.integers(0, k - 1, n)  # class 4 never a label...
    predictions = np.where(rng.random(n) < 0.6, labels, rng.integers(0, k, n))  # ...but sometimes predicted
    if seed == 2:
        predictions[predictions == 3] = 0  # class 3 labelled, never predicted
    mask = rng.random(n) < 0.7
    y, p = labels[mask], predictions[mask]
    scores = classification_metrics(jnp.asarray(labels), jnp.asarray(predictions), k, jnp.asarray(mask))
    np.testing.assert_array_equal(scores["confusion"], sk.confusion_matrix(y, p, labels=range(k)))
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
        expected = sk.balanced_accuracy_score(y, p)
    assert float(scores["balanced_accuracy"]) == pytest.approx(expected, abs=1e-6)
    assert float(scores["macro_f1"]) == pytest.approx(sk.f1_score(y, p, average="macro", zero_division=0), abs=1e-6)
    np.testing.assert_allclose(scores["recall"], sk.recall_score(y, p, average=None, labels=range(k), zero_division=0))
    unmasked = classification_metrics(jnp.asarray(labels), jnp.asarray(predictions), k)["confusion"]
    np.testing.assert_array_equal(unmasked, sk.confusion_matrix(labels, predictions, labels=range(k)))
    # Balanced accuracy differs from accuracy on imbalanced labels: all-majority predictions score 1 / C.
    skewed = jnp.asarray(np.r_[np.zeros(99), np.ones(1)].astype(np.int32))
    all_majority = classification_metrics(skewed, jnp.zeros(100, jnp.int32), 2)
    assert float(all_majority["balanced_accuracy"]) == pytest.approx(0.5)


def test_bad_values_are_one_line():
    for key, value, allowed in (
        ("class_weighting", "balanced", "one of none, inverse, sqrt_inverse, effective"),
        ("imbalance", "long_tail", "one of none, step, linear"),
        ("imbalance_ratio", 0.5, ">= 1"),
        ("focal_gamma", -1.0, ">= 0"),
        ("effective_number_beta", 1.0, r"in \[0, 1\)"),
        ("balanced_sampling", 1, "True or False"),
    ):
        message = f"config.{key}={value!r} is not allowed: it must be [^\n]*{allowed}"
        with pytest.raises(UserError, match=message):
            config_lib.validate(config(**{key: value}), {})
        with pytest.raises(UserError, match=message):  # the library refuses it too, called without the launcher
            imbalance.settings(config(**{key: value}))
