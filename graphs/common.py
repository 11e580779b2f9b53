"""What the graph trainers share: the optimiser, early stopping, and graphs on the device.

Every trainer runs all seeds (or folds) in one compiled program: the state carries the seed axis first and the
step is `jit(over_seeds(step))` (`lepton_jax.seeds`). Early stopping is per seed: a seed that has stopped keeps its
state unchanged while the others train on, and the run ends when all have stopped.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from graphs import models
from graphs.data import NodeDataset
from graphs.jraph_compat import jraph
from lepton_jax.config import require
from lepton_jax.techniques import optim


def make_optimizer(config, total_steps: int = 1) -> optax.GradientTransformation:
    """The factory's optimiser (`lepton_jax/techniques/optim.py`; the graph configs' default: Adam with L2 weight
    decay added to the gradient, as `torch.optim.Adam(weight_decay=...)` and the papers' L2 loss terms,
    `wd/2 * |w|^2`), decaying the parameters `config.weight_decay_on` names: "all", "first_layer" (Kipf & Welling's
    GCN) or "none". `total_steps`: the run's optimiser steps (one per epoch for full-batch training).
    """
    require(
        config.weight_decay_on in ("all", "first_layer", "none"),
        f"config.weight_decay_on must be all, first_layer or none, got '{config.weight_decay_on}'",
    )

    def decayed(params):
        flat = traverse_util.flatten_dict(params)
        first = sorted({path[1] for path in flat})[0] if flat else None
        return traverse_util.unflatten_dict(
            {
                path: config.weight_decay_on == "all" or (config.weight_decay_on == "first_layer" and path[1] == first)
                for path in flat
            }
        )

    return optim.make(config, total_steps, decay_mask=decayed)


def seed_keys(key, num_seeds: int):
    require(int(num_seeds) >= 1, f"config.num_seeds must be >= 1, got {num_seeds}")
    return jax.random.split(key, int(num_seeds))


def full_graph(dataset: NodeDataset, normalize_features: bool, sparse: bool = False) -> jraph.GraphsTuple:
    """The whole graph as one `GraphsTuple` on the device (full-batch training needs no padding: its shape is fixed).

    `normalize_features` divides each feature row by its sum, as the GCN and GAT papers do for Planetoid; `sparse`
    stores the features as `models.SparseFeatures` (for GCN and GAT: same results, far fewer dropout draws).
    """
    features = dataset.features
    if normalize_features:
        features = features / np.maximum(features.sum(1, keepdims=True), 1e-12)
    num_nodes, num_edges = features.shape[0], dataset.senders.shape[0]
    nodes = models.SparseFeatures.from_dense(features) if sparse else jnp.asarray(features, jnp.float32)
    return jraph.GraphsTuple(
        nodes=nodes,
        edges=None,
        senders=jnp.asarray(dataset.senders),
        receivers=jnp.asarray(dataset.receivers),
        n_node=jnp.array([num_nodes]),
        n_edge=jnp.array([num_edges]),
        globals=None,
    )
