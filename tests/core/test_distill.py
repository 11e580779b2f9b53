"""Knowledge distillation (`lepton_jax/techniques/distill.py`): the loss and its gradient against hand computations,
its float32 result from bf16 logits, a teacher that gets no gradient, a teacher read from a finished digits run
giving that run's own logits, and each bad teacher or key as one `UserError` line."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from lepton_jax.techniques import distill
from lepton_jax.vision import classifier, trained
from lepton_jax.vision.configs import classifier as classifier_config
from tests.conftest import one_line_error

# A worked example: 3 examples of 4 classes (an example where student and teacher disagree, a confident teacher).
STUDENT = np.array([[1.0, 2.0, 0.5, -1.0], [0.0, 0.0, 3.0, 1.0], [-2.0, 4.0, 1.0, 0.0]], np.float32)
TEACHER = np.array([[3.0, 1.0, 0.0, -2.0], [0.5, -1.0, 6.0, 0.0], [0.0, 8.0, -1.0, 1.0]], np.float32)
LABELS = np.array([0, 2, 1], np.int32)


def softmax(logits):
    """softmax over the last axis in float64, by hand."""
    shifted = np.asarray(logits, np.float64) - np.max(logits, -1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(-1, keepdims=True)


def hand_loss(student, teacher, labels, temperature, alpha):
    """(B,) alpha T^2 KL(p_t || p_s) + (1 - alpha) CE, in float64 from the definitions."""
    p_s, p_t = softmax(student / temperature), softmax(teacher / temperature)
    kl = np.sum(p_t * np.log(p_t / p_s), -1)
    ce = -np.log(softmax(student)[np.arange(len(labels)), labels])
    return alpha * temperature**2 * kl + (1 - alpha) * ce


@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_loss_is_the_hand_computation(temperature, alpha):
    got = distill.loss(STUDENT, TEACHER, LABELS, temperature, alpha)
    assert got.shape == (3,) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, hand_loss(STUDENT, TEACHER, LABELS, temperature, alpha), rtol=1e-5, atol=1e-6)
    if alpha == 1.0:  # soft targets only: the labels are not needed and change nothing
        np.testing.assert_array_equal(distill.loss(STUDENT, TEACHER, None, temperature, 1.0), got)


def student_grad(student, teacher, labels, temperature, alpha):
    """d/d student of the batch's summed loss."""
    return jax.grad(lambda s: distill.loss(s, teacher, labels, temperature, alpha).sum())(student)


@pytest.mark.parametrize("temperature", [1.0, 4.0, 20.0])
@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_gradient_is_t_times_the_difference_of_the_softened_distributions(temperature, alpha):
    """d/ds [T^2 KL(softmax(t/T) || softmax(s/T))] = T^2 (q_s - q_t) / T = T (q_s - q_t), q = softmax(./T); the
    hard term adds (1 - alpha)(softmax(s) - onehot(y))."""
    soft = temperature * (softmax(STUDENT / temperature) - softmax(TEACHER / temperature))
    hard = softmax(STUDENT) - np.eye(4)[LABELS]
    got = student_grad(STUDENT, TEACHER, LABELS, temperature, alpha)
    np.testing.assert_allclose(got, alpha * soft + (1 - alpha) * hard, rtol=1e-4, atol=1e-6)


def test_soft_gradient_keeps_its_scale_at_high_temperature():
    """Why T^2: for logits of zero mean over the K classes, T (q_s - q_t) tends to (s - t) / K whatever T is;
    without the factor it would be T^2 times smaller."""
    student, teacher = STUDENT - STUDENT.mean(1, keepdims=True), TEACHER - TEACHER.mean(1, keepdims=True)
    for temperature in (100.0, 1000.0):  # the gap closes as 1/T (the next term of the softmax's expansion)
        got = student_grad(student, teacher, None, temperature, 1.0)
        np.testing.assert_allclose(got, (student - teacher) / 4, rtol=0, atol=3.0 / temperature)


def test_kl_is_zero_for_the_teacher_itself_and_safe_for_impossible_classes():
    for temperature in (1.0, 4.0):
        np.testing.assert_allclose(distill.loss(TEACHER, TEACHER, None, temperature, 1.0), 0.0, atol=1e-6)
        assert np.all(np.asarray(distill.loss(STUDENT, TEACHER, None, temperature, 1.0)) > 0.01)
    ruled_out = TEACHER.copy()
    ruled_out[:, 3] = -np.inf  # the teacher gives class 3 probability 0: it adds 0 log 0 = 0
    value, grad = jax.value_and_grad(lambda s: distill.loss(s, ruled_out, LABELS, 2.0, 0.5).sum())(STUDENT)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    with pytest.raises(ValueError, match="needs labels"):
        distill.loss(STUDENT, TEACHER, None, 4.0, 0.5)


