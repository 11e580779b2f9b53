"""Graph classification with GIN, 10-fold cross-validation on the datasets' standard folds (Xu et al. 2019).

The folds train side by side in one compiled program: every step takes one padded batch per fold, stacked along
a leading fold axis (`jit(vmap(train_step))`). Each fold's epoch is shuffled with its own seeded generator and
packed into batches that fit one static budget; a fold with fewer batches than another gets empty batches,
which leave its state unchanged. After every epoch each fold's test accuracy is stored in the state, so the two
numbers the literature reports can both be computed at the end:

- `test/accuracy`: each fold's accuracy after the last epoch, mean ± std over folds;
- `test/accuracy_best_epoch`: the GIN paper's protocol: the epoch whose fold-averaged test accuracy is highest
  (an optimistic choice made on the test folds), mean ± std over folds at that epoch.

With `config.val_fraction > 0` a stratified, seeded share of each fold's training graphs is held out as a validation
set and a third, fair number is reported: `test/accuracy_val_selected`, each fold's test accuracy at the epoch of its
highest validation accuracy (the first such epoch), i.e. early stopping chosen without looking at the test fold.
`config.patience > 0` (which needs that validation set) also stops a fold once its validation accuracy has not
reached its best for `patience` epochs (`lepton_jax/techniques/early_stopping.py`): its later batches are empty
(its state frozen) and its curves keep their last values; the run ends when every fold has stopped, and
`epochs_trained` reports each fold's epochs.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.training.train_state import TrainState

from graphs import batching, models
from graphs import metrics as graph_metrics
from graphs.data import GraphDataset, load_tu
from graphs.jraph_compat import jraph
from lepton_jax import datasets, registry, run, supervised
from lepton_jax.config import require
from lepton_jax.techniques import early_stopping, optim, precision


class GINTrainState(TrainState):
    batch_stats: Any = None


@struct.dataclass
class FoldState:
    """The curves' entries after a fold's newest epoch hold that epoch's value (`record`): a fold that stopped, or
    a run that ended early, leaves them at the last epoch trained."""

    train_state: GINTrainState
    test_curve: jax.Array  # (num_epochs,) test accuracy after each epoch
    val_curve: jax.Array  # (num_epochs,) validation accuracy after each epoch (zeros without a validation set)
    loss_curve: jax.Array  # (num_epochs,) mean training loss of each epoch
    rng: jax.Array
    # Validation patience (`config.patience > 0`, else None). It keeps no parameters (`best_params` is empty): the
    # validation-selected number is read from the curves.
    early: early_stopping.EarlyStopping | None = None


def learning_rate(config, epoch: int) -> float:
    """The rate of `epoch`: the factory's schedule counted in epochs (GIN sets the rate once per epoch)."""
    rate = optim.learning_rate(config, config.num_epochs)
    return float(rate(epoch)) if callable(rate) else float(rate)


def make_steps(config, model: models.GIN, example: jraph.GraphsTuple):
    """`(init, train_step, eval_step)` for one fold; batches are padded `GraphsTuple`s with per-graph labels."""
    tx = optax.inject_hyperparams(lambda learning_rate: optim.make(config, rate=learning_rate))(learning_rate=config.lr)

    def init(key):
        key, init_key = jax.random.split(key)
        variables = model.init({"params": init_key}, example, train=False)
        train_state = GINTrainState.create(
            apply_fn=model.apply, params=variables["params"], tx=tx, batch_stats=variables["batch_stats"]
        )
        zeros = jnp.zeros(config.num_epochs, jnp.float32)
        early = early_stopping.EarlyStopping.create(()) if config.get("patience", 0) > 0 else None
        return FoldState(train_state, zeros, zeros, zeros, key, early)

    def train_step(state: FoldState, graph, labels, valid, lr):
        rng, key = jax.random.split(state.rng)
        ts = state.train_state
        _, graph_mask = models.padding_masks(graph)

        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": ts.batch_stats},
                graph,
                train=True,
                rngs={"dropout": key},
                mutable=["batch_stats"],
            )
            return graph_metrics.cross_entropy(logits, labels, graph_mask), updates

        (loss, updates), grads = precision.value_and_grad(loss_fn, ts.opt_state, has_aux=True)(ts.params)
        ts.opt_state.hyperparams["learning_rate"] = lr
        new = state.replace(train_state=ts.apply_gradients(grads=grads, batch_stats=updates["batch_stats"]), rng=rng)
        # An empty batch (this fold ran out of batches before another) must not move Adam's moments or the stats.
        return jax.tree.map(lambda a, b: jnp.where(valid, a, b), new, state), loss * valid

    def eval_step(state: FoldState, graph, labels):
        ts = state.train_state
        logits = model.apply({"params": ts.params, "batch_stats": ts.batch_stats}, graph, train=False)
        _, mask = models.padding_masks(graph)
        return jnp.sum((jnp.argmax(logits, -1) == labels) * mask), jnp.sum(mask)

    return init, train_step, eval_step


