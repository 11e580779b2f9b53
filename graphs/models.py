"""Graph neural networks on (padded) `jraph.GraphsTuple`s: GCN, GAT, MPNN with edge features, GIN, and a per-node
MLP that ignores the edges (the graph-less baseline and distillation student).

GCN, GAT, MPNN and the MLP map a graph to per-node outputs `(num_nodes, num_outputs)` (node classification,
link-prediction encoders, per-node policies); GIN maps a batch of graphs to per-graph logits. All take a padded graph
as it comes: padding edges join padding nodes only (see `graphs/batching.py`), so they never change a real node's
output, and the number of nodes is read from the array shapes, so each shape compiles once.

Messages flow `senders[k] -> receivers[k]`; an undirected graph lists each edge in both directions.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from graphs.jraph_compat import jraph
from lepton_jax import parallel
from lepton_jax.errors import UserError
from lepton_jax.layers import MLP, activation

glorot = nn.initializers.glorot_uniform()  # as in the GCN and GAT papers' code


@struct.dataclass
class SparseFeatures:
    """Node features as COO entries `(rows, cols, values)`: a `GraphsTuple.nodes` that GCN and GAT accept.

    Bag-of-words features (Cora: 1.3 % non-zero) are mostly zeros. Dropout of a zero does nothing, so dropping the
    stored values only is the same random function as dropout on the dense matrix, at 1/77 of the random draws;
    on CPU those draws, not the matrix products, dominate a dense-input GCN epoch.
    """

    rows: jax.Array  # (nnz,) int32
    cols: jax.Array  # (nnz,) int32
    values: jax.Array  # (nnz,) float32
    shape: tuple = struct.field(pytree_node=False)  # (num_nodes, num_features)

    @classmethod
    def from_dense(cls, dense) -> "SparseFeatures":
        import numpy as np

        dense = np.asarray(dense)
        rows, cols = np.nonzero(dense)
        return cls(
            jnp.asarray(rows, jnp.int32),
            jnp.asarray(cols, jnp.int32),
            jnp.asarray(dense[rows, cols]),
            tuple(dense.shape),
        )

    def todense(self):
        return jnp.zeros(self.shape, self.values.dtype).at[self.rows, self.cols].add(self.values)


def dropout(rate: float, x, train: bool):
    """`nn.Dropout` on dense features, or on the stored values of `SparseFeatures` (call inside a compact method)."""
    if isinstance(x, SparseFeatures):
        return x.replace(values=nn.Dropout(rate, deterministic=not train)(x.values))
    return nn.Dropout(rate, deterministic=not train)(x)


class Linear(nn.Module):
    """`x @ W` (no bias) for dense features or `SparseFeatures` `(N, F_in)` -> `(N, features)`; `W` split over the
    mesh's `model` axis as `split` says ("column", "row" or "": `lepton_jax.parallel.kernel_init`)."""

    features: int
    split: str = ""

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", parallel.kernel_init(glorot, self.split), (x.shape[-1], self.features))
        if isinstance(x, SparseFeatures):
            return jax.ops.segment_sum(x.values[:, None] * kernel[x.cols], x.rows, x.shape[0])
        return x @ kernel


def padding_masks(graph: jraph.GraphsTuple):
    """`(node_mask (N,), graph_mask (G,))`: True for real nodes and graphs of a `jraph.pad_with_graphs` batch.

    jraph's own mask functions read `n_node` on the host, so they cannot run under `vmap` (a batch per fold); this
    is the same rule in array operations: the padding graphs are the trailing graphs with no nodes plus the one
    before them, which holds all the padding nodes.
    """
    num_graphs = graph.n_node.shape[0]
    num_nodes = jax.tree.leaves(graph.nodes)[0].shape[0]
    trailing_empty = jnp.sum(jnp.cumprod((graph.n_node == 0)[::-1]))
    graph_mask = jnp.arange(num_graphs) < num_graphs - 1 - trailing_empty
    real_nodes = jnp.sum(jnp.where(graph_mask, graph.n_node, 0))
    return jnp.arange(num_nodes) < real_nodes, graph_mask


