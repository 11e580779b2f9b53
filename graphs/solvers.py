"""Reference solvers and classical heuristics for Minimum Vertex Cover (MVC) and MaxCut, in NumPy and SciPy.

A graph is `n` (nodes `0..n-1`), `edges` `(k, 2)` ints (undirected, each edge once, `u != v`) and, for MaxCut,
`weights` `(k,)` floats. Solutions are `(n,)` int8 0/1 arrays: the cover (1 = in the cover) or the side of the cut.

- Exact: `mvc_ilp` and `maxcut_ilp` (integer programs solved by HiGHS through `scipy.optimize.milp`, with a time
  limit; on a time-out they return the best solution found and the best proven bound), and `mvc_brute_force` /
  `maxcut_brute_force` for tiny graphs.
- Heuristics: `mvc_greedy`, `mvc_matching`, `maxcut_local_search`, `maxcut_random`.
- Evaluation: `approximation_ratio`, `evaluate` (exact solver and heuristics over a list of graphs, optionally
  cached in a JSON file) and `mean_approximation_ratios`.
"""

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, linprog, milp
from scipy.sparse import csgraph

# The share of MaxCut's time limit that cutting planes may take before branch and bound starts.
_CUT_TIME_FRACTION = 0.3


class SolverResult(NamedTuple):
    """What an exact solver found.

    `value` is the objective of `solution`; `bound` is the best proven bound on the optimum (a lower bound for MVC,
    an upper bound for MaxCut); `optimal` says the solver proved `solution` optimal (for MaxCut: to the relative
    gap `mip_rel_gap`, so `bound` may exceed `value` by that fraction).
    """

    value: float
    solution: np.ndarray  # (n,) int8
    optimal: bool
    bound: float
    seconds: float


# ---------------------------------------------------------------------------------------------------------------
# Graph utilities.


def _check_graph(n, edges, weights=None):
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    if len(edges) and (edges.min() < 0 or edges.max() >= n):
        raise ValueError(f"edges must name nodes in 0..{n - 1}; got ids from {edges.min()} to {edges.max()}")
    if np.any(edges[:, 0] == edges[:, 1]):
        raise ValueError("edges must not contain self-loops (u == v)")
    if weights is None:
        return edges, None
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    if weights.shape != (len(edges),):
        raise ValueError(f"weights must have shape ({len(edges)},), one per edge; got {weights.shape}")
    return edges, weights


def _canonical(n, edges, weights=None):
    """Edges as sorted unique `(min, max)` pairs; the weights of repeated edges are summed."""
    edges, weights = _check_graph(n, edges, weights)
    pairs = np.sort(edges, axis=1)
    unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
    unique = unique.reshape(-1, 2)
    if weights is None:
        return unique, None
    return unique, np.bincount(inverse.reshape(-1), weights=weights, minlength=len(unique))


def _adjacency(n, edges, weights=None):
    """Symmetric `(n, n)` CSR matrix; repeated edges add up."""
    data = np.ones(len(edges)) if weights is None else weights
    upper = sparse.coo_matrix((data, (edges[:, 0], edges[:, 1])), shape=(n, n))
    return (upper + upper.T).tocsr()


def cut_value(n, edges, weights, side) -> float:
    """Total weight of the edges whose endpoints lie on different sides. `side` `(n,)` 0/1."""
    edges, weights = _check_graph(n, edges, weights)
    side = np.asarray(side).reshape(n).astype(bool)
    return float(np.sum(weights[side[edges[:, 0]] != side[edges[:, 1]]]))


def is_vertex_cover(n, edges, cover) -> bool:
    """Whether every edge has an endpoint in `cover` `(n,)` 0/1."""
    edges, _ = _check_graph(n, edges)
    cover = np.asarray(cover).reshape(n).astype(bool)
    return bool(np.all(cover[edges[:, 0]] | cover[edges[:, 1]]))


def graph_key(problem: str, n, edges, weights=None) -> str:
    """A hash of the graph (and of the weights, for MaxCut) that does not depend on the order of the edges."""
    edges, weights = _canonical(n, edges, weights if problem == "maxcut" else None)
    digest = hashlib.sha256(f"{problem}:{n}:".encode())
    digest.update(edges.astype("<i8").tobytes())
    if weights is not None:
        digest.update(weights.astype("<f8").tobytes())
    return digest.hexdigest()[:32]


