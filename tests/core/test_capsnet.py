"""Capsule networks: squash, dynamic routing on a worked example (couplings, agreement, the stop-gradient), the
margin loss against a hand computation, the decoder's mask (the true class in training, the longest capsule at
test), Fig. 4's perturbations, the stem's one-line mistakes, and the trainer: the smoke config learns on the 8x8
digits and writes its pictures, resume == uninterrupted."""

import functools
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lepton_jax.vision import capsnet, classifier
from lepton_jax.vision.configs import capsnet as capsnet_config
from tests.conftest import one_line_error


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
