"""Capsule networks: squash, dynamic routing on a worked example (couplings, agreement, the stop-gradient), the
margin loss against a hand computation, the decoder's mask (the true class in training, the longest capsule at
test), Fig. 4's perturbations, the stem's one-line mistakes, and the trainer: the smoke config learns on the 8x8
digits and writes its pictures, resume == uninterrupted. MultiMNIST: the margin loss with two present classes and
the two-longest-capsules accuracy on worked examples, positions read from centres of mass, the digits kept by
`multi_mnist(components=True)`, and the trainer on pairs of 8x8 digits (learns both, resume == uninterrupted)."""

import functools
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lepton_jax import seeds
from lepton_jax.techniques import augment
from lepton_jax.vision import capsnet, capsnet_multi, classifier
from lepton_jax.vision import data as image_data
from lepton_jax.vision.configs import capsnet as capsnet_config
from tests.conftest import blank_figures, one_line_error


def test_squash_keeps_the_direction_and_maps_the_norm_n_to_n2_over_1_plus_n2():
    directions = jax.random.normal(jax.random.key(0), (5, 8))
    directions /= jnp.linalg.norm(directions, axis=-1, keepdims=True)
    norms = jnp.array([0.1, 0.5, 1.0, 3.0, 10.0])
    v = capsnet.squash(directions * norms[:, None])
    out_norms = jnp.linalg.norm(v, axis=-1)
    np.testing.assert_allclose(out_norms, norms**2 / (1 + norms**2), rtol=1e-5)
    np.testing.assert_allclose(v / out_norms[:, None], directions, atol=1e-6)
    # The zero vector stays zero, with a finite gradient (the norm's square root is kept off 0).
    zero = jnp.zeros((1, 8))
    np.testing.assert_array_equal(capsnet.squash(zero), zero)
    assert np.all(np.isfinite(jax.grad(lambda s: capsnet.squash(s).sum())(zero)))


# Two children, two parents, 2-D predictions: both children predict (1, 0) for parent 0 (they agree), and (0, 1)
# and (0, -1) for parent 1 (they cancel).
U_HAT = jnp.array([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, -1.0]]])  # (children, parents, dim)


def test_routing_on_a_worked_example():
    # Iteration 1: uniform couplings 1/2; s_0 = (1, 0) -> v_0 = (1/2, 0); s_1 = 0 -> v_1 = 0.
    v, c = capsnet.dynamic_routing(U_HAT, iterations=1)
    np.testing.assert_allclose(c, 0.5)
    np.testing.assert_allclose(v, [[0.5, 0.0], [0.0, 0.0]], atol=1e-6)
    # Then b_i0 += u_hat_0|i . v_0 = 1/2 and b_i1 += 0: c_i0 = e^0.5 / (e^0.5 + 1) = sigmoid(0.5) for both children.
    v, c = capsnet.dynamic_routing(U_HAT, iterations=2)
    agree = 1 / (1 + np.exp(-0.5))
    np.testing.assert_allclose(c, [[agree, 1 - agree], [agree, 1 - agree]], rtol=1e-6)
    assert agree > 0.5  # the agreeing pair is coupled more tightly than before the iteration
    s0 = 2 * agree  # s_0 = c_00 (1, 0) + c_10 (1, 0); s_1 = (1 - agree) ((0, 1) + (0, -1)) = 0
    np.testing.assert_allclose(v, [[s0**2 / (1 + s0**2), 0.0], [0.0, 0.0]], rtol=1e-6, atol=1e-6)
    # Any predictions: each child's couplings sum to 1 over the parents, after every number of iterations.
    u_hat = jax.random.normal(jax.random.key(1), (3, 6, 4, 5))  # (batch, children, parents, dim)
    for iterations in (1, 2, 3):
        v, c = capsnet.dynamic_routing(u_hat, iterations)
        assert v.shape == (3, 4, 5) and c.shape == (3, 6, 4)
        np.testing.assert_allclose(c.sum(-1), 1.0, rtol=1e-6)


