"""Graph environments (`graphs/rl/envs`): random graphs against their definitions, MVC and MaxCut episodes replayed
in NumPy, invalid actions, evaluation sets, and the env through the functions the agents use."""

import functools
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import pytest

import graphs.rl.envs as graph_envs
from graphs.rl.envs import generators
from lepton_jax import seeds
from lepton_jax.errors import UserError
from lepton_jax.rl import envs


def sample_numpy(distribution, count, seed=0):
    """`count` graphs of `distribution` as NumPy `Graph`s (one compile per distribution, cached by jit)."""
    graphs, dropped = generators.sample_batch(jax.random.split(jax.random.PRNGKey(seed), count), distribution)
    assert not np.any(dropped)
    return generators.unstack(jax.tree.map(np.asarray, graphs))


def check_padding(graph, distribution):
    n, e = int(graph.num_nodes), int(graph.num_edges)
    node_budget, edge_budget = distribution.node_budget, distribution.edge_budget
    assert graph.senders.shape == graph.receivers.shape == graph.weights.shape == (edge_budget,)
    assert distribution.min_nodes <= n <= distribution.max_nodes and e % 2 == 0
    # Real edges join real nodes, in both directions at consecutive positions; padding edges join node N-1.
    assert np.all(graph.senders[:e] < n) and np.all(graph.receivers[:e] < n)
    np.testing.assert_array_equal(graph.senders[:e:2], graph.receivers[1:e:2])
    np.testing.assert_array_equal(graph.receivers[:e:2], graph.senders[1:e:2])
    assert np.all(graph.senders[e:] == node_budget - 1) and np.all(graph.receivers[e:] == node_budget - 1)
    assert np.all(graph.weights[e:] == 0)
    simple = generators.to_numpy(graph)
    assert np.all(simple.edges[:, 0] != simple.edges[:, 1])
    assert len(np.unique(np.sort(simple.edges, 1), axis=0)) == len(simple.edges)  # no repeated edge


def degrees(graph, node_budget):
    return np.bincount(generators.to_numpy(graph).edges.reshape(-1), minlength=node_budget)


# The generator tests sample the distributions of the envs used below, so that each compiles once.
ER = generators.GraphDistribution("er", 10, 15)  # MVC-ER-10-15
BA = generators.GraphDistribution("ba", 10, 15)  # MVC-BA-10-15


def test_erdos_renyi_graphs():
    graphs = sample_numpy(ER, 2000)
    for graph in graphs[:100]:
        check_padding(graph, ER)
    sizes = np.array([int(g.num_nodes) for g in graphs])
    assert set(sizes.tolist()) == set(range(10, 16))  # every size drawn, none outside
    # Mean degree 2k/n against p (n - 1), pooled over the graphs: standard error about 0.6 % here.
    ratio = np.mean([int(g.num_edges) / n / (0.15 * (n - 1)) for g, n in zip(graphs, sizes)])
    assert abs(ratio - 1.0) < 0.025, ratio
    # Every pair of nodes is an edge with probability p (the geometric skipping must not favour any pair): the
    # frequency of {i, j}, i < j, over the graphs that have node j.
    counts = np.zeros((15, 15))
    for graph in graphs:
        edges = np.sort(generators.to_numpy(graph).edges, axis=1)
        counts[edges[:, 0], edges[:, 1]] += 1
    i, j = np.triu_indices(15, 1)
    trials = np.array([np.sum(sizes > k) for k in range(15)])[j]
    frequency = counts[i, j] / trials
    assert abs(np.sum(counts[i, j]) / np.sum(trials) - 0.15) < 0.003
    assert np.all(np.abs(frequency - 0.15) < 5 * np.sqrt(0.15 * 0.85 / trials))