def test_bf16_logits_give_a_float32_loss_close_to_the_float32_one():
    big = np.random.default_rng(0).normal(0, 5, (2, 64, 10)).astype(np.float32)  # confident logits, 10 classes
    labels = np.arange(64) % 10
    exact = distill.loss(big[0], big[1], labels, 4.0, 0.9)
    low = distill.loss(big[0].astype(jnp.bfloat16), big[1].astype(jnp.bfloat16), labels, 4.0, 0.9)
    assert low.dtype == jnp.float32 and np.all(np.isfinite(low))
    rounded = np.asarray(jnp.asarray(big, jnp.bfloat16).astype(jnp.float32))  # the same logits, rounded to bf16
    np.testing.assert_allclose(low, distill.loss(rounded[0], rounded[1], labels, 4.0, 0.9), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(low, exact, rtol=0.02, atol=0.02)  # bf16 keeps ~3 significant digits of a logit


# ---- A teacher from a finished run --------------------------------------------------------------------------------


def _tiny(**overrides):
    """The digits smoke classifier, shrunk: 160 training images (40 held out), 3 steps an epoch, 2 epochs."""
    c = classifier_config.get_config("digits,smoke")
    c.conv_features, c.hidden, c.num_epochs, c.train_examples = (4, 8), 16, 2, 200
    c.batch_size, c.val_fraction, c.checkpoint_every_epochs = 50, 0.2, 1
    c.update(overrides)
    return c


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, digits):
    from lepton_jax import plotting

    workdir = str(tmp_path_factory.mktemp("distill") / "teacher")
    with pytest.MonkeyPatch.context() as patch:  # no figures: host time the tests here do not need
        for name in ("curves", "image_grid", "confusion_matrix", "labelled_images"):
            patch.setattr(plotting, name, lambda *args, **kwargs: None)
        classifier.run(_tiny(), workdir, digits)
    return workdir


def test_loaded_teacher_gives_the_runs_own_logits(teacher_run, digits):
    teacher = distill.load_teacher(teacher_run, classifier.make_model, digits.image_shape, 10, "classifier")
    model, variables = trained.load_trained(teacher_run, digits.image_shape)  # seed 0's kept (best) variables
    images = digits.test_images[:64]
    expected = np.asarray(jax.jit(model.apply)(variables, images))
    got = jax.jit(distill.teacher_logits)(teacher, images)  # the teacher as a jit argument (a pytree)
    assert got.shape == (64, 10) and got.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(got), expected)
    fresh = model.init(jax.random.PRNGKey(_tiny().seed), images[:1])  # not the network as initialised
    assert not np.allclose(np.asarray(got), np.asarray(jax.jit(model.apply)(fresh, images)), atol=1e-3)


def test_teacher_gets_no_gradient_and_stays_put_through_a_step(teacher_run, digits):
    """One optimiser over the student's and the teacher's variables together: the teacher's get zero gradients and
    stay as they were; without `teacher_logits`' stop_gradient the same step would move them."""
    teacher = distill.load_teacher(teacher_run, classifier.make_model, digits.image_shape, 10)
    student_model = classifier.make_model(_tiny(conv_features=(2, 4), hidden=8), 10)
    student = student_model.init(jax.random.PRNGKey(1), digits.train_images[:1])
    images, labels = digits.train_images[:32], digits.train_labels[:32]
    tx = optax.sgd(0.1)

    def make_step(frozen):
        def objective(both):  # (student variables, teacher variables), both differentiated
            if frozen:
                soft = distill.teacher_logits(teacher.replace(variables=both[1]), images)
            else:
                soft = teacher.apply(both[1], images)
            return distill.loss(student_model.apply(both[0], images), soft, labels, 4.0, 0.9).mean()

        @jax.jit
        def step(both, opt_state):
            loss, grads = jax.value_and_grad(objective)(both)
            updates, opt_state = tx.update(grads, opt_state, both)
            return optax.apply_updates(both, updates), opt_state, loss, grads[1]

        return step

    def same(a, b):
        return jax.tree.all(jax.tree.map(np.array_equal, a, b))

    both, step, losses = (student, teacher.variables), make_step(frozen=True), []
    opt_state = tx.init(both)
    for _ in range(3):
        both, opt_state, loss, teacher_grads = step(both, opt_state)
        losses.append(float(loss))
        assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(teacher_grads))
    assert same(both[1], teacher.variables) and not same(both[0], student)
    assert losses[-1] < losses[0]  # the student moves towards the teacher
    moved, *_ = make_step(frozen=False)((student, teacher.variables), tx.init((student, teacher.variables)))
    assert not same(moved[1], teacher.variables)


