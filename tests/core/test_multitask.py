"""Multi-task learning: MultiMNIST's construction (deterministic, different classes, the top-left digit is `left`,
the maximum where digits overlap, nearest resizing as PIL's), the weighted loss and the shared trunk against hand
computations, the task keys' one-line mistakes, and the trainer: per-task accuracies recomputed from the kept
parameters, a weight-0 task's head untouched, the single-task baseline through the registry, resume ==
uninterrupted."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lepton_jax import config as config_lib
from lepton_jax import seeds
from lepton_jax.errors import UserError
from lepton_jax.techniques import multitask
from lepton_jax.vision import classifier
from lepton_jax.vision import data as image_data
from lepton_jax.vision import multitask as trainer
from lepton_jax.vision.configs import multitask as multitask_config


def test_multi_mnist_is_deterministic_and_its_labels_differ(digits):
    built = image_data.multi_mnist(digits, seed=0, max_shift=2, size=12)
    again = image_data.multi_mnist(digits, seed=0, max_shift=2, size=12)
    for a, b in zip(built[1:5], again[1:5]):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(image_data.multi_mnist(digits, seed=1, max_shift=2, size=12).train_images, built[1])
    assert built.train_images.shape == (1500, 12, 12, 1) and built.test_images.shape == (297, 12, 12, 1)
    assert built.train_labels.shape == (1500, 2) and built.train_labels.dtype == np.int32
    assert built.tasks == ("left", "right") and built.image_shape == (12, 12, 1)
    for labels in (built.train_labels, built.test_labels):
        assert np.all(labels[:, 0] != labels[:, 1])
    assert built.train_images.min() >= 0.0 and built.train_images.max() <= 1.0
    # Each source image is the first digit of exactly one pair (one pass); the partners cover every class.
    np.testing.assert_array_equal(np.bincount(built.train_labels[:, 0]), np.bincount(digits.train_labels))
    assert set(built.train_labels[:, 1]) == set(range(10))
    # The test set has its own stream: a smaller training set leaves it as it was.
    fewer = image_data.multi_mnist(digits, seed=0, num_train=100, max_shift=2, size=12)
    assert len(fewer.train_images) == 100
    np.testing.assert_array_equal(fewer.test_images, built.test_images)
    # Default size: the source's (Sener & Koltun's 28x28 for MNIST), here 8x8.
    assert image_data.multi_mnist(digits, seed=0, num_train=10, num_test=10).image_shape == (8, 8, 1)


def test_the_top_left_digit_is_the_left_label_and_shifts_stay_in_range():
    """Each class is one bright pixel at the image's centre, valued (class + 1) / 10: on the unresized canvas the
    two pixels show where each digit went and which digit it was."""
    classes = np.repeat(np.arange(10, dtype=np.int32), 4)  # 40 images, 4 per class
    images = np.zeros((40, 5, 5, 1), np.float32)
    images[:, 2, 2, 0] = (classes + 1) / 10
    source = image_data.ImageData("dots", images, classes, images, classes)
    built = image_data.multi_mnist(source, seed=3, num_train=400, max_shift=3, size=11)  # canvas 5 + 2 * 3
    offsets = set()
    for image, (left, right) in zip(built.train_images[..., 0], built.train_labels):
        rows, cols = np.nonzero(image)
        assert len(rows) == 2
        first, second = np.lexsort((cols, rows))  # the top-left pixel first
        # The centre of the canvas is (5, 5); the first digit moved 1..3 up and left, the second 1..3 down, right.
        assert 2 <= rows[first] <= 4 and 2 <= cols[first] <= 4 and 6 <= rows[second] <= 8 and 6 <= cols[second] <= 8
        assert image[rows[first], cols[first]] == pytest.approx((left + 1) / 10)
        assert image[rows[second], cols[second]] == pytest.approx((right + 1) / 10)
        offsets.update({5 - rows[first], 5 - cols[first], rows[second] - 5, cols[second] - 5})
    assert offsets == {1, 2, 3}


def test_overlay_takes_the_maximum_and_resize_samples_nearest_as_pil():
    first = np.array([[1.0, 0.2], [0.0, 0.5]], np.float32)[None, ..., None]
    second = np.array([[0.3, 0.9], [0.4, 0.0]], np.float32)[None, ..., None]
    pair = image_data.overlay(first, second, np.array([[0, 0]]), np.array([[1, 1]]), (3, 3))
    expected = [[1.0, 0.2, 0.0], [0.0, 0.5, 0.9], [0.0, 0.4, 0.0]]  # max(0.5, 0.3) where they overlap
    np.testing.assert_allclose(pair[0, ..., 0], expected)
    from PIL import Image

    canvas = np.random.default_rng(0).random((36, 36)).astype(np.float32)
    reference = np.asarray(Image.fromarray(canvas, mode="F").resize((28, 28), Image.NEAREST))
    np.testing.assert_array_equal(image_data.resize_nearest(canvas[None, ..., None], (28, 28))[0, ..., 0], reference)


def test_weighted_loss_is_the_hand_sum():
    losses = {"left": jnp.array([0.7, 1.0]), "right": jnp.array([2.0, 4.0])}  # per seed
    total, terms = multitask.weighted_loss(losses, {"left": 2.0, "right": 0.5})
    np.testing.assert_allclose(total, [2 * 0.7 + 0.5 * 2.0, 2 * 1.0 + 0.5 * 4.0], rtol=1e-6)
    np.testing.assert_allclose(terms["right"], [1.0, 2.0])
    with pytest.raises(ValueError, match="losses of tasks"):
        multitask.weighted_loss(losses, {"left": 1.0})


def test_each_head_is_a_dense_layer_on_the_shared_trunks_features():
    cnn = classifier.CNN(conv_features=(4,), hidden=6)
    model = multitask.MultiHead(cnn, {"a": 3, "b": 5}, method="features")
    images = jax.random.uniform(jax.random.key(1), (2, 8, 8, 1))
    # Jitted: one program each instead of every layer's operations compiled one by one.
    params = jax.jit(model.init)(jax.random.key(0), images)["params"]
    assert set(params) == {"trunk", "head_a", "head_b"} and "head" not in params["trunk"]  # the CNN's own head unused
    outputs = jax.jit(model.apply)({"params": params}, images)
    features = jax.jit(functools.partial(cnn.apply, method="features"))({"params": params["trunk"]}, images)  # (2, 6)
    for task, classes in (("a", 3), ("b", 5)):
        head = params[f"head_{task}"]
        assert outputs[task].shape == (2, classes)
        np.testing.assert_allclose(outputs[task], features @ head["kernel"] + head["bias"], rtol=1e-5, atol=1e-6)


def _weights(**values):
    return multitask.task_weights(ml_collections.ConfigDict(values), ("left", "right"))


def test_task_weights_and_their_mistakes_are_one_line():
    assert _weights() == {"left": 1.0, "right": 1.0}
    assert _weights(task_weights="right:0.5") == {"left": 1.0, "right": 0.5}
    assert _weights(task_weights=" left : 2 , right:0") == {"left": 2.0, "right": 0.0}
    assert _weights(single_task="right") == {"right": 1.0}
    mistakes = {
        "left:x": "config.task_weights='left:x' is not allowed: it must be comma-separated task:weight pairs",
        "left:-1": "config.task_weights='left:-1' is not allowed",
        "left:1,left:2": "is not allowed: .*each task once",
        "left:inf": "is not allowed",
        "left": "config.task_weights='left' is not allowed",
        "middle:1": "config.task_weights='middle:1' names 'middle', not a task of this trainer; its tasks: left, right",
        "left:0,right:0": "config.task_weights='left:0,right:0' weighs every task 0",
    }
    for value, message in mistakes.items():
        with pytest.raises(UserError, match=message) as error:
            _weights(task_weights=value)
        assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="config.single_task='middle' is not a task of this trainer; its tasks: left"):
        _weights(single_task="middle")
    with pytest.raises(UserError, match="config.single_task='left' trains one task alone, so config.task_weights"):
        _weights(single_task="left", task_weights="right:2")
    # At launch: the config's keys against their declarations (the vision pillar's table and this trainer's).
    from lepton_jax.vision import configs as vision_configs

    keys, checks = vision_configs.KEYS | multitask_config.KEYS, (*vision_configs.CHECKS, multitask_config.check_tasks)
    for arg in ("mnist", "digits,strong,smoke"):
        config_lib.validate(multitask_config.get_config(arg), keys, checks)
    for value, message in (("left=1", "is not allowed: it must be comma-sep"), ("right:1,up:2", "names 'up', not")):
        bad = multitask_config.get_config("digits")
        bad.task_weights = value
        with pytest.raises(UserError, match=rf"^config.task_weights='{value}' {message}"):
            config_lib.validate(bad, keys, checks)


def _config(**overrides):
    c = multitask_config.get_config("digits,strong,smoke")
    c.conv_features, c.hidden, c.num_seeds, c.num_epochs = (4, 8), 16, 2, 3
    c.train_examples, c.test_examples, c.batch_size = 400, 100, 40
    c.val_fraction, c.checkpoint_every_epochs = 0.2, 1
    c.update(overrides)
    return c


# For tests where BatchNorm, dropout and a deep trunk play no part: one plain convolution block, whose step traces
# and compiles in about 60 % of the strong network's time.
PLAIN_TRUNK = dict(conv_features=(4,), convs_per_block=1, batch_norm=False, dropout=0.0, pool="avg")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, digits):
    workdir = str(tmp_path_factory.mktemp("multitask"))
    state, results = trainer.run(_config(), workdir, digits)
    return workdir, state, results


def test_per_task_accuracies_are_those_of_the_kept_parameters(finished, digits):
    workdir, state, results = finished
    data = trainer.load_data(_config(), digits)
    apply = jax.jit(trainer.make_model(_config(), {"left": 10, "right": 10}).apply)  # one program for both seeds
    for seed in range(2):
        variables = seeds.tree_slice(state.early.best_params, seed)
        logits = apply(variables, data.test_images)
        for column, task in enumerate(("left", "right")):
            accuracy = np.mean(np.asarray(jnp.argmax(logits[task], -1)) == data.test_labels[:, column])
            assert results[f"per_seed/test/{task}/accuracy"][seed] == pytest.approx(accuracy, abs=1e-6)
    total = [results[f"per_seed/test/{t}/loss"] for t in ("left", "right")]
    assert results["per_seed/test/loss"] == pytest.approx(np.sum(total, axis=0), rel=1e-5)  # weights 1, 1
    with open(os.path.join(workdir, "results.json")) as f:
        assert json.load(f)["test/left/accuracy_mean"] == results["test/left/accuracy_mean"]
    for name in ("learning_curve.png", "examples.png", "left/confusion_matrix.png", "right/misclassified.png"):
        assert os.path.getsize(os.path.join(workdir, "plots", name)) > 1000


def test_a_task_weighing_zero_trains_nothing_through_its_head(digits):
    config = _config(val_fraction=0.0, **PLAIN_TRUNK)
    model = trainer.make_model(config, {"left": 10, "right": 10})
    state = jax.jit(classifier.make_init(config, model, (12, 12, 1)))(jax.random.key(0))
    data = trainer.load_data(config, digits)
    batch = (data.train_images[:16], {"left": data.train_labels[:16, 0], "right": data.train_labels[:16, 1]})
    step = jax.jit(functools.partial(trainer.train_step, weights={"left": 1.0, "right": 0.0}))
    after, metrics = step(state, batch, jax.random.key(1))
    assert float(metrics["train/loss"]) == pytest.approx(float(metrics["train/left/loss"]))
    unchanged = jax.tree.map(np.array_equal, after.params["params"]["head_right"], state.params["params"]["head_right"])
    assert jax.tree.all(unchanged)
    for module in ("head_left", "trunk"):
        moved = jax.tree.map(np.array_equal, after.params["params"][module], state.params["params"][module])
        assert not jax.tree.all(moved), module


def test_single_task_baseline_through_the_registry(tmp_path, without_figures):
    from lepton_jax import registry

    config = _config(single_task="left", num_seeds=1, num_epochs=1, val_fraction=0.0, **PLAIN_TRUNK)
    results = registry.get("multitask_classifier")(config, str(tmp_path))
    assert results["per_seed/test/left/accuracy"][0] > 0.0
    assert not [name for name in results if "/right/" in name]
    assert sorted(os.listdir(tmp_path / "plots")) == ["examples.png", "learning_curve.png", "left"]


def test_resume_equals_uninterrupted(tmp_path, finished, digits, interrupt_first_step, without_figures):
    """Interrupted after its first epoch and resumed: BatchNorm statistics, dropout keys and the early-stopping
    bookkeeping continue exactly (the same kept parameters, bit for bit)."""
    from lepton_jax.interrupt import Interrupted

    _, _, results = finished
    with interrupt_first_step(), pytest.raises(Interrupted):
        trainer.run(_config(), str(tmp_path), digits)
    _, resumed = trainer.run(_config(), str(tmp_path), digits)
    assert resumed["resumed_from_epoch"] == 1
    assert resumed["params_sha256"] == results["params_sha256"]
    assert resumed["per_seed/test/right/accuracy"] == results["per_seed/test/right/accuracy"]
