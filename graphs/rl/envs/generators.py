"""Random graphs generated on the accelerator (jit/vmap-able), padded to static budgets, and their NumPy forms.

A `Graph` is one undirected graph padded to a node budget `N` and a directed edge budget `E` fixed by its
`GraphDistribution` (so every graph of a distribution has the same shapes and a step function compiles once):

- nodes `0 .. num_nodes-1` are real, `num_nodes .. N-1` padding; `N = max_nodes + 1`, so node `N-1` is always a
  padding node;
- each undirected edge `{u, v}` is listed in both directions, at consecutive positions `2k` (u -> v) and `2k+1`
  (v -> u); the `num_edges` real directed edges come first, then padding edges, which join padding node `N-1` to
  itself with weight 0 (the padding convention of `graphs/batching.py`: padding edges touch padding nodes only);
- edge weights are U(0, 1) (`weighted`, for MaxCut) or 1 (for vertex cover), the same in both directions.

Distributions, with `n` uniform in `[min_nodes, max_nodes]` drawn inside the jitted generator:

- `er`: Erdős–Rényi G(n, p), each of the n(n-1)/2 node pairs an edge with probability `p`. Sampled by geometric
  skipping (Batagelj & Brandes, 2005): the gaps between successive edges, in a fixed order of the pairs, are
  Geometric(p), so a graph costs O(edge budget) random draws rather than O(N^2). The edge budget is
  mean + 6 standard deviations of the undirected edge count at `n = max_nodes` (doubled for the two directions);
  `num_dropped` flags a graph whose edges did not all fit (at p = 0.15 the binomial tail beyond the budget is
  below 2e-8 for every max_nodes from 5 to 500; the evaluation-set builder raises if it happens).
- `ba`: Barabási–Albert with `m` edges per new node, as `networkx.barabasi_albert_graph(n, m)`: the seed graph is
  the star on nodes `0..m` (centre 0), then each node `t = m+1 .. n-1` joins `m` distinct earlier nodes drawn with
  probability proportional to degree (uniform draws from the list of edge ends, repeats rejected, as networkx
  does). Exactly `m (n - m)` undirected edges; edge `m + (t - m - 1) m + j` is `(t, j-th target of t)`.
"""

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from lepton_jax.errors import UserError

KINDS = ("er", "ba")


@struct.dataclass
class Graph:
    """One padded undirected graph (see the module docstring); a batch of them has a leading axis on every leaf."""

    senders: jax.Array  # (E,) int32
    receivers: jax.Array  # (E,) int32
    weights: jax.Array  # (E,) float32, 0 on padding edges
    num_nodes: jax.Array  # () int32, real nodes
    num_edges: jax.Array  # () int32, real directed edges: twice the undirected count


@dataclasses.dataclass(frozen=True)
class GraphDistribution:
    """A random-graph distribution and the static budgets of its padded graphs (hashable: a static argument)."""

    kind: str  # "er" or "ba"
    min_nodes: int
    max_nodes: int
    weighted: bool = False  # U(0, 1) edge weights, else 1
    p: float = 0.15  # er: edge probability
    m: int = 4  # ba: edges per new node

    def __post_init__(self):
        if self.kind not in KINDS:
            raise UserError(f"unknown graph distribution '{self.kind}'; valid: {', '.join(KINDS)}")
        lowest = self.m + 1 if self.kind == "ba" else 1
        if not lowest <= self.min_nodes <= self.max_nodes:
            raise UserError(
                f"{self.kind} graphs need {lowest} <= min_nodes <= max_nodes, got {self.min_nodes}, {self.max_nodes}"
            )
        if not 0.0 < self.p < 1.0:
            raise UserError(f"the edge probability p must be in (0, 1), got {self.p}")

    @property
    def node_budget(self) -> int:
        """N: one more than the largest graph, so that node N-1 is always padding."""
        return self.max_nodes + 1

    @property
    def undirected_budget(self) -> int:
        pairs = self.max_nodes * (self.max_nodes - 1) // 2
        if self.kind == "ba":
            return self.m * (self.max_nodes - self.m)
        mean, std = self.p * pairs, math.sqrt(pairs * self.p * (1.0 - self.p))
        return max(1, min(pairs, math.ceil(mean + 6.0 * std)))

    @property
    def edge_budget(self) -> int:
        """E: directed edges, both directions of every undirected edge."""
        return 2 * self.undirected_budget


