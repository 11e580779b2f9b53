"""Early stopping in the link-prediction (GAE) and graph-classification (GIN) trainers, against runs without it.

Each run with patience is compared with the same run without it: up to a seed's (or fold's) stop the two train
alike, so the epoch it stops at, the epoch whose parameters it keeps and the numbers it reports can be worked out
by hand from the run without patience.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from graphs import common, graph_classification, link_prediction, models
from graphs.configs import CHECKS, KEYS
from graphs.configs import gae as gae_config
from graphs.configs import gcn as gcn_config
from graphs.configs import gin as gin_config
from graphs.data import load_node_dataset
from lepton_jax import config as config_lib
from lepton_jax import seeds, supervised
from lepton_jax.errors import UserError
from tests.graphs.test_training import synthetic_graphs


def rule(scores: np.ndarray, patience: int) -> tuple[int, int | None]:
    """The early-stopping rule by hand on one seed's `scores` (epochs, num_scores), higher is better: an epoch
    improves when any score is at least its best so far, and is kept when all are. Returns (the last epoch kept,
    the epoch patience ran out or None)."""
    best = np.full(scores.shape[1], -np.inf, np.float32)
    kept, bad = -1, 0
    for epoch, epoch_scores in enumerate(scores):
        at_least = epoch_scores >= best
        if at_least.all():
            kept = epoch
        bad = 0 if at_least.any() else bad + 1
        best = np.maximum(best, epoch_scores)
        if bad >= patience:
            return kept, epoch
    return kept, None


def test_gae_stops_each_seed_and_tests_the_kept_parameters(tmp_path):
    config = gae_config.get_config("karate")
    config.num_seeds, config.num_epochs, config.eval_every_epochs, config.patience = 2, 300, 50, 10
    results = link_prediction.train_and_evaluate(config, str(tmp_path))
    epochs = results["perf/epochs"]
    assert epochs < config.num_epochs  # every seed stopped

    # The same seeds without patience, each epoch's parameters scored on the validation and test edges.
    config.patience = 0
    dataset = load_node_dataset("karate")
    features = common.full_graph(dataset, config.normalize_features).nodes
    splits = link_prediction.stacked_splits(dataset, config)
    model = models.GCN(tuple(config.hidden_sizes), config.embedding_size, config.dropout, config.activation)
    init_one, step_one, evaluate_one = link_prediction.make_steps(config, model, features)
    state = jax.vmap(init_one)(common.seed_keys(jax.random.PRNGKey(config.seed), 2), splits)
    step, evaluate = jax.jit(jax.vmap(step_one, (0, 0, None))), jax.jit(jax.vmap(evaluate_one))
    curves = []
    for epoch in range(epochs):
        state, _ = step(state, splits, jnp.int32(epoch))
        curves.append(jax.device_get(evaluate(state.train_state.params, splits)))
    curve = {name: np.stack([c[name] for c in curves], 1) for name in curves[0]}  # (seeds, epochs) each

    kept, stops = zip(*(rule(np.stack([curve["val/auc"][s], curve["val/ap"][s]], 1), 10) for s in range(2)))
    assert None not in stops and max(stops) + 1 == epochs and min(stops) < max(stops)  # each seed on its own
    assert results["per_seed/best_epoch"] == [k + 1 for k in kept]
    for name in ("test/auc", "test/ap", "val/auc", "val/ap"):
        np.testing.assert_allclose(results[f"per_seed/{name}"], curve[name][[0, 1], kept], rtol=1e-6)
    # The kept parameters test differently from each seed's last ones: the comparison above tells them apart.
    assert not np.allclose(curve["test/auc"][[0, 1], kept], curve["test/auc"][[0, 1], stops])


def run_gin(monkeypatch, tmp_path, patience: int):
    """The synthetic GIN run of 2 folds (a validation quarter held out), 10 epochs: its results, its final state and
    each epoch's variables (parameters and BatchNorm statistics, fold axis first)."""
    monkeypatch.setattr(graph_classification, "load_tu", lambda directory, name: synthetic_graphs(48))
    finished, variables, fit_once = {}, [], supervised.fit

    def fit(config, workdir, task, **kwargs):
        def train_epoch(state, epoch):
            state, metrics = task.train_epoch(state, epoch)
            variables.append(jax.device_get((state.train_state.params, state.train_state.batch_stats)))
            return state, metrics

        finished["state"], results = fit_once(config, workdir, task._replace(train_epoch=train_epoch), **kwargs)
        return finished["state"], results

    monkeypatch.setattr(graph_classification.supervised, "fit", fit)
    config = gin_config.get_config("mutag,smoke")
    config.data_dir = str(tmp_path)
    config.num_layers, config.hidden, config.batch_size, config.num_epochs = 2, 8, 4, 10
    # Seed 3: the folds' validation accuracy stalls at different epochs (12 graphs each: plateaus are common).
    config.seed, config.val_fraction, config.patience = 3, 0.25, patience
    results = graph_classification.train_and_evaluate(config, str(tmp_path / f"patience_{patience}"))
    return results, jax.device_get(finished["state"]), variables


