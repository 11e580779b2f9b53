"""What the graph combinatorial-optimisation environments share: state, observation, episodes, time limit.

An episode builds a solution one node at a time on one graph (a new random graph per `reset`, or a given one with
`reset_to_graph`). Each problem (`mvc.py`, `maxcut.py`) says only which nodes are valid actions, what an action
pays and when the solution is finished (`analyse` and `reward`); the rest is here.

Observation `GraphObs(graph, action_mask)`:

- `graph`: a `jraph.GraphsTuple` holding one padded graph, in jraph's padding convention: `n_node = [n, N - n]`,
  `n_edge = [e, E - e]` (int32, (2,)): the real graph, then one padding graph holding the padding nodes and edges
  (padding edges join padding node N-1 to itself, so messages never reach a real node). `globals` is None.
  - `nodes` (N, 4) float32, `NODE_FEATURES`:
    0 `in_solution`: 1 if the node is in the partial solution (the cover, or the cut set S);
    1 `real`: 1 for a real node, 0 for padding;
    2 `degree`: number of incident edges / (n - 1) (fraction of the other nodes it is joined to);
    3 `gain`: what adding the node would do to the objective / (n - 1): edges it would newly cover (MVC), change
      of the cut weight (MaxCut); 0 for nodes already in the solution and for padding. The greedy heuristic
      picks the largest.
    All features are 0 on padding nodes.
  - `edges` (E, 2) float32, `EDGE_FEATURES`: 0 `weight` (1 for MVC, U(0, 1) for MaxCut), 1 `flag`: the edge is
    still uncovered (MVC) / is currently cut (MaxCut). Both 0 on padding edges. Both directions of an edge carry
    the same features.
  - `senders`, `receivers` (E,) int32: the graph's edges, both directions listed.
- `action_mask` (N,) bool: the valid actions (read by `lepton_jax.rl.envs.action_mask`).

Invalid actions (masked nodes, or outside [0, N)) are never applied: the solution is unchanged, the step counts
towards the time limit, and `info["invalid_action"]` is True. Their reward is the problem's (MVC: the usual -1, so
stalling never pays; MaxCut: 0, the cut is unchanged). The time limit `max_steps_in_episode = N` truncates an
episode; valid play always ends earlier (a solution has at most n < N nodes).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from graphs.jraph_compat import jraph
from graphs.rl.envs.generators import Graph, GraphDistribution, sample

NODE_FEATURES = ("in_solution", "real", "degree", "gain")
EDGE_FEATURES = ("weight", "flag")


class GraphObs(NamedTuple):
    graph: jraph.GraphsTuple  # one padded graph (see the module docstring)
    action_mask: jax.Array  # (N,) bool


@struct.dataclass
class GraphEnvState(environment.EnvState):
    graph: Graph
    in_solution: jax.Array  # (N,) bool
    degree: jax.Array  # (N,) float32 real incident edges; fixed for the episode
    gain: jax.Array  # (N,) float32 objective change of adding each node (0 where not applicable)
    action_mask: jax.Array  # (N,) bool
    terminal: jax.Array  # () bool: the solution is finished


@struct.dataclass
class GraphEnvParams(environment.EnvParams):
    max_steps_in_episode: int = 1  # set to the node budget N by `GraphEnv.default_params`


class Analysis(NamedTuple):
    """A problem's reading of a partial solution."""

    edge_flag: jax.Array  # (E,) bool: uncovered (MVC) / cut (MaxCut)
    gain: jax.Array  # (N,) float32
    action_mask: jax.Array  # (N,) bool
    terminal: jax.Array  # () bool


def at_receivers(values_at_senders: jax.Array) -> jax.Array:
    """`x[receivers]` from `x[senders]` (E, ...): the twin of edge 2k is edge 2k+1, so this swaps neighbours.

    A reshape instead of a second gather; it relies on the layout of every `Graph` (both directions of an edge at
    consecutive positions; a padding edge is its own reverse).
    """
    pairs = values_at_senders.reshape((-1, 2) + values_at_senders.shape[1:])
    return pairs[:, ::-1].reshape(values_at_senders.shape)