def sample(key: jax.Array, distribution: GraphDistribution) -> tuple[Graph, jax.Array]:
    """Draws one graph of `distribution` (jit/vmap-able; `distribution` is static).

    Returns:
      The padded `Graph`, and `num_dropped` () int32: 1 if some edges did not fit the budget (er only), else 0.
    """
    # All the random bits of a graph in one draw (BA's rare extra draws aside): each `jax.random` call is a
    # threefry program of its own, and a few of them made the compile of an env step several times slower.
    budget = distribution.undirected_budget
    if distribution.kind == "er":
        num_graph_bits = budget + 1
    else:
        num_graph_bits = (distribution.max_nodes - distribution.m - 1) * 2 * distribution.m
    num_weight_bits = budget if distribution.weighted else 0
    bits = jax.random.bits(key, (1 + num_graph_bits + num_weight_bits,), jnp.uint32)
    sizes = distribution.max_nodes - distribution.min_nodes + 1  # modulo bias below 1e-7 for any size here
    num_nodes = (distribution.min_nodes + bits[0] % sizes).astype(jnp.int32)
    graph_bits = bits[1 : 1 + num_graph_bits]
    if distribution.kind == "er":
        ends, num_undirected, num_dropped = _erdos_renyi(graph_bits, num_nodes, distribution)
    else:
        ends, num_undirected = _barabasi_albert(graph_bits, jax.random.fold_in(key, 1), num_nodes, distribution)
        num_dropped = jnp.zeros((), jnp.int32)
    if distribution.weighted:
        weights = _open_uniform(bits[1 + num_graph_bits :])
    else:
        weights = jnp.ones((budget,), jnp.float32)
    return _padded(ends, weights, num_nodes, num_undirected, distribution.node_budget), num_dropped


@functools.partial(jax.jit, static_argnums=1)
def sample_batch(keys: jax.Array, distribution: GraphDistribution) -> tuple[Graph, jax.Array]:
    """`sample` for each of `keys` (B,): a batched `Graph` and `num_dropped` (B,)."""
    return jax.vmap(lambda key: sample(key, distribution))(keys)


def _padded(ends, weights, num_nodes, num_undirected, node_budget) -> Graph:
    """(U, 2) undirected edges, the first `num_undirected` real -> a `Graph` with both directions interleaved."""
    real = jnp.arange(ends.shape[0]) < num_undirected  # (U,)
    ends = jnp.where(real[:, None], ends, node_budget - 1)
    return Graph(
        senders=ends.reshape(-1).astype(jnp.int32),  # u0 v0 u1 v1 ...
        receivers=ends[:, ::-1].reshape(-1).astype(jnp.int32),  # v0 u0 v1 u1 ...
        weights=jnp.repeat(jnp.where(real, weights, 0.0), 2).astype(jnp.float32),
        num_nodes=num_nodes.astype(jnp.int32),
        num_edges=(2 * num_undirected).astype(jnp.int32),
    )


def _open_uniform(bits):
    """uint32 bits -> float32 uniform on (0, 1): 24 random bits, centred in their interval (never 0 or 1)."""
    return ((bits >> 8).astype(jnp.float32) + 0.5) * (1.0 / (1 << 24))