def test_gin_folds_stop_on_their_own_and_select_as_without_patience(monkeypatch, tmp_path):
    full, reference, reference_variables = run_gin(monkeypatch, tmp_path, 0)
    early, state, variables = run_gin(monkeypatch, tmp_path, 2)

    stops = [rule(val[:, None], 2)[1] for val in reference.val_curve]
    assert None not in stops and min(stops) < max(stops)  # the folds stop at different epochs ...
    assert early["perf/epochs"] == max(stops) + 1 < 10  # ... and the run ends when the last one has
    assert early["per_seed/epochs_trained"] == [s + 1 for s in stops]
    for fold, stop in enumerate(stops):
        # Trained as without patience up to its stop, then frozen: its variables stay those of its last epoch ...
        for epoch, epoch_variables in enumerate(variables):
            chex.assert_trees_all_close(
                seeds.tree_slice(epoch_variables, fold),
                seeds.tree_slice(reference_variables[min(epoch, stop)], fold),
                rtol=1e-5,
                atol=1e-6,
            )
        # ... and its curves hold their last values.
        for curve in ("test_curve", "val_curve", "loss_curve"):
            stopped, trained = getattr(state, curve)[fold], getattr(reference, curve)[fold]
            np.testing.assert_allclose(stopped[: stop + 1], trained[: stop + 1], rtol=1e-6)
            np.testing.assert_array_equal(stopped[stop:], stopped[stop])
    # Validation selection among the epochs each fold trained, as without patience up to its stop.
    chosen = [np.argmax(reference.val_curve[f, : s + 1]) for f, s in enumerate(stops)]
    assert early["per_seed/val_selected_epoch"] == [c + 1 for c in chosen]
    np.testing.assert_allclose(
        early["per_seed/test/accuracy_val_selected"], reference.test_curve[[0, 1], chosen], rtol=1e-6
    )
    np.testing.assert_allclose(early["per_seed/test/accuracy"], reference.test_curve[[0, 1], stops], rtol=1e-6)
    assert "per_seed/epochs_trained" not in full and full["perf/epochs"] == 10


def test_patience_without_a_validation_split_is_one_user_error_line(monkeypatch, tmp_path):
    config = gin_config.get_config("mutag,smoke")
    config.data_dir, config.patience = str(tmp_path), 3
    message = r"^config.patience=3 needs a validation split to watch: set config.val_fraction > 0 \(e.g. 0.1\)"
    with pytest.raises(UserError, match=message):
        config_lib.validate(config, KEYS, CHECKS)
    monkeypatch.setattr(graph_classification, "load_tu", lambda directory, name: synthetic_graphs())
    with pytest.raises(UserError, match=message):  # a direct call of the trainer says the same
        graph_classification.train_and_evaluate(config, str(tmp_path / "run"))
    config.val_fraction = 0.1
    config_lib.validate(config, KEYS, CHECKS)
    # Node classification validates on the dataset's own nodes: no share of them to hold out.
    config = gcn_config.get_config("karate,smoke")
    config_lib.validate(config, KEYS, CHECKS)
    config.val_fraction = 0.1
    with pytest.raises(UserError, match=r"^config.val_fraction=0.1 is not used by node classification"):
        config_lib.validate(config, KEYS, CHECKS)
