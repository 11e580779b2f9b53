"""Node classification and link prediction from one GCN: a shared trunk, a head per task, the weighted loss.

    python -m scripts.train --config=graphs/configs/gcn_multitask.py:cora                 # both tasks
    python -m scripts.train --config=graphs/configs/gcn_multitask.py:cora --config.single_task=node

The trunk is GCN (`graphs.models.GCN`: `hidden_sizes`, then a convolution to `embedding_size`); the tasks are
dense heads on its node embeddings (`lepton_jax.techniques.multitask.MultiHead`):

- `node`: softmax over the classes, cross-entropy on the labelled training nodes (Kipf & Welling's split);
- `link`: a linear projection of the embedding decoded by inner products (GAE's decoder on the projection), with
  GAE's sampled reconstruction loss (`link_prediction.sampled_loss`).

Each seed has its own GAE edge split (`graphs.link_prediction.stacked_splits`, seeded `config.seed + i`) and both
tasks see only its training edges: the held-out edges never enter the normalised adjacency, so link prediction is
measured on edges the model has not propagated over, and node classification runs on the same graph. The loss is
`sum_t w_t L_t` (`task_weights`); `single_task=node|link` builds and trains that head alone with the same code,
splits and graph, so the single-task baselines compare with the multi-task run.

Each epoch ends with an evaluation on the validation nodes and edges and an early-stopping update
(`lepton_jax.techniques.early_stopping`, `patience`) on one score, `sum_t w_t s_t`, `s_t` the validation node
accuracy or link AUC (a weight-0 task counts 0); the test metrics use the parameters it kept. Not the several-score
rule, which keeps parameters only where every score is at its best: node accuracy peaks within ~100 epochs while
link AUC still rises at 400, so it kept early parameters, 0.5-1 AUC point worse on Cora.

`results.json`: `test/node_accuracy`, `test/node_macro_f1`, `test/node_loss`, `test/link_auc`, `test/link_ap`,
`test/link_accuracy` (and `val/...`) of the tasks trained, and `best_epoch`, each per seed (`_mean`/`_std`/
`per_seed/`).
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from flax.training.train_state import TrainState

from graphs import common, link_prediction, models, node_classification
from graphs import metrics as graph_metrics
from graphs.data import load_node_dataset
from lepton_jax import registry, run, seeds, supervised
from lepton_jax.techniques import early_stopping, multitask, precision

TASKS = ("node", "link")
SCORES = {"node": "val/node_accuracy", "link": "val/link_auc"}  # each task's share of the early-stopping score


@struct.dataclass
class MultiTaskState:
    train_state: TrainState
    early: early_stopping.EarlyStopping
    rng: jax.Array


def make_model(config, num_classes: int, weights: dict[str, float]) -> multitask.MultiHead:
    """The GCN trunk with a head per task in `weights` (`node`: `num_classes` logits, `link`: `embedding_size`
    projected dimensions), computing in `config.precision`'s type."""
    trunk = models.GCN(tuple(config.hidden_sizes), config.embedding_size, config.dropout, config.activation)
    outputs = {"node": num_classes, "link": config.embedding_size}
    return precision.module(multitask.MultiHead(trunk, {task: outputs[task] for task in weights}), config)


