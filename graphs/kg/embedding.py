"""Knowledge-graph completion by embeddings: DistMult, ComplEx and an R-GCN encoder, trained 1-N, seeds in one program.

    python -m scripts.train --config=graphs/kg/configs/embedding.py:umls,complex --workdir=runs/complex_umls

Models (scores of every entity t for a query (h, r, ?), E at once):
- DistMult (Yang et al. 2015): `<e_h, w_r, e_t>` = sum_i e_h[i] w_r[i] e_t[i].
- ComplEx (Trouillon et al. 2016): `Re(<e_h, w_r, conj(e_t)>)` with complex embeddings of `embedding_size` complex
  dimensions (a real and an imaginary table of that width each).
- R-GCN (Schlichtkrull et al. 2018): `num_layers` relational graph convolutions with `num_bases` basis matrices
  over the training triples (inverses included) encode every entity; DistMult scores the encodings.
Relations are trained in both directions (`data.with_inverses`: r + R is r's inverse), so head queries are tail
queries of the inverse relation.

Training as ConvE and Lin et al. 2018 do ("1-N scoring"): each distinct training query (h, r) is one example whose
target is the multi-hot vector of its known tails over all E entities, smoothed as `(1 - eps) * y + 1 / E`
(`label_smoothing` eps); the loss is the binary cross-entropy of every entity's sigmoid score against it, averaged.
With `negatives` k > 0, negative sampling instead: the known tails and k entities drawn at random (not known tails)
per query (`sampled_bce`).
Dropout on every embedding looked up (`embedding_dropout`: the query's entity and relation and the candidates, as
Lin et al.'s code; R-GCN: on each layer's input too), Adam, global-norm clipping
(`max_grad_norm`). Every `eval_every_epochs` epochs each seed's validation MRR (filtered, `graphs/kg/ranking.py`) is
taken; each seed keeps its parameters of best validation MRR and stops after `patience` evaluations without a new
best (0: trains all `num_epochs`). The kept parameters are tested. `ranking_directions`: "both" (tail and head
queries of every triple, the default) or "tail" (tail queries only, as Lin et al. 2018's code evaluates).

results.json: `test/mrr`, `test/hits@1`, `test/hits@3`, `test/hits@10`, `test/mr` (and `val/...` of the kept
parameters) as `_mean`, `_std` and `per_seed`; the entity and relation names, in id order, are written to
`entities.txt` and `relations.txt` in the workdir.
"""

import os
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.training.train_state import TrainState

from graphs import common
from graphs.kg import ranking
from graphs.kg.data import KnowledgeGraph, load_kg, with_inverses
from lepton_jax import registry, run, seeds, supervised
from lepton_jax.techniques import early_stopping, precision

MODELS = ("distmult", "complex", "rgcn")


class RelationalGraph(NamedTuple):
    """The training triples (inverses included) as relation-typed edges sender -> receiver, each with R-GCN's
    normalisation 1 / c_{i,r}: one over the receiver's number of in-edges of that relation."""

    senders: jax.Array  # (M,) int32
    receivers: jax.Array  # (M,)
    relations: jax.Array  # (M,)
    norm: jax.Array  # (M,) float32

    @classmethod
    def from_triples(cls, triples: np.ndarray, num_entities: int, num_relations: int) -> "RelationalGraph":
        heads, relations, tails = triples.T
        slot = tails.astype(np.int64) * num_relations + relations
        counts = np.bincount(slot, minlength=num_entities * num_relations)
        return cls(*(jnp.asarray(a, jnp.int32) for a in (heads, tails, relations)), jnp.asarray(1.0 / counts[slot]))


