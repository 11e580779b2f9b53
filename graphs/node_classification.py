"""Semi-supervised node classification, full batch (GCN, GAT, MPNN or an MLP on Cora, Citeseer or the karate club).

One jitted, seed-vmapped `epoch_step` trains on the labelled nodes, evaluates the updated parameters on the
validation nodes and updates early stopping; test metrics are taken with the parameters early stopping kept. With
`config.teacher` (a finished run of this trainer), the model learns from that run's soft labels on every node too:
GLNN's distillation of a GNN into an MLP (`graphs/glnn.py`).

The state lives on the mesh `config.mesh` names (`lepton_jax/parallel.py`): GCN's weights split over `model` in
tensor-parallel pairs, everything else (and the graph) replicated; full-batch training has no batch to split over
`data`, so data-parallel devices repeat the same work.
"""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from flax.training.train_state import TrainState

from graphs import common, glnn, models
from graphs import metrics as graph_metrics
from graphs.data import NodeDataset, load_node_dataset
from lepton_jax import epochs, parallel, plotting, registry, run, seeds, supervised
from lepton_jax.config import MONITORS, require
from lepton_jax.techniques import distill, early_stopping, precision


@struct.dataclass
class NodeState:
    train_state: TrainState
    early: early_stopping.EarlyStopping
    rng: jax.Array


@struct.dataclass
class Labels:
    """Node labels and the split masks `(N,)`, passed to the step functions as arguments (not baked-in constants),
    and a teacher's logits `(N, C)` on every node when distilling (None otherwise)."""

    labels: jax.Array
    train: jax.Array
    val: jax.Array
    test: jax.Array
    teacher: jax.Array | None = None


def labels_of(dataset: NodeDataset) -> Labels:
    return Labels(*(jnp.asarray(a) for a in (dataset.labels, dataset.train_mask, dataset.val_mask, dataset.test_mask)))


def node_metrics(logits, labels: Labels, names=("val", "test"), prefix: str = "") -> dict:
    """`<name>/<prefix>loss`, `accuracy`, `precision`, `recall` and `macro_f1` of the nodes of each of `names` (the
    split masks of `labels`), from the `(N, classes)` logits."""
    out = {}
    for name in names:
        mask = getattr(labels, name)
        out[f"{name}/{prefix}loss"] = graph_metrics.cross_entropy(logits, labels.labels, mask)
        scores = graph_metrics.classification_metrics(logits, labels.labels, mask)
        out.update({f"{name}/{prefix}{k}": v for k, v in scores.items()})
    return out


def watched(config) -> tuple[str, ...]:
    """The validation scores early stopping watches: by default the GAT paper's rule (better validation accuracy or
    loss resets the patience; both, and the parameters are kept); a config with `monitor` watches that one alone
    (GLNN's rule is `accuracy`: a distilled model's validation loss against hard labels says little)."""
    monitor = config.get("monitor")
    if monitor is None:
        return ("accuracy", "loss")
    require(monitor in MONITORS, f"config.monitor must be one of {', '.join(MONITORS)}, got '{monitor}'")
    return (monitor,)


def make_steps(config, model: nn.Module):
    """The steps of one seed (vmap them over seeds): `init(key, graph) -> state`, `epoch_step(state, graph, labels,
    epoch) -> (state, metrics)`, `evaluate(params, graph, labels) -> metrics` and the bare
    `train_step(train_state, graph, labels, key) -> (train_state, metrics)` (for tests). The parameters are
    unboxed: a tensor-parallel model's splits (`lepton_jax.parallel.state_shardings`) never reach the optimiser."""
    tx = common.make_optimizer(config, config.num_epochs)
    keys = distill.settings(config)  # used when the labels carry a teacher's logits
    monitored = watched(config)

    def init(key, graph):
        key, init_key = jax.random.split(key)
        params = nn.unbox(model.init({"params": init_key}, graph, train=False))
        train_state = TrainState.create(apply_fn=model.apply, params=params, tx=tx)
        return NodeState(train_state, early_stopping.EarlyStopping.create(params, num_scores=len(monitored)), key)

    def train_step(train_state, graph, labels, key):
        def loss_fn(params):
            logits = model.apply(params, graph, train=True, rngs={"dropout": key})
            if labels.teacher is None:
                return graph_metrics.cross_entropy(logits, labels.labels, labels.train), logits
            temperature, alpha = keys["distill_temperature"], keys["distill_alpha"]
            return glnn.loss(logits, labels.teacher, labels.labels, labels.train, temperature, alpha), logits

        (loss, logits), grads = precision.value_and_grad(loss_fn, train_state.opt_state, has_aux=True)(
            train_state.params
        )
        metrics = {"train/loss": loss, "train/accuracy": graph_metrics.accuracy(logits, labels.labels, labels.train)}
        return train_state.apply_gradients(grads=grads), metrics

    def evaluate(params, graph, labels):
        return node_metrics(model.apply(params, graph, train=False), labels)

    def epoch_step(state: NodeState, graph, labels, epoch):
        rng, key = jax.random.split(state.rng)
        train_state, metrics = train_step(state.train_state, graph, labels, key)
        val = evaluate(train_state.params, graph, labels)
        scores = tuple(val["val/accuracy"] if name == "accuracy" else -val["val/loss"] for name in monitored)
        early = state.early.update(train_state.params, scores, epoch, config.patience)
        new = NodeState(train_state, early, rng)
        metrics.update({"train/val_loss": val["val/loss"], "train/val_accuracy": val["val/accuracy"]})
        # A seed whose patience has run out keeps its state while the others go on.
        return early_stopping.where(state.early.stopped, state, new), metrics

    return init, epoch_step, evaluate, train_step