def test_erdos_renyi_pair_index_inverse_is_exact():
    k = jnp.arange(200 * 199 // 2)
    i, j = np.asarray(generators._pair(k)).T
    rows, cols = np.nonzero(np.tril(np.ones((200, 200)), -1))  # (j, i) with i < j, ordered by j then i: k's order
    np.testing.assert_array_equal(j, rows)
    np.testing.assert_array_equal(i, cols)


def test_barabasi_albert_graphs_match_networkx():
    m, count = BA.m, 2000
    graphs = sample_numpy(BA, count)
    ours = []
    for index, graph in enumerate(graphs):
        if index < 100:
            check_padding(graph, BA)
        n, degree = int(graph.num_nodes), degrees(graph, BA.node_budget)
        assert int(graph.num_edges) == 2 * m * (n - m)  # exact edge count
        np.testing.assert_allclose(degree[:n].mean(), 2 * m * (n - m) / n)  # mean degree -> 2m
        assert np.all(degree[m + 1 : n] >= m) and np.all(degree[: m + 1] >= 1)
        grown = generators.to_numpy(graph).edges[m:]  # node t joins m earlier nodes
        assert np.all(grown[:, 1] < grown[:, 0])
        ours.append(degree)
    # Preferential attachment: the mean degree of every node matches networkx's generator (same seed star), with
    # networkx given the same node counts.
    rng = np.random.default_rng(0)
    theirs = []
    for graph in graphs:
        edges = np.array(nx.barabasi_albert_graph(int(graph.num_nodes), m, seed=rng).edges)
        theirs.append(np.bincount(edges.reshape(-1), minlength=BA.node_budget))
    standard_error = np.sqrt(2) * np.std(theirs, axis=0) / np.sqrt(count)
    difference = np.abs(np.mean(ours, axis=0) - np.mean(theirs, axis=0))
    assert np.all(difference <= 5 * standard_error), difference / standard_error  # equal, 0, on padding


def test_numpy_round_trip_and_bad_graphs():
    distribution = generators.GraphDistribution("er", 3, 6, weighted=True)
    graph = generators.from_numpy(4, [[0, 1], [2, 1], [3, 0]], [0.5, 0.25, 1.0], distribution)
    check_padding(graph, distribution)
    back = generators.to_numpy(graph)
    assert back.num_nodes == 4
    np.testing.assert_array_equal(back.edges, [[0, 1], [2, 1], [3, 0]])
    np.testing.assert_allclose(back.weights, [0.5, 0.25, 1.0])
    for edges in ([[0, 0]], [[0, 4]], [[0, 1], [1, 0]]):
        with pytest.raises(UserError):
            generators.from_numpy(4, edges, None, distribution)
    with pytest.raises(UserError):
        generators.from_numpy(7, [], None, distribution)


class Trace(NamedTuple):
    action: jax.Array  # (T, B)
    reward: jax.Array
    terminated: jax.Array
    invalid: jax.Array
    obs: graph_envs.GraphObs  # after each step


@functools.partial(jax.jit, static_argnums=0)
@functools.partial(chex.assert_max_traces, n=2)  # one compile per env
def random_rollout(env, graphs, key):
    """Uniformly random valid actions from `reset_to_graph(graphs)` for N steps (no auto-reset)."""
    obs, state = jax.vmap(env.reset_to_graph)(graphs)
    params = env.default_params

    def body(carry, key):
        obs, state = carry
        action = envs.random_action(None, key, obs)
        obs, state, reward, terminated, info = jax.vmap(env.step_env, in_axes=(None, 0, 0, None))(
            key, state, action, params
        )
        return (obs, state), Trace(action, reward, terminated, info["invalid_action"], obs)

    _, trace = jax.lax.scan(body, (obs, state), jax.random.split(key, env.distribution.node_budget))
    return obs, trace


def expected_features(graph, in_solution, problem):
    """NumPy recomputation of one observation: (mask, node features, edge flags of the real edges, terminal)."""
    simple = generators.to_numpy(graph)
    n, (u, v), w = simple.num_nodes, simple.edges.T, simple.weights.astype(np.float64)
    node_budget = len(in_solution)
    real = np.arange(node_budget) < n
    degree = np.bincount(simple.edges.reshape(-1), minlength=node_budget)
    if problem == "MVC":
        flag = ~in_solution[u] & ~in_solution[v]
        gain = np.bincount(u, flag, node_budget) + np.bincount(v, flag, node_budget)
        mask = real & ~in_solution & (gain > 0)
        terminal = not flag.any()
    else:
        flag = in_solution[u] != in_solution[v]
        sign_u, sign_v = 1 - 2 * in_solution[v], 1 - 2 * in_solution[u]  # +1: the other end is outside S
        gain = np.bincount(u, w * sign_u, node_budget) + np.bincount(v, w * sign_v, node_budget)
        gain[in_solution] = 0
        mask = real & ~in_solution
        terminal = not np.any(mask & (gain > 0))
    nodes = np.stack([in_solution, real, degree / max(n - 1, 1), gain / max(n - 1, 1)], -1)
    return mask, nodes, flag, terminal, gain


@pytest.mark.parametrize("name", ["MVC-ER-10-15", "MaxCut-BA-10-15"])
def test_random_play_matches_numpy(name):
    env, _ = graph_envs.make(name)
    evaluation = graph_envs.eval_set(name, 12, seed=1)
    first_obs, trace = jax.tree.map(np.asarray, random_rollout(env, evaluation.graphs, jax.random.PRNGKey(2)))
    problem = name.split("-")[0]
    for i, graph in enumerate(generators.unstack(evaluation.graphs)):
        n, e = int(graph.num_nodes), int(graph.num_edges)
        in_solution = np.zeros(env.distribution.node_budget, bool)
        obs = seeds.tree_slice(first_obs, i)
        cut = 0.0
        for t in range(n + 1):
            mask, nodes, flag, terminal, gain = expected_features(graph, in_solution, problem)
            np.testing.assert_array_equal(obs.action_mask, mask)
            np.testing.assert_allclose(obs.graph.nodes, nodes, atol=1e-5)
            np.testing.assert_array_equal(obs.graph.edges[:e:2, 1], flag)
            assert np.all(obs.graph.edges[e:] == 0)
            np.testing.assert_array_equal(obs.graph.n_node, [n, env.distribution.node_budget - n])
            np.testing.assert_array_equal(obs.graph.n_edge, [e, env.distribution.edge_budget - e])
            if t > 0:
                assert trace.terminated[t - 1, i] == terminal  # MVC: exactly when every edge is covered
                np.testing.assert_allclose(
                    env.objective(obs), in_solution.sum() if problem == "MVC" else cut, rtol=1e-5
                )
                if terminal:
                    break
            action = trace.action[t, i]
            assert mask[action] and not trace.invalid[t, i]
            expected_reward = -1.0 if problem == "MVC" else gain[action]
            np.testing.assert_allclose(trace.reward[t, i], expected_reward, rtol=1e-5, atol=1e-6)
            cut += gain[action]
            in_solution[action] = True
            obs = jax.tree.map(lambda x, t=t, i=i: x[t, i], trace.obs)
        else:
            raise AssertionError(f"episode on graph {i} did not end after {n} valid steps")


def test_hand_made_graphs():
    # MVC on a triangle with a pendant node 3 (joined to 0): {0, 1} or {0, 2} covers it in 2 steps.
    env, params = graph_envs.make("MVC-ER-3-6")
    triangle = generators.from_numpy(4, [[0, 1], [1, 2], [2, 0], [0, 3]], None, env.distribution)
    obs, state = env.reset_to_graph(triangle)
    np.testing.assert_array_equal(obs.action_mask[:5], [True, True, True, True, False])
    step = jax.jit(env.step_env)
    obs, state, reward, terminated, _ = step(jax.random.PRNGKey(0), state, 0, params)
    assert reward == -1 and not terminated
    np.testing.assert_array_equal(obs.action_mask[:4], [False, True, True, False])  # 3 has nothing left to cover
    obs, state, reward, terminated, _ = step(jax.random.PRNGKey(0), state, 2, params)
    assert reward == -1 and terminated and env.objective(obs) == 2
    # MaxCut on the path 0 -1.0- 1 -0.5- 2: adding 1 cuts both edges (1.5); then nothing gains, episode over.
    env, params = graph_envs.make("MaxCut-ER-3-6")
    path = generators.from_numpy(3, [[0, 1], [1, 2]], [1.0, 0.5], env.distribution)
    obs, state = env.reset_to_graph(path)
    np.testing.assert_allclose(obs.graph.nodes[:3, 3] * 2, [1.0, 1.5, 0.5])  # gains / (n - 1)
    obs, state, reward, terminated, _ = jax.jit(env.step_env)(jax.random.PRNGKey(0), state, 1, params)
    assert reward == 1.5 and terminated and env.objective(obs) == 1.5


@pytest.mark.parametrize("name", ["MVC-BA-10-15", "MaxCut-ER-10-15"])
def test_invalid_actions_change_nothing_and_are_flagged(name):
    env, params = graph_envs.make(name)
    step = jax.jit(jax.vmap(env.step_env, in_axes=(None, None, 0, None)))
    _, state = env.reset_to_graph(seeds.tree_slice(graph_envs.eval_set(name, 1, seed=0).graphs, 0))
    obs, state, _, terminated, _ = jax.tree.map(
        lambda x: x[0], step(None, state, jnp.argmax(state.action_mask)[None], params)
    )
    assert not terminated
    chosen, n = int(jnp.argmax(state.in_solution)), int(state.graph.num_nodes)
    node_budget = env.distribution.node_budget
    invalid = jnp.array([chosen, n, node_budget - 1, node_budget, node_budget + 7, -2, -1])  # (7,)
    new_obs, new_state, reward, terminated, info = step(None, state, invalid, params)
    assert np.all(info["invalid_action"]) and not np.any(terminated)
    np.testing.assert_array_equal(reward, -1.0 if name.startswith("MVC") else 0.0)
    unchanged = lambda x: np.broadcast_to(x, (len(invalid),) + x.shape)
    chex.assert_trees_all_equal(new_obs, jax.tree.map(unchanged, obs))
    chex.assert_trees_all_equal(new_state, jax.tree.map(unchanged, state.replace(time=state.time + 1)))


def test_time_limit_truncates_stalling():
    env, params = graph_envs.make("MVC-ER-10-15")
    _, state = env.reset(jax.random.PRNGKey(0), params)

    def stall(state, key):
        _, state, reward, terminated, truncated, _ = env.step(key, state, env.distribution.node_budget - 1, params)
        return state, (reward, terminated, truncated)

    _, (reward, terminated, truncated) = jax.lax.scan(stall, state, jax.random.split(jax.random.PRNGKey(1), 17))
    assert params.max_steps_in_episode == 16 and not np.any(terminated)
    np.testing.assert_array_equal(truncated, np.arange(17) == 15)  # step 16 truncates, then a fresh episode
    assert np.sum(reward[:16]) == -16  # below any cover of a graph with at most 15 nodes


def test_eval_sets_are_deterministic_and_round_trip(tmp_path):
    evaluation = graph_envs.eval_set("MaxCut-ER-10-15", 6, seed=7)
    chex.assert_trees_all_equal(evaluation, graph_envs.eval_set("MaxCut-ER-10-15", 6, seed=7))
    assert not np.array_equal(evaluation.graphs.senders, graph_envs.eval_set("MaxCut-ER-10-15", 6, 8).graphs.senders)
    path = str(tmp_path / "eval" / "maxcut.npz")
    graph_envs.save_eval_set(path, evaluation)
    chex.assert_trees_all_equal(graph_envs.load_eval_set(path), evaluation)
    with pytest.raises(UserError):
        graph_envs.load_eval_set(str(tmp_path / "missing.npz"))
    # The same graph part and seed: the same topology for both problems, unit weights for MVC.
    cover_set = graph_envs.eval_set("MVC-ER-10-15", 6, seed=7)
    np.testing.assert_array_equal(cover_set.graphs.senders, evaluation.graphs.senders)
    real = np.arange(cover_set.graphs.weights.shape[1]) < cover_set.graphs.num_edges[:, None]
    np.testing.assert_array_equal(cover_set.graphs.weights, real.astype(np.float32))


def greedy(params, obs):
    """The greedy heuristic: the valid node of largest gain."""
    return jnp.argmax(envs.masked_logits(obs.graph.nodes[..., 3], obs), axis=-1)


def numpy_greedy(graph, problem, node_budget):
    in_solution = np.zeros(node_budget, bool)
    total = 0.0
    while True:
        mask, _, _, terminal, gain = expected_features(graph, in_solution, problem)
        if terminal:
            return in_solution.sum() if problem == "MVC" else total
        action = np.argmax(np.where(mask, gain, -np.inf))
        total += gain[action]
        in_solution[action] = True


@pytest.mark.parametrize("name", ["MVC-BA-10-15", "MaxCut-ER-10-15"])
def test_evaluate_on_graphs_runs_the_greedy_heuristic(name):
    env, params = graph_envs.make(name)
    evaluation = graph_envs.eval_set(name, 8, seed=0)
    result = jax.jit(lambda g: graph_envs.evaluate_on_graphs(env, params, greedy, None, g))(evaluation.graphs)
    problem = name.split("-")[0]
    expected = [numpy_greedy(g, problem, env.distribution.node_budget) for g in generators.unstack(evaluation.graphs)]
    np.testing.assert_allclose(result.objectives, expected, rtol=1e-5)
    np.testing.assert_allclose(result.returns, -result.objectives if problem == "MVC" else result.objectives, rtol=1e-5)
    assert not np.any(result.truncated) and not np.any(result.invalid_actions)
    if problem == "MVC":
        np.testing.assert_array_equal(result.lengths, result.objectives)


def test_make_env_names():
    spec = envs.make_env("MaxCut-BA-40-50")
    assert spec.obs_shape is None and spec.action_dim == 51 and spec.max_episode_steps == 51
    assert not spec.continuous and isinstance(spec.env, graph_envs.MaxCut) and spec.env.name == "MaxCut-BA-40-50"
    assert isinstance(envs.make_env("MVC-ER-15-20").env, graph_envs.MinimumVertexCover)
    for bad in ["MVC-XX-15-20", "MVC-ER-20-15", "MVC-BA-3-10", "MaxCut-ER-15", "MVC-ER-0-5", "MVC-er-15-20"]:
        with pytest.raises(UserError, match="expected") as error:
            envs.make_env(bad)
        assert "\n" not in str(error.value)


def test_batched_envs_run_with_the_agents_functions():
    spec = envs.make_env("MVC-ER-10-15")

    @jax.jit
    @functools.partial(chex.assert_max_traces, n=1)
    def run(key):
        runner = envs.reset(spec, key, 16)

        def body(runner, key):
            action_key, step_key = jax.random.split(key)
            runner, result = envs.step(spec, runner, envs.random_action(spec, action_key, runner.obs), step_key)
            return runner, result.terminated

        return jax.lax.scan(body, runner, jax.random.split(key, 40))

    runner, terminated = run(jax.random.PRNGKey(0))
    assert np.all(runner.episodes >= 2) and np.sum(terminated) == np.sum(runner.episodes)
    finished = np.asarray(runner.last_length)
    np.testing.assert_array_equal(runner.last_return, -finished)  # -1 per node of the cover
    assert np.all((finished >= 1) & (finished <= 15))