def _erdos_renyi(bits, num_nodes, distribution):
    """G(n, p) by geometric skipping over the pairs (i, j), i < j, in the order k = j (j - 1) / 2 + i.

    In that order the pairs among the first n nodes are exactly k < n (n - 1) / 2, so one sequence of gaps serves
    every n. Returns (U, 2) edges (the first `count` real), `count`, and the overflow flag.
    """
    budget = distribution.undirected_budget
    pairs = distribution.max_nodes * (distribution.max_nodes - 1) // 2
    uniform = _open_uniform(bits)  # (U + 1,)
    # Non-edges before the next edge ~ Geometric(p); capped (the pair count is passed by then) so sums stay small.
    gaps = jnp.minimum(jnp.floor(jnp.log(uniform) / math.log1p(-distribution.p)), pairs).astype(jnp.int32)
    # Pair index of each successive edge: a running sum that saturates at `pairs + 1` (index `pairs`, past every
    # real pair), so it cannot overflow int32 however many gaps there are.
    index = jax.lax.associative_scan(lambda a, b: jnp.minimum(a + b, pairs + 1), gaps + 1) - 1  # (U + 1,)
    in_graph = index < num_nodes * (num_nodes - 1) // 2
    count = jnp.sum(in_graph[:budget]).astype(jnp.int32)
    num_dropped = in_graph[budget].astype(jnp.int32)
    return _pair(jnp.minimum(index[:budget], pairs - 1)), count, num_dropped


