"""A reinforcement-learning agent that answers knowledge-graph queries by walking the graph: MINERVA (Das et al.
2018) with Lin et al. 2018's reward shaping and action dropout, all seeds in one program.

    python -m scripts.train --config=graphs/kg/configs/walker.py:umls --workdir=runs/walker_umls
    python -m scripts.train --config=graphs/kg/configs/walker.py:umls --config.reward_shaping=runs/complex_umls

The environment is `graphs/kg/walk.py`: from the query entity, `num_steps` moves along training edges (or stay).
The policy (`WalkPolicy`) reads the walk so far with an LSTM over the (relation, entity) of each step, and scores
each action (relation, target) of the current entity by the dot product of its embeddings with an MLP of the LSTM
state, the current entity and the query relation; illegal actions are masked out of the softmax. With
`entity_embeddings` False (the default, MINERVA's setting for UMLS and Kinship) the entity embeddings are zero: the
policy sees relations only, so it learns relation paths rather than each entity's training answers.

Training (REINFORCE, as MINERVA): each training triple (head, relation, tail) (inverse relations included, like
the embedding models) is walked `num_rollouts` times from its head; a walk's return is its final reward: 1 if it
ends on that tail, else 0 or, with `reward_shaping` (a finished `kg_embedding` run), the sigmoid of that model's
score for (head, relation, end) (Lin et al.'s soft reward). As in MINERVA's and Lin et al.'s code, the triple's
own edge (and its inverse) is removed from the graph for its walks, and on the last step the query's other known
answers cannot be moved to (`walk.legal_actions`). The loss is `-mean log pi(walk) A - beta * mean_t H(pi_t)`,
with the advantage A the return minus the mean return of the same triple's rollouts, scaled to unit spread over
the batch (MINERVA normalises its advantages), and the entropy bonus beta = `entropy_coef` times `entropy_decay`
every `entropy_decay_every` updates (MINERVA: 0.9 every 200). Action dropout (`action_dropout` p, Lin et al.):
while sampling, each edge is hidden with probability p (stay never), and the walks' log-probabilities are those of
this perturbed policy (Lin et al. use the full policy's, with no baseline; with a baseline, a negative advantage
would drive the full-policy log-probability of a rarely kept edge to -1e9).

Evaluation: beam search (`beam_size` walks kept by total log-probability at each step, on the last step the best
walk to each of `beam_size` different entities, as Lin et al.); an entity's score is the best log-probability of a
walk that ends on it, and the filtered ranking of `graphs/kg/ranking.py` ranks the
answers. An answer no walk reached ranks last among its query's candidates. Every `eval_every_epochs` epochs each
seed's validation MRR is taken; the parameters of the best one are kept (`patience` evaluations without a new best
stop the seed) and tested. results.json: `test/mrr`, `test/hits@k`, `test/mr` as the embedding trainer's.
"""

import os
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from flax.training.train_state import TrainState

from graphs import common
from graphs.kg import embedding, ranking, walk
from graphs.kg.data import KnowledgeGraph, load_kg, with_inverses
from lepton_jax import config as config_lib
from lepton_jax import registry, supervised
from lepton_jax.errors import UserError
from lepton_jax.initializers import orthogonal
from lepton_jax.rl.distributions import Categorical
from lepton_jax.techniques import early_stopping, precision, transfer

MASKED = -1e9  # the logit of an illegal action (finite, as `lepton_jax.rl.envs.masked_logits`: its probability is 0)


class WalkPolicy(nn.Module):
    """`__call__(carry, previous, current, query, action_relations, action_targets, mask)` -> (carry, logits (B, A)):
    one step of B walks; `carry` the LSTM's, from `initial_carry(B)`."""

    num_entities: int
    num_relations: int  # inverse relations and stay included
    size: int = 200
    hidden: int = 200
    entities: bool = True  # False: the policy sees relations only (MINERVA's setting for UMLS and Kinship)

    def setup(self):
        init = nn.initializers.xavier_normal()
        table = self.param("entity", init, (self.num_entities, self.size))
        self.entity = table if self.entities else jnp.zeros_like(table)
        self.relation = self.param("relation", init, (self.num_relations, self.size))
        self.lstm = nn.OptimizedLSTMCell(self.hidden, recurrent_kernel_init=orthogonal())
        self.mlp_hidden = nn.Dense(self.hidden)
        self.mlp_out = nn.Dense(2 * self.size)

    def initial_carry(self, batch: int):
        zeros = jnp.zeros((batch, self.hidden))
        return zeros, zeros

    def __call__(self, carry, previous, current, query, action_relations, action_targets, mask):
        step_input = jnp.concatenate([self.relation[previous], self.entity[current]], -1)
        carry, history = self.lstm(carry, step_input)
        state = jnp.concatenate([history, self.entity[current], self.relation[query]], -1)
        wanted = self.mlp_out(nn.relu(self.mlp_hidden(state)))  # (B, 2 size)
        # An action's score is [r_a; e_a] . wanted = r_a . wanted[:size] + e_a . wanted[size:]: every relation's and
        # entity's half is scored once, (B, R) and (B, E), and gathered per action, never forming (B, A, 2 size).
        by_relation = wanted[:, : self.size] @ self.relation.T
        by_entity = wanted[:, self.size :] @ self.entity.T
        logits = jnp.take_along_axis(by_relation, action_relations, 1) + jnp.take_along_axis(
            by_entity, action_targets, 1
        )
        return carry, jnp.where(mask, logits, MASKED)


