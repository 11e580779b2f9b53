"""Padded `jraph.GraphsTuple` batches with static shapes, and the seeded splits the trainers use.

XLA compiles one program per input shape, so every batch a step function sees is padded to one fixed budget of
nodes, edges and graphs (`jraph.pad_with_graphs`: padding nodes form one extra graph, padding edges join padding
nodes only, so they never reach a real node). Losses and metrics are then masked with `models.padding_masks`
(jraph's rule in array operations: jraph's own mask functions read `n_node` on the host and cannot run under vmap).
"""

from typing import NamedTuple

import jax
import numpy as np

from graphs.data import GraphDataset, undirected_edges
from graphs.jraph_compat import jraph


class Budget(NamedTuple):
    """Static sizes of a padded batch (padding included)."""

    n_node: int
    n_edge: int
    n_graph: int


def graphs_tuple(nodes, senders, receivers, edges=None, globals_=None) -> jraph.GraphsTuple:
    """One graph as a `GraphsTuple` of NumPy arrays."""
    return jraph.GraphsTuple(
        nodes=np.asarray(nodes, np.float32),
        edges=None if edges is None else np.asarray(edges, np.float32),
        senders=np.asarray(senders, np.int32),
        receivers=np.asarray(receivers, np.int32),
        n_node=np.array([len(nodes)], np.int32),
        n_edge=np.array([len(senders)], np.int32),
        globals=globals_,
    )


def pad(graph: jraph.GraphsTuple, budget: Budget) -> jraph.GraphsTuple:
    """Pads `graph` (one or a batch) to `budget`, so that every batch has the same shapes and compiles once."""
    return jraph.pad_with_graphs(graph, budget.n_node, budget.n_edge, budget.n_graph)


def budget_for(dataset: GraphDataset, batch_size: int, slack: float = 1.5) -> Budget:
    """A budget that holds `batch_size` graphs of average size with `slack` to spare (and always the largest one).

    A bound that holds any `batch_size` graphs would be up to 6x the typical batch on PROTEINS (a few graphs have
    hundreds of nodes); `pack` instead moves a graph that would overflow the budget into the next batch.
    """
    nodes = np.array([len(n) for n in dataset.nodes])
    edges = np.array([len(s) for s in dataset.senders])
    n_node = max(int(np.ceil(slack * nodes.mean() * batch_size)), int(nodes.max())) + 1
    n_edge = max(int(np.ceil(slack * edges.mean() * batch_size)), int(edges.max()))
    return Budget(n_node, n_edge, batch_size + 1)


def pack(order: np.ndarray, node_counts: np.ndarray, edge_counts: np.ndarray, budget: Budget) -> list[np.ndarray]:
    """Splits graph ids `order` into consecutive batches of at most `budget.n_graph - 1` graphs that fit `budget`.

    A graph that would overflow the budget's nodes or edges starts the next batch instead.
    """
    batches, current, nodes, edges = [], [], 0, 0
    for i in order:
        n, e = int(node_counts[i]), int(edge_counts[i])
        if current and (
            len(current) == budget.n_graph - 1 or nodes + n > budget.n_node - 1 or edges + e > budget.n_edge
        ):
            batches.append(np.array(current))
            current, nodes, edges = [], 0, 0
        current.append(i)
        nodes, edges = nodes + n, edges + e
    if current:
        batches.append(np.array(current))
    return batches


def batch(dataset: GraphDataset, index: np.ndarray, budget: Budget) -> tuple[jraph.GraphsTuple, np.ndarray]:
    """Graphs `index` of `dataset` as one padded `GraphsTuple` and their labels padded with zeros to `n_graph`."""
    graphs = [graphs_tuple(dataset.nodes[i], dataset.senders[i], dataset.receivers[i]) for i in index]
    padded = pad(jraph.batch_np(graphs) if graphs else _empty(dataset.nodes[0].shape[1]), budget)
    labels = np.zeros(budget.n_graph, np.int32)
    labels[: len(index)] = dataset.labels[index]
    return padded, labels


def _empty(num_features: int) -> jraph.GraphsTuple:
    return graphs_tuple(np.zeros((0, num_features), np.float32), np.zeros(0), np.zeros(0))._replace(
        n_node=np.zeros(1, np.int32), n_edge=np.zeros(1, np.int32)
    )


def stack(trees: list):
    """Stacks pytrees of arrays along a new leading axis (e.g. one batch per fold)."""
    return jax.tree.map(lambda *leaves: np.stack(leaves), *trees)


class LinkSplit(NamedTuple):
    """A seeded edge split for link prediction; `*_pos`/`*_neg` are `(k, 2)` node pairs."""

    train_senders: np.ndarray  # both directions of the training edges
    train_receivers: np.ndarray
    val_pos: np.ndarray
    val_neg: np.ndarray
    test_pos: np.ndarray
    test_neg: np.ndarray


def link_split(senders, receivers, num_nodes: int, val_fraction: float, test_fraction: float, seed: int) -> LinkSplit:
    """Splits undirected edges into train/val/test (e.g. 85/5/10) and samples as many non-edges for val and test.

    The non-edges are distinct node pairs (i < j) that are not edges of the full graph, and val and test share none.
    """
    rng = np.random.default_rng(seed)
    pairs = np.stack([senders, receivers], 1)
    pairs = pairs[pairs[:, 0] < pairs[:, 1]]  # each undirected edge once
    pairs = pairs[rng.permutation(len(pairs))]
    num_val = int(np.floor(len(pairs) * val_fraction))
    num_test = int(np.floor(len(pairs) * test_fraction))
    val, test, train = pairs[:num_val], pairs[num_val : num_val + num_test], pairs[num_val + num_test :]
    existing = set((pairs[:, 0].astype(np.int64) * num_nodes + pairs[:, 1]).tolist())
    negatives, seen = [], set()
    while len(negatives) < num_val + num_test:
        i, j = rng.integers(0, num_nodes, 2)
        i, j = min(i, j), max(i, j)
        code = int(i) * num_nodes + int(j)
        if i == j or code in existing or code in seen:
            continue
        seen.add(code)
        negatives.append((i, j))
    negatives = np.array(negatives, np.int32).reshape(-1, 2)
    train_senders, train_receivers = undirected_edges(train, num_nodes)
    return LinkSplit(
        train_senders,
        train_receivers,
        val.astype(np.int32),
        negatives[:num_val],
        test.astype(np.int32),
        negatives[num_val:],
    )