def _pair(k):
    """Inverse of k = j (j - 1) / 2 + i (0 <= i < j): the float square root, then an exact integer correction."""
    j = jnp.floor((1.0 + jnp.sqrt(1.0 + 8.0 * k.astype(jnp.float32))) / 2.0).astype(jnp.int32)
    j = jnp.where(j * (j - 1) // 2 > k, j - 1, j)
    j = jnp.where((j + 1) * j // 2 <= k, j + 1, j)
    return jnp.stack([k - j * (j - 1) // 2, j], axis=-1)


def _barabasi_albert(bits, key, num_nodes, distribution):
    """Preferential attachment from the star on nodes 0..m; a scan over the new nodes m+1 .. max_nodes-1.

    As networkx does: the edge ends so far list each node once per unit of degree, so a uniform draw from them is a
    node drawn with probability proportional to degree; node t takes the first m distinct nodes of a sequence of
    such draws. `2 m` draws per node come from `bits`; the rare node that needs more (mostly the first few, with
    few nodes to choose from) draws `2 m` at a time from `key` until it has m. Returns (U, 2) edges
    `(new node, target)` and the real count. Cost O(max_nodes * m^2), not O(max_nodes^2).
    """
    m, max_nodes = distribution.m, distribution.max_nodes
    draws = 2 * m
    new_nodes = jnp.arange(m + 1, max_nodes, dtype=jnp.int32)  # (T,)
    seed = jnp.stack([jnp.zeros((m,), jnp.int32), jnp.arange(1, m + 1, dtype=jnp.int32)], axis=-1)  # star edges
    grown = jnp.stack([jnp.repeat(new_nodes, m), jnp.zeros((new_nodes.shape[0] * m,), jnp.int32)], axis=-1)
    ends = jnp.concatenate([seed, grown])  # (U, 2): targets (column 1 of the grown rows) filled in below

    def append_distinct(targets, count, candidates):
        """Appends the candidates (in order) that are new, until there are m targets."""
        taken = jnp.any((candidates[:, None] == targets[None, :]) & (jnp.arange(m) < count), axis=1)
        repeated = jnp.any((candidates[:, None] == candidates[None, :]) & jnp.tri(draws, k=-1, dtype=bool), axis=1)
        new = ~taken & ~repeated
        position = count + jnp.cumsum(new) - 1
        targets = targets.at[jnp.where(new & (position < m), position, m)].set(candidates, mode="drop")
        return targets, jnp.minimum(count + jnp.sum(new), m)

    def attach(ends, inputs):
        node, node_bits = inputs
        flat_ends = ends.reshape(-1)
        # Edge ends before `node`: 2 m (node - m). The modulo's bias is below slots / 2^32 (1e-6 at 500 nodes).
        slots = (2 * m * (node - m)).astype(jnp.uint32)
        draw = lambda random_bits: flat_ends[(random_bits % slots).astype(jnp.int32)]
        targets, count = append_distinct(jnp.zeros((m,), jnp.int32), jnp.int32(0), draw(node_bits))

        def draw_more(carry):
            targets, count, attempt = carry
            more = jax.random.bits(jax.random.fold_in(key, attempt * max_nodes + node), (draws,), jnp.uint32)
            return (*append_distinct(targets, count, draw(more)), attempt + 1)

        active = node < num_nodes  # nodes past n are drawn but discarded; they need no extra draws
        targets, _, _ = jax.lax.while_loop(lambda c: active & (c[1] < m), draw_more, (targets, count, 0))
        ends = jax.lax.dynamic_update_slice(ends, targets[:, None], (m + (node - m - 1) * m, 1))
        return ends, None

    ends, _ = jax.lax.scan(attach, ends, (new_nodes, bits.reshape(new_nodes.shape[0], draws)))
    return ends, m * (num_nodes - m)


class NumpyGraph(NamedTuple):
    """An undirected graph as NumPy arrays, for exact solvers, plotting and files."""

    num_nodes: int
    edges: np.ndarray  # (k, 2) int, each undirected edge once
    weights: np.ndarray  # (k,) float


def to_numpy(graph: Graph) -> NumpyGraph:
    """The real edges of one (unbatched) padded graph, each undirected edge once (its first direction)."""
    senders, receivers, weights = (np.asarray(x) for x in (graph.senders, graph.receivers, graph.weights))
    real = slice(0, int(graph.num_edges), 2)
    edges = np.stack([senders[real], receivers[real]], axis=1)
    return NumpyGraph(int(graph.num_nodes), edges, weights[real].astype(np.float32))


def from_numpy(num_nodes: int, edges, weights, distribution: GraphDistribution) -> Graph:
    """Pads a NumPy graph to `distribution`'s budgets (NumPy leaves), e.g. a hand-made or saved graph.

    Args:
      num_nodes: real nodes, at most `distribution.max_nodes`.
      edges: (k, 2) undirected edges between distinct nodes, each once; k at most the undirected budget.
      weights: (k,) edge weights, or None for all 1.
      distribution: gives the node and edge budgets.
    """
    edges = np.asarray(edges, np.int64).reshape(-1, 2)
    weights = np.ones(len(edges), np.float32) if weights is None else np.asarray(weights, np.float32)
    budget = distribution.undirected_budget
    if not 0 < num_nodes <= distribution.max_nodes or len(edges) > budget or weights.shape != (len(edges),):
        raise UserError(
            f"graph with {num_nodes} nodes, {len(edges)} edges and {weights.shape} weights does not "
            f"fit {distribution}: at most {distribution.max_nodes} nodes and {budget} edges"
        )
    if len(edges) and (edges.min() < 0 or edges.max() >= num_nodes or np.any(edges[:, 0] == edges[:, 1])):
        raise UserError("edges must join two distinct nodes in [0, num_nodes)")
    if len(np.unique(np.sort(edges, axis=1), axis=0)) != len(edges):
        raise UserError("each undirected edge must be listed once")
    padded_ends = np.full((budget, 2), distribution.node_budget - 1, np.int32)
    padded_ends[: len(edges)] = edges
    padded_weights = np.zeros(budget, np.float32)
    padded_weights[: len(edges)] = weights
    return Graph(
        senders=padded_ends.reshape(-1),
        receivers=padded_ends[:, ::-1].reshape(-1).copy(),
        weights=np.repeat(padded_weights, 2),
        num_nodes=np.int32(num_nodes),
        num_edges=np.int32(2 * len(edges)),
    )


def stack(graphs: list[Graph]) -> Graph:
    """Graphs of one distribution as one batched `Graph` (a leading axis on every leaf), e.g. for vmapped resets."""
    return jax.tree.map(lambda *leaves: np.stack([np.asarray(x) for x in leaves]), *graphs)


def unstack(graphs: Graph) -> list[Graph]:
    """The inverse of `stack`."""
    count = int(np.shape(graphs.num_nodes)[0])
    return [jax.tree.map(lambda x, i=i: np.asarray(x)[i], graphs) for i in range(count)]
