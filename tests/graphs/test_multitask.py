"""The node + link multi-task GCN: the graph holds no held-out edge, the link loss against a hand computation, both
tasks learn on the karate club (test numbers recomputed from the kept parameters), a weight-0 or absent link head
leaves the node task's training exactly as alone, and task mistakes are one error line at launch."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from graphs import common, data, link_prediction, node_classification
from graphs import multitask as trainer
from graphs.configs import gcn_multitask as multitask_config
from lepton_jax import seeds, supervised
from lepton_jax.techniques import multitask
from scripts import cli, train, trainers


def _karate(**overrides):
    config = multitask_config.get_config("karate")
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def karate():
    """The karate club, its nodes on the device and seed 0's edge split."""
    dataset = data.karate_club()
    split = seeds.tree_slice(link_prediction.stacked_splits(dataset, _karate(num_seeds=1)), 0)
    return dataset, common.full_graph(dataset, False, sparse=True), split


def test_the_graph_holds_only_the_training_edges(karate):
    dataset, graph, split = karate
    seen = link_prediction.train_graph(graph, split)
    edges = set(zip(np.asarray(seen.senders).tolist(), np.asarray(seen.receivers).tolist()))
    assert len(edges) == seen.senders.shape[0] == 2 * (78 - 3 - 15)  # 78 edges, 3 for validation, 15 for test
    assert all((r, s) in edges for s, r in edges)  # both directions
    held_out = np.concatenate([split.val_pos, split.test_pos]).tolist()
    assert not [pair for pair in held_out if tuple(pair) in edges or tuple(pair[::-1]) in edges]
    full = set(zip(dataset.senders.tolist(), dataset.receivers.tolist()))
    assert edges < full and int(seen.n_edge[0]) == len(edges)


def test_sampled_link_loss_is_the_hand_computation():
    embeddings = jnp.array([[1.0, 0.0], [0.5, 2.0], [-1.0, 1.0]])
    split = link_prediction.batching.LinkSplit(jnp.array([0, 1]), jnp.array([1, 2]), *(jnp.zeros((1, 2), int),) * 4)
    key = jax.random.key(3)
    negatives = np.asarray(jax.random.randint(key, (2, 2), 0, 3))  # the pairs the loss draws with this key
    z = np.asarray(embeddings)

    def log_sigmoid(x):
        return -np.log1p(np.exp(-x))

    pos = -log_sigmoid(np.array([z[0] @ z[1], z[1] @ z[2]]))
    neg = -log_sigmoid(-np.array([z[i] @ z[j] for i, j in negatives]))
    expected = pos.mean() + neg.mean()
    assert float(link_prediction.sampled_loss(embeddings, split, key)) == pytest.approx(expected, rel=1e-6)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    config = _karate(num_seeds=8)
    workdir = str(tmp_path_factory.mktemp("node_link"))
    state, results = supervised.fit(config, workdir, trainer.make_task(config))
    return config, state, results, workdir


def test_both_tasks_learn_on_the_karate_club(finished, karate):
    """Two labelled members and 60 training edges: the members' clubs far above chance (1/2) and held-out edges
    ranked above non-edges (8 seeds: 0.93 and 0.76), as recomputed from the kept parameters of each seed."""
    config, state, results, workdir = finished
    dataset, graph, _ = karate
    assert results["test/node_accuracy_mean"] > 0.8 and results["test/link_auc_mean"] > 0.65, results
    splits = link_prediction.stacked_splits(dataset, config)
    model = trainer.make_model(config, 2, {"node": 1.0, "link": 1.0})
    labels = node_classification.labels_of(dataset)
    for seed in range(8):
        split = seeds.tree_slice(splits, seed)
        outputs = model.apply(
            seeds.tree_slice(state.early.best_params, seed), link_prediction.train_graph(graph, split)
        )
        predicted = np.argmax(np.asarray(outputs["node"]), -1)
        test = np.asarray(labels.test)
        accuracy = np.mean(predicted[test] == dataset.labels[test])
        assert results["per_seed/test/node_accuracy"][seed] == pytest.approx(accuracy, abs=1e-6)
        z = np.asarray(outputs["link"])
        pos = np.sum(z[split.test_pos[:, 0]] * z[split.test_pos[:, 1]], -1)
        neg = np.sum(z[split.test_neg[:, 0]] * z[split.test_neg[:, 1]], -1)
        auc = np.mean((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None]))  # pairs ranked right
        assert results["per_seed/test/link_auc"][seed] == pytest.approx(auc, abs=1e-6)
    assert results["tasks"] == "node:1,link:1" and len(results["per_seed/best_epoch"]) == 8
    assert os.path.getsize(os.path.join(workdir, "plots", "learning_curve.png")) > 1000