def gcn_coefficients(senders, receivers, num_nodes: int):
    """Symmetric normalisation with self-loops: `(edge coefficients (E,), self-loop coefficients (N,))`.

    Entry `(r, s)` of `D^-1/2 (A + I) D^-1/2`, with `D` the degrees of `A + I`, for each edge `s -> r` and each loop.
    """
    degree = jax.ops.segment_sum(jnp.ones_like(receivers, jnp.float32), receivers, num_nodes) + 1.0
    inv_sqrt = jax.lax.rsqrt(degree)
    return inv_sqrt[senders] * inv_sqrt[receivers], 1.0 / degree


def gcn_propagate(h, senders, receivers):
    """`D^-1/2 (A + I) D^-1/2 h` for node values `h` `(N, F)`: GCN's propagation, in `h`'s type (bf16 in bf16 runs)."""
    num_nodes = h.shape[0]
    edge_coef, self_coef = gcn_coefficients(senders, receivers, num_nodes)
    edge_coef, self_coef = edge_coef.astype(h.dtype), self_coef.astype(h.dtype)
    return jax.ops.segment_sum(h[senders] * edge_coef[:, None], receivers, num_nodes) + h * self_coef[:, None]


class GCNConv(nn.Module):
    """One graph convolution (Kipf & Welling 2017): `D^-1/2 (A + I) D^-1/2 X W + b`; `split` as `Linear`'s."""

    features: int
    use_bias: bool = True
    split: str = ""

    @nn.compact
    def __call__(self, x, senders, receivers):
        h = Linear(self.features, self.split, name="linear")(x)  # transform first: F_out < F_in
        out = gcn_propagate(h, senders, receivers)
        if self.use_bias:
            out = out + self.param("bias", parallel.bias_init(nn.initializers.zeros, self.split), (self.features,))
        return out


class GCN(nn.Module):
    """GCN: `[dropout, GCNConv, activation] * len(hidden_sizes)`, then dropout and a GCNConv to `num_outputs`.

    The last hidden representation is sown as `intermediates/embedding` (e.g. the 2-D karate-club embedding).
    `tensor_parallel` splits the weights over the mesh's `model` axis in Megatron pairs: convolution 0 column-split,
    1 row-split, 2 column-split, ...; an unpaired last convolution is whole. The parameters then come boxed from
    `init` (`nn.unbox` them; `lepton_jax.parallel.state_shardings` reads the splits).
    """

    hidden_sizes: Sequence[int]
    num_outputs: int
    dropout: float = 0.5
    activation: str = "relu"
    tensor_parallel: bool = False

    def split(self, layer: int) -> str:
        """How convolution `layer` is split over `model`: "column", "row" or "" (see the class docstring)."""
        if not self.tensor_parallel or (layer % 2 == 0 and layer == len(self.hidden_sizes)):
            return ""  # off, or an unpaired last convolution
        return "row" if layer % 2 else "column"

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple, train: bool = False):
        x = graph.nodes
        for i, size in enumerate(self.hidden_sizes):
            x = dropout(self.dropout, x, train)
            conv = GCNConv(size, split=self.split(i), name=f"conv_{i}")
            x = activation(self.activation)(conv(x, graph.senders, graph.receivers))
        self.sow("intermediates", "embedding", x)
        x = dropout(self.dropout, x, train)
        last = len(self.hidden_sizes)
        return GCNConv(self.num_outputs, split=self.split(last), name=f"conv_{last}")(x, graph.senders, graph.receivers)


class GATConv(nn.Module):
    """Multi-head graph attention (Veličković et al. 2018) over each node's neighbours and itself.

    `alpha_ij = softmax_j(LeakyReLU(a_dst·W h_i + a_src·W h_j))`, with dropout on `alpha`; the heads are concatenated
    or (`concat=False`) averaged. `return_attention` also returns `alpha` `(E + N, heads)`, self-loops last.
    """

    features: int
    heads: int = 1
    concat: bool = True
    attention_dropout: float = 0.0
    negative_slope: float = 0.2

    @nn.compact
    def __call__(self, x, senders, receivers, train: bool = False, return_attention: bool = False):
        num_nodes = x.shape[0]
        h = Linear(self.heads * self.features, name="linear")(x)
        h = h.reshape(num_nodes, self.heads, self.features)  # (N, H, F)
        att_src = self.param("att_src", glorot, (1, self.heads, self.features))
        att_dst = self.param("att_dst", glorot, (1, self.heads, self.features))
        score_src, score_dst = (h * att_src).sum(-1), (h * att_dst).sum(-1)  # (N, H)
        loops = jnp.arange(num_nodes, dtype=senders.dtype)
        senders, receivers = jnp.concatenate([senders, loops]), jnp.concatenate([receivers, loops])
        logits = nn.leaky_relu(score_src[senders] + score_dst[receivers], self.negative_slope)  # (E + N, H)
        alpha = jraph.segment_softmax(logits, receivers, num_nodes)
        dropped = nn.Dropout(self.attention_dropout, deterministic=not train)(alpha)
        out = jax.ops.segment_sum(h[senders] * dropped[..., None], receivers, num_nodes)  # (N, H, F)
        out = out.reshape(num_nodes, -1) if self.concat else out.mean(1)
        out = out + self.param("bias", nn.initializers.zeros, (out.shape[-1],))
        return (out, alpha) if return_attention else out


