"""The graph-walk environment and the walking agent: legal moves, rewards, beam search, and a two-hop rule learned."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from graphs.kg import data, ranking, walk, walker
from graphs.kg.configs import walker as walker_config
from lepton_jax import supervised


@pytest.fixture(scope="module")
def family():
    return data.load_kg("family")


@pytest.fixture(scope="module")
def table(family):
    return walk.action_table(family)


def test_actions_are_the_entity_edges_and_stay_nothing_else(family, table):
    edges = {tuple(t) for t in data.with_inverses(family.train, family.num_relations)}
    relations, targets, mask = (np.asarray(a) for a in (table.relations, table.targets, table.mask))
    for entity in range(family.num_entities):
        real = [(entity, int(r), int(t)) for r, t, m in zip(relations[entity], targets[entity], mask[entity]) if m]
        assert real[0] == (entity, table.stay_relation, entity)  # action 0: stay
        assert set(real[1:]) == {e for e in edges if e[0] == entity}
        assert len(real) == 1 + sum(e[0] == entity for e in edges)  # each edge once; the padding is masked out


def test_training_removes_the_triples_edge_and_its_inverse_only(family, table):
    parent = family.relations.index("parent")
    h, _, t = (int(x) for x in family.train[family.train[:, 1] == parent][0])
    state = walk.reset(h, parent, table.stay_relation, t)
    relations, targets = np.asarray(table.relations[h]), np.asarray(table.targets[h])
    at_test, in_training = walk.legal_actions(table, state, False), walk.legal_actions(table, state, True)
    np.testing.assert_array_equal(np.asarray(at_test), np.asarray(table.mask[h]))
    removed = np.flatnonzero(np.asarray(at_test & ~in_training))
    assert removed.tolist() == np.flatnonzero((relations == parent) & (targets == t)).tolist() and len(removed) == 1
    # standing on the answer, the inverse edge back to the start is gone too; nothing else is
    back = walk.step(table, state._replace(current=jnp.int32(t)), 0)._replace(step=jnp.int32(0))
    inverse = parent + family.num_relations
    legal = np.asarray(walk.legal_actions(table, back, True))
    gone = np.asarray(table.mask[t]) & ~legal
    np.testing.assert_array_equal(
        gone, (np.asarray(table.relations[t]) == inverse) & (np.asarray(table.targets[t]) == h)
    )
    assert gone.sum() == 1
    # elsewhere every edge is legal in training
    other = (relations != parent) & (relations != table.stay_relation) & np.asarray(table.mask[h])
    moved = walk.step(table, state, int(np.flatnonzero(other)[0]))
    assert int(moved.current) not in (h, t)
    np.testing.assert_array_equal(walk.legal_actions(table, moved, True), table.mask[moved.current])


def test_excluded_entities_cannot_be_moved_to(family, table):
    h = int(family.train[0, 0])
    state = walk.reset(h, 0, table.stay_relation)
    excluded = jnp.zeros(family.num_entities, bool).at[table.targets[h, 1]].set(True).at[h].set(True)
    legal = np.asarray(walk.legal_actions(table, state, False, excluded))
    allowed = np.asarray(table.mask[h]) & ~np.isin(np.asarray(table.targets[h]), np.flatnonzero(excluded))
    np.testing.assert_array_equal(legal, allowed)
    assert not legal[0] and not legal[1]  # staying on h and the first edge's target are both excluded


def test_a_walk_moves_along_its_edge_and_is_rewarded_on_an_answer(family, table):
    h, r, t = (int(x) for x in family.train[0])
    state = walk.reset(h, r, table.stay_relation)
    action = int(np.flatnonzero((np.asarray(table.relations[h]) == r) & (np.asarray(table.targets[h]) == t))[0])
    state = walk.step(table, state, action)
    assert int(state.current) == t and int(state.previous) == r and int(state.step) == 1
    answers = jnp.zeros(family.num_entities, bool).at[t].set(True)
    assert float(walk.reward(state, answers)) == 1.0
    assert float(walk.reward(walk.step(table, state, 0), answers)) == 1.0  # stay keeps the answer
    assert float(walk.reward(walk.reset(h, r, table.stay_relation), answers)) == (1.0 if h == t else 0.0)


def test_an_answer_no_walk_reached_ranks_last():
    scores = jnp.array([[0.0, -jnp.inf, -1.0, -jnp.inf, -jnp.inf]])
    filtered = jnp.array([[False, False, False, True, False]])
    queries = ranking.Queries(jnp.array([0]), jnp.array([0]), jnp.array([1]), filtered)
    assert float(walker.ranks_of_walks(scores, queries)[0]) == 4.0  # 4 unfiltered candidates
    queries = queries._replace(answers=jnp.array([2]))
    assert float(walker.ranks_of_walks(scores, queries)[0]) == 2.0


@pytest.fixture(scope="module")
def trained(family):
    config = walker_config.get_config("family")
    config.update(num_seeds=1, embedding_size=32, hidden=32, num_rollouts=8, num_epochs=10, beam_size=32)
    config.update(eval_every_epochs=10, lr=0.005, action_dropout=0.5, batch_size=256)
    import tempfile

    with tempfile.TemporaryDirectory() as workdir:
        state, results = supervised.fit(config, workdir, walker.make_task(config, workdir))
    return config, jax.tree.map(lambda x: x[0], state.early.best_params), results


def test_the_agent_learns_grandparent_as_parent_of_parent(family, table, trained):
    config, params, results = trained
    grandparent = family.relations.index("grandparent")
    held_out = family.test[family.test[:, 1] == grandparent]
    queries = ranking.queries(family, held_out, directions="tail")
    model = walker.make_policy(config, family)
    scores = walker.beam_search(
        model, params, table, jnp.asarray(queries.heads), jnp.asarray(queries.relations), 2, 32, family.num_entities
    )
    ranks = walker.ranks_of_walks(scores, jax.tree.map(jnp.asarray, queries))
    assert float(jnp.mean(ranks <= 1)) >= 0.9, ranks
    assert results["test/mrr_mean"] > 0.8, results  # every held-out relation


def test_resumed_run_equals_uninterrupted(tmp_path, walker_run, interrupt_first_step, without_figures):
    from lepton_jax.interrupt import Interrupted
    from tests.graphs.kg.conftest import smoke_walker_config

    _, full = walker_run
    with interrupt_first_step(), pytest.raises(Interrupted, match="epoch 1/"):
        walker.train_and_evaluate(smoke_walker_config(), str(tmp_path / "split"))
    resumed = walker.train_and_evaluate(smoke_walker_config(), str(tmp_path / "split"))
    assert resumed["resumed_from_epoch"] == 1
    assert resumed["params_sha256"] == full["params_sha256"]
    assert resumed["per_seed/test/mrr"] == full["per_seed/test/mrr"]


def test_reward_shaping_reads_the_embedding_runs_scores(tmp_path, family, without_figures):
    from graphs.kg import embedding
    from graphs.kg.configs import embedding as embedding_config
    from lepton_jax.techniques import transfer

    config = embedding_config.get_config("family,distmult,smoke")
    embedding.train_and_evaluate(config, str(tmp_path / "emb"))
    heads, relations, _ = (jnp.asarray(a) for a in embedding.training_queries(family))
    soft = walker.soft_rewards(str(tmp_path / "emb"), family, heads[:5], relations[:5])
    model = embedding.make_model(config, family)
    variables = transfer.read_variables(str(tmp_path / "emb"))
    logits = model.apply(variables, heads[:5], relations[:5], False, embedding.relational_graph(family))
    assert soft.shape == (5, family.num_entities)
    np.testing.assert_allclose(soft, jax.nn.sigmoid(logits), rtol=1e-6)


def test_the_last_beam_step_keeps_the_best_walk_to_each_entity():
    # one query, six candidate walks ending on entities 2, 0, 2, 1, 0, 3 (entity 4 unreached), beam 4
    total = jnp.array([[-1.0, -3.0, -0.5, -2.0, -4.0, -jnp.inf]])
    ends = jnp.array([[2, 0, 2, 1, 0, 3]])
    scores, index = walker._best_per_end(total, ends, 5, 4)
    np.testing.assert_array_equal(scores, [[-0.5, -2.0, -3.0, -jnp.inf]])  # entities 2, 1, 0; then nothing
    np.testing.assert_array_equal(index[0, :3], [2, 3, 1])
