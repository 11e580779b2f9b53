"""GNN networks for RL on graphs: per-node Q-values (S2V-DQN) and a per-node policy with a value (PPO).

They read the graph environments' observation (`graphs/rl/envs`): a padded single graph `obs.graph` and
`obs.action_mask`, with any leading batch shape (envs, time x envs, a replay batch...). The batch is merged into one
disjoint graph (node indices offset per graph) so that each message-passing round is a single gather and scatter,
then split back to `(..., N)` per-node outputs. Masking invalid actions is the agent's business
(`lepton_jax.rl.envs.masked_logits`), not the network's.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from graphs.rl.envs.common import NODE_FEATURES
from lepton_jax.errors import UserError
from lepton_jax.rl.distributions import Categorical

POOLINGS = ("sum", "mean")
GAIN_UNITS = ("scaled", "reward")
_GAIN = NODE_FEATURES.index("gain")


def merge_batch(obs):
    """Leading batch shape, and the batch as one graph: `(lead, nodes (B*N, F), edges (B*E, Fe), senders, receivers,
    node_mask (B, N))`."""
    graph = obs.graph
    lead = obs.action_mask.shape[:-1]
    num_nodes = obs.action_mask.shape[-1]
    nodes = graph.nodes.reshape((-1, num_nodes, graph.nodes.shape[-1]))
    batch = nodes.shape[0]
    offsets = (jnp.arange(batch, dtype=graph.senders.dtype) * num_nodes)[:, None]
    senders = (graph.senders.reshape((batch, -1)) + offsets).reshape(-1)
    receivers = (graph.receivers.reshape((batch, -1)) + offsets).reshape(-1)
    edges = graph.edges.reshape((-1, graph.edges.shape[-1]))
    node_mask = jnp.arange(num_nodes) < graph.n_node.reshape((batch, -1))[:, :1]
    return lead, nodes.reshape((batch * num_nodes, -1)), edges, senders, receivers, node_mask


def pool(mu, node_mask, how: str):
    """(B, N, D) embeddings -> (B, D): the sum (S2V-DQN) or mean over each graph's real nodes."""
    if how not in POOLINGS:
        raise UserError(f"unknown pooling '{how}'; valid: {', '.join(POOLINGS)}")
    total = jnp.sum(mu * node_mask[..., None], axis=1)
    return total if how == "sum" else total / jnp.maximum(node_mask.sum(1, keepdims=True), 1)


class Structure2Vec(nn.Module):
    """structure2vec node embeddings as S2V-DQN uses them (Dai et al. 2016; Khalil, Dai et al. 2017).

    `rounds` rounds with shared weights, from `mu = 0`:

        mu_v <- relu(theta1 x_v + theta2 AGG_{u in N(v)} mu_u + theta3 AGG_{u in N(v)} relu(theta4 e_uv))

    with `x_v` the node features (the partial-solution flag among them) and `e_uv` the edge features (the weight
    among them). `aggregation` "sum" is the paper's; "mean" divides by the degree, which keeps the embeddings'
    scale when graphs at test time are much denser than in training. Takes one (possibly merged) padded graph;
    padding edges join padding nodes only, so they never reach a real node.
    """

    features: int = 64
    rounds: int = 4
    aggregation: str = "sum"

    @nn.compact
    def __call__(self, nodes, edges, senders, receivers):
        num_nodes = nodes.shape[0]
        if self.aggregation not in ("sum", "mean"):
            raise UserError(f"unknown aggregation '{self.aggregation}'; valid: sum, mean")
        scale = 1.0
        if self.aggregation == "mean":
            degree = jax.ops.segment_sum(jnp.ones_like(receivers, jnp.float32), receivers, num_nodes)
            scale = 1.0 / jnp.maximum(degree, 1.0)[:, None]
        edge_terms = nn.relu(nn.Dense(self.features, name="theta4")(edges))
        static = nn.Dense(self.features, name="theta1")(nodes) + nn.Dense(self.features, use_bias=False, name="theta3")(
            scale * jax.ops.segment_sum(edge_terms, receivers, num_nodes)
        )
        theta2 = nn.Dense(self.features, use_bias=False, name="theta2")
        mu = nn.relu(static)  # round 1 (mu = 0 before it)
        for _ in range(self.rounds - 1):
            mu = nn.relu(static + theta2(scale * jax.ops.segment_sum(mu[senders], receivers, num_nodes)))
        return mu


