"""Minimum vertex cover: add nodes until every edge has an end in the cover, with as few nodes as possible.

Action: a node, added to the cover. Reward: -1 per step, so the return of a finished episode is minus the cover
size. Valid actions: real nodes not in the cover with at least one uncovered edge (adding any other node could
only enlarge the cover). Terminated exactly when every edge is covered. An invalid action changes nothing and also
pays -1, so stalling never pays and an episode cut by the time limit N scores -N, below any cover (at most n - 1
nodes). Observation and the rest: `graphs/rl/envs/common.py`.
"""

import jax
import jax.numpy as jnp

from graphs.rl.envs.common import Analysis, GraphEnv, GraphObs, at_receivers


class MinimumVertexCover(GraphEnv):
    problem = "MVC"

    def analyse(self, graph, in_solution, real_nodes, real_edges) -> Analysis:
        outside = ~in_solution[graph.senders]  # (E,)
        uncovered = real_edges & outside & at_receivers(outside)
        # Both directions are listed, so summing over senders counts each uncovered edge at both its ends.
        gain = jax.ops.segment_sum(uncovered.astype(jnp.float32), graph.senders, in_solution.shape[0])  # (N,)
        action_mask = real_nodes & ~in_solution & (gain > 0)
        return Analysis(uncovered, gain, action_mask, ~jnp.any(uncovered))

    def reward(self, state, action, valid) -> jax.Array:
        return jnp.float32(-1.0)

    def objective(self, obs: GraphObs) -> jax.Array:
        """Cover size."""
        return jnp.sum(obs.graph.nodes[..., 0], axis=-1)