def fold_batches(dataset: GraphDataset, per_fold: list[list[np.ndarray]], budget: batching.Budget):
    """Batches of graph ids, one list per fold -> stacked `(graphs, labels, valid)`, one tuple per step.

    Folds with fewer batches are filled with empty ones (`valid` False) so all folds take the same steps.
    """
    steps = max(len(b) for b in per_fold)
    out = []
    for k in range(steps):
        graphs, labels, valid = [], [], []
        for batches in per_fold:
            index = batches[k] if k < len(batches) else np.zeros(0, np.int64)
            graph, label = batching.batch(dataset, index, budget)
            graphs.append(graph)
            labels.append(label)
            valid.append(len(index) > 0)
        out.append((batching.stack(graphs), np.stack(labels), np.array(valid)))
    return out


def record(curve: jax.Array, values: jax.Array, epoch: int, trained: np.ndarray) -> jax.Array:
    """`curve` (folds, epochs) with `values` (folds,) at `epoch` and every later epoch, for the folds that `trained`
    (folds,) this epoch; the others keep theirs."""
    later = (np.arange(curve.shape[1]) >= epoch)[None, :] & trained[:, None]
    return jnp.where(later, values[:, None], curve)


def split_validation(train: np.ndarray, labels: np.ndarray, fraction: float, rng: np.random.Generator):
    """`train` ids -> (train, validation): `fraction` of each class (at least one graph of it), seeded."""
    keep, held = [], []
    for label in np.unique(labels[train]):
        ids = rng.permutation(train[labels[train] == label])
        count = max(1, int(round(fraction * len(ids))))
        held.append(ids[:count])
        keep.append(ids[count:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def val_selected(test_curve: np.ndarray, val_curve: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(folds, epochs) curves -> each fold's first epoch of highest validation accuracy, and its test accuracy."""
    chosen = np.argmax(val_curve, axis=1)
    return chosen, test_curve[np.arange(len(chosen)), chosen]


@registry.register("graph_classification")
def train_and_evaluate(config, workdir: str) -> dict:
    """Trains GIN on every fold of `config.dataset` at once; writes `results.json`."""
    dataset = load_tu(datasets.data_dir(config.data_dir), config.dataset)
    require(1 <= config.num_folds <= len(dataset.folds), f"config.num_folds must be in [1, {len(dataset.folds)}]")
    folds = dataset.folds[: config.num_folds]
    val_fraction = config.get("val_fraction", 0.0)
    require(0.0 <= val_fraction < 0.5, "config.val_fraction must be in [0, 0.5)")
    patience = config.get("patience", 0)
    require(
        not patience or val_fraction > 0,
        f"config.patience={patience} needs a validation split to watch: set config.val_fraction > 0 (e.g. 0.1), "
        "or patience 0",
    )
    if val_fraction > 0:
        split_rng = np.random.default_rng([config.seed, 12345])
        splits = [split_validation(train, dataset.labels, val_fraction, split_rng) for train, _ in folds]
        val_sets = [val for _, val in splits]
        folds = [(train, test) for (train, _), (_, test) in zip(splits, folds)]
    budget = batching.budget_for(dataset, config.batch_size)
    node_counts = np.array([len(n) for n in dataset.nodes])
    edge_counts = np.array([len(s) for s in dataset.senders])
    model = models.GIN(dataset.num_classes, config.num_layers, config.hidden, config.dropout, config.learn_eps)
    model = precision.module(model, config)  # computing in `config.precision`'s type
    example, _ = batching.batch(dataset, batching.pack(folds[0][0], node_counts, edge_counts, budget)[0], budget)
    init_one, train_one, eval_one = make_steps(config, model, example)
    init = jax.jit(lambda key: jax.vmap(init_one)(jax.random.split(key, len(folds))))
    train_step = jax.jit(jax.vmap(train_one, (0, 0, 0, 0, None)), donate_argnums=0)
    eval_step = jax.jit(jax.vmap(eval_one))
    # One score, validation accuracy; no parameters kept (the empty tree).
    update_early = jax.jit(jax.vmap(lambda early, val, epoch: early.update((), (val,), epoch, patience), (0, 0, None)))

    def eval_batches(sets):
        return fold_batches(dataset, [batching.pack(ids, node_counts, edge_counts, budget) for ids in sets], budget)

    test_batches = eval_batches([test for _, test in folds])
    val_batches = eval_batches(val_sets) if val_fraction > 0 else []

    def accuracy(state, batches):
        correct, total = 0.0, 0.0
        for graphs, labels, _ in batches:
            c, t = eval_step(state, graphs, labels)
            correct, total = correct + c, total + t
        return correct / jnp.maximum(total, 1.0)

    def train_epoch(state, epoch):
        # A generator per (seed, epoch): a resumed run shuffles exactly as an uninterrupted one.
        rng = np.random.default_rng([config.seed, epoch])
        per_fold = [batching.pack(rng.permutation(train), node_counts, edge_counts, budget) for train, _ in folds]
        lr = jnp.float32(learning_rate(config, epoch))
        # A fold that has stopped gets only empty batches, which leave its state as it is.
        trained = np.ones(len(folds), bool) if state.early is None else ~np.asarray(state.early.stopped)  # (folds,)
        losses, batches = [], jnp.zeros(len(folds))
        for graphs, labels, valid in fold_batches(dataset, per_fold, budget):
            state, loss = train_step(state, graphs, labels, valid & trained, lr)
            losses.append(loss)
            batches = batches + (valid & trained)
        mean_loss = sum(losses) / jnp.maximum(batches, 1)  # (folds,); 0 for a stopped fold
        test = accuracy(state, test_batches)
        state = state.replace(
            test_curve=record(state.test_curve, test, epoch, trained),
            loss_curve=record(state.loss_curve, mean_loss, epoch, trained),
        )
        metrics = {"train/loss": mean_loss[trained], "train/lr": lr, "test/accuracy": test}
        if val_batches:
            metrics["val/accuracy"] = accuracy(state, val_batches)
            state = state.replace(val_curve=record(state.val_curve, metrics["val/accuracy"], epoch, trained))
        if state.early is not None:
            state = state.replace(early=update_early(state.early, metrics["val/accuracy"], jnp.int32(epoch)))
        return state, metrics

    def final(state, last_eval):
        curve = np.asarray(jax.device_get(state.test_curve))[:, : config.num_epochs]  # (folds, epochs)
        best_epoch = int(np.argmax(curve.mean(0)))
        per_fold = {"test/accuracy": curve[:, -1], "test/accuracy_best_epoch": curve[:, best_epoch]}
        extra = {}
        if val_batches:
            val_curve = np.asarray(jax.device_get(state.val_curve))[:, : config.num_epochs]
            chosen, per_fold["test/accuracy_val_selected"] = val_selected(curve, val_curve)
            extra["per_seed/val_selected_epoch"] = [int(e) + 1 for e in chosen]
        if state.early is not None:
            # A stopped fold's patience ran out `patience` epochs after its best (with one score, the epoch kept);
            # a fold still training when the run ended trained them all.
            early = jax.device_get(state.early)
            per_fold["epochs_trained"] = np.where(early.stopped, early.best_epoch + patience + 1, config.num_epochs)
        return (
            run.seed_summary(per_fold)
            | extra
            | {
                "best_epoch": best_epoch + 1,
                "num_folds": len(folds),
                "val_fraction": val_fraction,
                "dataset": config.dataset,
                "model": "gin",
                "budget": list(budget),
            }
        )

    task = supervised.Task(
        init=init,
        train_epoch=train_epoch,
        evaluate=lambda state: {"test/accuracy": accuracy(state, test_batches)},
        num_epochs=config.num_epochs,
        done=(lambda state: early_stopping.all_stopped(state.early)) if patience > 0 else None,
        final=final,
        params=lambda state: state.train_state.params,
        plot_keys=("test/accuracy", "train/loss") + (("val/accuracy",) if val_batches else ()),
        title=f"GIN on {config.dataset}",
    )
    return supervised.fit(config, workdir, task, desc=f"gin {config.dataset}")[1]
