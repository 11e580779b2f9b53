"""The graph trainers learn, compile once, and fill a workdir: overfitting, smoke runs and one launcher run."""

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from graphs import common, data, graph_classification, link_prediction, models, node_classification
from graphs.configs import gae as gae_config
from graphs.configs import gcn as gcn_config
from graphs.configs import gin as gin_config
from lepton_jax import seeds
from lepton_jax.errors import UserError
from lepton_jax.interrupt import Interrupted
from tests.conftest import launch, run_python


def test_gcn_overfits_the_karate_club_to_accuracy_one_and_compiles_once():
    config = gcn_config.get_config("karate")
    config.lr = 0.05
    dataset = data.karate_club()
    everyone = np.ones(34, bool)
    dataset = dataset._replace(train_mask=everyone, val_mask=everyone, test_mask=everyone)
    graph, labels = common.full_graph(dataset, False, sparse=True), node_classification.labels_of(dataset)
    model = models.make_node_model(config, 2)
    init, epoch_step, evaluate, _ = node_classification.make_steps(config, model)
    state = jax.jit(jax.vmap(init, (0, None)))(jax.random.split(jax.random.PRNGKey(0), 2), graph)
    step = jax.jit(seeds.over_seeds(chex.assert_max_traces(epoch_step, n=1), (0, None, None, None)))
    for epoch in range(100):
        state, metrics = step(state, graph, labels, jnp.int32(epoch))
    np.testing.assert_array_equal(metrics["train/accuracy"], [1.0, 1.0])
    final = jax.jit(jax.vmap(evaluate, (0, None, None)))(state.early.best_params, graph, labels)
    np.testing.assert_array_equal(final["test/accuracy"], [1.0, 1.0])
    # Seeds one after another (lax.map) compute what the vmapped step does.
    mapped = jax.jit(seeds.over_seeds(epoch_step, (0, None, None, None), "map"))(state, graph, labels, jnp.int32(0))
    chex.assert_trees_all_close(mapped, step(state, graph, labels, jnp.int32(0)), rtol=1e-5, atol=1e-6)


def test_gae_smoke_run_reports_auc_and_ap(tmp_path):
    config = gae_config.get_config("karate,smoke")
    results = link_prediction.train_and_evaluate(config, str(tmp_path))
    for key in ("test/auc_mean", "test/auc_std", "test/ap_mean", "test/accuracy_mean", "test/accuracy_std"):
        assert np.isfinite(results[key]), key
        assert 0.0 <= results[key] <= 1.0
    assert results["perf/epochs"] == 4 and len(results["per_seed/test/auc"]) == 2
    assert {"config.json", "results.json", "metrics.jsonl", "checkpoints"} <= set(os.listdir(tmp_path))


def synthetic_graphs(count=24, seed=0) -> data.GraphDataset:
    """Cycles (label 1) and paths (label 0) of 4 to 9 nodes, with constant features: only the structure tells them."""
    rng = np.random.default_rng(seed)
    nodes, senders, receivers, labels = [], [], [], []
    for i in range(count):
        n = int(rng.integers(4, 10))
        pairs = [(j, j + 1) for j in range(n - 1)] + ([(n - 1, 0)] if i % 2 else [])
        s, r = data.undirected_edges(np.array(pairs), n)
        nodes.append(np.ones((n, 1), np.float32))
        senders.append(s)
        receivers.append(r)
        labels.append(i % 2)
    index = np.arange(count)
    folds = [(index[index % 4 != k], index[index % 4 == k]) for k in range(4)]
    return data.GraphDataset(nodes, senders, receivers, np.array(labels, np.int32), 2, folds)


def test_gin_smoke_run_on_folds(tmp_path, monkeypatch):
    monkeypatch.setattr(graph_classification, "load_tu", lambda directory, name: synthetic_graphs())
    config = gin_config.get_config("mutag,smoke")
    config.data_dir = str(tmp_path)
    config.num_layers, config.hidden, config.batch_size = 2, 8, 4
    config.val_fraction = 0.25
    results = graph_classification.train_and_evaluate(config, str(tmp_path / "run"))
    assert results["num_folds"] == 2 and results["perf/epochs"] == 3
    for key in ("test/accuracy_mean", "test/accuracy_std", "test/accuracy_best_epoch_mean"):
        assert 0.0 <= results[key] <= 1.0, key
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records] == [1, 2, 3] and all(np.isfinite(r["train/loss"]) for r in records)
    assert all(0.0 <= r["val/accuracy"] <= 1.0 for r in records)
    assert len(results["per_seed/test/accuracy_val_selected"]) == 2 and len(results["params_sha256"]) == 64
    assert all(1 <= e <= 3 for e in results["per_seed/val_selected_epoch"])
    np.testing.assert_allclose(
        np.mean(results["per_seed/test/accuracy_val_selected"]), results["test/accuracy_val_selected_mean"]
    )