# ---------------------------------------------------------------------------------------------------------------
# Minimum vertex cover.


def mvc_greedy(n, edges) -> np.ndarray:
    """Max-degree greedy: repeatedly take the node covering the most uncovered edges (ties: lowest index).

    Repeated edges count once. Returns the cover `(n,)` int8.
    """
    edges, _ = _canonical(n, edges)
    adjacency = _adjacency(n, edges)
    degree = np.diff(adjacency.indptr).astype(np.int64)  # uncovered edges at each node
    cover = np.zeros(n, np.int8)
    while n and degree.max() > 0:
        node = int(np.argmax(degree))  # first maximum: the lowest index
        cover[node] = 1
        degree[node] = 0
        neighbours = adjacency.indices[adjacency.indptr[node] : adjacency.indptr[node + 1]]
        open_neighbours = neighbours[cover[neighbours] == 0]
        degree[open_neighbours] -= 1
    return cover


def maximal_matching(n, edges) -> np.ndarray:
    """Indices of a maximal matching built greedily: edges are scanned in the order given, and an edge joins the
    matching when neither endpoint is matched yet."""
    edges, _ = _check_graph(n, edges)
    matched = np.zeros(n, bool)
    chosen = []
    for index, (u, v) in enumerate(edges.tolist()):
        if not matched[u] and not matched[v]:
            matched[u] = matched[v] = True
            chosen.append(index)
    return np.asarray(chosen, np.int64)


def mvc_matching(n, edges) -> np.ndarray:
    """The 2-approximation: both endpoints of `maximal_matching` (edges scanned in the order given).

    Any cover needs one endpoint of each matched edge, so the result is at most twice the optimum.
    """
    edges, _ = _check_graph(n, edges)
    cover = np.zeros(n, np.int8)
    cover[edges[maximal_matching(n, edges)].reshape(-1)] = 1
    return cover


def edge_clique_cover(n, edges) -> list[list[int]]:
    """Cliques that together contain every edge, built greedily: each edge not yet covered grows into a maximal
    clique by repeatedly adding the common neighbour with the most neighbours among the remaining candidates (ties:
    lowest index)."""
    edges, _ = _canonical(n, edges)
    neighbours = [set() for _ in range(n)]
    for u, v in edges.tolist():
        neighbours[u].add(v)
        neighbours[v].add(u)
    covered, cliques = set(), []
    for u, v in edges.tolist():
        if (u, v) in covered:
            continue
        clique, candidates = [u, v], neighbours[u] & neighbours[v]
        while candidates:
            node = max(sorted(candidates), key=lambda w: len(neighbours[w] & candidates))
            clique.append(node)
            candidates &= neighbours[node]
        covered.update((min(a, b), max(a, b)) for i, a in enumerate(clique) for b in clique[i + 1 :])
        cliques.append(clique)
    return cliques


def mvc_brute_force(n, edges) -> SolverResult:
    """Exact MVC by enumerating all `2**n` node subsets (n <= 21); the first optimum in binary order."""
    start = time.perf_counter()
    edges, _ = _canonical(n, edges)
    best_value, best = math.inf, None
    for subsets in _subsets(n):  # (S, n) bool
        covered = np.all(subsets[:, edges[:, 0]] | subsets[:, edges[:, 1]], axis=1)
        sizes = np.where(covered, subsets.sum(1), n + 1)
        index = int(np.argmin(sizes))
        if sizes[index] < best_value:
            best_value, best = int(sizes[index]), subsets[index]
    return SolverResult(float(best_value), best.astype(np.int8), True, float(best_value), time.perf_counter() - start)