class GAT(nn.Module):
    """GAT: `[dropout, GATConv(heads, concat), activation] * len(hidden_sizes)`, dropout, GATConv to `num_outputs`."""

    hidden_sizes: Sequence[int]
    num_outputs: int
    heads: int = 8
    output_heads: int = 1
    dropout: float = 0.6
    attention_dropout: float = 0.6
    activation: str = "elu"

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple, train: bool = False):
        x = graph.nodes
        for i, size in enumerate(self.hidden_sizes):
            x = dropout(self.dropout, x, train)
            conv = GATConv(size, self.heads, True, self.attention_dropout, name=f"conv_{i}")
            x = activation(self.activation)(conv(x, graph.senders, graph.receivers, train))
        self.sow("intermediates", "embedding", x)
        x = dropout(self.dropout, x, train)
        conv = GATConv(
            self.num_outputs, self.output_heads, False, self.attention_dropout, name=f"conv_{len(self.hidden_sizes)}"
        )
        return conv(x, graph.senders, graph.receivers, train)


class MPNNLayer(nn.Module):
    """`h_i' = Θ(h_i + Σ_{j∈N(i)} ψ(h_j, e_ij))`, with `ψ` an MLP of `[h_j, e_ij]` (σ is applied by the caller)."""

    features: int
    message_hidden: int = 64

    @nn.compact
    def __call__(self, h, edges, senders, receivers):
        inputs = h[senders] if edges is None else jnp.concatenate([h[senders], edges], -1)
        messages = MLP((self.message_hidden, h.shape[-1]), activate_final=False, name="psi")(inputs)
        aggregated = jax.ops.segment_sum(messages, receivers, h.shape[0])
        return nn.Dense(self.features, name="theta")(h + aggregated)


class MPNN(nn.Module):
    """A message-passing network with edge features: MPNN layers with σ between them, a Dense to `num_outputs`.

    Takes dense node features (not `SparseFeatures`); `graph.edges` may be None (no edge features).
    """

    hidden_sizes: Sequence[int]
    num_outputs: int
    message_hidden: int = 64
    dropout: float = 0.0
    activation: str = "relu"

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple, train: bool = False):
        x = graph.nodes
        for i, size in enumerate(self.hidden_sizes):
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
            layer = MPNNLayer(size, self.message_hidden, name=f"layer_{i}")
            x = activation(self.activation)(layer(x, graph.edges, graph.senders, graph.receivers))
        self.sow("intermediates", "embedding", x)
        return nn.Dense(self.num_outputs, name="output")(x)


class Affine(nn.Module):
    """`x W + b` for dense features or `SparseFeatures` `(N, F_in)` -> `(N, features)`."""

    features: int

    @nn.compact
    def __call__(self, x):
        return Linear(self.features, name="linear")(x) + self.param("bias", nn.initializers.zeros, (self.features,))