class GraphEnv(environment.Environment):
    """A gymnax env that builds a node set on graphs of `distribution`; subclasses define the problem."""

    problem: str  # e.g. "MVC"

    def __init__(self, distribution: GraphDistribution):
        super().__init__()
        self.distribution = distribution

    # The problem: subclasses implement these two.
    def analyse(self, graph: Graph, in_solution: jax.Array, real_nodes: jax.Array, real_edges: jax.Array) -> Analysis:
        raise NotImplementedError

    def reward(self, state: GraphEnvState, action: jax.Array, valid: jax.Array) -> jax.Array:
        raise NotImplementedError

    def objective(self, obs: GraphObs) -> jax.Array:
        """The objective of the solution in `obs` (e.g. `info["final_observation"]` at an episode's end)."""
        raise NotImplementedError

    @property
    def default_params(self) -> GraphEnvParams:
        return GraphEnvParams(max_steps_in_episode=self.distribution.node_budget)

    def reset_env(self, key: jax.Array, params: GraphEnvParams) -> tuple[GraphObs, GraphEnvState]:
        graph, _ = sample(key, self.distribution)
        return self.reset_to_graph(graph)

    def reset_to_graph(self, graph: Graph) -> tuple[GraphObs, GraphEnvState]:
        """Starts an episode on `graph` (padded to this env's budgets, e.g. from an evaluation set; vmap-able).

        Steps after the episode ends auto-reset to random graphs, as usual.
        """
        num_edges = self.distribution.edge_budget
        if graph.senders.shape[-1] != num_edges:
            raise ValueError(f"graph has {graph.senders.shape[-1]} edge slots; {self.name} needs {num_edges}")
        real_edges = jnp.arange(num_edges) < graph.num_edges
        degree = jax.ops.segment_sum(real_edges.astype(jnp.float32), graph.senders, self.distribution.node_budget)
        in_solution = jnp.zeros((self.distribution.node_budget,), bool)
        return self._settle(graph, degree, in_solution, jnp.zeros((), jnp.int32))

    def step_env(self, key, state: GraphEnvState, action, params: GraphEnvParams):
        num_nodes = self.distribution.node_budget
        action = jnp.asarray(action, jnp.int32)
        valid = (action >= 0) & (action < num_nodes) & state.action_mask[jnp.clip(action, 0, num_nodes - 1)]
        reward = self.reward(state, action, valid).astype(jnp.float32)
        in_solution = state.in_solution | ((jnp.arange(num_nodes) == action) & valid)
        obs, state = self._settle(state.graph, state.degree, in_solution, state.time + 1)
        return obs, state, reward, state.terminal, {"invalid_action": ~valid}

    def _settle(self, graph, degree, in_solution, time) -> tuple[GraphObs, GraphEnvState]:
        """The state and observation of `in_solution` on `graph`: one pass over the edges."""
        num_nodes, num_edges = self.distribution.node_budget, self.distribution.edge_budget
        real_nodes = jnp.arange(num_nodes) < graph.num_nodes
        real_edges = jnp.arange(num_edges) < graph.num_edges
        analysis = self.analyse(graph, in_solution, real_nodes, real_edges)
        state = GraphEnvState(
            time=time,
            graph=graph,
            in_solution=in_solution,
            degree=degree,
            gain=analysis.gain,
            action_mask=analysis.action_mask,
            terminal=analysis.terminal,
        )
        scale = 1.0 / jnp.maximum(graph.num_nodes - 1, 1).astype(jnp.float32)
        nodes = jnp.stack(
            [in_solution.astype(jnp.float32), real_nodes.astype(jnp.float32), degree * scale, analysis.gain * scale],
            axis=-1,
        )
        edges = jnp.stack([graph.weights, analysis.edge_flag.astype(jnp.float32)], axis=-1)
        padded = jraph.GraphsTuple(
            nodes=nodes,
            edges=edges,
            senders=graph.senders,
            receivers=graph.receivers,
            globals=None,
            n_node=jnp.stack([graph.num_nodes, num_nodes - graph.num_nodes]).astype(jnp.int32),
            n_edge=jnp.stack([graph.num_edges, num_edges - graph.num_edges]).astype(jnp.int32),
        )
        return GraphObs(padded, analysis.action_mask), state

    def is_terminated(self, state: GraphEnvState, params: GraphEnvParams) -> jax.Array:
        return state.terminal

    @property
    def name(self) -> str:
        d = self.distribution
        return f"{self.problem}-{d.kind.upper()}-{d.min_nodes}-{d.max_nodes}"

    @property
    def num_actions(self) -> int:
        return self.distribution.node_budget

    def action_space(self, params=None) -> spaces.Discrete:
        return spaces.Discrete(self.distribution.node_budget)

    def observation_space(self, params=None) -> spaces.Dict:
        """The fields of `GraphObs` (a structured observation, not one Box)."""
        num_nodes, num_edges = self.distribution.node_budget, self.distribution.edge_budget
        graph = {
            "nodes": spaces.Box(-1.0, 1.0, (num_nodes, len(NODE_FEATURES)), jnp.float32),
            "edges": spaces.Box(0.0, 1.0, (num_edges, len(EDGE_FEATURES)), jnp.float32),
            "senders": spaces.Box(0, num_nodes - 1, (num_edges,), jnp.int32),
            "receivers": spaces.Box(0, num_nodes - 1, (num_edges,), jnp.int32),
        }
        return spaces.Dict({"graph": spaces.Dict(graph), "action_mask": spaces.Box(0, 1, (num_nodes,), jnp.bool_)})


