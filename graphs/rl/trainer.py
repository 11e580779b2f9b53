"""GNN + RL on graphs: S2V-DQN and a GNN-policy PPO on the graph environments, scored against exact optima.

The agents are the project's own DQN and PPO (`agents/dqn.py`, `agents/ppo.py`) with a structure2vec network
plugged in (`graphs/rl/policies.py`): the state is the graph with the partial solution marked on its nodes, the
action a node, and invalid nodes are masked. Training runs through the shared RL loop (chunks, checkpoints,
resume, logs). Afterwards every seed's greedy policy solves fixed, seeded evaluation sets of graphs (the training
distribution, and optionally larger graphs for generalisation), saved in the workdir; the same graphs are solved
exactly by an ILP (HiGHS, with a time limit) and by the classical heuristics (`graphs/rl/solvers/`), and
`results.json` gets the approximation ratios `max(OPT / c, c / OPT)` averaged over the graphs.

Where the ILP hits its time limit the optimum is unknown: the ratio is then taken against the best solution any
method found (a lower bound on the true ratio) and also against the ILP's proven bound (an upper bound), and
`*/ilp_optimal_fraction` says how many graphs were solved to optimality.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

import graphs.rl.envs as graph_envs
from agents import dqn, ppo
from graphs.rl import solvers
from graphs.rl.policies import GraphActorCritic, GraphQNetwork
from lepton_jax import parallel, placement, plotting, registry, run, seeds
from lepton_jax.errors import UserError
from lepton_jax.rl import envs, loop

_AGENTS = {"graph_dqn": dqn.make_agent, "graph_ppo": ppo.make_agent}
_HEURISTICS = {"MVC": ("greedy", "matching"), "MaxCut": ("local_search", "random")}


def network(config):
    """The structure2vec network of `config.trainer`: per-node Q-values (DQN) or a per-node policy + value (PPO)."""
    sizes = dict(
        features=config.features,
        rounds=config.rounds,
        aggregation=config.aggregation,
        pooling=config.pooling,
        relative=config.get("relative_features", False),
        gain_units=config.get("gain_units", "scaled"),
    )
    return GraphQNetwork(**sizes) if config.trainer == "graph_dqn" else GraphActorCritic(**sizes)


def make_agent(config, spec: envs.EnvSpec):
    """The agent of `config.trainer` ("graph_dqn" or "graph_ppo") on a graph env, with its GNN plugged in."""
    if config.trainer not in _AGENTS:
        raise UserError(f"unknown graph trainer '{config.trainer}'; valid: {', '.join(_AGENTS)}")
    if not isinstance(spec.env, graph_envs.GraphEnv):
        raise UserError(f"{config.trainer} needs a graph environment (MVC-... or MaxCut-...), not {spec.name}")
    return _AGENTS[config.trainer](config, spec, network=network(config))


def _problem(name: str) -> str:
    return graph_envs.parse_name(name)[0]


def load_or_make_eval_set(workdir: str, name: str, num_graphs: int, seed: int) -> graph_envs.EvalSet:
    """The fixed evaluation set of env `name`, read from the workdir, or drawn (seeded) and saved there."""
    path = os.path.join(workdir, "eval_sets", f"{name}-seed{seed}-{num_graphs}.npz")
    if os.path.exists(path):
        return graph_envs.load_eval_set(path)
    evaluation_set = graph_envs.eval_set(name, num_graphs, seed)
    if parallel.is_main_process():
        graph_envs.save_eval_set(path, evaluation_set)
    return evaluation_set


def agent_objectives(name: str, act, params, graphs: graph_envs.Graph, max_edges_per_call: int = 200_000):
    """Objective (cover size / cut weight) of every seed's greedy solution of every graph: `(seeds, graphs)`.

    Graphs are solved a chunk at a time (about `max_edges_per_call` edges per chunk), so large graphs fit in memory.
    """
    env, env_params = graph_envs.make(name)
    solve = jax.jit(jax.vmap(lambda p, g: graph_envs.evaluate_on_graphs(env, env_params, act, p, g), (0, None)))
    count = graphs.num_nodes.shape[0]
    chunk = max(1, min(count, max_edges_per_call // env.distribution.edge_budget))
    out = []
    for start in range(0, count, chunk):
        # The last chunk is padded with copies of its last graph, so every call has the same shape (one compile).
        index = np.minimum(np.arange(start, start + chunk), count - 1)
        size = min(chunk, count - start)
        part = jax.tree.map(lambda x, i=index: np.asarray(x)[i], graphs)
        result = solve(params, part)
        if np.any(np.asarray(result.truncated)[:, :size]):
            logging.warning("%s: some episodes hit the time limit (invalid actions?)", name)
        out.append(np.asarray(result.objectives)[:, :size])
    return np.concatenate(out, axis=1)


def greedy_solution(name: str, act, params, graph: graph_envs.Graph) -> np.ndarray:
    """The node set (N,) bool that the greedy policy `act(params, .)` builds on one graph."""
    env, env_params = graph_envs.make(name)

    def run(params, graph):
        obs, state = env.reset_to_graph(graph)

        def body(carry, _):
            obs, state, done = carry
            action = act(params, jax.tree.map(lambda x: x[None], obs))[0]
            new_obs, new_state, _, terminated, _ = env.step_env(jax.random.PRNGKey(0), state, action, env_params)
            keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(done, b, a), new, old)  # noqa: E731
            return (keep(new_obs, obs), keep(new_state, state), done | terminated), None

        (_, state, _), _ = jax.lax.scan(body, (obs, state, state.terminal), None, env.distribution.node_budget)
        return state.in_solution

    return np.asarray(jax.jit(run)(params, graph))


def numpy_graphs(graphs: graph_envs.Graph) -> list[graph_envs.NumpyGraph]:
    return [graph_envs.to_numpy(g) for g in seeds.tree_unstack(graphs)]


def score(problem: str, agent_values: np.ndarray, records: list[dict], prefix: str = "test") -> dict:
    """Approximation ratios of the agent (per seed: `<prefix>/approx_ratio_mean`, `_std`, `per_seed/...`) and of each
    heuristic (`<prefix>/<method>_ratio`), from `solvers.evaluate`.

    The reference of a graph is the ILP's optimum where proved; elsewhere the best value any method found, the
    agent's seeds included (so that no ratio is below 1), and the proven bound gives the `*_vs_bound` figures.
    """
    better = np.min if problem == "MVC" else np.max
    references = np.array(
        [
            r["reference"] if r["optimal"] else better([r["reference"], *agent_values[:, i]])
            for i, r in enumerate(records)
        ]
    )
    bounds = np.array([r["bound"] for r in records])
    ratio = np.vectorize(solvers.approximation_ratio)
    per_seed = ratio(agent_values, references[None]).mean(axis=1)
    per_seed_bound = ratio(agent_values, np.maximum(bounds, 0)[None]).mean(axis=1)
    out = run.seed_summary({"approx_ratio": per_seed, "approx_ratio_vs_bound": per_seed_bound})
    out = {k.replace("approx_ratio", f"{prefix}/approx_ratio", 1): v for k, v in out.items()}
    whole_set = {
        "objective_mean": float(agent_values.mean()),  # over seeds and graphs
        "ilp_optimal_fraction": float(np.mean([r["optimal"] for r in records])),
        "ilp_seconds_mean": float(np.mean([r["ilp_seconds"] for r in records])),
        "num_graphs": len(records),
    }
    for method in ("ilp", *_HEURISTICS[problem]):
        values = np.array([r["values"][method] for r in records])
        whole_set[f"{method}_ratio"] = float(ratio(values, references).mean())
    return out | {f"{prefix}/{k}": v for k, v in whole_set.items()}


def evaluate_sets(config, workdir: str, act, params) -> tuple[dict, dict]:
    """Scores the trained seeds on the training distribution's fixed set (`test/...`) and on the generalisation
    sets (`generalization/<env>/...`). Returns (flat results, what the solution plot needs)."""
    names = [config.env_name] + [n for n in config.generalization.split(",") if n]
    results, plot_inputs = {}, {}
    for i, name in enumerate(names):
        problem = _problem(name)
        if problem != _problem(config.env_name):
            raise UserError(f"generalization set {name} is a different problem from {config.env_name}")
        num_graphs = config.eval_graphs if i == 0 else config.generalization_graphs
        evaluation_set = load_or_make_eval_set(workdir, name, num_graphs, config.eval_set_seed)
        values = agent_objectives(name, act, params, evaluation_set.graphs)
        graph_list = numpy_graphs(evaluation_set.graphs)
        cache = os.path.join(workdir, "eval_sets", f"{name}-seed{config.eval_set_seed}-{num_graphs}-reference.json")
        time_limit = config.ilp_time_limit if i == 0 else config.generalization_ilp_time_limit
        records = solvers.evaluate(problem.lower(), graph_list, time_limit, cache_path=cache, progress=f"exact {name}")
        prefix = "test" if i == 0 else f"generalization/{name}"
        results.update(score(problem, values, records, prefix))
        logging.info("%s: agent ratio %.4f", name, results[f"{prefix}/approx_ratio_mean"])
        if i == 0:
            plot_inputs = dict(
                name=name,
                graph=seeds.tree_slice(evaluation_set.graphs, 0),
                numpy_graph=graph_list[0],
                record=records[0],
            )
    return results, plot_inputs


def plot_solution(path: str, problem: str, graph: graph_envs.NumpyGraph, solutions: dict[str, np.ndarray]) -> None:
    """A PNG with one panel per solution of the same graph: the cover in red (MVC), or the two sides of the cut in
    two colours with the cut edges drawn bold (MaxCut)."""
    import networkx as nx

    plt = plotting.pyplot()

    nx_graph = nx.Graph()
    nx_graph.add_nodes_from(range(graph.num_nodes))
    nx_graph.add_edges_from(map(tuple, graph.edges.tolist()))
    layout = nx.spring_layout(nx_graph, seed=0)
    fig, axes = plt.subplots(1, len(solutions), figsize=(5 * len(solutions), 5), squeeze=False)
    for ax, (title, chosen) in zip(axes[0], solutions.items()):
        chosen = np.asarray(chosen, bool)[: graph.num_nodes]
        if problem == "MVC":
            colours = ["tab:red" if c else "lightgrey" for c in chosen]
            widths = 0.8
        else:
            colours = ["tab:orange" if c else "tab:blue" for c in chosen]
            widths = [2.5 if chosen[u] != chosen[v] else 0.4 for u, v in graph.edges]
        nx.draw_networkx_edges(nx_graph, layout, ax=ax, width=widths, edge_color="dimgrey")
        nx.draw_networkx_nodes(
            nx_graph, layout, ax=ax, node_color=colours, node_size=80, edgecolors="black", linewidths=0.5
        )
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    plotting.save(fig, path, dpi=100)


def _plot(config, workdir: str, act, params, inputs: dict) -> str:
    problem, graph = _problem(inputs["name"]), inputs["numpy_graph"]
    seed0 = seeds.tree_slice(params, 0)
    agent = greedy_solution(inputs["name"], act, seed0, inputs["graph"])
    if problem == "MVC":
        heuristic_name, heuristic = "max-degree greedy", solvers.mvc_greedy(graph.num_nodes, graph.edges)
        value = lambda s: int(np.sum(s[: graph.num_nodes]))  # noqa: E731
        unit = "cover size"
    else:
        heuristic_name = "greedy local search"
        heuristic = solvers.maxcut_local_search(graph.num_nodes, graph.edges, graph.weights)
        value = lambda s: solvers.cut_value(graph.num_nodes, graph.edges, graph.weights, s[: graph.num_nodes])  # noqa: E731
        unit = "cut weight"
    best = inputs["record"]["reference"]
    label = "optimum" if inputs["record"]["optimal"] else "best known"
    solutions = {
        f"{config.trainer} (seed 0): {unit} {value(agent):.4g} ({label} {best:.4g})": agent,
        f"{heuristic_name}: {unit} {value(np.asarray(heuristic)):.4g}": np.asarray(heuristic),
    }
    path = os.path.join(workdir, "plots", "solution.png")
    plot_solution(path, problem, graph, solutions)
    return path


def train_and_evaluate(config, workdir: str) -> dict:
    """Trains through the shared RL loop; after training, scores the seeds on the fixed evaluation sets (results.json
    is written once, by the loop, with these scores in it)."""
    placement.check(config)  # before training: `placement.eval` places the scoring below, `placement.replay` DQN's

    def score_seeds(agent, params, workdir):
        params = placement.to_eval_device(config, params)  # solved where `config.placement.eval` says
        scores, plot_inputs = evaluate_sets(config, workdir, agent.act, params)
        if parallel.is_main_process():
            scores["plot/solution"] = _plot(config, workdir, agent.act, params, plot_inputs)
        return scores

    return loop.train_and_evaluate(config, workdir, make_agent, after_training=score_seeds)


registry.register("graph_dqn")(train_and_evaluate)
registry.register("graph_ppo")(train_and_evaluate)