# ---- Bad teachers and keys: one line each ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broken(teacher_run, tmp_path_factory):
    """Copies of the finished teacher run, each spoilt in one way."""
    root = tmp_path_factory.mktemp("broken")

    def copy(name):
        target = str(root / name)
        shutil.copytree(teacher_run, target)
        return target

    runs = {name: copy(name) for name in ("unfinished", "no_checkpoint", "corrupt", "bad_config", "vae", "other")}
    os.remove(os.path.join(runs["unfinished"], "results.json"))
    shutil.rmtree(os.path.join(runs["no_checkpoint"], "checkpoints"))
    for step in os.listdir(os.path.join(runs["corrupt"], "checkpoints")):  # every file of the state overwritten
        for folder, _, files in os.walk(os.path.join(runs["corrupt"], "checkpoints", step, "state")):
            for name in files:
                with open(os.path.join(folder, name), "wb") as f:
                    f.write(b"not a checkpoint")
    with open(os.path.join(runs["bad_config"], "config.json"), "w") as f:
        f.write("{ not json")
    for name, change in (("vae", {"trainer": "vae"}), ("other", {"conv_features": [4, 12]})):
        path = os.path.join(runs[name], "config.json")
        with open(path) as f:
            stored = json.load(f)
        with open(path, "w") as f:
            json.dump(stored | change, f)
    runs["missing"] = str(root / "no_such_run")
    runs["file"] = str(root / "a_file")
    open(runs["file"], "w").close()
    return runs


def test_each_bad_teacher_isone_line_error(broken, teacher_run, digits):
    def load(workdir, image_shape=digits.image_shape, num_classes=10):
        return lambda: distill.load_teacher(workdir, classifier.make_model, image_shape, num_classes, "classifier")

    where = lambda name: f"config.teacher={broken[name]}"  # noqa: E731
    one_line_error(load(broken["missing"]), where("missing"), "does not exist")
    one_line_error(load(broken["file"]), where("file"), "not a directory")
    one_line_error(load(broken["unfinished"]), where("unfinished"), "not a finished run")
    one_line_error(load(broken["no_checkpoint"]), where("no_checkpoint"), "no checkpoint")
    one_line_error(load(broken["corrupt"]), where("corrupt"), "cannot be read")
    one_line_error(load(broken["bad_config"]), broken["bad_config"], "config.teacher", "cannot be read")
    one_line_error(load(broken["vae"]), where("vae"), "trainer 'vae', not of 'classifier'")
    one_line_error(load(broken["other"]), where("other"), "params/conv1/bias has shape (8,) there and (12,) here")
    one_line_error(load(teacher_run, num_classes=5), "another task", "predicts 10 classes, this run 5")
    one_line_error(load(teacher_run, image_shape=(16, 16, 1)), "dense/kernel", "images of shape (16, 16, 1)")
    # A teacher's files are only read: its unreadable checkpoint is not set aside as a resumed run's would be.
    assert not [name for name in os.listdir(os.path.join(broken["corrupt"], "checkpoints")) if "unreadable" in name]


def test_launch_check_refuses_bad_keys_inone_line_error(teacher_run, broken):
    def config(**values):
        return ml_collections.ConfigDict(values)

    distill.check_config(config())  # every key absent: off
    distill.check_config(config(teacher=teacher_run, distill_temperature=1.0, distill_alpha=0.0))
    assert distill.settings(config()) == {"teacher": None, "distill_temperature": 4.0, "distill_alpha": 0.9}
    for name, value, allowed in (
        ("distill_temperature", 0.0, "> 0"),
        ("distill_temperature", -2.0, "> 0"),
        ("distill_temperature", "4", "a finite number"),
        ("distill_alpha", 1.5, "in [0, 1]"),
        ("distill_alpha", -0.1, "in [0, 1]"),
        ("teacher", "", "a path"),
    ):
        one_line_error(lambda: distill.check_config(config(**{name: value})), f"config.{name}={value!r}", allowed)  # noqa: B023
    one_line_error(lambda: distill.check_config(config(teacher=broken["missing"])), "does not exist")
    one_line_error(lambda: distill.check_config(config(teacher=broken["unfinished"])), "not a finished run")
    one_line_error(
        lambda: distill.check_config(config(teacher=teacher_run, class_weighting="inverse")),
        "config.class_weighting='inverse' cannot be combined",
    )
