"""Deep Graph Infomax: the loss against a hand computation, the corruption, the probe, and a karate run that learns."""

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from graphs import common, data, dgi, probe
from graphs.configs import dgi as dgi_config
from graphs.jraph_compat import jraph
from graphs.node_classification import labels_of
from lepton_jax.errors import UserError
from tests.conftest import blank_figures

# A path 0-1-2 and an edge 2-3: 4 nodes, 3 undirected edges; 3 features per node, 2 hidden units.
SENDERS, RECEIVERS = data.undirected_edges(np.array([[0, 1], [1, 2], [2, 3]]), 4)
FEATURES = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0], [3.0, 1.0, 1.0], [0.0, 0.0, 1.0]], np.float32)
PARAMS = {
    "params": {
        "linear": {"kernel": np.array([[0.5, -1.0], [1.0, 0.25], [-0.5, 0.75]], np.float32)},
        "bias": np.array([0.1, -0.2], np.float32),
        "prelu": {"negative_slope": np.array(0.25, np.float32)},
        "discriminator_kernel": np.array([[1.0, -2.0], [0.5, 1.5]], np.float32),
        "discriminator_bias": np.array(0.3, np.float32),
    }
}


def tiny_graph(features=FEATURES):
    return jraph.GraphsTuple(
        nodes=jnp.asarray(features),
        edges=None,
        senders=jnp.asarray(SENDERS),
        receivers=jnp.asarray(RECEIVERS),
        n_node=jnp.array([4]),
        n_edge=jnp.array([len(SENDERS)]),
        globals=None,
    )


def hand_loss(permutation) -> float:
    """The DGI loss in NumPy, written from the paper's definitions with a dense normalised adjacency."""
    adjacency = np.zeros((4, 4))
    adjacency[SENDERS, RECEIVERS] = 1.0
    adjacency += np.eye(4)
    inv_sqrt = 1.0 / np.sqrt(adjacency.sum(1))
    normalised = inv_sqrt[:, None] * adjacency * inv_sqrt[None, :]
    p = PARAMS["params"]

    def encode(x):
        pre = normalised @ x @ p["linear"]["kernel"] + p["bias"]
        return np.where(pre > 0, pre, 0.25 * pre)

    real, corrupted = encode(FEATURES), encode(FEATURES[permutation])
    summary = 1.0 / (1.0 + np.exp(-real.mean(0)))
    scores = lambda h: h @ p["discriminator_kernel"] @ summary + p["discriminator_bias"]  # noqa: E731
    sigmoid = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    terms = np.concatenate([-np.log(sigmoid(scores(real))), -np.log(1.0 - sigmoid(scores(corrupted)))])
    return float(terms.mean())


def test_loss_matches_a_hand_computation_and_the_step_compiles_once():
    config = dgi_config.get_config("karate")
    model = dgi.DGI(2)
    init, epoch_step, loss_fn = dgi.make_steps(config, model)
    graph = tiny_graph()
    # The parameter tree is the one the model makes (a renamed or missing leaf fails here).
    shapes = jax.tree.map(np.shape, jax.eval_shape(model.init, jax.random.PRNGKey(0), graph, jnp.arange(4)))
    assert shapes == jax.tree.map(np.shape, PARAMS)
    loss_fn = jax.jit(loss_fn)  # one program for the three permutations (eagerly: one for each operation)
    for permutation in ([1, 2, 3, 0], [3, 2, 1, 0], [0, 1, 2, 3]):
        got = loss_fn(PARAMS, graph, jnp.array(permutation))
        np.testing.assert_allclose(got, hand_loss(np.array(permutation)), rtol=1e-5)
    # Training steps: finite, one compile for every epoch, the loss of the parameters before each update.
    step = jax.jit(chex.assert_max_traces(epoch_step, n=1))
    state = jax.jit(init)(jax.random.PRNGKey(1), graph)
    for epoch in range(3):
        before = state.train_state.params["params"]["linear"]["kernel"]
        state, metrics = step(state, graph, jnp.int32(epoch))
        assert np.isfinite(metrics["train/loss"])
        assert not np.array_equal(before, state.train_state.params["params"]["linear"]["kernel"])


def test_corruption_is_a_permutation_of_the_feature_rows():
    corruption = jax.jit(dgi.corruption, static_argnums=1)
    permutations = [np.asarray(corruption(jax.random.PRNGKey(k), 50)) for k in range(3)]
    for permutation in permutations:
        np.testing.assert_array_equal(np.sort(permutation), np.arange(50))  # every node once
        assert not np.array_equal(permutation, np.arange(50))
    assert not np.array_equal(permutations[0], permutations[1])  # a fresh one per key (per epoch)
    shuffled = np.asarray(dgi.shuffle_rows(FEATURES, np.array([2, 0, 3, 1])))
    np.testing.assert_array_equal(shuffled, FEATURES[[2, 0, 3, 1]])
    # The model shuffles X W instead of X: the corrupted scores equal those of the graph with shuffled features.
    permutation = jnp.array([2, 0, 3, 1])
    apply = jax.jit(dgi.DGI(2).apply, static_argnames="method")  # eagerly: a program for each operation
    real, corrupted = apply(PARAMS, tiny_graph(), permutation)
    summary = jax.nn.sigmoid(apply(PARAMS, tiny_graph(), method=dgi.DGI.embed).mean(0))
    shuffled_embeddings = apply(PARAMS, tiny_graph(shuffled), method=dgi.DGI.embed)
    expected = apply(PARAMS, shuffled_embeddings, summary, method=dgi.DGI.discriminate)
    np.testing.assert_allclose(corrupted, expected, rtol=1e-6)
    assert not np.allclose(real, corrupted)


