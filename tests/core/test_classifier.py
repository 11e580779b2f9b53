"""The image classifier as a task: BatchNorm/dropout, early stopping with the best parameters kept, the per-class
report (against scikit-learn), its plots, and resume == uninterrupted."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score, recall_score

from lepton_jax.techniques import early_stopping
from lepton_jax.vision import classifier, trained
from lepton_jax.vision import data as image_data
from lepton_jax.vision.configs import classifier as classifier_config


def test_early_stopping_keeps_the_best_and_stops_after_patience():
    early = early_stopping.EarlyStopping.create({"w": jnp.zeros(())})
    scores = [0.5, 0.7, 0.6, 0.7, 0.65, 0.9]  # higher is better; a tie (epoch 3) counts as an improvement
    for epoch, score in enumerate(scores):
        early = early.update({"w": jnp.float32(epoch)}, (score,), epoch, patience=2)
        if epoch == 3:
            assert float(early.best_params["w"]) == 3.0 and int(early.bad_epochs) == 0
    # epoch 4 is worse (one bad evaluation), epoch 5 improves again: patience 2 was never used up
    assert not bool(early.stopped) and float(early.best_params["w"]) == 5.0 and int(early.best_epoch) == 5
    for epoch in (6, 7):
        early = early.update({"w": jnp.float32(epoch)}, (0.1,), epoch, patience=2)
    assert bool(early.stopped) and int(early.bad_epochs) == 2
    frozen = early.update({"w": jnp.float32(8)}, (1.0,), 8, patience=2)  # after stopping nothing changes
    assert float(frozen.best_params["w"]) == 5.0 and int(frozen.best_epoch) == 5 and bool(frozen.stopped)


def test_two_scores_improve_on_either_and_keep_on_both():
    """The GAT rule: (accuracy, -loss); an epoch better in one only resets patience but keeps the old params."""
    early = early_stopping.EarlyStopping.create({"w": jnp.zeros(())}, num_scores=2)
    early = early.update({"w": jnp.float32(1)}, (0.8, -1.0), 0, patience=5)
    early = early.update({"w": jnp.float32(2)}, (0.9, -1.5), 1, patience=5)  # accuracy up, loss worse
    assert int(early.bad_epochs) == 0 and float(early.best_params["w"]) == 1.0
    early = early.update({"w": jnp.float32(3)}, (0.9, -0.9), 2, patience=5)  # both at least their best
    assert float(early.best_params["w"]) == 3.0 and int(early.best_epoch) == 2
    assert not bool(early.update({"w": jnp.float32(4)}, (0.0, -9.0), 3, patience=0).stopped)  # 0: never stops


def _config(**overrides):
    c = classifier_config.get_config("digits,strong,smoke")
    c.conv_features, c.hidden, c.num_seeds, c.num_epochs = (8, 16), 32, 2, 6
    c.val_fraction, c.patience, c.checkpoint_every_epochs = 0.2, 2, 1
    c.train_examples = 400  # of the 1500 training images (320 trained on, 80 held out): 6 steps an epoch
    c.update(overrides)
    return c


@pytest.fixture(scope="module")
def finished(tmp_path_factory, digits):
    workdir = str(tmp_path_factory.mktemp("classifier"))
    state, results = classifier.run(_config(), workdir, digits)
    return workdir, state, results


def test_batch_norm_statistics_are_trained_and_dropout_is_on_only_in_training(finished):
    _, state, _ = finished
    stats = state.model_state["batch_stats"]
    assert set(stats) == {"bn_conv0_0", "bn_conv0_1", "bn_conv1_0", "bn_conv1_1"}
    assert not np.allclose(stats["bn_conv0_0"]["mean"], 0)  # moved from their initial values
    assert "bias" not in state.params["params"]["conv0_0"]  # BatchNorm's offset replaces the bias
    model = classifier.make_model(_config())
    variables = jax.tree.map(lambda x: x[0], state.variables())
    images = jnp.ones((4, 8, 8, 1)) * 0.5
    # Jitted: one program each instead of every layer's operations compiled one by one.
    evaluate = jax.jit(model.apply)
    eval_a, eval_b = evaluate(variables, images), evaluate(variables, images)
    np.testing.assert_array_equal(eval_a, eval_b)

    @jax.jit
    def train_pass(variables, key):
        return model.apply(variables, images, train=True, rngs={"dropout": key}, mutable=["batch_stats"])[0]

    train = [train_pass(variables, jax.random.key(k)) for k in (0, 1)]
    assert not np.allclose(train[0], train[1])


def test_report_uses_the_kept_parameters_and_matches_scikit_learn(finished, digits):
    workdir, state, results = finished
    best = np.asarray(state.early.best_epoch) + 1
    assert results["per_seed/best_epoch"] == best.tolist() and results["perf/epochs"] <= 6
    model, variables = trained.load_trained(workdir, digits.image_shape)  # seed 0's kept variables
    predicted = np.asarray(jnp.argmax(jax.jit(model.apply)(variables, digits.test_images), -1))
    labels = digits.test_labels
    assert results["per_seed/test/accuracy"][0] == pytest.approx(np.mean(predicted == labels), rel=1e-6)  # float32
    assert results["per_seed/test/macro_f1"][0] == pytest.approx(f1_score(labels, predicted, average="macro"))
    assert results["per_seed/test/balanced_accuracy"][0] == pytest.approx(balanced_accuracy_score(labels, predicted))
    recall = recall_score(labels, predicted, average=None)
    assert [results[f"per_seed/test/recall/{c}"][0] for c in range(10)] == pytest.approx(list(recall))
    # Two rows, as the run's two seeds: the shapes of the run's own report, whose compiled operations are reused.
    matrix = classifier.class_report(labels, np.stack([predicted, predicted]), 10)["confusion"][0]
    np.testing.assert_array_equal(matrix, confusion_matrix(labels, predicted))
    for name in ("learning_curve.png", "confusion_matrix.png", "misclassified.png"):
        assert os.path.getsize(os.path.join(workdir, "plots", name)) > 1000


def test_resume_equals_uninterrupted(tmp_path, finished, digits, interrupt_first_step, without_figures):
    """Interrupted after its first epoch and resumed: BatchNorm statistics, dropout keys and the early-stopping
    bookkeeping all continue exactly (the same kept parameters, bit for bit)."""
    from lepton_jax.interrupt import Interrupted

    _, _, results = finished
    with interrupt_first_step(), pytest.raises(Interrupted):
        classifier.run(_config(), str(tmp_path), digits)
    _, resumed = classifier.run(_config(), str(tmp_path), digits)
    assert resumed["resumed_from_epoch"] == 1
    assert resumed["params_sha256"] == results["params_sha256"]
    assert resumed["per_seed/best_epoch"] == results["per_seed/best_epoch"]


def test_validation_from_the_rest_and_early_stopping_on_accuracy(tmp_path, digits, without_figures):
    """`val_from=rest`: every one of the `train_examples` is trained on and the validation images are the ones after
    them; `monitor=accuracy`: the parameters kept are the last epoch's with the best validation accuracy."""
    from lepton_jax.errors import UserError

    config = _config(num_seeds=1, num_epochs=5, patience=0, val_fraction=0.25, val_from="rest", monitor="accuracy")
    (images, _), (val_images, val_labels) = classifier.split_training(digits, config)
    np.testing.assert_array_equal(images, digits.train_images[:400])
    np.testing.assert_array_equal(val_images, digits.train_images[400:500])
    np.testing.assert_array_equal(val_labels, digits.train_labels[400:500])
    _, results = classifier.run(config, str(tmp_path / "run"), digits)
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        curve = [json.loads(line)["val/accuracy"] for line in f]
    assert len(curve) == 5
    best = max(i for i, value in enumerate(curve) if value == max(curve))  # a tie keeps the later epoch
    assert results["per_seed/best_epoch"] == [best + 1]
    with pytest.raises(UserError, match=r"config.val_from='rest' needs 1125 training images after the first 1500") as e:
        classifier.split_training(digits, _config(train_examples=0, val_fraction=0.75, val_from="rest"))
    assert "\n" not in str(e.value)


