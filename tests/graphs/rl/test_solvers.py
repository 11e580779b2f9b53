"""MVC and MaxCut solvers: the ILPs against brute force, the heuristics' guarantees, time-outs and evaluation."""

import math

import networkx as nx
import numpy as np
import pytest

from graphs.rl import solvers


def _edges(graph):
    return np.array(list(graph.edges()), np.int64).reshape(-1, 2)


def _tiny_graphs():
    """(name, n, edges, weights): random graphs of 1-12 nodes, mixed-sign weights on some, and special cases."""
    rng = np.random.default_rng(0)
    graphs = []
    for seed in range(30):
        n = int(rng.integers(1, 13))
        edges = _edges(nx.gnp_random_graph(n, rng.uniform(0.15, 0.9), seed=seed))
        weights = rng.random(len(edges)) - (0.3 if seed % 3 == 0 else 0.0)
        graphs.append((f"gnp{seed}", n, edges, weights))
    graphs.append(("no_edges", 7, np.zeros((0, 2), np.int64), np.zeros(0)))
    graphs.append(("no_nodes", 0, np.zeros((0, 2), np.int64), np.zeros(0)))
    # Two components (a 5-cycle and a triangle with a tail) and an isolated node.
    disconnected = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [4, 0], [5, 6], [6, 7], [7, 5], [7, 8]])
    graphs.append(("disconnected", 10, disconnected, rng.random(len(disconnected))))
    graphs.append(("petersen", 10, _edges(nx.petersen_graph()), np.ones(15)))
    return graphs


TINY = _tiny_graphs()
TINY_IDS = [name for name, *_ in TINY]


@pytest.mark.parametrize("name,n,edges,weights", TINY, ids=TINY_IDS)
def test_mvc_ilp_and_heuristics_against_brute_force(name, n, edges, weights):
    exact = solvers.mvc_brute_force(n, edges)
    for clique_cover in (True, False):
        ilp = solvers.mvc_ilp(n, edges, time_limit=10.0, clique_cover=clique_cover)
        assert ilp.optimal and ilp.value == exact.value == ilp.bound
        assert solvers.is_vertex_cover(n, edges, ilp.solution) and ilp.solution.sum() == ilp.value
    matching = solvers.mvc_matching(n, edges)
    greedy = solvers.mvc_greedy(n, edges)
    assert solvers.is_vertex_cover(n, edges, matching) and solvers.is_vertex_cover(n, edges, greedy)
    assert exact.value <= matching.sum() <= 2 * exact.value
    assert exact.value <= greedy.sum()


@pytest.mark.parametrize("name,n,edges,weights", TINY, ids=TINY_IDS)
def test_maxcut_ilp_against_brute_force(name, n, edges, weights):
    exact = solvers.maxcut_brute_force(n, edges, weights)
    for cycle_cuts in (True, False):
        ilp = solvers.maxcut_ilp(n, edges, weights, time_limit=10.0, cycle_cuts=cycle_cuts)
        assert ilp.optimal
        assert ilp.value == pytest.approx(exact.value, rel=1e-6, abs=1e-9)
        assert ilp.value == pytest.approx(solvers.cut_value(n, edges, weights, ilp.solution), abs=1e-9)
        assert ilp.value <= ilp.bound <= ilp.value + 1e-6 * max(1.0, abs(ilp.value))


@pytest.mark.parametrize("seed", range(3))
def test_edge_clique_cover(seed):
    graph = nx.gnp_random_graph(30, 0.4, seed=seed)
    cliques = solvers.edge_clique_cover(30, _edges(graph))
    covered = set()
    for clique in cliques:
        assert len(set(clique)) == len(clique) >= 2
        assert all(graph.has_edge(a, b) for i, a in enumerate(clique) for b in clique[i + 1 :])
        common = set.intersection(*(set(graph[node]) for node in clique))
        assert not common  # maximal: no node joins every member
        covered.update(frozenset((a, b)) for i, a in enumerate(clique) for b in clique[i + 1 :])
    assert covered == {frozenset(edge) for edge in graph.edges()}


