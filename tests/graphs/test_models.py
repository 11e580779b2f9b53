"""GNN layers against hand computations, and padding that must not change what real nodes and graphs see."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from graphs import batching, models
from graphs.data import GraphDataset, undirected_edges
from graphs.jraph_compat import jraph


def random_graph(num_nodes=7, num_features=5, seed=0, num_edges=9):
    rng = np.random.default_rng(seed)
    pairs = rng.integers(0, num_nodes, (num_edges, 2))
    senders, receivers = undirected_edges(pairs, num_nodes)
    features = rng.normal(size=(num_nodes, num_features)).astype(np.float32)
    return batching.graphs_tuple(features, senders, receivers)


def dense_gcn(graph, kernel):
    n = graph.nodes.shape[0]
    adjacency = np.zeros((n, n))
    adjacency[graph.receivers, graph.senders] = 1.0
    adjacency += np.eye(n)
    d = np.diag(adjacency.sum(1) ** -0.5)
    return d @ adjacency @ d @ graph.nodes @ kernel


def test_gcn_matches_dense_normalised_adjacency():
    graph = random_graph()
    conv = models.GCNConv(3)
    params = conv.init(jax.random.PRNGKey(0), graph.nodes, graph.senders, graph.receivers)
    params = jax.tree.map(lambda p: p + 0.1, params)  # a non-zero bias
    apply = jax.jit(conv.apply)
    out = apply(params, graph.nodes, graph.senders, graph.receivers)
    kernel, bias = params["params"]["linear"]["kernel"], params["params"]["bias"]
    np.testing.assert_allclose(out, dense_gcn(graph, kernel) + bias, rtol=1e-5, atol=1e-5)
    # The same with the features stored sparse.
    sparse = models.SparseFeatures.from_dense(graph.nodes)
    np.testing.assert_allclose(apply(params, sparse, graph.senders, graph.receivers), out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sparse.todense(), graph.nodes)


def test_sparse_features_give_the_dense_model_and_dropout_keeps_zeros_zero():
    dense = np.zeros((4, 6), np.float32)
    dense[[0, 1, 3], [2, 5, 0]] = [1.0, 2.0, 3.0]
    sparse = models.SparseFeatures.from_dense(dense)
    model = models.GCN((4,), 2, dropout=0.5)
    graph = batching.graphs_tuple(dense, np.array([0, 1]), np.array([1, 0]))
    params = model.init(jax.random.PRNGKey(0), graph)
    np.testing.assert_allclose(
        model.apply(params, graph._replace(nodes=sparse)), model.apply(params, graph), rtol=1e-5, atol=1e-6
    )
    out = model.apply(params, graph._replace(nodes=sparse), train=True, rngs={"dropout": jax.random.PRNGKey(3)})
    assert out.shape == (4, 2) and np.all(np.isfinite(out))


def test_gat_attention_sums_to_one_over_each_neighbourhood():
    graph = random_graph(num_nodes=9, seed=1)
    conv = models.GATConv(4, heads=3)
    params = conv.init(jax.random.PRNGKey(0), graph.nodes, graph.senders, graph.receivers)
    out, alpha = conv.apply(params, graph.nodes, graph.senders, graph.receivers, return_attention=True)
    n = graph.nodes.shape[0]
    receivers = np.concatenate([graph.receivers, np.arange(n)])
    np.testing.assert_allclose(jax.ops.segment_sum(alpha, receivers, n), np.ones((n, 3)), rtol=1e-5)
    assert out.shape == (n, 12) and np.all(alpha >= 0)


def test_mpnn_layer_matches_its_formula_with_edge_features():
    graph = random_graph(num_nodes=5, num_features=3, seed=2)
    edges = np.random.default_rng(0).normal(size=(graph.senders.shape[0], 2)).astype(np.float32)
    layer = models.MPNNLayer(4, message_hidden=6)
    params = layer.init(jax.random.PRNGKey(0), graph.nodes, edges, graph.senders, graph.receivers)
    out = layer.apply(params, graph.nodes, edges, graph.senders, graph.receivers)
    p = jax.tree.map(np.asarray, params["params"])
    h = graph.nodes
    psi_in = np.concatenate([h[graph.senders], edges], 1)
    hidden = np.maximum(psi_in @ p["psi"]["Dense_0"]["kernel"] + p["psi"]["Dense_0"]["bias"], 0)
    messages = hidden @ p["psi"]["Dense_1"]["kernel"] + p["psi"]["Dense_1"]["bias"]
    summed = np.zeros_like(h)
    np.add.at(summed, graph.receivers, messages)
    expected = (h + summed) @ p["theta"]["kernel"] + p["theta"]["bias"]
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    other = layer.apply(params, graph.nodes, edges + 1.0, graph.senders, graph.receivers)
    assert not np.allclose(other, out)  # the edge features are used


def tiny_dataset():
    """Three graphs: a triangle, a single node without edges, a path of four."""
    nodes = [
        np.eye(3, dtype=np.float32)[[0, 1, 2]],
        np.eye(3, dtype=np.float32)[[1]],
        np.eye(3, dtype=np.float32)[[2, 0, 0, 1]],
    ]
    edges = [
        undirected_edges(np.array(p), len(n))
        for p, n in zip([[(0, 1), (1, 2), (2, 0)], [], [(0, 1), (1, 2), (2, 3)]], nodes)
    ]
    return GraphDataset(nodes, [e[0] for e in edges], [e[1] for e in edges], np.array([1, 0, 1], np.int32), 2, [])


@pytest.mark.parametrize("budget", [batching.Budget(9, 12, 4), batching.Budget(20, 30, 8)])
def test_padding_masks_match_jraph(budget):
    dataset = tiny_dataset()
    graph, _ = batching.batch(dataset, np.arange(3), budget)
    node_mask, graph_mask = models.padding_masks(graph)
    np.testing.assert_array_equal(node_mask, jraph.get_node_padding_mask(graph))
    np.testing.assert_array_equal(graph_mask, jraph.get_graph_padding_mask(graph))
    assert int(node_mask.sum()) == 8 and int(graph_mask.sum()) == 3


def test_gin_and_gcn_outputs_do_not_depend_on_padding():
    dataset = tiny_dataset()
    small, _ = batching.batch(dataset, np.arange(3), batching.Budget(9, 12, 4))
    large, _ = batching.batch(dataset, np.arange(3), batching.Budget(40, 50, 9))
    gin = models.GIN(num_classes=2, num_layers=3, hidden=8, dropout=0.0)
    variables = jax.jit(gin.init)(jax.random.PRNGKey(0), small)
    # train=True: batch statistics over real nodes only.
    apply = jax.jit(lambda g: [gin.apply(variables, g, train=t, mutable=["batch_stats"])[0] for t in (False, True)])
    for a, b in zip(apply(small), apply(large)):
        np.testing.assert_allclose(a[:3], b[:3], rtol=1e-4, atol=1e-4)
    gcn = models.GCN((8,), 3)
    params = gcn.init(jax.random.PRNGKey(1), small)
    gcn_apply = jax.jit(gcn.apply)
    np.testing.assert_allclose(gcn_apply(params, small)[:8], gcn_apply(params, large)[:8], rtol=1e-5, atol=1e-5)


def test_gin_step_compiles_once_for_different_batches():
    from graphs import graph_classification
    from graphs.configs import gin as gin_config

    config = gin_config.get_config("mutag,smoke")
    dataset = tiny_dataset()
    budget = batching.Budget(12, 16, 4)
    model = models.GIN(2, 3, 8)
    example, _ = batching.batch(dataset, np.arange(3), budget)
    init, train_step, _ = graph_classification.make_steps(config, model, example)
    state = init(jax.random.PRNGKey(0))
    step = jax.jit(chex.assert_max_traces(train_step, n=1))
    for index in ([0, 1, 2], [1], [2, 0], []):  # the last one: an all-padding batch
        graph, labels = batching.batch(dataset, np.array(index, np.int64), budget)
        before = state
        state, loss = step(state, graph, labels, jnp.bool_(len(index) > 0), jnp.float32(0.01))
        assert np.isfinite(loss)
    # The empty batch left the state as it was.
    chex.assert_trees_all_close(state.train_state.params, before.train_state.params)