class NodeMLP(nn.Module):
    """A per-node MLP that never reads the edges (GLNN's student, Zhang et al. 2022): `[Affine, activation,
    dropout] * len(hidden_sizes)`, then an `Affine` to `num_outputs`.

    As GLNN's MLP, dropout acts on the hidden layers only, not on the input features. The features may be dense or
    `SparseFeatures`. The modules are `layer_0, layer_1, ..., output`, so the first layer is the first in name order
    (`weight_decay_on=first_layer`). The last hidden representation is sown as `intermediates/embedding`.
    """

    hidden_sizes: Sequence[int]
    num_outputs: int
    dropout: float = 0.0
    activation: str = "relu"

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple, train: bool = False):
        x = graph.nodes  # the edges are never read
        for i, size in enumerate(self.hidden_sizes):
            x = activation(self.activation)(Affine(size, name=f"layer_{i}")(x))
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        self.sow("intermediates", "embedding", x)
        return Affine(self.num_outputs, name="output")(x)


class GINLayer(nn.Module):
    """`h_i' = ReLU(BN(MLP((1 + ε) h_i + Σ_{j∈N(i)} h_j)))` with a learnable ε (Xu et al. 2019).

    Batch statistics are taken over real nodes only (`node_mask`), so the padding never shifts them.
    """

    features: int
    learn_eps: bool = True

    @nn.compact
    def __call__(self, h, senders, receivers, node_mask, train: bool):
        eps = self.param("eps", nn.initializers.zeros, ()) if self.learn_eps else 0.0
        pooled = (1.0 + eps) * h + jax.ops.segment_sum(h[senders], receivers, h.shape[0])
        mask = node_mask[:, None]
        x = nn.Dense(self.features)(pooled)
        x = nn.relu(nn.BatchNorm(not train, momentum=0.9, epsilon=1e-5)(x, mask=mask))
        x = nn.Dense(self.features)(x)
        return nn.relu(nn.BatchNorm(not train, momentum=0.9, epsilon=1e-5)(x, mask=mask))


class GIN(nn.Module):
    """GIN for graph classification: `num_layers - 1` GIN layers after the input layer, and a readout that sums
    `Dropout(Dense(sum-pool(h^k)))` over every layer k, the input included (Xu et al. 2019). Returns `(n_graph, C)`.
    """

    num_classes: int
    num_layers: int = 5
    hidden: int = 64
    dropout: float = 0.5
    learn_eps: bool = True

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple, train: bool = False):
        num_nodes, num_graphs = graph.nodes.shape[0], graph.n_node.shape[0]
        node_mask, _ = padding_masks(graph)
        graph_of_node = jnp.repeat(jnp.arange(num_graphs), graph.n_node, total_repeat_length=num_nodes)
        h, logits = graph.nodes, 0.0
        for k in range(self.num_layers):
            if k > 0:
                h = GINLayer(self.hidden, self.learn_eps, name=f"gin_{k}")(
                    h, graph.senders, graph.receivers, node_mask, train
                )
            pooled = jax.ops.segment_sum(h * node_mask[:, None], graph_of_node, num_graphs)
            logits = logits + nn.Dropout(self.dropout, deterministic=not train)(
                nn.Dense(self.num_classes, name=f"readout_{k}")(pooled)
            )
        return logits


def inner_product_scores(embeddings, pairs):
    """GAE's decoder: the logit `z_i · z_j` of an edge for each `(i, j)` in `pairs` `(k, 2)`."""
    return jnp.sum(embeddings[pairs[:, 0]] * embeddings[pairs[:, 1]], -1)


NODE_MODELS = ("gcn", "gat", "mpnn", "mlp")  # `make_node_model`'s choices
SPARSE_INPUT = ("gcn", "gat", "mlp")  # the node models that take `SparseFeatures`


def make_node_model(config, num_outputs: int) -> nn.Module:
    """The per-node model named by `config.model` (one of `NODE_MODELS`); GCN's weights tensor-parallel (boxed)."""
    if config.model == "gcn":
        return GCN(tuple(config.hidden_sizes), num_outputs, config.dropout, config.activation, tensor_parallel=True)
    if config.model == "gat":
        return GAT(
            tuple(config.hidden_sizes),
            num_outputs,
            config.heads,
            config.output_heads,
            config.dropout,
            config.attention_dropout,
            config.activation,
        )
    if config.model == "mpnn":
        return MPNN(tuple(config.hidden_sizes), num_outputs, config.message_hidden, config.dropout, config.activation)
    if config.model == "mlp":
        return NodeMLP(tuple(config.hidden_sizes), num_outputs, config.dropout, config.activation)
    raise UserError(f"unknown model '{config.model}'; valid: {', '.join(NODE_MODELS)}")