def test_cycle_cuts_are_valid_odd_cycles():
    graph = nx.gnp_random_graph(14, 0.4, seed=3)
    n, edges = 14, _edges(graph)
    weights = np.random.default_rng(3).random(len(edges))
    cuts, lp_bound = solvers.maxcut._odd_cycle_cuts(n, edges, weights, deadline=math.inf)
    assert cuts
    optimum = solvers.maxcut_brute_force(n, edges, weights)
    assert lp_bound >= optimum.value - 1e-9
    side = optimum.solution.astype(bool)
    y = (side[edges[:, 0]] != side[edges[:, 1]]).astype(float)
    for cycle_edges, odd in cuts:
        assert odd.sum() % 2 == 1 and len(set(cycle_edges.tolist())) == len(cycle_edges) >= 3
        nodes = edges[cycle_edges].reshape(-1)
        assert np.all(np.bincount(nodes) % 2 == 0)  # each node of a cycle meets two of its edges
        assert y[cycle_edges][odd].sum() - y[cycle_edges][~odd].sum() <= odd.sum() - 1


def test_maxcut_ilp_with_and_without_cycle_cuts_agree():
    n = 30
    edges = _edges(nx.barabasi_albert_graph(n, 3, seed=0))
    weights = np.random.default_rng(0).random(len(edges))
    with_cuts = solvers.maxcut_ilp(n, edges, weights, time_limit=20.0)
    plain = solvers.maxcut_ilp(n, edges, weights, time_limit=20.0, cycle_cuts=False)
    assert with_cuts.optimal and plain.optimal
    assert with_cuts.value == pytest.approx(plain.value, rel=1e-6)


def test_maxcut_repeated_edges_add_up():
    edges = np.array([[0, 1], [1, 0], [1, 2], [0, 2]])
    weights = np.array([1.0, 2.0, 1.0, 1.0])  # 0-1 weighs 3 in all, the rest 1: the best cut takes 0-1 and one other
    for result in (solvers.maxcut_ilp(3, edges, weights), solvers.maxcut_brute_force(3, edges, weights)):
        assert result.value == pytest.approx(4.0)
        assert solvers.cut_value(3, edges, weights, result.solution) == pytest.approx(4.0)


def test_cut_value_matches_networkx():
    graph = nx.gnp_random_graph(25, 0.3, seed=1)
    rng = np.random.default_rng(1)
    edges = _edges(graph)
    weights = rng.random(len(edges))
    for (u, v), w in zip(edges, weights):
        graph[u][v]["weight"] = w
    side = rng.integers(0, 2, 25)
    expected = nx.cut_size(graph, set(np.flatnonzero(side).tolist()), weight="weight")
    assert solvers.cut_value(25, edges, weights, side) == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(4))
def test_maxcut_local_search_is_one_flip_optimal(seed):
    n = 40
    edges = _edges(nx.gnp_random_graph(n, 0.2, seed=seed))
    weights = np.random.default_rng(seed).random(len(edges)) - (0.3 if seed % 2 else 0.0)
    start = solvers.maxcut_random(n, edges, weights, seed=seed)
    for side in (solvers.maxcut_local_search(n, edges, weights), solvers.maxcut_local_search(n, edges, weights, start)):
        value = solvers.cut_value(n, edges, weights, side)
        for node in range(n):
            flipped = side.copy()
            flipped[node] ^= 1
            assert solvers.cut_value(n, edges, weights, flipped) <= value + 1e-9
    started = solvers.maxcut_local_search(n, edges, weights, start)
    assert solvers.cut_value(n, edges, weights, started) >= solvers.cut_value(n, edges, weights, start)


def test_maxcut_random_is_seeded():
    edges = _edges(nx.path_graph(50))
    weights = np.ones(49)
    first, again = (solvers.maxcut_random(50, edges, weights, seed=7) for _ in range(2))
    np.testing.assert_array_equal(first, again)
    assert set(np.unique(first).tolist()) == {0, 1}