class RGCNLayer(nn.Module):
    """`h_i' = sum_r sum_{j in N_i^r} W_r h_j / c_{i,r} + W_0 h_i` with `W_r = sum_b a_{rb} V_b` (basis
    decomposition; Schlichtkrull et al. 2018, eq. 2-3). Neighbours are summed per (receiver, relation) first, so the
    cost is one gather and one segment sum over the M edges plus (N, B, D) x (B, D, D') products."""

    features: int
    num_relations: int
    num_bases: int

    @nn.compact
    def __call__(self, h, graph: RelationalGraph):
        num_nodes, size = h.shape
        init = nn.initializers.xavier_normal()
        bases = self.param("bases", init, (self.num_bases, size, self.features))
        coefficients = self.param("coefficients", init, (self.num_relations, self.num_bases))
        self_kernel = self.param("self_kernel", init, (size, self.features))
        slot = graph.receivers * self.num_relations + graph.relations
        pooled = jax.ops.segment_sum(h[graph.senders] * graph.norm[:, None], slot, num_nodes * self.num_relations)
        pooled = pooled.reshape(num_nodes, self.num_relations, size)  # (N, R, D): each relation's neighbours
        mixed = jnp.einsum("nrd,rb->nbd", pooled, coefficients)  # sum_r a_rb (...): (N, B, D)
        return jnp.einsum("nbd,bdf->nf", mixed, bases) + h @ self_kernel


class KGEmbedding(nn.Module):
    """`__call__(heads, relations, train, graph)` -> (B, E) logits of every entity as the tail of each (head,
    relation). "rgcn" encodes the entities with `num_layers` R-GCN layers over `graph` (ReLU between them) from a
    learned input embedding, then scores them as DistMult does."""

    model: str
    num_entities: int
    num_relations: int  # inverse relations included
    size: int
    dropout: float = 0.0
    num_layers: int = 2
    num_bases: int = 2

    @nn.compact
    def __call__(self, heads, relations, train: bool = False, graph: RelationalGraph | None = None):
        parts = ("real", "imag") if self.model == "complex" else ("real",)
        init = nn.initializers.xavier_normal()
        drop = nn.Dropout(self.dropout, deterministic=not train)
        entity = [self.param(f"entity_{p}", init, (self.num_entities, self.size)) for p in parts]
        if self.model == "rgcn":
            h = entity[0]
            for layer in range(self.num_layers):
                h = RGCNLayer(self.size, self.num_relations, self.num_bases, name=f"rgcn_{layer}")(drop(h), graph)
                h = nn.relu(h) if layer + 1 < self.num_layers else h
            entity = [h]
        relation = [self.param(f"relation_{p}", init, (self.num_relations, self.size)) for p in parts]
        h = [drop(e[heads]) for e in entity]
        r = [drop(w[relations]) for w in relation]
        candidates = [drop(e) for e in entity]  # as Lin et al.'s code: dropout on every embedding looked up
        if self.model != "complex":
            return (h[0] * r[0]) @ candidates[0].T
        real = h[0] * r[0] - h[1] * r[1]  # (h r) = real + i imag; Re((h r) conj(t)) = real.t_re + imag.t_im
        imag = h[0] * r[1] + h[1] * r[0]
        return real @ candidates[0].T + imag @ candidates[1].T