def test_with_the_stop_gradient_the_couplings_are_constants_to_backpropagation():
    u_hat = jax.random.normal(jax.random.key(2), (6, 4, 5))
    weights = jax.random.normal(jax.random.key(3), (4, 5))

    def loss(u, stop_gradient):
        return jnp.sum(capsnet.dynamic_routing(u, 3, stop_gradient)[0] * weights)

    coupling = capsnet.dynamic_routing(u_hat, 3)[1]  # the last iteration's, held fixed

    def fixed(u):
        return jnp.sum(capsnet.squash(jnp.einsum("ij,ijd->jd", coupling, u)) * weights)

    grad = jax.jit(jax.grad(loss), static_argnums=1)
    stopped = grad(u_hat, True)
    np.testing.assert_allclose(stopped, jax.jit(jax.grad(fixed))(u_hat), rtol=1e-5, atol=1e-6)
    assert not np.allclose(grad(u_hat, False), stopped, atol=1e-4)  # through the couplings too


def test_margin_loss_against_a_hand_computation():
    lengths = jnp.array([[0.95, 0.3, 0.05], [0.5, 0.8, 0.2]])
    targets = jax.nn.one_hot(jnp.array([0, 2]), 3)
    # Example 0: present class above m+ (0), 0.5 (0.3 - 0.1)^2 = 0.02, 0.05 below m- (0).
    # Example 1: 0.5 (0.5 - 0.1)^2 = 0.08, 0.5 (0.8 - 0.1)^2 = 0.245, present (0.9 - 0.2)^2 = 0.49.
    np.testing.assert_allclose(capsnet.margin_loss(lengths, targets), [0.02, 0.815], rtol=1e-5)
    both = jnp.array([[1.0, 1.0, 0.0]])  # two digits present (MultiMNIST's targets)
    np.testing.assert_allclose(capsnet.margin_loss(lengths[1:], both), [0.16 + 0.01 + 0.005], rtol=1e-5)


def _tiny_config(**overrides):
    c = capsnet_config.get_config("digits,smoke")
    c.conv_features, c.primary_types, c.primary_dim, c.capsule_dim, c.decoder_sizes = (8,), 4, 4, 6, (16,)
    c.batch_norm = False
    c.update(overrides)
    return c


def test_the_decoder_sees_the_true_class_in_training_and_the_longest_capsule_at_test():
    lengths = jnp.array([[0.1, 0.7, 0.3], [0.9, 0.2, 0.4]])
    np.testing.assert_array_equal(capsnet.reconstruction_mask(lengths), [[0, 1, 0], [1, 0, 0]])
    np.testing.assert_array_equal(capsnet.reconstruction_mask(lengths, jnp.array([2, 1])), [[0, 0, 1], [0, 1, 0]])

    config = _tiny_config()
    model = capsnet.make_model(config, 10, (8, 8, 1))
    state = jax.jit(classifier.make_init(config, model, (8, 8, 1)))(jax.random.key(0))
    images = jax.random.uniform(jax.random.key(1), (4, 8, 8, 1))
    out = jax.jit(model.apply)(state.params, images)
    decode = jax.jit(functools.partial(model.apply, method="decode"))
    longest = jax.nn.one_hot(jnp.argmax(out.lengths, -1), 10)
    np.testing.assert_allclose(out.reconstructions, decode(state.params, out.capsules, longest), rtol=1e-6)
    # Labels that are never the longest capsule: the step's reconstruction loss is the true classes' decoding's.
    labels = (jnp.argmax(out.lengths, -1) + 1) % 10
    weight = config.reconstruction_weight
    truth = decode(state.params, out.capsules, jax.nn.one_hot(labels, 10))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(state, batch, key):
        return capsnet.train_step(state, batch, key, weight=weight)

    new_state, metrics = step(state, (images, labels), jax.random.key(2))
    expected = weight * capsnet.squared_error(truth, images).mean()
    np.testing.assert_allclose(metrics["train/reconstruction_loss"], expected, rtol=1e-5)
    unexpected = weight * capsnet.squared_error(out.reconstructions, images).mean()
    assert not np.isclose(float(metrics["train/reconstruction_loss"]), float(unexpected), rtol=1e-3)
    margin = capsnet.margin_loss(out.lengths, jax.nn.one_hot(labels, 10)).mean()
    np.testing.assert_allclose(metrics["train/margin_loss"], margin, rtol=1e-5)
    step(new_state, (images, labels), jax.random.key(3))  # the same program again: no second trace


