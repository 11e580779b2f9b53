"""What the MVC and MaxCut solvers share: the graph format, checks, hashing, and the approximation ratio.

A graph is `n` (nodes `0..n-1`), `edges` `(k, 2)` ints (undirected, each edge once, `u != v`) and, for MaxCut,
`weights` `(k,)` floats. Solutions are `(n,)` int8 0/1 arrays: the cover (1 = in the cover) or the side of the cut.
"""

import hashlib
import math
from typing import NamedTuple

import numpy as np
from scipy import sparse


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


def _subsets(bits: int, chunk: int = 1 << 14):
    """All `2**bits` rows of 0/1 values in binary order, in `(S, bits)` bool chunks."""
    if bits > 21:
        raise ValueError(f"brute force would enumerate 2**{bits} subsets; it is meant for about 20 nodes at most")
    total = 1 << bits
    powers = 1 << np.arange(bits, dtype=np.int64)
    for begin in range(0, total, chunk):
        numbers = np.arange(begin, min(begin + chunk, total), dtype=np.int64)
        yield (numbers[:, None] & powers) > 0
