"""Filtered ranking (Bordes et al. 2013), the evaluation every knowledge-graph model here shares.

A test triple (h, r, t) asks two queries: (h, r, ?) with answer t, and (t, r^-1, ?) with answer h (the inverse
relation r + R). Each query's scores over all E entities rank its answer after removing the *other* known answers
of the same query, those in train, valid or test ("filtered"), so a model is not penalised for ranking another true
fact first. Ties are broken by their mean rank: an answer level with k other candidates ranks
1 + (number above it) + k / 2, neither first nor last among them. Reported: the mean reciprocal rank (MRR), Hits@k
(the share of answers ranked <= k, for k in `HITS`) and the mean rank (MR), over both directions of every triple
(or, with `directions="tail"`, over the tail queries alone, as Lin et al. 2018's code evaluates).

    queries = ranking.queries(kg, kg.test)          # heads, relations, answers, filtered (Q, E) bool
    ranks = ranking.filtered_ranks(scores, queries.answers, queries.filtered)
    ranking.summary(ranks)                          # {"mrr", "hits@1", "hits@3", "hits@10", "mr"}: floats

The filter is a dense (Q, E) mask, built once on the host: fine for these graphs (thousands of queries, a few
hundred entities), not for Freebase-sized ones.
"""

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from graphs.kg.data import KnowledgeGraph, with_inverses

HITS = (1, 3, 10)
DIRECTIONS = ("both", "tail")


class Queries(NamedTuple):
    heads: np.ndarray  # (Q,) int32 the query entity
    relations: np.ndarray  # (Q,) int32, inverse relations R .. 2R-1 included
    answers: np.ndarray  # (Q,) int32
    filtered: np.ndarray  # (Q, E) bool: other known answers of the query, left out of its ranking


def known_answers(kg: KnowledgeGraph) -> dict[tuple[int, int], set[int]]:
    """(head, relation) -> every tail known in train, valid or test, inverse relations included."""
    known: dict[tuple[int, int], set[int]] = {}
    for h, r, t in with_inverses(np.concatenate([kg.train, kg.valid, kg.test]), kg.num_relations):
        known.setdefault((int(h), int(r)), set()).add(int(t))
    return known


def queries(kg: KnowledgeGraph, triples: np.ndarray, known: dict | None = None, directions: str = "both") -> Queries:
    """The queries of `triples` (n, 3): every tail query, then (`directions` "both") every head query as an
    inverse-relation query; "tail": the n tail queries alone (the protocol of Lin et al. 2018's code)."""
    known = known_answers(kg) if known is None else known
    both = with_inverses(triples, kg.num_relations) if directions == "both" else np.asarray(triples, np.int32)
    filtered = np.zeros((len(both), kg.num_entities), bool)
    for i, (h, r, t) in enumerate(both):
        filtered[i, list(known[(int(h), int(r))])] = True
        filtered[i, t] = False
    return Queries(both[:, 0], both[:, 1], both[:, 2], filtered)


def filtered_ranks(scores, answers, filtered):
    """(Q,) float rank of each answer among the unfiltered candidates, ties at their mean rank.

    Args:
      scores: (Q, E) higher is better.
      answers: (Q,) the answer's entity.
      filtered: (Q, E) bool, True on the candidates left out (never on the answer).
    """
    target = jnp.take_along_axis(scores, answers[:, None], 1)
    candidates = ~filtered
    above = jnp.sum(candidates & (scores > target), 1)
    level = jnp.sum(candidates & (scores == target), 1) - 1  # the answer itself is level with itself
    return 1.0 + above + level / 2.0


def summary(ranks) -> dict:
    """MRR, Hits@k and MR of (Q,) ranks (the means over the last axis: per seed for (seeds, Q))."""
    ranks = jnp.asarray(ranks, jnp.float32)
    out = {"mrr": jnp.mean(1.0 / ranks, -1)}
    out |= {f"hits@{k}": jnp.mean(ranks <= k, -1) for k in HITS}
    return out | {"mr": jnp.mean(ranks, -1)}