def test_patience_without_a_validation_split_is_one_line():
    from lepton_jax.errors import UserError
    from lepton_jax.vision.configs import CHECKS

    c = classifier_config.get_config("digits")
    c.patience = 3
    with pytest.raises(UserError, match=r"config.patience=3 needs a validation split .*val_fraction > 0"):
        for check in CHECKS:
            check(c)


def test_classes_are_selected_and_relabelled(digits):
    five_to_nine = image_data.select_classes(digits, "5-9")
    assert five_to_nine.num_classes == 5 and set(five_to_nine.test_labels) == {0, 1, 2, 3, 4}
    np.testing.assert_array_equal(five_to_nine.train_images, digits.train_images[digits.train_labels >= 5])
    np.testing.assert_array_equal(five_to_nine.train_labels, digits.train_labels[digits.train_labels >= 5] - 5)
    assert image_data.parse_classes("3,1") == (3, 1) and image_data.parse_classes("1,1") is None
    from lepton_jax.errors import UserError

    with pytest.raises(UserError, match=r"config.classes='7-12' must list classes of digits \(0..9\)"):
        image_data.select_classes(digits, "7-12")


def test_transfer_copies_the_trunk_and_a_frozen_trunk_stays_put(tmp_path, finished, digits, without_figures):
    from lepton_jax.errors import UserError
    from lepton_jax.techniques import transfer

    source_dir, source_state, _ = finished
    source = jax.tree.map(lambda x: np.asarray(x)[0], source_state.early.best_params)  # what init_from copies
    assert jax.tree.all(jax.tree.map(np.array_equal, transfer.read_variables(source_dir), source))
    common = dict(classes="5-9", init_from=source_dir, num_epochs=2, val_fraction=0.0, patience=0)
    frozen, _ = classifier.run(_config(freeze_trunk=True, **common), str(tmp_path / "frozen"), digits)
    tuned, _ = classifier.run(_config(**common), str(tmp_path / "tuned"), digits)
    for state, stays in ((frozen, True), (tuned, False)):
        variables = jax.tree.map(lambda x: np.asarray(x)[1], state.variables())  # seed 1 starts from seed 0's trunk
        for collection in ("params", "batch_stats"):
            for module, leaves in source[collection].items():
                if module != "head":
                    same = jax.tree.all(jax.tree.map(np.array_equal, variables[collection][module], leaves))
                    assert same == stays, (collection, module)
        assert variables["params"]["head"]["kernel"].shape == (32, 5)
    # A transfer run restores as any other: its masked optimiser and 5 classes, without reading the source again.
    _, restored = trained.load_trained(str(tmp_path / "frozen"), digits.image_shape)
    np.testing.assert_array_equal(
        restored["params"]["head"]["kernel"], np.asarray(frozen.params["params"]["head"]["kernel"])[0]
    )
    bad = _config(conv_features=(8, 12), **common)
    with pytest.raises(
        UserError, match=r"config.init_from: \S+conv1_0\S* has shape \((\d+, )*16,?\) there and"
    ) as error:
        classifier.run(bad, str(tmp_path / "bad"), digits)
    assert "\n" not in str(error.value)