def _policy_step(model, params, table: walk.ActionTable, carry, states: walk.WalkState, training: bool, excluded=None):
    """The carry after reading B walks' last step, their logits (B, A) (illegal actions at `MASKED`) and the legal
    actions (B, A); `excluded` (B, E) bool: entities each walk may not move to now."""
    if excluded is None:
        mask = jax.vmap(lambda s: walk.legal_actions(table, s, training))(states)
    else:
        mask = jax.vmap(lambda s, x: walk.legal_actions(table, s, training, x))(states, excluded)
    relations, targets = table.relations[states.current], table.targets[states.current]
    args = (carry, states.previous, states.current, states.relation, relations, targets, mask)
    carry, logits = model.apply(params, *args)
    return carry, logits, mask


def rollout(model, params, table, key, triples, others, num_steps: int, action_dropout: float):
    """B sampled training walks, one per training triple (B, 3) (`others` (B, E) bool: the query's other known
    answers, which the last step may not move to): their final states, the log-probabilities (T, B) of the actions
    taken under the policy they were sampled from (the full one with the dropped edges' logits masked too), and the
    full policy's entropies (T, B)."""
    reset = lambda h, r, t: walk.reset(h, r, table.stay_relation, t)  # noqa: E731
    states = jax.vmap(reset)(triples[:, 0], triples[:, 1], triples[:, 2])
    carry = model.apply(params, triples.shape[0], method=WalkPolicy.initial_carry)

    def one_step(walk_state, inputs):
        carry, states = walk_state
        key, last = inputs
        excluded = others & last
        carry, logits, _ = _policy_step(model, params, table, carry, states, training=True, excluded=excluded)
        keep_key, sample_key = jax.random.split(key)
        kept = jax.random.bernoulli(keep_key, 1.0 - action_dropout, logits.shape).at[:, 0].set(True)
        perturbed = Categorical(jnp.where(kept, logits, MASKED))
        action = perturbed.sample(sample_key)
        # The walk was sampled from the perturbed policy: its log-probability (on-policy REINFORCE) stays bounded
        # where the full policy's would run to -1e9 for a rare edge that a negative advantage keeps pushing down.
        taken = perturbed.log_prob(action)
        entropy = Categorical(logits).entropy()
        states = jax.vmap(lambda s, a: walk.step(table, s, a))(states, action)
        return (carry, states), (taken, entropy)

    last = jnp.arange(num_steps) == num_steps - 1
    steps = (jax.random.split(key, num_steps), last)
    (_, states), (log_probs, entropies) = jax.lax.scan(one_step, (carry, states), steps)
    return states, log_probs, entropies


class Beam(NamedTuple):
    """The `beam` walks kept for each of Q queries, best first."""

    log_probs: jax.Array  # (Q, K) total log-probability (-inf: no such walk)
    entities: jax.Array  # (Q, K, T + 1) the start, then where each step led
    relations: jax.Array  # (Q, K, T) the relation of each step (2R: stay)