def _steps(config, karate, weights, num_steps=5):
    """The parameters at init and after `num_steps` training steps of the karate club (seed 0's split)."""
    dataset, graph, split = karate
    model = trainer.make_model(config, 2, weights)
    init, _, _, train_step = trainer.make_steps(config, model, weights)
    labels = node_classification.labels_of(dataset)
    state = init(jax.random.key(0), graph, split)
    step = jax.jit(functools.partial(train_step, graph=graph, split=split, labels=labels))
    train_state = state.train_state
    for i in range(num_steps):
        train_state, metrics = step(train_state, key=jax.random.key(i))
    return state.train_state.params["params"], train_state.params["params"], metrics


def test_single_task_node_trains_the_node_task_exactly_as_a_weight_zero_link_head(karate):
    """`single_task=node` builds no link head; `task_weights=link:0` keeps one that never moves, and the shared
    trunk and the node head follow the same path in both (and a weighted link task changes that path)."""
    config = _karate(dropout=0.5)  # dropout on: the same keys must reach the same masks
    alone = multitask.task_weights(_karate(single_task="node"), trainer.TASKS)
    zero = multitask.task_weights(_karate(task_weights="link:0"), trainer.TASKS)
    assert alone == {"node": 1.0} and zero == {"node": 1.0, "link": 0.0}
    start_alone, end_alone, metrics_alone = _steps(config, karate, alone)
    start_zero, end_zero, metrics_zero = _steps(config, karate, zero)
    _, end_both, _ = _steps(config, karate, {"node": 1.0, "link": 1.0})
    assert set(end_alone) == {"trunk", "head_node"} and set(end_zero) == {"trunk", "head_node", "head_link"}
    assert jax.tree.all(jax.tree.map(np.array_equal, end_zero["head_link"], start_zero["head_link"]))
    for module in ("trunk", "head_node"):
        jax.tree.map(np.testing.assert_array_equal, start_alone[module], start_zero[module])  # the same init
        assert not jax.tree.all(jax.tree.map(np.array_equal, end_alone[module], start_alone[module]))
        jax.tree.map(
            functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-7), end_zero[module], end_alone[module]
        )
        assert not jax.tree.all(jax.tree.map(np.allclose, end_both[module], end_alone[module])), module
    assert float(metrics_zero["train/loss"]) == pytest.approx(float(metrics_alone["train/loss"]), rel=1e-6)
    assert "train/link_loss" not in metrics_alone and float(metrics_zero["train/link_loss"]) > 0


def test_the_shipped_configs_pass_the_launch_checks():
    for arg in ("cora", "citeseer", "karate", "cora,smoke"):
        trainers.validate(multitask_config.get_config(arg))


@pytest.mark.parametrize(
    "flag, fragment",
    [
        (
            "--config.task_weights=node:1,edge:2",
            "config.task_weights='node:1,edge:2' names 'edge', not a task of this trainer; its tasks: node, link",
        ),
        ("--config.single_task=edge", "config.single_task='edge' is not a task of this trainer; its tasks: node"),
        ("--config.task_weights=node=1", "config.task_weights='node=1' is not allowed: it must be comma-separated"),
        ("--config.weight_decay_on=first_layer", "it must be all or none"),
    ],
)
def test_a_task_mistake_is_one_error_line_at_launch(flag, fragment, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    args = ["--config=graphs/configs/gcn_multitask.py:karate", flag, f"--workdir={tmp_path}/run"]
    code = cli.run(train.prepare, ["train", *args])
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and out == "" and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines
    assert not os.path.exists(tmp_path / "run")  # refused before anything is made
