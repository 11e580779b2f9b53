"""Maximum cut: grow a node set S so that the weight of the edges between S and the rest is as large as possible.

Action: a node, added to S. Reward: the change of the cut weight, so the return is the final cut weight. Adding v
changes the cut by

    gain(v) = sum of w_uv over neighbours u not in S  -  sum of w_uv over neighbours u in S.

Valid actions: real nodes not in S (a step may lower the cut). Terminated when no valid node would raise it
(every gain <= 0, or no node left): S is then a local optimum for additions. An invalid action changes nothing
and pays 0. Edge weights are U(0, 1). Observation and the rest: `graphs/rl/envs/common.py`.
"""

import jax
import jax.numpy as jnp

from graphs.rl.envs.common import Analysis, GraphEnv, GraphObs, at_receivers


class MaxCut(GraphEnv):
    problem = "MaxCut"

    def analyse(self, graph, in_solution, real_nodes, real_edges) -> Analysis:
        # Padding edges have weight 0, so they add nothing to any gain.
        sender_in = in_solution[graph.senders]  # (E,)
        receiver_in = at_receivers(sender_in)
        sign = 1.0 - 2.0 * receiver_in.astype(jnp.float32)  # +1: the neighbour is outside S
        gain = jax.ops.segment_sum(graph.weights * sign, graph.senders, in_solution.shape[0])  # (N,)
        gain = jnp.where(in_solution, 0.0, gain)
        cut = sender_in != receiver_in  # False on padding edges (self-loops)
        action_mask = real_nodes & ~in_solution
        return Analysis(cut, gain, action_mask, ~jnp.any(action_mask & (gain > 0)))

    def reward(self, state, action, valid) -> jax.Array:
        return jnp.where(valid, state.gain[jnp.clip(action, 0, state.gain.shape[0] - 1)], 0.0)

    def objective(self, obs: GraphObs) -> jax.Array:
        """Cut weight (each cut edge is listed twice)."""
        edges = obs.graph.edges
        return 0.5 * jnp.sum(edges[..., 0] * edges[..., 1], axis=-1)