def test_probe_separates_separable_embeddings():
    dataset = data.karate_club()
    even = np.arange(34) % 2 == 0
    labels = labels_of(dataset._replace(train_mask=even, val_mask=even, test_mask=~even))
    club = np.asarray(dataset.labels, np.float32)
    embeddings = 0.1 * np.random.default_rng(0).normal(size=(34, 8)).astype(np.float32)
    embeddings[:, 0] = 4.0 * club - 2.0  # one coordinate tells the club, the others are small noise
    result = probe.linear_probe(jax.random.PRNGKey(0), jnp.asarray(embeddings), labels, 2, 5, 100, 0.01)
    assert result.test_accuracy.shape == result.val_accuracy.shape == (5,)
    np.testing.assert_array_equal(result.test_accuracy, 1.0)
    np.testing.assert_array_equal(result.val_accuracy, 1.0)
    # With the telling coordinate flipped on the test nodes, every probe that learned it gets them all wrong.
    flipped = embeddings.copy()
    flipped[~even, 0] *= -1
    result = probe.linear_probe(jax.random.PRNGKey(0), jnp.asarray(flipped), labels, 2, 5, 100, 0.01)
    np.testing.assert_array_equal(result.test_accuracy, 0.0)


def _karate_config():
    config = dgi_config.get_config("karate,smoke")
    config.num_epochs, config.num_seeds, config.checkpoint_every_epochs = 40, 1, 20
    return config


@pytest.fixture(scope="module")
def karate_run(tmp_path_factory):
    """A finished 40-epoch karate run (one seed): (its workdir, its results)."""
    workdir = tmp_path_factory.mktemp("dgi_karate")
    with pytest.MonkeyPatch.context() as patch:
        blank_figures(patch)  # no test looks at its pictures
        return workdir, dgi.train_and_evaluate(_karate_config(), str(workdir))


def test_karate_run_learns_keeps_its_lowest_loss_and_fills_the_workdir(karate_run):
    tmp_path, results = karate_run
    # The discriminator learned (the loss starts at ln 2 = 0.693) and the probe beats chance (0.5) by far.
    assert results["train/best_loss_mean"] < 0.3
    assert results["test/accuracy_mean"] > 0.75
    with open(tmp_path / "metrics.jsonl") as f:
        losses = [record["train/loss"] for record in map(json.loads, f) if "train/loss" in record]
    assert len(losses) == results["perf/epochs"]
    # The kept parameters are those of the lowest loss, which was the loss of the parameters before that epoch's step.
    np.testing.assert_allclose(results["train/best_loss_mean"], min(losses), rtol=1e-6)
    assert results["best_epoch_mean"] == 1 + int(np.argmin(losses))
    assert {"config.json", "results.json", "metrics.jsonl", "checkpoints"} <= set(os.listdir(tmp_path))


def test_sparse_features_give_the_dense_loss():
    dataset = data.karate_club()
    dense, sparse = (common.full_graph(dataset, False, sparse=s) for s in (False, True))
    model = dgi.DGI(8)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), dense, jnp.arange(34))
    _, _, loss_fn = dgi.make_steps(dgi_config.get_config("karate"), model)
    loss_fn = jax.jit(loss_fn)  # a program for each graph (eagerly: one for each operation)
    permutation = dgi.corruption(jax.random.PRNGKey(1), 34)
    np.testing.assert_allclose(loss_fn(params, sparse, permutation), loss_fn(params, dense, permutation), rtol=1e-5)


def test_shipped_configs_validate_and_a_bad_probe_value_is_one_line():
    from scripts import trainers

    for arg in (None, "citeseer", "karate", "cora,smoke"):
        trainers.validate(dgi_config.get_config(arg))
    config = dgi_config.get_config("karate")
    config.probe_runs = 0
    with pytest.raises(UserError) as error:
        trainers.validate(config)
    assert str(error.value) == "config.probe_runs=0 is not allowed: it must be an integer >= 1"


def test_resumed_run_equals_uninterrupted(tmp_path, karate_run, interrupt_first_step, without_figures):
    """The kept parameters, the loss and the probe after an interrupted and resumed run are the uninterrupted run's."""
    from lepton_jax.interrupt import Interrupted

    _, full = karate_run
    with interrupt_first_step(), pytest.raises(Interrupted, match="epoch 1/"):
        dgi.train_and_evaluate(_karate_config(), str(tmp_path / "split"))
    resumed = dgi.train_and_evaluate(_karate_config(), str(tmp_path / "split"))
    assert resumed["resumed_from_epoch"] == 1 and resumed["perf/epochs"] == full["perf/epochs"] == 40
    assert resumed["params_sha256"] == full["params_sha256"]
    assert resumed["per_seed/test/accuracy"] == full["per_seed/test/accuracy"]
