"""Semi-supervised classification (`lepton_jax/vision/semi_supervised.py`): the labelled subset, the FixMatch
unlabelled term against a hand computation, the strong augmentation, the step (deterministic, blind to the
unlabelled images' labels, the methods differing only in the unlabelled term), a smoke run, resume, bad values."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lepton_jax import config as config_lib
from lepton_jax.errors import UserError
from lepton_jax.vision import classifier
from lepton_jax.vision import semi_supervised as semi
from lepton_jax.vision.configs import semi_supervised as semi_config
from tests.conftest import blank_figures


def _config(**overrides):
    c = semi_config.get_config("digits,smoke")
    c.conv_features, c.hidden, c.num_epochs, c.batch_size, c.mu = (4, 8), 16, 2, 20, 3
    c.update(overrides)
    return c


def test_labelled_subset_has_k_of_each_class_and_depends_only_on_the_seed(digits):
    labels = digits.train_labels
    first = semi.labelled_subset(labels, 10, seed=0, num_classes=10)
    assert len(first) == 100 and len(set(first.tolist())) == 100
    np.testing.assert_array_equal(np.bincount(labels[first], minlength=10), np.full(10, 10))
    np.testing.assert_array_equal(first, semi.labelled_subset(labels.copy(), 10, seed=0, num_classes=10))
    other = semi.labelled_subset(labels, 10, seed=1, num_classes=10)
    assert len(set(first.tolist()) & set(other.tolist())) < 50  # another seed labels other images
    three = semi.labelled_subset(labels, 3, seed=0, num_classes=10)
    np.testing.assert_array_equal(np.bincount(labels[three], minlength=10), np.full(10, 3))
    # With `unlabelled_examples`: the labelled images and the first that many others, in their order.
    (images, kept_labels, is_labelled), chosen = semi.training_set(digits, _config(unlabelled_examples=200))
    np.testing.assert_array_equal(chosen, first)
    others = np.setdiff1d(np.arange(len(labels)), first)[:200]
    np.testing.assert_array_equal(images, digits.train_images[np.sort(np.concatenate([first, others]))])
    assert is_labelled.sum() == 100 and len(kept_labels) == 300
    np.testing.assert_array_equal(kept_labels[is_labelled], labels[first])
    smallest = int(np.bincount(labels).min())
    with pytest.raises(UserError, match=rf"^config.labels_per_class={smallest + 1} is more than the {smallest} ") as e:
        semi.labelled_subset(labels, smallest + 1, seed=0, num_classes=10)
    assert "\n" not in str(e.value)


def test_unlabelled_loss_masks_by_threshold_as_computed_by_hand():
    target = np.array([[4.0, 0.0, 0.0], [1.0, 1.2, 0.0], [0.0, 0.0, 6.0], [0.0, 3.0, 0.1]], np.float32)
    student = np.array([[0.5, 0.2, -0.3], [2.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]], np.float32)
    # By hand: the max probabilities are 0.965, 0.472, 0.995, 0.905 (e^4 / (e^4 + 2) etc.), so threshold 0.95 keeps
    # rows 0 and 2, with pseudo-labels 0 and 2; the mean is over all four rows.
    probabilities = np.exp(target) / np.exp(target).sum(1, keepdims=True)
    np.testing.assert_allclose(probabilities.max(1), [0.9647, 0.4717, 0.9951, 0.9051], atol=1e-4)
    log_softmax = student - np.log(np.exp(student).sum(1, keepdims=True))
    expected = -(log_softmax[0, 0] + log_softmax[2, 2]) / 4
    unlabelled_loss = jax.jit(semi.unlabelled_loss, static_argnums=2)  # eagerly, each operation compiles on its own
    loss, mask, pseudo = unlabelled_loss(jnp.asarray(student), jnp.asarray(probabilities), 0.95)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
    np.testing.assert_array_equal(mask, [1.0, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(pseudo, [0, 1, 2, 1])
    loss_all, mask_all, _ = unlabelled_loss(jnp.asarray(student), jnp.asarray(probabilities), 0.0)
    expected_all = -np.mean(log_softmax[np.arange(4), [0, 1, 2, 1]])
    assert float(mask_all.sum()) == 4 and float(loss_all) == pytest.approx(expected_all, rel=1e-6)
    # The targets are constants: the gradient reaches the student's logits only.
    grad_target = jax.jit(jax.grad(lambda t: semi.unlabelled_loss(jnp.asarray(student), t, 0.0)[0]))(
        jnp.asarray(probabilities)
    )
    np.testing.assert_array_equal(grad_target, 0.0)
    # The ramp of the weight: half-way through a 10-step ramp, half of lambda_u; then all of it.
    assert float(semi.unlabelled_weight(jnp.int32(5), 2.0, 10)) == 1.0
    assert float(semi.unlabelled_weight(jnp.int32(30), 2.0, 10)) == 2.0
    assert float(semi.unlabelled_weight(jnp.int32(0), 2.0, 0)) == 2.0


def test_distribution_alignment_divides_by_the_running_mean_and_moves_it_on():
    probabilities = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.25, 0.25]], np.float32)
    old = np.array([0.5, 0.3, 0.2], np.float32)
    # By hand: the running mean moves a tenth of the way to the batch's mean (momentum 0.9), then each row is
    # divided by it and renormalised.
    batch_mean = probabilities.mean(0)
    mean = 0.9 * old + 0.1 * batch_mean
    expected = probabilities / mean
    expected /= expected.sum(1, keepdims=True)
    aligned, new_mean = jax.jit(semi.align, static_argnums=2)(jnp.asarray(probabilities), jnp.asarray(old), 0.9)
    np.testing.assert_allclose(new_mean, mean, rtol=1e-6)
    np.testing.assert_allclose(aligned, expected, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(aligned).sum(1), 1.0, rtol=1e-6)
    # An over-predicted class loses confidence: class 0 (running mean 0.5) falls in every row, class 2 rises.
    assert np.all(np.asarray(aligned)[:, 0] < probabilities[:, 0])
    assert np.all(np.asarray(aligned)[:, 2] > probabilities[:, 2])
    # A uniform running mean and momentum 1 change nothing.
    same, kept = semi.align(jnp.asarray(probabilities), jnp.full(3, 1 / 3), 1.0)
    np.testing.assert_allclose(same, probabilities, rtol=1e-6)
    np.testing.assert_allclose(kept, 1 / 3, rtol=1e-6)


def test_thicken_dilates_strokes_by_a_drawn_radius_half_the_time():
    image = np.zeros((9, 9, 1), np.float32)
    image[4, 2:7] = 1.0  # a 1 x 5 stroke: dilated by 1 pixel 3 x 7 = 21 pixels, by 2 pixels 5 x 9 = 45
    thicken = jax.jit(jax.vmap(lambda k: semi.thicken(k, jnp.asarray(image), 2)))
    out = np.asarray(thicken(jax.random.split(jax.random.PRNGKey(0), 2000)))
    sums, counts = np.unique(out.sum((1, 2, 3)), return_counts=True)
    np.testing.assert_array_equal(sums, [5.0, 21.0, 45.0])  # as it is, or dilated by 1 or 2: never thinner
    np.testing.assert_allclose(counts / 2000, [0.5, 0.25, 0.25], atol=0.04)
    assert np.all(out >= image)  # a dilation only adds ink
    grown = out[out.sum((1, 2, 3)) == 21.0][0, :, :, 0]
    np.testing.assert_array_equal(grown[3:6, 1:8], 1.0)  # the 3 x 7 box around the stroke
    assert grown.sum() == 21.0


def test_cutout_zeroes_one_square_and_strong_augmentation_is_per_example_and_deterministic():
    size = 4
    ones = jnp.ones((10, 10, 1))
    cut = jax.jit(lambda key: semi.cutout(key, ones, size))
    full_squares = 0
    for seed in range(20):
        zeros = np.argwhere(np.asarray(cut(jax.random.PRNGKey(seed)))[..., 0] == 0)  # (n, 2) (row, col)
        low, high = zeros.min(0), zeros.max(0)
        side = high - low + 1
        assert len(zeros) == side.prod() and (side <= size).all()  # one rectangle, no larger than the square
        full_squares += int((side == size).all())
    assert full_squares > 0  # an interior centre cuts the whole square
    # The smoke run's strong augmentation on as many images as its `strong_augment.png`: one program for both.
    strong = jax.jit(semi.make_strong(_config()))
    images = jnp.tile(jnp.linspace(0, 1, 64).reshape(1, 8, 8, 1), (64, 1, 1, 1))  # 64 copies of one image
    once, again = strong(jax.random.PRNGKey(0), images), strong(jax.random.PRNGKey(0), images)
    np.testing.assert_array_equal(once, again)
    assert once.shape == images.shape and once.dtype == images.dtype
    assert all(not np.allclose(once[0], once[i]) for i in range(1, 64))  # each copy its own draw
    assert not np.allclose(once, strong(jax.random.PRNGKey(1), images))


@pytest.fixture(scope="module")
def stepper(digits):
    """`steps(method, labels=None, **overrides) -> params` after 3 jitted steps from one state on fixed batches
    (the sampler's), `labels` replacing the training labels; plus the batches' indices."""
    c = _config()
    chosen = semi.labelled_subset(digits.train_labels, c.labels_per_class, c.seed, 10)
    is_labelled = np.zeros(len(digits.train_labels), bool)
    is_labelled[chosen] = True
    model = classifier.make_model(c, 10)
    init = semi.make_init(c, model, digits.image_shape, 10, 10)
    state = jax.jit(init)(jax.random.PRNGKey(0))
    size = c.batch_size * (1 + c.mu)
    data = (jnp.asarray(digits.train_images), jnp.asarray(digits.train_labels), jnp.asarray(is_labelled))
    indices = jax.jit(semi.make_sampler(c.batch_size, len(chosen)), static_argnums=(2, 3))(
        jax.random.PRNGKey(1), data, 3, size
    )
    compiled = {}

    def steps(method, labels=None, **overrides):
        settings_key = (method, tuple(sorted(overrides.items())))
        if settings_key not in compiled:
            config = _config(semi_method=method, **overrides)
            step = functools.partial(semi.train_step, settings=semi.step_settings(config, 30))
            compiled[settings_key] = jax.jit(step)
        step = compiled[settings_key]
        targets = data[1] if labels is None else jnp.asarray(labels)
        current = state
        for i, index in enumerate(indices):
            batch = (data[0][index], targets[index], data[2][index])
            current, metrics = step(current, batch, jax.random.PRNGKey(10 + i))
        return current.params, metrics | {"prediction_mean": current.prediction_mean}

    return steps, np.asarray(indices), is_labelled, c.batch_size


def test_batches_put_labelled_images_first_and_the_step_is_deterministic(stepper):
    steps, indices, is_labelled, labelled = stepper
    assert is_labelled[indices[:, :labelled]].all() and not is_labelled[indices[:, labelled:]].any()
    first, metrics = steps("fixmatch", confidence_threshold=0.0)
    again, _ = steps("fixmatch", confidence_threshold=0.0)
    jax.tree.map(np.testing.assert_array_equal, first, again)
    assert float(metrics["train/mask_rate"]) == 1.0  # threshold 0: every unlabelled image counts


def test_methods_differ_only_in_the_unlabelled_term_which_never_reads_their_labels(stepper, digits):
    steps, indices, is_labelled, _ = stepper
    supervised, metrics = steps("supervised")
    assert "train/mask_rate" not in metrics
    fixmatch, metrics = steps("fixmatch", confidence_threshold=0.0)
    pseudo, _ = steps("pseudo_label", confidence_threshold=0.0)
    silent, _ = steps("fixmatch", confidence_threshold=0.0, lambda_u=0.0)

    def distance(a, b):  # on the host: eager jnp would compile a program for each leaf's shape
        a, b = jax.device_get((a, b))
        return max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

    assert distance(supervised, silent) < 1e-5  # the same labelled batches, augmentation and dropout keys
    assert distance(supervised, fixmatch) > 1e-3 and distance(supervised, pseudo) > 1e-3
    assert distance(fixmatch, pseudo) > 1e-3
    # Distribution alignment moves the running mean of the predictions on (its arithmetic: the test above); without
    # it the mean stays uniform.
    _, aligned_metrics = steps("fixmatch", confidence_threshold=0.0, distribution_alignment=True)
    _, plain_metrics = steps("fixmatch", confidence_threshold=0.0)
    np.testing.assert_allclose(plain_metrics["prediction_mean"], 0.1, rtol=1e-6)
    assert float(np.max(np.abs(np.asarray(aligned_metrics["prediction_mean"]) - 0.1))) > 1e-6
    # The unlabelled images' labels changed: the same parameters (only the pseudo-label accuracy reads them).
    shuffled = digits.train_labels.copy()
    unlabelled = np.flatnonzero(~is_labelled)
    shuffled[unlabelled] = (shuffled[unlabelled] + 1) % 10
    blind, metrics = steps("fixmatch", labels=shuffled, confidence_threshold=0.0)
    jax.tree.map(np.testing.assert_array_equal, fixmatch, blind)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, digits):
    workdir = tmp_path_factory.mktemp("semi_supervised")
    with pytest.MonkeyPatch.context() as patch:
        blank_figures(patch, ("labelled_images",))  # `misclassified.png`, the one picture no test looks at
        return workdir, semi.run(_config(confidence_threshold=0.5), str(workdir), digits)[1]


def test_smoke_run_writes_results_and_logs_the_mask_rate(finished):
    workdir, results = finished
    for name in ("accuracy", "error", "macro_f1", "balanced_accuracy", "loss", "recall/3"):
        assert np.isfinite(results[f"test/{name}_mean"]), name
    assert results["test/error_mean"] == pytest.approx(1 - results["test/accuracy_mean"], abs=1e-6)
    assert results["num_labelled"] == 100 and results["perf/epochs"] == 2
    with open(workdir / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert len(records) == 2 and all(0 <= r["train/mask_rate"] <= 1 for r in records)
    assert {"train/unlabelled_loss", "train/pseudo_label_accuracy", "test/accuracy"} <= set(records[-1])
    for name in ("learning_curve.png", "confusion_matrix.png", "labelled.png", "strong_augment.png"):
        assert os.path.getsize(workdir / "plots" / name) > 1000, name


def test_resume_equals_uninterrupted(tmp_path, finished, digits, interrupt_first_step, without_figures):
    from lepton_jax.interrupt import Interrupted

    config = _config(confidence_threshold=0.5)
    with interrupt_first_step(), pytest.raises(Interrupted):
        semi.run(config, str(tmp_path), digits)
    _, resumed = semi.run(config, str(tmp_path), digits)
    assert resumed["resumed_from_epoch"] == 1 and resumed["params_sha256"] == finished[1]["params_sha256"]


@pytest.mark.parametrize(
    "name,value,allowed",
    [
        ("semi_method", "mixmatch", "one of supervised, pseudo_label, fixmatch"),
        ("confidence_threshold", 1.5, "in [0, 1]"),
        ("mu", 0, ">= 1"),
        ("labels_per_class", 0, ">= 1"),
        ("lambda_u", -1.0, ">= 0"),
        ("strong_scale", 1.0, "in [0, 1)"),
        ("strong_cutout", -2, ">= 0"),
        ("unlabelled_examples", -1, ">= 0"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_key(name, value, allowed):
    from scripts import trainers

    config = _config(**{name: value})
    with pytest.raises(UserError) as error:
        trainers.validate(config)
    message = str(error.value)
    assert "\n" not in message and f"config.{name}={value!r}" in message and allowed in message, message


def test_a_step_larger_than_the_training_set_is_one_line(tmp_path, digits):
    with pytest.raises(UserError, match=r"^config.batch_size \* \(1 \+ config.mu\) = 2000 images a step") as e:
        semi.run(_config(batch_size=500, mu=3), str(tmp_path), digits)
    assert "\n" not in str(e.value)


def test_the_configs_are_valid_and_their_keys_declared_once():
    from scripts import trainers

    for arg in ("mnist", "digits", "digits,smoke", "mnist,strong"):
        trainers.validate(semi_config.get_config(arg))
    assert config_lib.KEYS.keys().isdisjoint(semi_config.KEYS)
