"""Link prediction with a graph auto-encoder (GAE, Kipf & Welling 2016): a GCN encoder, an inner-product decoder.

Each seed has its own edge split (85/5/10 by default, seeded with `config.seed + i`) and its own val/test
non-edges; the splits have equal sizes, so they stack along the seed axis and all seeds train in one compiled
program. Two reconstruction losses (`config.loss`):

- "dense", GAE's own: the weighted binary cross-entropy of the whole reconstructed adjacency `sigmoid(Z Z^T)`
  against the training edges plus self-loops, positives weighted by (#non-edges / #edges). O(N^2) per epoch.
- "sampled", as PyTorch Geometric's `GAE.recon_loss`: binary cross-entropy of the training edges against as many
  node pairs drawn uniformly at random each epoch (almost all non-edges in a sparse graph). O(E) per epoch.

With `config.patience > 0` each training step also scores the validation edges and updates early stopping
(`lepton_jax/techniques/early_stopping.py`) on validation AUC and AP: a seed stops after `patience` epochs without
either improving, and the test metrics and `best_epoch` are those of the parameters it kept (both scores at their
best). With `patience` 0 (the default) nothing is kept and the test metrics are the last parameters'.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.training.train_state import TrainState

from graphs import batching, common, models
from graphs import metrics as graph_metrics
from graphs.data import load_node_dataset
from graphs.jraph_compat import jraph
from lepton_jax import registry, run, supervised
from lepton_jax.config import require
from lepton_jax.techniques import early_stopping, precision


@struct.dataclass
class LinkState:
    """`early`: the early-stopping bookkeeping when `config.patience > 0`, else None (nothing kept)."""

    train_state: TrainState
    rng: jax.Array
    early: early_stopping.EarlyStopping | None = None


def stacked_splits(dataset, config) -> batching.LinkSplit:
    """One `link_split` per seed, stacked along a leading seed axis."""
    require(
        0 < config.val_fraction and 0 < config.test_fraction and config.val_fraction + config.test_fraction < 1,
        "config.val_fraction and config.test_fraction must be positive and sum to less than 1",
    )
    num_nodes = dataset.features.shape[0]
    splits = [
        batching.link_split(
            dataset.senders, dataset.receivers, num_nodes, config.val_fraction, config.test_fraction, config.seed + i
        )
        for i in range(int(config.num_seeds))
    ]
    return batching.LinkSplit(*(jnp.asarray(np.stack(parts)) for parts in zip(*splits)))


def train_graph(graph: jraph.GraphsTuple, split: batching.LinkSplit) -> jraph.GraphsTuple:
    """`graph`'s nodes with only `split`'s training edges (both directions): the graph a link-prediction model
    propagates over, so that no held-out edge reaches it."""
    return graph._replace(
        senders=split.train_senders,
        receivers=split.train_receivers,
        n_edge=jnp.array([split.train_senders.shape[0]]),
    )


def sampled_loss(z, split: batching.LinkSplit, key):
    """PyG's `GAE.recon_loss` (`config.loss="sampled"`): binary cross-entropy of the training edges `(E, 2)` against
    as many node pairs drawn uniformly with `key`; an edge's logit is `z_i . z_j` for the `(N, D)` embeddings `z`."""
    positives = jnp.stack([split.train_senders, split.train_receivers], 1)  # (E, 2)
    negatives = jax.random.randint(key, positives.shape, 0, z.shape[0])
    pos = optax.sigmoid_binary_cross_entropy(models.inner_product_scores(z, positives), 1.0)
    neg = optax.sigmoid_binary_cross_entropy(models.inner_product_scores(z, negatives), 0.0)
    return pos.mean() + neg.mean()


def link_metrics(z, split: batching.LinkSplit, names=("val", "test"), prefix: str = "") -> dict:
    """`<name>/<prefix>auc`, `ap` and `accuracy` (`sigmoid(z_i . z_j) > 0.5`) of each of `names`' held-out edges
    against as many non-edges, from the `(N, D)` embeddings `z`."""
    out = {}
    for name in names:
        pos, neg = getattr(split, f"{name}_pos"), getattr(split, f"{name}_neg")
        scores = models.inner_product_scores(z, jnp.concatenate([pos, neg]))
        targets = jnp.concatenate([jnp.ones(pos.shape[0]), jnp.zeros(neg.shape[0])])
        out[f"{name}/{prefix}auc"] = graph_metrics.roc_auc(scores, targets)
        out[f"{name}/{prefix}ap"] = graph_metrics.average_precision(scores, targets)
        out[f"{name}/{prefix}accuracy"] = jnp.mean((scores > 0) == (targets > 0))
    return out


