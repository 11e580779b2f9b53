"""Minimum vertex cover: the exact ILP (HiGHS, with a time limit and an edge-clique-cover strengthening), brute
force for tiny graphs, and the classical heuristics (max-degree greedy, the 2-approximation by maximal matching)."""

import math
import time

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

from graphs.rl.solvers.common import SolverResult, _adjacency, _canonical, _check_graph, _subsets, is_vertex_cover


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