def beam_walks(model, params, table, starts, relations, num_steps: int, beam: int) -> Beam:
    """Beam search: at each step every kept walk is extended by every legal action and the `beam` most probable
    walks of each query are kept; on the last step, the best walk to each entity (Lin et al.: walks to one entity
    count once), so the kept walks end on `beam` different entities (fewer reachable: -inf log-probabilities)."""
    num_queries = starts.shape[0]
    width = table.mask.shape[1]
    flat = lambda x: x.reshape(num_queries * beam, *x.shape[2:])  # noqa: E731
    grid = lambda x: jnp.repeat(x[:, None], beam, 1)  # noqa: E731
    states = jax.vmap(lambda s, r: walk.reset(s, r, table.stay_relation))(flat(grid(starts)), flat(grid(relations)))
    carry = model.apply(params, num_queries * beam, method=WalkPolicy.initial_carry)
    scores = jnp.full((num_queries, beam), -jnp.inf).at[:, 0].set(0.0)  # one live walk to start with
    path_entities, path_relations = states.current[:, None], jnp.zeros((num_queries * beam, 0), jnp.int32)
    for t in range(num_steps):
        carry, logits, mask = _policy_step(model, params, table, carry, states, training=False)
        total = jnp.where(mask, scores.reshape(-1, 1) + jax.nn.log_softmax(logits), -jnp.inf)
        total = total.reshape(num_queries, beam * width)
        if t < num_steps - 1:
            scores, index = jax.lax.top_k(total, beam)
        else:
            ends = table.targets[states.current].reshape(num_queries, -1)
            scores, index = _best_per_end(total, ends, table.targets.shape[0], beam)
        parent = (index // width + jnp.arange(num_queries)[:, None] * beam).reshape(-1)
        carry, states, path_entities, path_relations = jax.tree.map(
            lambda x, p=parent: x[p], (carry, states, path_entities, path_relations)
        )
        states = jax.vmap(lambda s, a: walk.step(table, s, a))(states, (index % width).reshape(-1))
        path_entities = jnp.concatenate([path_entities, states.current[:, None]], 1)
        path_relations = jnp.concatenate([path_relations, states.previous[:, None]], 1)
    shape = (num_queries, beam, -1)
    return Beam(scores, path_entities.reshape(shape), path_relations.reshape(shape))


def _best_per_end(total, ends, num_entities: int, beam: int):
    """Of Q queries' candidate walks (log-probabilities `total` (Q, N), end entities `ends` (Q, N)), the `beam` best
    that end on different entities: their log-probabilities and indices (Q, beam), best first (-inf: none)."""
    num_queries, count = total.shape
    rows = jnp.arange(num_queries)[:, None]
    size = max(num_entities, beam)
    best = jnp.full((num_queries, size), -jnp.inf).at[rows, ends].max(total)  # (Q, >= E) per end entity
    first = jnp.where(total == best[rows, ends], jnp.arange(count), count)  # the lowest index among the ties
    index = jnp.full((num_queries, size), count).at[rows, ends].min(first)
    scores, chosen = jax.lax.top_k(best, beam)
    return scores, jnp.minimum(jnp.take_along_axis(index, chosen, 1), count - 1)


def entity_scores(walks: Beam, num_entities: int) -> jax.Array:
    """(Q, E) the best log-probability of a kept walk that ends on each entity (-inf: none does)."""
    num_queries, beam = walks.log_probs.shape
    rows = jnp.repeat(jnp.arange(num_queries)[:, None], beam, 1)
    return jnp.full((num_queries, num_entities), -jnp.inf).at[rows, walks.entities[..., -1]].max(walks.log_probs)


def beam_search(model, params, table, starts, relations, num_steps: int, beam: int, num_entities: int):
    """(Q, E) entity scores (`entity_scores`) of the beam search's walks (`beam_walks`)."""
    return entity_scores(beam_walks(model, params, table, starts, relations, num_steps, beam), num_entities)


def ranks_of_walks(scores, queries: ranking.Queries):
    """Filtered ranks (`ranking.filtered_ranks`), an answer no walk reached ranked last among its candidates."""
    ranks = ranking.filtered_ranks(scores, queries.answers, queries.filtered)
    reached = jnp.isfinite(jnp.take_along_axis(scores, queries.answers[:, None], 1)[:, 0])
    return jnp.where(reached, ranks, jnp.sum(~queries.filtered, 1).astype(ranks.dtype))


def soft_rewards(workdir: str, kg: KnowledgeGraph, heads, relations) -> jax.Array:
    """(Q, E) sigmoid scores of a finished `kg_embedding` run (seed 0's kept parameters) for the queries (the run
    is checked at launch: `graphs.kg.configs.check_reward_shaping`)."""
    where = f"config.reward_shaping={workdir}"
    try:
        variables = transfer.read_variables(workdir)
    except UserError as error:
        raise UserError(str(error).replace(f"config.init_from={workdir}", where)) from None
    source = config_lib.read_json(os.path.join(workdir, "config.json"), "the reward-shaping run's config")
    model = embedding.make_model(config_lib.ml_collections.ConfigDict(source), kg)
    graph = embedding.relational_graph(kg)
    return jax.nn.sigmoid(model.apply(variables, heads, relations, False, graph))


def make_policy(config, kg: KnowledgeGraph) -> WalkPolicy:
    sizes = (kg.num_entities, 2 * kg.num_relations + 1, config.embedding_size, config.hidden)
    return WalkPolicy(*sizes, entities=config.get("entity_embeddings", True))


@struct.dataclass
class WalkerState:
    train_state: TrainState
    early: early_stopping.EarlyStopping
    rng: jax.Array


def make_task(config, workdir: str) -> supervised.Task:
    kg = load_kg(config.dataset, config.data_dir)
    embedding.write_vocabularies(kg, workdir)
    table = walk.action_table(kg)
    triples = with_inverses(kg.train, kg.num_relations)
    heads, relations, targets = (jnp.asarray(a) for a in embedding.training_queries(kg))
    query_of = jnp.asarray(np.unique(triples[:, :2], axis=0, return_inverse=True)[1].reshape(-1))  # same order
    triples = jnp.asarray(triples)
    known = targets > 0  # (Q, E) each query's training answers
    soft = soft_rewards(config.reward_shaping, kg, heads, relations) if config.reward_shaping else None
    num_examples = triples.shape[0]
    batch = min(int(config.batch_size), num_examples)
    num_batches = -(-num_examples // batch)
    val, test = embedding.evaluation_queries(kg, config)
    model = make_policy(config, kg)
    tx = common.make_optimizer(config, config.num_epochs * num_batches)
    rollouts = int(config.num_rollouts)

    def init_one(key):
        key, init_key = jax.random.split(key)
        carry = (jnp.zeros((1, config.hidden)),) * 2  # `WalkPolicy.initial_carry(1)`, before there are params
        one = jnp.zeros((1,), jnp.int32)
        actions = jnp.zeros((1, table.mask.shape[1]), jnp.int32)
        params = model.init(init_key, carry, one, one, one, actions, actions, actions > -1)
        train_state = TrainState.create(apply_fn=model.apply, params=params, tx=tx)
        return WalkerState(train_state, early_stopping.EarlyStopping.create(params), key)

    def loss_fn(params, rows, weights, key, update):
        walks = jnp.repeat(rows, rollouts)  # each triple `rollouts` times
        answer, query = triples[walks, 2], query_of[walks]
        others = known[query] & (jnp.arange(kg.num_entities) != answer[:, None])
        states, log_probs, entropies = rollout(
            model, params, table, key, triples[walks], others, config.num_steps, config.action_dropout
        )
        hit = (states.current == answer).astype(jnp.float32)
        returns = hit if soft is None else hit + (1.0 - hit) * soft[query, states.current]
        returns = returns.reshape(-1, rollouts)  # (batch, rollouts)
        advantage = (returns - returns.mean(1, keepdims=True)).reshape(-1)
        weight = jnp.repeat(weights, rollouts)
        spread = jnp.sqrt(jnp.sum(advantage**2 * weight) / jnp.sum(weight))
        advantage = advantage / (spread + 1e-6)  # scaled to unit spread over the batch, as MINERVA
        policy = -jnp.sum(log_probs.sum(0) * jax.lax.stop_gradient(advantage) * weight)
        entropy = jnp.sum(entropies.mean(0) * weight)
        beta = config.entropy_coef * config.entropy_decay ** (update / config.entropy_decay_every)
        loss = (policy - beta * entropy) / jnp.sum(weight)
        return loss, jnp.sum(hit * weight) / jnp.sum(weight)

    def epoch_one(state: WalkerState):
        rng, order_key, step_key = jax.random.split(state.rng, 3)
        order = embedding.shuffled_batches(order_key, num_examples, batch)

        def step(train_state, inputs):
            rows, key = inputs
            weights = (rows >= 0).astype(jnp.float32)
            grad_fn = precision.value_and_grad(loss_fn, train_state.opt_state, has_aux=True)
            (loss, hits), grads = grad_fn(train_state.params, jnp.maximum(rows, 0), weights, key, train_state.step)
            return train_state.apply_gradients(grads=grads), (loss, hits)

        keys = jax.random.split(step_key, num_batches)
        train_state, (losses, hits) = jax.lax.scan(step, state.train_state, (order, keys))
        new = state.replace(train_state=train_state, rng=rng)
        metrics = {"train/loss": losses.mean(), "train/walk_hits": hits.mean()}
        return early_stopping.where(state.early.stopped, state, new), metrics

    def rank_one(params, queries: ranking.Queries):
        def chunk(parts):
            starts, rels = parts
            return beam_search(model, params, table, starts, rels, config.num_steps, config.beam_size, kg.num_entities)

        size = min(int(config.eval_chunk), queries.heads.shape[0])
        count = -(-queries.heads.shape[0] // size)
        pad = count * size - queries.heads.shape[0]
        parts = [jnp.pad(a, (0, pad)).reshape(count, size) for a in (queries.heads, queries.relations)]
        scores = jax.lax.map(chunk, tuple(parts)).reshape(count * size, -1)[: queries.heads.shape[0]]
        return ranks_of_walks(scores, queries)

    return embedding.ranking_task(config, init_one, epoch_one, rank_one, val, test, num_examples)


@registry.register("kg_walker")
def train_and_evaluate(config, workdir: str) -> dict:
    """Trains the walking agent on `config.dataset` for `config.num_seeds` seeds at once; writes results.json."""
    task = make_task(config, workdir)
    return supervised.fit(config, workdir, task, desc=f"walker {config.dataset}")[1]