def make_steps(config, model, features):
    """`(init, train_step, evaluate)` for one seed: `init(key, split) -> state`, `train_step(state, split, epoch)
    -> (state, metrics)`, `evaluate(params, split) -> metrics`; `split` is that seed's `LinkSplit`."""
    patience = config.get("patience", 0)
    tx = common.make_optimizer(config, config.num_epochs)
    num_nodes = features.shape[0]
    nodes = jraph.GraphsTuple(  # the edges are each split's (`train_graph`)
        nodes=features,
        edges=None,
        senders=None,
        receivers=None,
        n_node=jnp.array([num_nodes]),
        n_edge=None,
        globals=None,
    )

    def graph_of(split):
        return train_graph(nodes, split)

    def init(key, split):
        key, init_key = jax.random.split(key)
        params = model.init({"params": init_key}, graph_of(split), train=False)
        early = early_stopping.EarlyStopping.create(params, num_scores=2) if patience > 0 else None
        return LinkState(TrainState.create(apply_fn=model.apply, params=params, tx=tx), key, early)

    require(config.loss in ("dense", "sampled"), f"config.loss must be dense or sampled, got '{config.loss}'")

    def dense_loss(z, split, key):
        # Targets: the training edges plus self-loops, as a dense (N, N) 0/1 matrix.
        target = jnp.eye(num_nodes).at[split.train_receivers, split.train_senders].set(1.0)
        positives = split.train_senders.shape[0] + num_nodes
        pos_weight = (num_nodes * num_nodes - positives) / positives
        norm = num_nodes * num_nodes / (2.0 * (num_nodes * num_nodes - positives))
        losses = optax.sigmoid_binary_cross_entropy(z @ z.T, target) * (1.0 + (pos_weight - 1.0) * target)
        return norm * losses.mean()

    reconstruction_loss = dense_loss if config.loss == "dense" else sampled_loss

    def evaluate(params, split):
        return link_metrics(model.apply(params, graph_of(split), train=False), split)

    def train_step(state: LinkState, split, epoch):
        rng, key, sample_key = jax.random.split(state.rng, 3)
        graph = graph_of(split)

        def loss_fn(params):
            z = model.apply(params, graph, train=True, rngs={"dropout": key})
            return reconstruction_loss(z, split, sample_key)

        loss, grads = precision.value_and_grad(loss_fn, state.train_state.opt_state)(state.train_state.params)
        train_state = state.train_state.apply_gradients(grads=grads)
        metrics = {"train/loss": loss}
        if state.early is None:
            return LinkState(train_state, rng), metrics
        # The updated parameters on the validation edges (the test scores are computed, unused, and dropped by XLA).
        val = evaluate(train_state.params, split)
        early = state.early.update(train_state.params, (val["val/auc"], val["val/ap"]), epoch, patience)
        metrics.update({"train/val_auc": val["val/auc"], "train/val_ap": val["val/ap"]})
        # A seed whose patience has run out keeps its state while the others go on.
        return early_stopping.where(state.early.stopped, state, LinkState(train_state, rng, early)), metrics

    return init, train_step, evaluate


@registry.register("link_prediction")
def train_and_evaluate(config, workdir: str) -> dict:
    """Trains a GAE on `config.dataset` for `config.num_seeds` seeds (one split each); writes `results.json`."""
    dataset = load_node_dataset(config.dataset, config.data_dir)
    features = common.full_graph(dataset, config.normalize_features).nodes
    splits = stacked_splits(dataset, config)
    require(config.model == "gcn", f"link prediction uses a GCN encoder (config.model=gcn), got '{config.model}'")
    model = models.GCN(tuple(config.hidden_sizes), config.embedding_size, config.dropout, config.activation)
    model = precision.module(model, config)  # computing in `config.precision`'s type
    init_one, step_one, evaluate_one = make_steps(config, model, features)
    init = jax.jit(lambda key: jax.vmap(init_one)(common.seed_keys(key, config.num_seeds), splits))
    train_step = jax.jit(jax.vmap(step_one, (0, 0, None)), donate_argnums=0)
    evaluate = jax.jit(jax.vmap(evaluate_one))

    def tested(state):
        """The parameters the test metrics use: those early stopping kept (patience > 0), else the last."""
        return state.train_state.params if state.early is None else state.early.best_params

    def final(state, last_eval):
        results = dict(last_eval)
        if state.early is not None:
            results["best_epoch"] = np.asarray(state.early.best_epoch) + 1
        return run.seed_summary(results) | dict(num_seeds=int(config.num_seeds), dataset=config.dataset, model="gae")

    task = supervised.Task(
        init=init,
        train_epoch=lambda state, epoch: train_step(state, splits, jnp.int32(epoch)),
        evaluate=lambda state: evaluate(tested(state), splits),
        num_epochs=config.num_epochs,
        done=lambda state: state.early is not None and early_stopping.all_stopped(state.early),
        final=final,
        params=tested,
        plot_keys=("val/auc", "val/ap"),
        title=f"GAE on {config.dataset}",
    )
    return supervised.fit(config, workdir, task, desc=f"gae {config.dataset}")[1]