def karate_plot(model, params, graph, labels, path: str) -> None:
    """Scatter of the learned 2-D embedding (first seed) coloured by club, the two labelled leaders ringed."""
    plt = plotting.pyplot()

    _, inter = model.apply(seeds.tree_slice(params, 0), graph, mutable="intermediates")
    embedding = np.asarray(inter["intermediates"]["embedding"][0])
    require(embedding.shape[1] == 2, "the karate plot needs a 2-D last hidden layer (config.hidden_sizes=(..., 2))")
    club, train = np.asarray(labels.labels), np.asarray(labels.train)
    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    senders, receivers = np.asarray(graph.senders), np.asarray(graph.receivers)
    for s, r in zip(senders, receivers):
        ax.plot(embedding[[s, r], 0], embedding[[s, r], 1], color="0.85", lw=0.6, zorder=0)
    for value, name, color in ((0, "Mr. Hi", "tab:blue"), (1, "Officer", "tab:orange")):
        points = embedding[club == value]
        ax.scatter(points[:, 0], points[:, 1], c=color, label=name, s=40, zorder=1)
    ax.scatter(embedding[train, 0], embedding[train, 1], facecolors="none", edgecolors="k", s=160, label="labelled")
    ax.set_title("Karate club: GCN embedding (2 labelled nodes)")
    ax.legend(loc="best")
    plotting.save(fig, path)


def make_task(config, workdir: str) -> supervised.Task:
    """The run `train_and_evaluate` hands to `supervised.fit`: all seeds in one program, on `config.mesh`'s mesh."""
    dataset = load_node_dataset(config.dataset, config.data_dir)
    mesh = parallel.mesh_from_config(config)
    graph = common.full_graph(dataset, config.normalize_features, sparse=config.model in models.SPARSE_INPUT)
    labels = labels_of(dataset)
    if config.get("teacher") is not None:  # its soft labels, once, on every node
        labels = labels.replace(teacher=jnp.asarray(glnn.teacher_logits(config, dataset)))
    graph, labels = epochs.to_device((graph, labels), mesh)
    model = precision.module(models.make_node_model(config, dataset.num_classes), config)
    init_one, epoch_one, evaluate_one, _ = make_steps(config, model)

    def init_seeds(key):
        return jax.vmap(init_one, (0, None))(common.seed_keys(key, config.num_seeds), graph)

    boxed = jax.eval_shape(lambda key: model.init({"params": key}, graph, train=False), jax.random.PRNGKey(0))
    init, shardings = parallel.sharded_init(init_seeds, boxed, mesh)
    # The step returns the state where init put it: no resharding between steps, one compile.
    epoch_step = jax.jit(
        seeds.over_seeds(epoch_one, (0, None, None, None), config.seed_loop),
        out_shardings=(shardings, parallel.replicated(mesh)),
        donate_argnums=0,
    )
    evaluate = jax.jit(seeds.over_seeds(evaluate_one, (0, None, None), config.seed_loop))

    def train_epoch(state, epoch):
        return epoch_step(state, graph, labels, jnp.int32(epoch))

    def final(state, last_eval):
        headline = {k: v for k, v in last_eval.items() if k.startswith(("test/", "val/"))}
        headline["best_epoch"] = np.asarray(state.early.best_epoch) + 1
        teacher = {}
        if labels.teacher is not None:  # the teacher's own scores on this split, beside the student's
            scores = jax.device_get(node_metrics(labels.teacher, labels))
            teacher = {f"teacher/{k}": float(v) for k, v in scores.items() if k.endswith("accuracy")}
        # The classic demo, when the last hidden layer is 2-D (gcn.py:karate): the learned embedding, drawn.
        if config.dataset == "karate" and tuple(config.hidden_sizes)[-1:] == (2,) and parallel.is_main_process():
            path = os.path.join(workdir, "plots", "embedding.png")
            karate_plot(model, state.early.best_params, graph, labels, path)
        return (
            run.seed_summary(headline)
            | teacher
            | dict(num_seeds=int(config.num_seeds), dataset=config.dataset, model=config.model)
        )

    return supervised.Task(
        init=init,
        train_epoch=train_epoch,
        evaluate=lambda state: evaluate(state.early.best_params, graph, labels),  # the kept parameters
        num_epochs=config.num_epochs,
        done=lambda state: bool(np.all(jax.device_get(state.early.stopped))),
        final=final,
        params=lambda state: state.early.best_params,
        plot_keys=("train/loss", "train/val_loss", "train/val_accuracy"),
        title=f"{config.model} on {config.dataset}",
    )


@registry.register("node_classification")
def train_and_evaluate(config, workdir: str) -> dict:
    """Trains `config.model` on `config.dataset` for `config.num_seeds` seeds at once; writes `results.json`."""
    task = make_task(config, workdir)
    return supervised.fit(config, workdir, task, desc=f"{config.model} {config.dataset}")[1]
