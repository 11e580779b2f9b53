"""The graph-walk environment of knowledge-graph reasoning agents (MINERVA, Das et al. 2018), jit/vmap-able.

A walk answers a query (start entity, query relation, ?): it starts at the start entity and takes `num_steps`
steps, each along one outgoing edge (relation, entity) of the entity it stands on, or the "stay" action (a
self-loop with relation `stay_relation` = 2R); the entity it ends on is its answer. The edges are the training
triples and their inverses (`data.with_inverses`), laid out per entity as a padded table:

    table = walk.action_table(kg)            # relations, targets (E, A) int32; mask (E, A) bool; A = 1 + max degree
    state = walk.reset(start, relation, stay, answer)  # WalkState: start, relation, answer, current, previous, step
    legal = walk.legal_actions(table, state, training=True, excluded=None)   # (A,) bool
    state = walk.step(table, state, action)  # moves to table.targets[current, action]
    reward = walk.reward(state, answers)     # answers (E,) bool: 1.0 where the walk ended on one

Action 0 of every entity is "stay"; actions 1.. are its edges sorted by (relation, target); the rest is padding
(mask False). A training walk answers one training triple (start, relation, answer), as MINERVA and Lin et al. train:
that triple's edge and its inverse are removed (a shortcut absent at test time; the query's other edges stay), and
`excluded` (the query's other known answers, on the last step: Lin et al.'s false-negative mask) keeps the walk from
ending on an answer that is not its own. At test `answer` is -1 and every edge is legal.
Everything is arrays and pure functions: vmap over walks, scan over steps.
"""

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from flax import struct

from graphs.kg.data import KnowledgeGraph, with_inverses


@struct.dataclass
class ActionTable:
    relations: jnp.ndarray  # (E, A) int32: each action's relation (2R: stay)
    targets: jnp.ndarray  # (E, A) int32: where it leads
    mask: jnp.ndarray  # (E, A) bool: real actions (False on padding)
    stay_relation: int = struct.field(pytree_node=False)  # 2R


class WalkState(NamedTuple):
    start: jnp.ndarray  # () int32 query entity
    relation: jnp.ndarray  # () int32 query relation
    answer: jnp.ndarray  # () int32 the training triple's tail (-1: none, at test)
    current: jnp.ndarray  # () int32 where the walk stands
    previous: jnp.ndarray  # () int32 the relation of the last step taken (stay before the first)
    step: jnp.ndarray  # () int32 steps taken


def action_table(kg: KnowledgeGraph) -> ActionTable:
    """The outgoing edges of every entity (train triples and their inverses) after a leading stay action."""
    triples = with_inverses(kg.train, kg.num_relations)
    triples = triples[np.lexsort((triples[:, 2], triples[:, 1], triples[:, 0]))]
    stay = 2 * kg.num_relations
    degree = np.bincount(triples[:, 0], minlength=kg.num_entities)
    width = 1 + int(degree.max())
    relations = np.full((kg.num_entities, width), stay, np.int32)
    targets = np.tile(np.arange(kg.num_entities, dtype=np.int32)[:, None], (1, width))  # padding: stay in place
    mask = np.zeros((kg.num_entities, width), bool)
    mask[:, 0] = True
    slot = np.arange(len(triples)) - np.searchsorted(triples[:, 0], triples[:, 0]) + 1  # 1.. within each head
    relations[triples[:, 0], slot] = triples[:, 1]
    targets[triples[:, 0], slot] = triples[:, 2]
    mask[triples[:, 0], slot] = True
    return ActionTable(jnp.asarray(relations), jnp.asarray(targets), jnp.asarray(mask), stay)


def reset(start, relation, stay_relation: int, answer=-1) -> WalkState:
    start = jnp.asarray(start, jnp.int32)
    zero = jnp.zeros_like(start)
    answer = jnp.asarray(answer, jnp.int32) + zero
    return WalkState(start, jnp.asarray(relation, jnp.int32), answer, start, zero + stay_relation, zero)


def inverse(relation, stay_relation: int):
    """The inverse of relation r: r + R for r < R, else r - R (R = stay_relation / 2)."""
    half = stay_relation // 2
    return jnp.where(relation < half, relation + half, relation - half)


def legal_actions(table: ActionTable, state: WalkState, training: bool, excluded=None) -> jnp.ndarray:
    """(A,) the actions the walk may take now. In training, without the edge of its triple (start, relation,
    answer) and that edge's inverse; `excluded` (E,) bool: entities it may not move to (given on the last step)."""
    mask = table.mask[state.current]
    if training:
        relations, targets = table.relations[state.current], table.targets[state.current]
        forward = (state.current == state.start) & (relations == state.relation) & (targets == state.answer)
        back = inverse(state.relation, table.stay_relation)
        backward = (state.current == state.answer) & (relations == back) & (targets == state.start)
        mask = mask & ~(forward | backward)
    if excluded is not None:
        mask = mask & ~excluded[table.targets[state.current]]
    return mask


def step(table: ActionTable, state: WalkState, action) -> WalkState:
    """The walk after taking `action` (an index into its entity's row)."""
    return state._replace(
        current=table.targets[state.current, action],
        previous=table.relations[state.current, action],
        step=state.step + 1,
    )


def reward(state: WalkState, answers) -> jnp.ndarray:
    """1.0 if the walk stands on an answer (`answers` (E,) bool), else 0.0."""
    return answers[state.current].astype(jnp.float32)
