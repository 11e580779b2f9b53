"""GLNN: the distillation loss by hand, a trained teacher's soft labels reaching the student's step, the MLP student,
and a bad teacher refused in one line."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from graphs import common, data, glnn, models, node_classification
from graphs.configs import gcn as gcn_config
from graphs.configs import mlp as mlp_config
from lepton_jax import seeds, supervised
from tests.conftest import blank_figures, one_line_error, run_python


def test_loss_against_a_hand_computation():
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(size=(2, 6, 3)).astype(np.float32) * 2
    labels = np.array([0, 2, 1, 1, 0, 2])
    train = np.array([True, False, True, False, False, False])

    def log_softmax(z):
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    loss = jax.jit(glnn.loss, static_argnums=(4, 5))  # a program for each setting (eagerly, one for each operation)
    for temperature, alpha in ((1.0, 1.0), (4.0, 0.9), (2.0, 0.0)):
        p_teacher = np.exp(log_softmax(teacher / temperature))
        kl = (p_teacher * (log_softmax(teacher / temperature) - log_softmax(student / temperature))).sum(-1)
        soft = temperature**2 * kl.mean()  # every node, labelled or not
        hard = -log_softmax(student)[np.arange(6), labels][train].mean()  # the training nodes only
        got = loss(jnp.asarray(student), jnp.asarray(teacher), labels, train, temperature, alpha)
        np.testing.assert_allclose(got, alpha * soft + (1 - alpha) * hard, rtol=1e-5)
    # A student with the teacher's logits has nothing to learn from it.
    np.testing.assert_allclose(loss(teacher, teacher, labels, train, 1.0, 1.0), 0.0, atol=1e-6)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A finished GCN run on the karate club, its seed-0 kept parameters, and their logits on every node."""
    workdir = str(tmp_path_factory.mktemp("glnn") / "gcn_karate")
    config = gcn_config.get_config("karate,smoke")
    with pytest.MonkeyPatch.context() as patch:  # no test looks at its pictures (the learning curves, the embedding)
        blank_figures(patch)
        patch.setattr(node_classification, "karate_plot", lambda *args: None)
        state, _ = supervised.fit(config, workdir, node_classification.make_task(config, workdir))
    params = jax.device_get(seeds.tree_slice(state.early.best_params, 0))
    graph = common.full_graph(data.karate_club(), config.normalize_features, sparse=True)
    logits = models.make_node_model(config, 2).apply(params, graph, train=False)
    return workdir, config, params, np.asarray(logits)


def test_student_gets_the_teachers_soft_targets(teacher):
    workdir, teacher_config, params, expected = teacher
    dataset = data.karate_club()
    config = mlp_config.get_config("karate,smoke")
    config.teacher = os.path.relpath(workdir)  # as typed on a command line
    # Read from the teacher's checkpoint, computed with its own network and preprocessing, on all 34 nodes.
    logits = glnn.teacher_logits(config, dataset)
    assert logits.shape == (34, 2)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
    # The training step learns from them: a student that is the teacher (at alpha 1) has loss 0; another has more.
    student_config = gcn_config.get_config("karate,smoke")
    student_config.teacher, student_config.distill_alpha, student_config.distill_temperature = workdir, 1.0, 1.0
    graph = common.full_graph(dataset, False, sparse=True)
    labels = node_classification.labels_of(dataset).replace(teacher=jnp.asarray(logits))
    init, _, _, train_step = node_classification.make_steps(student_config, models.make_node_model(student_config, 2))
    train_step = jax.jit(train_step)
    state = jax.jit(init)(jax.random.PRNGKey(0), graph)  # eagerly, each operation would compile on its own
    key = jax.random.PRNGKey(1)
    _, metrics = train_step(state.train_state.replace(params=params), graph, labels, key)
    np.testing.assert_allclose(metrics["train/loss"], 0.0, atol=1e-6)
    _, metrics = train_step(state.train_state, graph, labels, key)  # a fresh student
    fresh = models.make_node_model(student_config, 2).apply(state.train_state.params, graph)
    np.testing.assert_allclose(metrics["train/loss"], glnn.loss(fresh, logits, None, None, 1.0, 1.0), rtol=1e-5)
    assert metrics["train/loss"] > 1e-4


def test_mlp_student_run_reports_itself_and_its_teacher(teacher, tmp_path, without_figures):
    workdir, _, _, expected = teacher
    config = mlp_config.get_config("karate,smoke")
    config.teacher = workdir
    results = node_classification.train_and_evaluate(config, str(tmp_path / "student"))
    assert results["model"] == "mlp" and len(results["per_seed/test/accuracy"]) == 2
    assert 0.0 <= results["test/accuracy_mean"] <= 1.0
    test = ~data.karate_club().train_mask
    teacher_accuracy = np.mean(expected.argmax(1)[test] == data.karate_club().labels[test])
    np.testing.assert_allclose(results["teacher/test/accuracy"], teacher_accuracy, rtol=1e-6)
    # The MLP never reads the edges: its logits do not change when they are removed.
    graph = common.full_graph(data.karate_club(), False, sparse=True)
    model = models.make_node_model(config, 2)
    params = model.init(jax.random.PRNGKey(0), graph)
    edgeless = graph._replace(senders=graph.senders[:0], receivers=graph.receivers[:0])
    np.testing.assert_array_equal(model.apply(params, graph), model.apply(params, edgeless))


def test_a_bad_teacher_isone_line_error(teacher, tmp_path):
    workdir = teacher[0]
    config = mlp_config.get_config("karate")
    config.teacher = str(tmp_path / "no_such_run")
    one_line_error(lambda: glnn.check_teacher(config), f"config.teacher={tmp_path}/no_such_run does not exist")
    other = str(tmp_path / "link_run")
    shutil.copytree(workdir, other)
    with open(os.path.join(other, "config.json")) as f:
        saved = json.load(f)
    with open(os.path.join(other, "config.json"), "w") as f:
        json.dump(saved | {"trainer": "link_prediction"}, f)
    config.teacher = other
    one_line_error(
        lambda: glnn.check_teacher(config), "a run of trainer 'link_prediction', not of 'node_classification'"
    )
    config.teacher = workdir
    glnn.check_teacher(config)  # a good one passes
    config.distill_alpha = 1.5
    one_line_error(lambda: glnn.check_teacher(config), "config.distill_alpha=1.5", "in [0, 1]")
    # Through the launcher, before any data is read: a karate teacher for a Cora student.
    result = run_python(
        [
            "-m",
            "scripts.train",
            "--config=graphs/configs/mlp.py:cora",
            f"--config.teacher={workdir}",
            f"--workdir={tmp_path}/run",
        ],
        env_extra={"LEPTON_DATA_DIR": str(tmp_path / "no_data")},
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(lines) == 1 and "is a teacher of dataset 'karate', not 'cora'" in lines[0], lines


def test_shipped_configs_validate():
    from scripts import trainers

    for arg in (None, "citeseer", "karate", "cora,smoke"):
        config = mlp_config.get_config(arg)
        assert config.model == "mlp" and config.trainer == "node_classification", arg
        trainers.validate(config)
    config = gcn_config.get_config("cora")
    config.model = "mlp"  # the MLP from the GCN file, as `--config.model=mlp`
    trainers.validate(config)
    config.model = "mlpp"
    one_line_error(lambda: trainers.validate(config), "config.model='mlpp' is not allowed", "gcn, gat, mpnn, mlp")