def make_steps(config, model, weights: dict[str, float]):
    """The steps of one seed (vmap them over seeds; `split` is the seed's `LinkSplit`, `graph` the shared nodes):
    `init(key, graph, split) -> state`, `epoch_step(state, graph, split, labels, epoch) -> (state, metrics)`,
    `evaluate(params, graph, split, labels) -> metrics` and the bare
    `train_step(train_state, graph, split, labels, key) -> (train_state, metrics)` (for tests)."""
    tx = common.make_optimizer(config, config.num_epochs)

    def init(key, graph, split):
        key, init_key = jax.random.split(key)
        params = model.init({"params": init_key}, link_prediction.train_graph(graph, split), train=False)
        train_state = TrainState.create(apply_fn=model.apply, params=params, tx=tx)
        return MultiTaskState(train_state, early_stopping.EarlyStopping.create(params), key)

    def train_step(train_state, graph, split, labels, key):
        dropout_key, sample_key = jax.random.split(key)
        seen = link_prediction.train_graph(graph, split)

        def loss_fn(params):
            outputs = model.apply(params, seen, train=True, rngs={"dropout": dropout_key})
            losses = {}
            if "node" in weights:
                losses["node"] = graph_metrics.cross_entropy(outputs["node"], labels.labels, labels.train)
            if "link" in weights:
                losses["link"] = link_prediction.sampled_loss(outputs["link"], split, sample_key)
            return multitask.weighted_loss(losses, weights)[0], (losses, outputs)

        (loss, (losses, outputs)), grads = precision.value_and_grad(loss_fn, train_state.opt_state, has_aux=True)(
            train_state.params
        )
        metrics = {"train/loss": loss} | {f"train/{task}_loss": value for task, value in losses.items()}
        if "node" in weights:
            metrics["train/node_accuracy"] = graph_metrics.accuracy(outputs["node"], labels.labels, labels.train)
        return train_state.apply_gradients(grads=grads), metrics

    def evaluate(params, graph, split, labels, names=("val", "test")):
        outputs = model.apply(params, link_prediction.train_graph(graph, split), train=False)
        out = {}
        if "node" in weights:
            out |= node_classification.node_metrics(outputs["node"], labels, names, prefix="node_")
        if "link" in weights:
            out |= link_prediction.link_metrics(outputs["link"], split, names, prefix="link_")
        return out

    def epoch_step(state: MultiTaskState, graph, split, labels, epoch):
        rng, key = jax.random.split(state.rng)
        train_state, metrics = train_step(state.train_state, graph, split, labels, key)
        val = evaluate(train_state.params, graph, split, labels, ("val",))
        score = sum(weight * val[SCORES[task]] for task, weight in weights.items())  # a weight-0 task counts 0
        early = state.early.update(train_state.params, (score,), epoch, config.patience)
        metrics |= {"train/" + name.replace("/", "_"): value for name, value in val.items()}  # train/val_link_auc
        # A seed whose patience has run out keeps its state while the others go on.
        return early_stopping.where(state.early.stopped, state, MultiTaskState(train_state, early, rng)), metrics

    return init, epoch_step, evaluate, train_step


def make_task(config) -> supervised.Task:
    """The run `train_and_evaluate` hands to `supervised.fit`: every seed (its own edge split) in one program."""
    weights = multitask.task_weights(config, TASKS)  # a bad value stops here, before any work
    dataset = load_node_dataset(config.dataset, config.data_dir)
    splits = link_prediction.stacked_splits(dataset, config)  # (seeds, ...) each
    # The nodes once for every seed (sparse: dropout draws only the non-zero features); each seed's edges are its
    # split's training edges (`train_graph`), never the full graph's.
    graph = common.full_graph(dataset, config.normalize_features, sparse=True)
    labels = node_classification.labels_of(dataset)
    model = make_model(config, dataset.num_classes, weights)
    init_one, epoch_one, evaluate_one, _ = make_steps(config, model, weights)
    init = jax.jit(lambda key: jax.vmap(init_one, (0, None, 0))(common.seed_keys(key, config.num_seeds), graph, splits))
    epoch_step = jax.jit(seeds.over_seeds(epoch_one, (0, None, 0, None, None), config.seed_loop), donate_argnums=0)
    evaluate = jax.jit(seeds.over_seeds(evaluate_one, (0, None, 0, None), config.seed_loop))

    def final(state, last_eval):
        headline = {k: v for k, v in last_eval.items() if k.startswith(("test/", "val/"))}
        headline["best_epoch"] = np.asarray(state.early.best_epoch) + 1
        return run.seed_summary(headline) | dict(
            num_seeds=int(config.num_seeds),
            dataset=config.dataset,
            model="gcn",
            tasks=",".join(f"{task}:{weight:g}" for task, weight in weights.items()),
        )

    curves = {"node": ("train/node_loss", "train/val_node_accuracy"), "link": ("train/link_loss", "train/val_link_auc")}
    return supervised.Task(
        init=init,
        train_epoch=lambda state, epoch: epoch_step(state, graph, splits, labels, jnp.int32(epoch)),
        evaluate=lambda state: evaluate(state.early.best_params, graph, splits, labels),  # the kept parameters
        num_epochs=config.num_epochs,
        done=lambda state: early_stopping.all_stopped(state.early),
        final=final,
        params=lambda state: state.early.best_params,
        plot_keys=tuple(key for task in weights for key in curves[task]),
        title=f"GCN on {config.dataset}: {', '.join(f'{t} x{w:g}' for t, w in weights.items())}",
    )


@registry.register("node_link_multitask")
def train_and_evaluate(config, workdir: str) -> dict:
    """Trains the GCN trunk and its heads on `config.dataset` for `config.num_seeds` seeds; writes `results.json`."""
    task = make_task(config)
    return supervised.fit(config, workdir, task, desc=f"gcn node+link {config.dataset}")[1]