def test_validation_selects_each_folds_first_best_epoch():
    test = np.array([[0.5, 0.6, 0.7, 0.8], [0.9, 0.1, 0.2, 0.3]])
    val = np.array([[0.1, 0.4, 0.4, 0.2], [0.3, 0.2, 0.3, 0.1]])  # fold 0: epochs 2 and 3 tie; fold 1: 1 and 3
    chosen, selected = graph_classification.val_selected(test, val)
    np.testing.assert_array_equal(chosen, [1, 0])
    np.testing.assert_array_equal(selected, [0.6, 0.9])


def test_validation_split_is_stratified_disjoint_and_seeded():
    labels = np.array([0] * 30 + [1] * 10 + [2] * 2)
    train = np.arange(42)[::-1]
    kept, held = graph_classification.split_validation(train, labels, 0.2, np.random.default_rng(0))
    assert sorted(np.concatenate([kept, held]).tolist()) == list(range(42)) and not set(kept) & set(held)
    assert np.bincount(labels[held], minlength=3).tolist() == [6, 2, 1]  # 20 % of each class, at least one
    again = graph_classification.split_validation(train, labels, 0.2, np.random.default_rng(0))
    np.testing.assert_array_equal(held, again[1])


def _gin_on_synthetic_graphs(monkeypatch, tmp_path):
    monkeypatch.setattr(graph_classification, "load_tu", lambda directory, name: synthetic_graphs())
    config = gin_config.get_config("mutag,smoke")
    config.data_dir = str(tmp_path)
    config.num_layers, config.hidden, config.batch_size = 2, 8, 4
    return graph_classification.train_and_evaluate, config


@pytest.mark.parametrize("trainer", ["node_classification", "link_prediction", "graph_classification"])
def test_resumed_graph_run_equals_uninterrupted(tmp_path, monkeypatch, interrupt_first_step, trainer):
    """params_sha256 (all seeds' or folds' stacked parameters) after an interrupted and resumed run is the
    uninterrupted run's."""
    if trainer == "graph_classification":
        train_and_evaluate, config = _gin_on_synthetic_graphs(monkeypatch, tmp_path)
    elif trainer == "link_prediction":
        train_and_evaluate, config = link_prediction.train_and_evaluate, gae_config.get_config("karate,smoke")
    else:  # the programs of the karate demo below (4 seeds), compiled once for both tests
        train_and_evaluate, config = node_classification.train_and_evaluate, gcn_config.get_config("karate")
        config.num_seeds, config.num_epochs, config.checkpoint_every_epochs = 4, 6, 3
    full = train_and_evaluate(config, str(tmp_path / "full"))
    with interrupt_first_step(), pytest.raises(Interrupted, match="epoch 1/"):
        train_and_evaluate(config, str(tmp_path / "split"))
    resumed = train_and_evaluate(config, str(tmp_path / "split"))
    assert resumed["resumed_from_epoch"] == 1 and resumed["perf/epochs"] == full["perf/epochs"] > 1
    assert len(full["params_sha256"]) == 64 and resumed["params_sha256"] == full["params_sha256"]


def test_karate_demo_through_the_launcher(tmp_path):
    workdir = str(tmp_path / "karate")
    args = ["--config=graphs/configs/gcn.py:karate", "--config.num_seeds=4", "--config.num_epochs=200"]
    results = launch(args, workdir)
    assert results["num_seeds"] == 4 and len(results["per_seed/test/accuracy"]) == 4
    assert len(results["params_sha256"]) == 64
    # Two labelled members are enough for most of the other 32 (Kipf & Welling's demo).
    assert results["test/accuracy_mean"] >= 0.8, results["per_seed/test/accuracy"]
    for key in ("test/accuracy_std", "test/macro_f1_mean", "perf/epoch_seconds", "perf/wall_seconds"):
        assert np.isfinite(results[key]), key
    assert os.path.getsize(os.path.join(workdir, "plots", "embedding.png")) > 5000
    assert os.path.getsize(os.path.join(workdir, "plots", "learning_curve.png")) > 5000
    # scripts.evaluate evaluates RL workdirs; on this one it says so in one line (no traceback), exit 2.
    evaluated = run_python(["-m", "scripts.evaluate", f"--workdir={workdir}"])
    lines = [line for line in evaluated.stderr.splitlines() if line.strip()]
    assert evaluated.returncode == 2 and "Traceback" not in evaluated.stderr, evaluated.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: scripts.evaluate evaluates the RL trainers ("), lines
    assert "'node_classification'" in lines[0] and "results.json" in lines[0]


def test_missing_data_file_is_a_user_error(tmp_path):
    config = gcn_config.get_config("citeseer,smoke")
    config.data_dir = str(tmp_path)
    with pytest.raises(UserError, match=f"missing file {tmp_path}/ind.citeseer.x "):
        node_classification.train_and_evaluate(config, str(tmp_path / "run"))