def test_perturbed_dimensions_move_one_dimension_each():
    capsule = jnp.array([0.1, -0.2, 0.3])
    moved = capsnet.perturb_dimensions(capsule, [-0.25, 0.0, 0.25])
    assert moved.shape == (3, 3, 3)
    np.testing.assert_allclose(moved[1, 2], [0.1, 0.05, 0.3], rtol=1e-6)
    np.testing.assert_allclose(moved[2, 0], [0.1, -0.2, 0.05], rtol=1e-6)
    np.testing.assert_allclose(moved[:, 1], jnp.broadcast_to(capsule, (3, 3)))


def test_a_stem_that_does_not_fit_is_one_line():
    config = capsnet_config.get_config("mnist")
    config.conv_strides = (1, 2)
    one_line_error(lambda: capsnet_config.check_stem(config), "conv_features 4", "conv_strides 2")
    # The MNIST stem leaves a 1x1 map from 8x8 digits: the first kernel too large for its input is named.
    config = capsnet_config.get_config("mnist")
    one_line_error(
        lambda: capsnet.make_model(config, 10, (8, 8, 1)), "config.conv_kernels[2]=3", "larger than the 1x1 map"
    )
    assert capsnet.feature_sides(config, (28, 28, 1)) == [24, 11, 9, 7, 3]
    from scripts import trainers

    for arg in ("mnist", "digits", "digits,smoke", "mnist,sabour"):  # every key of every preset is declared
        trainers.validate(capsnet_config.get_config(arg))


def _smoke_config():
    config = capsnet_config.get_config("digits,smoke")  # 2 epochs of 30 steps
    config.num_seeds = 2
    return config


@pytest.fixture(scope="module")
def finished(tmp_path_factory, digits):
    workdir = str(tmp_path_factory.mktemp("capsnet"))
    state, results = capsnet.run(_smoke_config(), workdir, digits)
    return workdir, state, results


def test_the_smoke_config_learns_the_digits_and_draws_its_pictures(finished):
    workdir, _, results = finished
    accuracy = results["per_seed/test/accuracy"]
    assert len(accuracy) == 2 and min(accuracy) > 0.5, accuracy  # chance is 0.1
    np.testing.assert_allclose(results["per_seed/test/error"], 1 - np.asarray(accuracy), atol=1e-6)
    assert results["num_seeds"] == 2 and np.isfinite(results["test/loss_mean"])
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert [row["step"] for row in rows] == [1, 2] and all("test/accuracy" in row for row in rows)
    for name in ("reconstructions.png", "capsule_dimensions.png", "learning_curve.png", "confusion_matrix.png"):
        assert os.path.getsize(os.path.join(workdir, "plots", name)) > 1000, name


def test_resume_equals_uninterrupted(tmp_path, finished, digits, interrupt_first_step, without_figures):
    from lepton_jax.interrupt import Interrupted

    _, _, results = finished
    with interrupt_first_step(), pytest.raises(Interrupted, match="epoch 1/"):
        capsnet.run(_smoke_config(), str(tmp_path), digits)
    _, resumed = capsnet.run(_smoke_config(), str(tmp_path), digits)
    assert resumed["resumed_from_epoch"] == 1
    assert resumed["params_sha256"] == results["params_sha256"]
    assert resumed["per_seed/test/accuracy"] == results["per_seed/test/accuracy"]


# ---- MultiMNIST: two digits per image ----------------------------------------------------------------------------


def test_margin_loss_with_two_present_classes_on_a_worked_example():
    lengths = jnp.array([[0.95, 0.3, 0.05, 0.6], [0.5, 0.8, 0.2, 0.0]])
    labels = jnp.array([[0, 3], [2, 2]])  # the second image's two digits share class 2: present once
    targets = capsnet.present(labels, 4)
    np.testing.assert_array_equal(targets, [[1, 0, 0, 1], [0, 0, 1, 0]])
    # Image 0: class 0 above m+ (0), 0.5 (0.3 - 0.1)^2 = 0.02, 0.05 below m- (0), present (0.9 - 0.6)^2 = 0.09.
    # Image 1: 0.5 (0.5 - 0.1)^2 = 0.08, 0.5 (0.8 - 0.1)^2 = 0.245, present (0.9 - 0.2)^2 = 0.49 (once), 0.
    np.testing.assert_allclose(capsnet.margin_loss(lengths, targets), [0.11, 0.815], rtol=1e-5)
    np.testing.assert_array_equal(capsnet.present(jnp.array([1, 3]), 4), jax.nn.one_hot(jnp.array([1, 3]), 4))