class NodeScores(nn.Module):
    """S2V-DQN's head: `theta5^T relu([theta6 pool(mu), theta7 mu_v])`, one score per node."""

    features: int = 64

    @nn.compact
    def __call__(self, mu, pooled):
        graph_term = nn.Dense(self.features, name="theta6")(pooled)[:, None, :]
        node_term = nn.Dense(self.features, name="theta7")(mu)
        hidden = jnp.concatenate([jnp.broadcast_to(graph_term, node_term.shape), node_term], -1)
        return nn.Dense(1, name="theta5")(nn.relu(hidden))[..., 0]


def relative_features(nodes, node_mask):
    """Each node-feature column divided by its largest magnitude over the graph's real nodes, (B*N, F) -> (B*N, F).

    The environments scale degree-like features by 1 / (n - 1); on sparse graphs much larger than the training
    ones (Barabási–Albert: the degree does not grow with n) that shrinks them out of the training range. Relative
    to the graph's largest value they are scale-free; 0/1 flags are unchanged (an all-zero column stays zero).
    """
    batch, num_nodes = node_mask.shape
    per_graph = nodes.reshape((batch, num_nodes, -1))
    scale = jnp.max(jnp.abs(per_graph) * node_mask[..., None], axis=1, keepdims=True)
    return (per_graph / jnp.where(scale > 1e-6, scale, 1.0)).reshape(nodes.shape)


def gain_in_reward_units(nodes, node_mask):
    """The `gain` column times (n - 1), undoing the environments' 1 / (n - 1) scaling, (B*N, F) -> (B*N, F).

    The gain is then what adding the node changes the objective by, in the objective's own units: for MaxCut the
    action's reward. A Q-value is in those units too, and the scaled gain hides them where n cannot be read off
    the other features (Erdős–Rényi graphs: degree / (n - 1) is about p whatever n is).
    """
    batch, num_nodes = node_mask.shape
    scale = jnp.maximum(node_mask.sum(1) - 1, 1).astype(nodes.dtype)  # (B,)
    per_graph = nodes.reshape((batch, num_nodes, -1))
    return per_graph.at[..., _GAIN].multiply(scale[:, None]).reshape(nodes.shape)


class GraphEmbedding(nn.Module):
    """Structure2Vec over a batch of padded graphs: `(lead, mu (B, N, D), pooled (B, D))`."""

    features: int = 64
    rounds: int = 4
    aggregation: str = "sum"
    pooling: str = "sum"
    relative: bool = False  # `relative_features` on the inputs
    gain_units: str = "scaled"  # "reward": `gain_in_reward_units` on the inputs (before `relative`)

    @nn.compact
    def __call__(self, obs):
        lead, nodes, edges, senders, receivers, node_mask = merge_batch(obs)
        if self.gain_units not in GAIN_UNITS:
            raise UserError(f"unknown gain_units '{self.gain_units}'; valid: {', '.join(GAIN_UNITS)}")
        if self.gain_units == "reward":
            nodes = gain_in_reward_units(nodes, node_mask)
        if self.relative:
            nodes = relative_features(nodes, node_mask)
        mu = Structure2Vec(self.features, self.rounds, self.aggregation, name="s2v")(nodes, edges, senders, receivers)
        mu = mu.reshape(node_mask.shape + (self.features,))
        return lead, mu, pool(mu, node_mask, self.pooling)


class _GraphNetwork(nn.Module):
    """The sizes and input options that the networks below pass to their `GraphEmbedding`."""

    features: int = 64
    rounds: int = 4
    aggregation: str = "sum"
    pooling: str = "sum"
    relative: bool = False
    gain_units: str = "scaled"

    def embedding(self) -> GraphEmbedding:
        sizes = (self.features, self.rounds, self.aggregation, self.pooling, self.relative, self.gain_units)
        return GraphEmbedding(*sizes)


class GraphQNetwork(_GraphNetwork):
    """Q(s, v) for every node v of each graph in the batch: `(..., N)` (S2V-DQN)."""

    @nn.compact
    def __call__(self, obs):
        lead, mu, pooled = self.embedding()(obs)
        q = NodeScores(self.features)(mu, pooled)
        return q.reshape(lead + q.shape[-1:])


class GraphActorCritic(_GraphNetwork):
    """A per-node categorical policy and a graph value, on one shared S2V embedding: `(dist, value (...))`."""

    def setup(self):
        self.embed = self.embedding()
        self.scores = NodeScores(self.features)
        self.value_head = nn.Sequential([nn.Dense(self.features), nn.relu, nn.Dense(1)])

    def __call__(self, obs):
        lead, mu, pooled = self.embed(obs)
        logits = self.scores(mu, pooled)
        value = self.value_head(pooled)[..., 0]
        return Categorical(logits.reshape(lead + logits.shape[-1:])), value.reshape(lead)

    def value(self, obs):
        lead, _, pooled = self.embed(obs)
        return self.value_head(pooled)[..., 0].reshape(lead)