def test_greedy_and_matching_on_worked_examples():
    # A star: greedy takes the centre; the matching takes its one edge 0-1 (both endpoints).
    star = np.array([[0, 1], [0, 2], [0, 3], [0, 4]])
    np.testing.assert_array_equal(solvers.mvc_greedy(5, star), [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(solvers.mvc_matching(5, star), [1, 1, 0, 0, 0])
    # A path 0-1-2-3 scanned in order: the matching is {0-1, 2-3}; greedy takes node 1 (degree 2, lowest), then 2.
    path = np.array([[0, 1], [1, 2], [2, 3]])
    np.testing.assert_array_equal(solvers.maximal_matching(4, path), [0, 2])
    np.testing.assert_array_equal(solvers.mvc_greedy(4, path), [0, 1, 1, 0])


def test_approximation_ratio():
    assert solvers.approximation_ratio(3, 2) == pytest.approx(1.5)  # a cover of 3 where 2 is optimal
    assert solvers.approximation_ratio(2, 3) == pytest.approx(1.5)  # a cut of 2 where 3 is optimal
    assert solvers.approximation_ratio(5, 5) == 1.0
    assert solvers.approximation_ratio(0, 0) == 1.0
    assert solvers.approximation_ratio(0, 1) == math.inf
    assert solvers.approximation_ratio(1, 0) == math.inf
    with pytest.raises(ValueError, match="non-negative"):
        solvers.approximation_ratio(-1, 2)


def test_time_limits_give_consistent_results():
    n = 300
    edges = _edges(nx.erdos_renyi_graph(n, 0.1, seed=0))
    cover = solvers.mvc_ilp(n, edges, time_limit=0.05)
    assert solvers.is_vertex_cover(n, edges, cover.solution) and cover.solution.sum() == cover.value
    assert len(solvers.maximal_matching(n, edges)) <= cover.bound <= cover.value
    assert cover.optimal == (cover.bound == cover.value)

    n = 120
    edges = _edges(nx.erdos_renyi_graph(n, 0.15, seed=0))
    weights = np.random.default_rng(0).random(len(edges))
    for time_limit in (1e-4, 0.5):
        cut = solvers.maxcut_ilp(n, edges, weights, time_limit=time_limit)
        assert not cut.optimal
        assert cut.value == pytest.approx(solvers.cut_value(n, edges, weights, cut.solution))
        assert cut.value < cut.bound <= weights.sum()
        assert cut.value >= solvers.cut_value(n, edges, weights, solvers.maxcut_local_search(n, edges, weights))
        assert cut.seconds < time_limit + 5.0


def test_bad_graphs_are_rejected():
    with pytest.raises(ValueError, match="self-loops"):
        solvers.mvc_ilp(3, np.array([[0, 1], [2, 2]]))
    with pytest.raises(ValueError, match="0..2"):
        solvers.mvc_greedy(3, np.array([[0, 3]]))
    with pytest.raises(ValueError, match="one per edge"):
        solvers.maxcut_ilp(3, np.array([[0, 1]]), np.ones(2))
    with pytest.raises(ValueError, match="valid choices"):
        solvers.evaluate("tsp", [])


def test_graph_key_ignores_edge_order():
    edges = np.array([[0, 1], [2, 1], [3, 0]])
    weights = np.array([0.1, 0.2, 0.3])
    key = solvers.graph_key("maxcut", 4, edges, weights)
    assert solvers.graph_key("maxcut", 4, edges[::-1, ::-1], weights[::-1]) == key
    assert solvers.graph_key("maxcut", 4, edges, weights + 1) != key
    assert solvers.graph_key("mvc", 4, edges, weights) == solvers.graph_key("mvc", 4, edges[::-1])


@pytest.mark.parametrize("problem", solvers.PROBLEMS)
def test_evaluate_caches_and_summarises(problem, tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    graphs = []
    for seed in range(3):
        edges = _edges(nx.gnp_random_graph(12, 0.3, seed=seed))
        graphs.append((12, edges, rng.random(len(edges))))
    cache = str(tmp_path / "ilp.json")
    records = solvers.evaluate(problem, graphs, time_limit=10.0, cache_path=cache)
    heuristics = solvers.MVC_HEURISTICS if problem == "mvc" else solvers.MAXCUT_HEURISTICS
    for record, (n, edges, weights) in zip(records, graphs):
        assert record["optimal"] and set(record["values"]) == {"ilp", *heuristics}
        brute = solvers.mvc_brute_force(n, edges) if problem == "mvc" else solvers.maxcut_brute_force(n, edges, weights)
        assert record["reference"] == pytest.approx(brute.value, rel=1e-6)

    def no_solving(*args, **kwargs):
        raise AssertionError("solved a cached graph again")

    monkeypatch.setattr(solvers.mvc, "mvc_ilp", no_solving)
    monkeypatch.setattr(solvers.maxcut, "maxcut_ilp", no_solving)
    again = solvers.evaluate(problem, graphs, time_limit=10.0, cache_path=cache)
    assert [r["values"] for r in again] == [r["values"] for r in records]

    def mean_ratios(against):
        methods = records[0]["values"]
        return {m: np.mean([solvers.approximation_ratio(r["values"][m], r[against]) for r in records]) for m in methods}

    ratios = mean_ratios("reference")
    assert ratios["ilp"] == pytest.approx(1.0)
    assert all(1.0 <= ratio < 3.0 for ratio in ratios.values())
    assert mean_ratios("bound")["ilp"] == pytest.approx(1.0, rel=1e-5)