def test_an_image_is_right_when_both_digits_are_among_the_two_longest_capsules():
    lengths = jnp.array([[0.9, 0.1, 0.8, 0.2], [0.9, 0.85, 0.1, 0.2], [0.3, 0.2, 0.1, 0.9], [0.1, 0.7, 0.6, 0.65]])
    labels = jnp.array([[2, 0], [0, 2], [3, 3], [3, 1]])
    # {0, 2} in either order; {0, 1} misses 2 (one digit right is not enough); {3, 0} holds the shared class 3;
    # {1, 3}: the third longest (0.6) is not read.
    np.testing.assert_array_equal(capsnet.recognised(lengths, labels), [True, False, True, True])
    # With a seed axis (seed 1's capsules in reverse order: no image's two longest hold its digits); and one digit
    # per image: the longest capsule.
    both = jnp.stack([lengths, lengths[::-1]])
    np.testing.assert_array_equal(capsnet.recognised(both, labels), [[True, False, True, True], [False] * 4])
    np.testing.assert_array_equal(capsnet.recognised(lengths, jnp.array([0, 1, 3, 2])), [True, False, True, False])


def test_positions_are_read_from_the_centres_of_mass_along_the_diagonal(digits):
    blobs = np.zeros((2, 2, 5, 5, 1), np.float32)
    blobs[0, 0, 3:, 3:] = 1.0  # image 0: digit 0 bottom-right, digit 1 top-left
    blobs[0, 1, :2, :2] = 1.0
    blobs[1, 0, 0, 1] = blobs[1, 1, 4, 0] = 1.0  # image 1: row + column 1 before 4
    np.testing.assert_array_equal(capsnet_multi.position_order(jnp.asarray(blobs)), [[1, 0], [0, 1]])
    # MultiMNIST's own digits (first up-left, second down-right) are always in that order; the images are the
    # pixelwise maximum of the digits kept with `components=True`, and the same as without.
    built = image_data.multi_mnist(digits, seed=0, max_shift=2, size=12, components=True)
    plain = image_data.multi_mnist(digits, seed=0, max_shift=2, size=12)
    for with_digits, without in zip(built[1:5], plain[1:5]):
        np.testing.assert_array_equal(with_digits, without)
    assert plain.train_components is None and built.train_components.shape == (1500, 2, 12, 12, 1)
    for split in ("train", "test"):
        images, components = getattr(built, f"{split}_images"), getattr(built, f"{split}_components")
        np.testing.assert_array_equal(components.max(axis=1), images)
        order = capsnet_multi.position_order(jnp.asarray(components))
        np.testing.assert_array_equal(order, np.broadcast_to([0, 1], order.shape))


def test_the_multi_digit_presets_are_valid_and_their_mistakes_are_one_line():
    from scripts import trainers

    for arg in ("multi_mnist", "multi_mnist,smoke", "multi_digits", "multi_digits,smoke"):
        trainers.validate(capsnet_config.get_config(arg))
    config = capsnet_config.get_config("multi_mnist")
    assert capsnet.feature_sides(config, (36, 36, 1)) == [32, 15, 13, 11, 5]  # 5 x 5 x 8 = 200 primary capsules
    config.dataset = "multi_cifar"
    one_line_error(lambda: capsnet_multi.load_data(config), "unknown dataset 'multi_cifar'", "multi_mnist, multi_")
    config = capsnet_config.get_config("mnist")
    config.dataset = "multi_mnist"  # the single-digit preset has no MultiMNIST keys
    one_line_error(
        lambda: capsnet_multi.load_data(config), "no max_shift, image_size, test_examples", "capsnet.py:multi_"
    )