def training_queries(kg: KnowledgeGraph) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct (head, relation) queries of train (inverses included), sorted: heads (Q,), relations (Q,) and
    their multi-hot tails (Q, E) float32."""
    triples = with_inverses(kg.train, kg.num_relations)
    pairs, index = np.unique(triples[:, :2], axis=0, return_inverse=True)
    targets = np.zeros((len(pairs), kg.num_entities), np.float32)
    targets[index.reshape(-1), triples[:, 2]] = 1.0
    return pairs[:, 0].astype(np.int32), pairs[:, 1].astype(np.int32), targets


def shuffled_batches(key, num_queries: int, batch: int) -> jax.Array:
    """(num_batches, batch) a random order of the query rows, the last batch padded with -1 (weight 0)."""
    num_batches = -(-num_queries // batch)
    order = jax.random.permutation(key, num_queries)
    return jnp.pad(order, (0, num_batches * batch - num_queries), constant_values=-1).reshape(num_batches, batch)


def smoothed_bce(logits, targets, label_smoothing: float):
    """Mean binary cross-entropy against `(1 - eps) * targets + 1 / E` (E the last axis), per row: (B,)."""
    smooth = (1.0 - label_smoothing) * targets + 1.0 / targets.shape[-1]
    return optax.sigmoid_binary_cross_entropy(logits, smooth).mean(-1)


def sampled_bce(logits, targets, key, negatives: int):
    """Negative sampling: per row, the binary cross-entropy of its known tails (label 1) and of `negatives` entities
    drawn uniformly that are not known tails (label 0), averaged over those terms: (B,).

    Draws that hit a known tail are dropped (the row then has fewer negatives); a draw repeated counts repeatedly."""
    drawn = jax.random.randint(key, (logits.shape[0], negatives), 0, logits.shape[1])
    counts = jax.vmap(lambda d: jnp.zeros(logits.shape[1]).at[d].add(1.0))(drawn) * (1.0 - targets)  # (B, E)
    weights = targets + counts
    losses = optax.sigmoid_binary_cross_entropy(logits, targets) * weights
    return losses.sum(-1) / jnp.maximum(weights.sum(-1), 1.0)


def sizes_of(kg: KnowledgeGraph) -> tuple[int, int]:
    """(entities, relations with their inverses)."""
    return kg.num_entities, 2 * kg.num_relations


@struct.dataclass
class KGState:
    train_state: TrainState
    early: early_stopping.EarlyStopping
    rng: jax.Array


def make_model(config, kg: KnowledgeGraph) -> KGEmbedding:
    return KGEmbedding(
        config.model, kg.num_entities, 2 * kg.num_relations, config.embedding_size, config.embedding_dropout
    )


def write_vocabularies(kg: KnowledgeGraph, workdir: str) -> None:
    """`entities.txt` and `relations.txt` in the workdir: the names, one per line, in id order."""
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        for name, values in (("entities", kg.entities), ("relations", kg.relations)):
            with open(os.path.join(workdir, f"{name}.txt"), "w") as f:
                f.write("\n".join(values) + "\n")


def relational_graph(kg: KnowledgeGraph) -> RelationalGraph:
    """The training triples and their inverses as R-GCN's graph."""
    return RelationalGraph.from_triples(with_inverses(kg.train, kg.num_relations), *sizes_of(kg))


def evaluation_queries(kg: KnowledgeGraph, config) -> tuple[ranking.Queries, ranking.Queries]:
    """The valid and test queries on the device (`config.ranking_directions`)."""
    known = ranking.known_answers(kg)
    return tuple(
        jax.tree.map(jnp.asarray, ranking.queries(kg, split, known, config.ranking_directions))
        for split in (kg.valid, kg.test)
    )


def ranking_task(config, init_one, epoch_one, rank_one, val, test, num_queries: int) -> supervised.Task:
    """The `supervised.Task` of a knowledge-graph trainer whose per-seed state has `train_state` and `early`, from
    its one-seed functions: `init_one(key)`, `epoch_one(state) -> (state, metrics)` and `rank_one(params, queries)
    -> (Q,) ranks`, run over `config.num_seeds` seeds in one program. Every `eval_every_epochs` epochs (and at the
    last) each seed's validation MRR updates its early stopping; the kept parameters are tested."""

    def validate_one(state, epoch):
        metrics = ranking.summary(rank_one(state.train_state.params, val))
        early = state.early.update(state.train_state.params, (metrics["mrr"],), epoch, config.patience)
        return state.replace(early=early), {f"val/{k}": v for k, v in metrics.items()}

    init = jax.jit(lambda key: jax.vmap(init_one)(common.seed_keys(key, config.num_seeds)))
    epoch_step = jax.jit(seeds.over_seeds(epoch_one, (0,), config.seed_loop), donate_argnums=0)
    validate = jax.jit(seeds.over_seeds(validate_one, (0, None), config.seed_loop))
    test_ranks = jax.jit(seeds.over_seeds(rank_one, (0, None), config.seed_loop))
    eval_every = max(1, int(config.eval_every_epochs))

    def train_epoch(state, epoch):
        state, metrics = epoch_step(state)
        if (epoch + 1) % eval_every == 0 or epoch + 1 == config.num_epochs:
            state, val_metrics = validate(state, jnp.int32(epoch))
            metrics |= val_metrics
        return state, metrics

    def evaluate(state):
        return {"val/best_mrr": state.early.best_scores[0], "eval/best_epoch": state.early.best_epoch + 1}

    def final(state, last_eval):
        del last_eval
        best = state.early.best_params
        headline = {f"val/{k}": v for k, v in ranking.summary(test_ranks(best, val)).items()}
        headline |= {f"test/{k}": v for k, v in ranking.summary(test_ranks(best, test)).items()}
        headline["best_epoch"] = np.asarray(state.early.best_epoch) + 1
        extra = dict(num_seeds=int(config.num_seeds), dataset=config.dataset, model=config.get("model", "walker"))
        return run.seed_summary(jax.device_get(headline)) | extra

    return supervised.Task(
        init=init,
        train_epoch=train_epoch,
        evaluate=evaluate,
        num_epochs=config.num_epochs,
        done=lambda state: early_stopping.all_stopped(state.early),
        final=final,
        params=lambda state: state.early.best_params,
        plot_keys=("train/loss", "val/mrr"),
        title=f"{config.get('model', 'walker')} on {config.dataset}",
        examples_per_epoch=num_queries * int(config.num_seeds),
    )