def mvc_ilp(n, edges, time_limit: float = 60.0, *, clique_cover: bool = True) -> SolverResult:
    """Exact MVC: min sum(x) subject to x_u + x_v >= 1 for each edge, x binary, solved by HiGHS.

    With `clique_cover`, the edge rows are replaced by one row per clique of a greedy edge clique cover
    (`edge_clique_cover`): sum_{v in K} x_v >= |K| - 1 (a cover misses at most one node of a clique). These imply
    the edge rows, integer or not, and cut off fractional points such as x = 1/2 on a triangle; on 100-500 node
    graphs HiGHS was as fast to 3.5 times faster with them, and its bound at a time-out a little higher.

    On a time-out the result holds the better of HiGHS' incumbent and `mvc_greedy`'s cover, and as `bound` the
    larger of HiGHS' dual bound (rounded up: the optimum is an integer) and the size of a maximal matching.

    Args:
      n: number of nodes.
      edges: `(k, 2)` ints.
      time_limit: seconds for HiGHS.
      clique_cover: whether to write the constraints per clique rather than per edge.

    Returns:
      A `SolverResult`; `bound` is a lower bound on the minimum cover size.
    """
    start = time.perf_counter()
    edges, _ = _canonical(n, edges)
    greedy = mvc_greedy(n, edges)
    matching_bound = float(len(maximal_matching(n, edges)))
    if len(edges) == 0:
        return SolverResult(0.0, np.zeros(n, np.int8), True, 0.0, time.perf_counter() - start)
    cliques = edge_clique_cover(n, edges) if clique_cover else [list(edge) for edge in edges.tolist()]
    rows = np.repeat(np.arange(len(cliques)), [len(clique) for clique in cliques])
    matrix = sparse.csr_matrix((np.ones(len(rows)), (rows, np.concatenate(cliques))), shape=(len(cliques), n))
    result = milp(
        np.ones(n),
        integrality=np.ones(n),
        bounds=Bounds(0, 1),
        constraints=LinearConstraint(matrix, np.array([len(clique) - 1.0 for clique in cliques]), np.inf),
        # A relative gap below 1 / (2 n) leaves an absolute gap below 1/2: optimal, the objective being an integer.
        options={"time_limit": max(float(time_limit), 1e-3), "mip_rel_gap": min(1e-4, 0.5 / n)},
    )
    solution, value = greedy, float(greedy.sum())
    if result.x is not None:
        candidate = np.round(result.x).astype(np.int8)
        if is_vertex_cover(n, edges, candidate) and candidate.sum() <= value:
            solution, value = candidate, float(candidate.sum())
    bound = matching_bound
    if result.mip_dual_bound is not None and np.isfinite(result.mip_dual_bound):
        bound = max(bound, float(math.ceil(result.mip_dual_bound - 1e-6)))
    optimal = bool(result.status == 0 or value <= bound)
    if optimal:
        bound = value
    return SolverResult(value, solution, optimal, bound, time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------------------------
# MaxCut.


def maxcut_local_search(n, edges, weights, side=None) -> np.ndarray:
    """1-flip local search: from `side` (default: all nodes on side 0, the empty set), repeatedly move the node
    whose move raises the cut the most (ties: lowest index) until no single move raises it.

    Returns the side of each node `(n,)` int8, a 1-flip local optimum.
    """
    edges, weights = _check_graph(n, edges, weights)
    adjacency = _adjacency(n, edges, weights)
    spins = np.ones(n) if side is None else 1.0 - 2.0 * np.asarray(side, np.float64).reshape(n)  # 0 -> +1, 1 -> -1
    field = adjacency @ spins  # (n,)
    # A flip of node v raises the cut by spins[v] * field[v]: its edges to its own side become cut, the others not.
    tolerance = 1e-12 * max(1.0, float(np.abs(weights).sum()))
    while n:
        gains = spins * field
        node = int(np.argmax(gains))
        if gains[node] <= tolerance:
            break
        row = slice(adjacency.indptr[node], adjacency.indptr[node + 1])  # the matrix is symmetric: row = column
        field[adjacency.indices[row]] -= 2.0 * spins[node] * adjacency.data[row]
        spins[node] = -spins[node]
    return (spins < 0).astype(np.int8)


def maxcut_random(n, edges, weights, seed: int = 0) -> np.ndarray:
    """Each node on side 1 with probability 1/2 (`np.random.default_rng(seed)`); expected cut: half the weight."""
    _check_graph(n, edges, weights)
    return np.random.default_rng(seed).integers(0, 2, n).astype(np.int8)


def maxcut_brute_force(n, edges, weights) -> SolverResult:
    """Exact MaxCut by enumerating the `2**(n-1)` cuts with node 0 on side 0 (n <= 22)."""
    start = time.perf_counter()
    edges, weights = _canonical(n, edges, weights)
    best_value, best = -math.inf, np.zeros(n, bool)
    for subsets in _subsets(max(n - 1, 0)):  # (S, n - 1): the sides of nodes 1..n-1
        sides = np.concatenate([np.zeros((len(subsets), min(n, 1)), bool), subsets], axis=1)
        values = (sides[:, edges[:, 0]] != sides[:, edges[:, 1]]) @ weights
        index = int(np.argmax(values))
        if values[index] > best_value:
            best_value, best = float(values[index]), sides[index]
    return SolverResult(best_value, best.astype(np.int8), True, best_value, time.perf_counter() - start)


def maxcut_ilp(
    n, edges, weights, time_limit: float = 60.0, *, cycle_cuts: bool = True, mip_rel_gap: float = 1e-6
) -> SolverResult:
    """Exact MaxCut: max sum_e w_e y_e with y_e = [x_u != x_v], x, y binary, solved by HiGHS.

    y_e <= x_u + x_v and y_e <= 2 - x_u - x_v bound the positive-weight edges (the objective pushes y_e up),
    y_e >= |x_u - x_v| the negative ones. The lowest node of each connected component is fixed to side 0 (a cut
    and its mirror are the same). With `cycle_cuts`, rounds of LP cutting planes (for up to 30% of the time limit)
    first find violated odd-cycle inequalities (sum_{e in F} y_e - sum_{e in C \\ F} y_e <= |F| - 1, for a cycle C
    and an odd subset F of it), which every cut satisfies and the LP relaxation of the plain formulation (all
    x = 1/2, all y = 1) does not. They tighten the bound HiGHS starts from: on 40-50 node graphs (Erdos-Renyi
    p = 0.15, Barabasi-Albert m = 4, U[0, 1] weights) the cycle relaxation is often exact, and solves take
    0.1-0.8 s instead of 0.6-6 s.

    On a time-out, the result holds the better of `maxcut_local_search` from HiGHS' incumbent (if it found one) and
    from the empty set, and the best proven upper bound.

    Args:
      n: number of nodes.
      edges: `(k, 2)` ints.
      weights: `(k,)` floats.
      time_limit: seconds for the whole call (cutting planes and HiGHS).
      cycle_cuts: whether to add odd-cycle inequalities first.
      mip_rel_gap: HiGHS stops, reporting optimal, when (bound - value) / value <= this.

    Returns:
      A `SolverResult`; `bound` is an upper bound on the maximum cut.
    """
    start = time.perf_counter()
    deadline = start + float(time_limit)
    edges, weights = _canonical(n, edges, weights)
    nonzero = weights != 0  # zero-weight edges change no cut value
    edges, weights = edges[nonzero], weights[nonzero]
    k = len(edges)
    trivial_bound = float(weights[weights > 0].sum())
    if k == 0:
        return SolverResult(0.0, np.zeros(n, np.int8), True, 0.0, time.perf_counter() - start)

    cuts, lp_bound = [], trivial_bound
    if cycle_cuts:
        cuts, lp_bound = _odd_cycle_cuts(n, edges, weights, start + _CUT_TIME_FRACTION * float(time_limit))

    rows, cols, data, upper = [], [], [], []

    def add_row(columns, coefficients, rhs):
        rows.extend([len(upper)] * len(columns))
        cols.extend(columns)
        data.extend(coefficients)
        upper.append(rhs)

    for e, (u, v) in enumerate(edges.tolist()):
        y = n + e
        if weights[e] > 0:
            add_row([y, u, v], [1.0, -1.0, -1.0], 0.0)
            add_row([y, u, v], [1.0, 1.0, 1.0], 2.0)
        else:
            add_row([u, v, y], [1.0, -1.0, -1.0], 0.0)
            add_row([u, v, y], [-1.0, 1.0, -1.0], 0.0)
    for cycle_edges, odd in cuts:
        add_row([n + e for e in cycle_edges], [1.0 if f else -1.0 for f in odd], float(sum(odd) - 1))
    matrix = sparse.csr_matrix((data, (rows, cols)), shape=(len(upper), n + k))

    upper_bounds = np.ones(n + k)
    _, component = csgraph.connected_components(_adjacency(n, edges), directed=False)
    _, first_nodes = np.unique(component, return_index=True)
    upper_bounds[first_nodes] = 0.0
    result = milp(
        np.concatenate([np.zeros(n), -weights]),
        integrality=np.ones(n + k),
        bounds=Bounds(0, upper_bounds),
        constraints=LinearConstraint(matrix, -np.inf, np.array(upper)),
        options={"time_limit": max(deadline - time.perf_counter(), 1e-3), "mip_rel_gap": mip_rel_gap},
    )

    bound = min(trivial_bound, lp_bound)
    if result.mip_dual_bound is not None and np.isfinite(result.mip_dual_bound):
        bound = min(bound, -float(result.mip_dual_bound))
    if result.status == 0:
        solution = np.round(result.x[:n]).astype(np.int8)
        value = cut_value(n, edges, weights, solution)
        return SolverResult(value, solution, True, max(bound, value), time.perf_counter() - start)
    # HiGHS' incumbents on dense graphs can be worse than a plain local search: keep the better of the two.
    candidates = [maxcut_local_search(n, edges, weights)]
    if result.x is not None:
        candidates.append(maxcut_local_search(n, edges, weights, np.round(result.x[:n]).astype(np.int8)))
    solution = max(candidates, key=lambda side: cut_value(n, edges, weights, side))
    value = cut_value(n, edges, weights, solution)
    optimal = value >= bound - 1e-9 * max(1.0, abs(bound))
    return SolverResult(value, solution, bool(optimal), max(bound, value), time.perf_counter() - start)


def _odd_cycle_cuts(
    n, edges, weights, deadline, max_rounds: int = 200, cuts_per_round: int | None = None, tolerance: float = 1e-6
):
    """Cutting planes on the LP max w.y, 0 <= y <= 1, plus odd-cycle inequalities.

    Separation (Barahona and Mahjoub): in a graph with two copies of each node, edge e joins the copies of its
    endpoints within a layer at cost y_e (e outside F) and across the layers at cost 1 - y_e (e in F); a cycle's
    inequality is violated when its cost is below 1. For each edge (s, v), in F or not, the shortest path from
    (s, 0) back to the copy of v that closes an odd cycle gives a candidate; each round adds the most violated
    `cuts_per_round` (default: one per edge) and drops the cuts the last LP left slack.

    Returns the cuts as (edge indices, in-F flags) pairs and the last LP's value, an upper bound on the maximum cut.
    """
    k = len(edges)
    cuts_per_round = k if cuts_per_round is None else cuts_per_round
    u, v = edges[:, 0], edges[:, 1]
    cuts, bound = {}, float(weights[weights > 0].sum())  # key -> (edge indices, in-F flags)
    edge_index = {}
    for e, (a, b) in enumerate(edges.tolist()):
        edge_index[(a, b)] = edge_index[(b, a)] = e
    # Both directions of each edge: (s, t, e).
    heads, tails, edge_ids = np.r_[u, v], np.r_[v, u], np.r_[np.arange(k), np.arange(k)]
    sources = np.unique(edges)
    source_row = np.zeros(n, np.int64)
    source_row[sources] = np.arange(len(sources))
    for _ in range(max_rounds):
        if time.perf_counter() > deadline:
            break
        active = list(cuts.values())
        if active:
            rows = np.repeat(np.arange(len(active)), [len(c) for c, _ in active])
            cols = np.concatenate([c for c, _ in active])
            data = np.concatenate([np.where(f, 1.0, -1.0) for _, f in active])
            a_ub = sparse.csr_matrix((data, (rows, cols)), shape=(len(active), k))
            b_ub = np.array([f.sum() - 1.0 for _, f in active])
        else:
            a_ub = b_ub = None
        options = {"time_limit": max(deadline - time.perf_counter(), 1e-3)}
        lp = linprog(-weights, A_ub=a_ub, b_ub=b_ub, bounds=(0, 1), method="highs", options=options)
        if lp.status != 0:
            break
        bound = min(bound, -float(lp.fun))
        y = np.clip(lp.x, 0.0, 1.0)
        if active:  # keep the LP small: drop the cuts with slack
            slack = b_ub - a_ub @ y
            cuts = {key: cut for key, cut, s in zip(list(cuts), active, slack) if s <= tolerance}
        # Costs get a small floor: csgraph drops explicit zeros from sparse graphs.
        same, cross = y + 1e-9, 1.0 - y + 1e-9
        graph = sparse.coo_matrix(
            (
                np.concatenate([same, same, cross, cross]),
                (np.concatenate([u, u + n, u, u + n]), np.concatenate([v, v + n, v + n, v])),
            ),
            shape=(2 * n, 2 * n),
        ).tocsr()
        distances, predecessors = csgraph.dijkstra(graph, directed=False, indices=sources, return_predecessors=True)
        rows = source_row[heads]
        # Close the cycle with (t, s) in F from (t, 0), or outside F from (t, 1).
        targets = np.r_[tails, tails + n]
        costs = np.r_[1.0 - y[edge_ids] + distances[rows, tails], y[edge_ids] + distances[rows, tails + n]]
        order = np.argsort(costs, kind="stable")
        order = order[costs[order] < 1.0 - tolerance]
        new = 0
        for candidate in order.tolist():
            if new >= cuts_per_round:
                break
            head, row = int(heads[candidate % (2 * k)]), rows[candidate % (2 * k)]
            walk = [int(targets[candidate])]
            while walk[-1] != head:
                walk.append(int(predecessors[row, walk[-1]]))
            walk = walk[::-1] + [head + n]  # the closing edge ends at (s, 1): across the layers iff in F
            cycle = _simple_odd_cycle([node % n for node in walk], [node >= n for node in walk])
            if cycle is None:
                continue
            cycle_edges = np.array([edge_index[(a, b)] for a, b in zip(cycle[0][:-1], cycle[0][1:])], np.int64)
            odd = np.array(cycle[1], bool)
            violation = y[cycle_edges][odd].sum() - y[cycle_edges][~odd].sum() - (odd.sum() - 1)
            key = frozenset(zip(cycle_edges.tolist(), odd.tolist()))
            if violation > tolerance and key not in cuts:
                cuts[key] = (cycle_edges, odd)
                new += 1
        if new == 0:
            break
    return list(cuts.values()), bound


def _simple_odd_cycle(nodes, layers):
    """Reduces a closed walk `nodes` (first == last) with an odd number of layer changes to a simple cycle with an
    odd number of them, no costlier (each step costs >= 0). Returns (nodes, in-F flags per step) or None."""
    flips = [a != b for a, b in zip(layers[:-1], layers[1:])]
    while True:
        position = {}
        for i, node in enumerate(nodes[:-1]):
            if node in position:
                j = position[node]
                if sum(flips[j:i]) % 2:  # the loop j..i is odd: keep it
                    nodes, flips = nodes[j : i + 1], flips[j:i]
                else:  # the loop is even: cut it out, the rest stays odd
                    nodes, flips = nodes[:j] + nodes[i:], flips[:j] + flips[i:]
                break
            position[node] = i
        else:
            break
    if len(flips) < 3:
        return None
    return nodes, flips


def _subsets(bits: int, chunk: int = 1 << 14):
    """All `2**bits` rows of 0/1 values in binary order, in `(S, bits)` bool chunks."""
    if bits > 21:
        raise ValueError(f"brute force would enumerate 2**{bits} subsets; it is meant for about 20 nodes at most")
    total = 1 << bits
    powers = 1 << np.arange(bits, dtype=np.int64)
    for begin in range(0, total, chunk):
        numbers = np.arange(begin, min(begin + chunk, total), dtype=np.int64)
        yield (numbers[:, None] & powers) > 0


# ---------------------------------------------------------------------------------------------------------------
# Evaluation.

MVC_HEURISTICS = {"greedy": mvc_greedy, "matching": mvc_matching}
MAXCUT_HEURISTICS = {"local_search": maxcut_local_search, "random": maxcut_random}
PROBLEMS = ("mvc", "maxcut")


def approximation_ratio(value: float, reference: float) -> float:
    """max(reference / value, value / reference): 1 at the reference, above 1 the further off, for both minimising
    and maximising problems.

    Both 0 (an edgeless graph: the empty cover, the empty cut) gives 1.0; one of them 0 gives inf. Values must be
    non-negative (a ratio means nothing across signs).
    """
    value, reference = float(value), float(reference)
    if value < 0 or reference < 0:
        raise ValueError(f"approximation_ratio needs non-negative values; got value={value}, reference={reference}")
    if value == reference:
        return 1.0
    if value == 0 or reference == 0:
        return math.inf
    return max(reference / value, value / reference)


def _as_graph(problem, graph):
    """`(n, edges[, weights])` as `n`, `(k, 2)` ints and `(k,)` floats (None for MVC; MaxCut default: ones)."""
    n, edges, *rest = graph
    edges = np.asarray(edges, np.int64).reshape(-1, 2)
    if problem == "mvc":
        return int(n), edges, None
    return int(n), edges, np.asarray(rest[0], np.float64) if rest and rest[0] is not None else np.ones(len(edges))


def evaluate(
    problem: str,
    graphs: Sequence,
    time_limit: float = 60.0,
    *,
    methods: dict[str, Callable] | None = None,
    cache_path: str | None = None,
) -> list[dict]:
    """Runs the exact solver and the heuristics on each graph.

    Args:
      problem: "mvc" or "maxcut".
      graphs: `(n, edges)` or `(n, edges, weights)` tuples (MaxCut without weights: unit weights).
      time_limit: seconds of ILP per graph.
      methods: name -> function(n, edges) for MVC, function(n, edges, weights) for MaxCut, returning the cover or
        the side `(n,)`; default `MVC_HEURISTICS` or `MAXCUT_HEURISTICS`. MVC covers are checked.
      cache_path: a JSON file of ILP results keyed by `graph_key`: a graph found there is not solved again unless
        its entry is unproved and was solved with a shorter time limit. Written after each solve.

    Returns:
      One dict per graph: `key`, `n`, `num_edges`, `values` (method -> objective, "ilp" included), `optimal`
      (the ILP proved its value optimal), `bound` (the proven bound), `reference` (the best value of all methods:
      the optimum when `optimal`), `ilp_seconds`.
    """
    if problem not in PROBLEMS:
        raise ValueError(f"unknown problem {problem!r}; valid choices: {', '.join(PROBLEMS)}")
    if methods is None:
        methods = MVC_HEURISTICS if problem == "mvc" else MAXCUT_HEURISTICS
    cache = {}
    if cache_path is not None and os.path.exists(cache_path):
        with open(cache_path) as f:
            cache = json.load(f)
    records = []
    for graph in graphs:
        n, edges, weights = _as_graph(problem, graph)
        key = graph_key(problem, n, edges, weights)
        entry = cache.get(key)
        if entry is None or not (entry["optimal"] or entry["time_limit"] >= time_limit):
            if problem == "mvc":
                solved = mvc_ilp(n, edges, time_limit)
            else:
                solved = maxcut_ilp(n, edges, weights, time_limit)
            entry = {
                "value": solved.value,
                "bound": solved.bound,
                "optimal": solved.optimal,
                "seconds": solved.seconds,
                "time_limit": float(time_limit),
                "solution": "".join(map(str, solved.solution.tolist())),
            }
            if cache_path is not None:
                cache[key] = entry
                _write_json(cache_path, cache)
        values = {"ilp": float(entry["value"])}
        for name, method in methods.items():
            if problem == "mvc":
                cover = np.asarray(method(n, edges))
                if not is_vertex_cover(n, edges, cover):
                    raise ValueError(f"method {name!r} returned a set that is not a vertex cover")
                values[name] = float(cover.astype(bool).sum())
            else:
                values[name] = cut_value(n, edges, weights, method(n, edges, weights))
        reference = (min if problem == "mvc" else max)(values.values())
        record = {"key": key, "n": n, "num_edges": len(edges), "values": values, "reference": reference}
        record.update(optimal=bool(entry["optimal"]), bound=float(entry["bound"]), ilp_seconds=entry["seconds"])
        records.append(record)
    return records


def mean_approximation_ratios(records: Sequence[dict], against: str = "reference") -> dict[str, float]:
    """Method -> mean `approximation_ratio` over `evaluate`'s records.

    `against="reference"` compares with the best value found (the optimum where proved; elsewhere the ratio is a
    lower bound on the true one), `against="bound"` with the proven bound (an upper bound on the true ratio).
    """
    if against not in ("reference", "bound"):
        raise ValueError(f"unknown against={against!r}; valid choices: reference, bound")
    ratios = {}
    for record in records:
        for name, value in record["values"].items():
            ratios.setdefault(name, []).append(approximation_ratio(value, record[against]))
    return {name: float(np.mean(values)) for name, values in ratios.items()}


def _write_json(path, payload):
    temporary = f"{path}.tmp"
    with open(temporary, "w") as f:
        json.dump(payload, f, indent=1, sort_keys=True)
    os.replace(temporary, path)