def test_both_digits_move_with_their_image():
    config = capsnet_config.get_config("multi_digits")
    config.augment_crop = 2
    augment_fn = augment.make(config)
    digits = jax.random.uniform(jax.random.key(0), (6, 2, 12, 12, 1))
    key = jax.random.key(1)
    moved = jax.jit(functools.partial(capsnet_multi.augment_digits, augment_fn))(key, digits)
    # Whole-pixel shifts: the moved digits' maximum is the moved image, each image moved by its own draw.
    np.testing.assert_allclose(moved.max(axis=1), jax.jit(augment_fn)(key, digits.max(axis=1)), atol=1e-6)
    assert not np.allclose(moved, digits)


def _multi_config():
    config = capsnet_config.get_config("multi_digits,smoke")  # 12x12 pairs, 30 steps an epoch
    # A narrower network than the preset's at twice its rate, without shifts (`augment_digits` is tested above):
    # learns faster on two cores (2 epochs: about 32 % of the test pairs right, 36-54 % per position, over seeds 0-3).
    config.num_seeds, config.augment_crop, config.lr = 1, 0, 6e-3
    config.conv_features, config.primary_types, config.decoder_sizes = (16,), 4, (64, 128)
    return config


@pytest.fixture(scope="module")
def finished_multi(tmp_path_factory, digits):
    workdir = str(tmp_path_factory.mktemp("capsnet_multi"))
    with pytest.MonkeyPatch.context() as patch:  # the Fig. 5 grid drawn, the report's other figures blank
        blank_figures(patch, ("curves", "confusion_matrix", "labelled_images"))
        state, results = capsnet.run(_multi_config(), workdir, digits)
    return workdir, state, results


def test_the_multi_digit_smoke_run_learns_both_digits(finished_multi, digits):
    workdir, state, results = finished_multi
    # Chance: both digits among two of ten capsules 1/45; one position's class 1/10.
    assert results["test/accuracy_mean"] > 0.15, results["test/accuracy_mean"]
    for task in ("left", "right"):
        assert results[f"test/{task}/accuracy_mean"] > 0.25, results[f"test/{task}/accuracy_mean"]
    np.testing.assert_allclose(results["test/error_mean"], 1 - results["test/accuracy_mean"], atol=1e-6)
    # Both accuracies recomputed from the final parameters' capsules on the test images.
    data = capsnet_multi.load_data(_multi_config(), digits)
    model = capsnet.make_model(_multi_config(), 10, data.image_shape)
    read_digits = jax.jit(functools.partial(capsnet.read_digits, model))
    capsule_lengths, read, _ = read_digits(seeds.tree_slice(state.variables(), 0), data.test_components)
    right = np.asarray(capsnet.recognised(capsule_lengths, jnp.asarray(data.test_labels)))
    np.testing.assert_allclose(results["test/accuracy_mean"], right.mean(), rtol=1e-6)
    for t, task in enumerate(("left", "right")):
        at_position = np.mean(np.asarray(read)[:, t] == data.test_labels[:, t])
        np.testing.assert_allclose(results[f"test/{task}/accuracy_mean"], at_position, rtol=1e-6)
    assert np.all(right[np.all(np.asarray(read) == data.test_labels, axis=1)])  # right at both places: as a set
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert [row["step"] for row in rows] == [1, 2] and all("test/left/accuracy" in row for row in rows)
    assert os.path.getsize(os.path.join(workdir, "plots", "reconstructions.png")) > 1000
    assert os.path.exists(os.path.join(workdir, "plots", "left", "confusion_matrix.png"))


def test_multi_digit_resume_equals_uninterrupted(
    tmp_path, finished_multi, digits, interrupt_first_step, without_figures
):
    from lepton_jax.interrupt import Interrupted

    _, _, results = finished_multi
    with interrupt_first_step(), pytest.raises(Interrupted, match="epoch 1/"):
        capsnet.run(_multi_config(), str(tmp_path), digits)
    _, resumed = capsnet.run(_multi_config(), str(tmp_path), digits)
    assert resumed["resumed_from_epoch"] == 1
    assert resumed["params_sha256"] == results["params_sha256"]
    assert resumed["per_seed/test/left/accuracy"] == results["per_seed/test/left/accuracy"]