class EvalResult(NamedTuple):
    returns: jax.Array  # (G,) return of the first episode on each graph
    lengths: jax.Array  # (G,) int32 steps
    objectives: jax.Array  # (G,) objective of the final solution (cover size, cut weight)
    invalid_actions: jax.Array  # (G,) int32 invalid actions taken
    truncated: jax.Array  # (G,) bool: ended by the time limit, not by a finished solution


def evaluate_on_graphs(
    env: GraphEnv,
    env_params: GraphEnvParams,
    act: Callable[[Any, GraphObs], jax.Array],
    policy_params: Any,
    graphs: Graph,
) -> EvalResult:
    """One episode on each of a batch of graphs under the deterministic policy `act(policy_params, obs) -> action`.

    `graphs` is a batched `Graph` (e.g. `EvalSet.graphs`). All episodes run in parallel for the time limit; steps
    after an episode's end are ignored. It steps with `step_env`, without gymnax's auto-reset, which would draw a
    random graph at every step only to discard it (the costly part of a step on large graphs). Jit-able.
    """
    obs, state = jax.vmap(env.reset_to_graph)(graphs)
    count = graphs.num_nodes.shape[0]
    zeros = jnp.zeros((count,), jnp.int32)
    step = jax.vmap(env.step_env, in_axes=(None, 0, 0, None))

    def body(carry, _):
        obs, state, result, alive = carry
        obs, state, reward, terminated, info = step(jax.random.PRNGKey(0), state, act(policy_params, obs), env_params)
        truncated = env.is_truncated(state, env_params)
        ends = alive & (terminated | truncated)
        result = EvalResult(
            returns=result.returns + jnp.where(alive, reward, 0.0),
            lengths=result.lengths + alive,
            objectives=jnp.where(ends, jax.vmap(env.objective)(obs), result.objectives),
            invalid_actions=result.invalid_actions + (alive & info["invalid_action"]),
            truncated=jnp.where(ends, ~terminated, result.truncated),
        )
        return (obs, state, result, alive & ~ends), None

    init = EvalResult(jnp.zeros((count,), jnp.float32), zeros, jnp.zeros((count,), jnp.float32), zeros, zeros > 0)
    # As many steps as the default time limit (valid play ends before it).
    carry = (obs, state, init, jnp.ones((count,), bool))
    (_, _, result, _), _ = jax.lax.scan(body, carry, None, length=env.distribution.node_budget)
    return result