def make_task(config, workdir: str) -> supervised.Task:
    kg = load_kg(config.dataset, config.data_dir)
    write_vocabularies(kg, workdir)
    heads, relations, targets = (jnp.asarray(a) for a in training_queries(kg))
    num_queries = heads.shape[0]
    batch = min(int(config.batch_size), num_queries)
    num_batches = -(-num_queries // batch)
    val, test = evaluation_queries(kg, config)
    model = precision.module(make_model(config, kg), config)
    graph = relational_graph(kg)
    tx = common.make_optimizer(config, config.num_epochs * num_batches)

    def init_one(key):
        key, init_key = jax.random.split(key)
        params = model.init({"params": init_key}, heads[:1], relations[:1], False, graph)
        train_state = TrainState.create(apply_fn=model.apply, params=params, tx=tx)
        return KGState(train_state, early_stopping.EarlyStopping.create(params), key)

    def loss_fn(params, rows, weights, key):
        logits = model.apply(params, heads[rows], relations[rows], True, graph, rngs={"dropout": key})
        logits = logits.astype(jnp.float32)
        if config.negatives:
            losses = sampled_bce(logits, targets[rows], jax.random.fold_in(key, 1), config.negatives)
        else:
            losses = smoothed_bce(logits, targets[rows], config.label_smoothing)
        return jnp.sum(losses * weights) / jnp.sum(weights)

    def epoch_one(state: KGState):
        rng, order_key, step_key = jax.random.split(state.rng, 3)
        order = shuffled_batches(order_key, num_queries, batch)

        def step(train_state, inputs):
            rows, key = inputs
            weights = (rows >= 0).astype(jnp.float32)
            grad_fn = precision.value_and_grad(loss_fn, train_state.opt_state)
            loss, grads = grad_fn(train_state.params, jnp.maximum(rows, 0), weights, key)
            return train_state.apply_gradients(grads=grads), loss

        train_state, losses = jax.lax.scan(step, state.train_state, (order, jax.random.split(step_key, num_batches)))
        new = state.replace(train_state=train_state, rng=rng)
        return early_stopping.where(state.early.stopped, state, new), {"train/loss": losses.mean()}

    def rank_one(params, queries: ranking.Queries):
        scores = model.apply(params, queries.heads, queries.relations, False, graph).astype(jnp.float32)
        return ranking.filtered_ranks(scores, queries.answers, queries.filtered)

    return ranking_task(config, init_one, epoch_one, rank_one, val, test, num_queries)


@registry.register("kg_embedding")
def train_and_evaluate(config, workdir: str) -> dict:
    """Trains `config.model` on `config.dataset` for `config.num_seeds` seeds at once; writes results.json."""
    task = make_task(config, workdir)
    return supervised.fit(config, workdir, task, desc=f"{config.model} {config.dataset}")[1]
