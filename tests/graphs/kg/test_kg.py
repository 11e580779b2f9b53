"""Knowledge graphs: the loader, filtered ranking against a brute-force count, and the embedding trainer."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from graphs.kg import data, embedding, ranking
from graphs.kg.configs import embedding as embedding_config
from tests.conftest import one_line_error


@pytest.fixture(scope="module")
def family():
    return data.load_kg("family")


def test_family_tree_holds_out_facts_that_a_rule_answers(family):
    """Held-out grandparents are two parent steps away; held-out spouses and siblings have their reverse in train."""
    name = {r: i for i, r in enumerate(family.relations)}
    train = {tuple(t) for t in family.train}
    children = {}
    for h, r, t in family.train:
        if r == name["parent"]:
            children.setdefault(h, set()).add(t)
    for split in (family.valid, family.test):
        assert len(split) > 100 and set(split[:, 1]) == {name["grandparent"], name["sibling"], name["spouse"]}
        for h, r, t in split:
            if r == name["grandparent"]:
                assert any(t in children.get(c, ()) for c in children.get(h, ()))  # parent o parent
            else:
                assert (t, r, h) in train
        assert not train & {tuple(t) for t in split}
    again = data.family_tree()  # deterministic
    assert again.entities == family.entities and all(np.array_equal(a, b) for a, b in zip(again[3:], family[3:]))


def test_with_inverses_appends_reversed_triples():
    triples = np.array([[0, 1, 2], [3, 0, 4]], np.int32)
    np.testing.assert_array_equal(data.with_inverses(triples, 5), [[0, 1, 2], [3, 0, 4], [2, 6, 0], [4, 5, 3]])


def _brute_force_ranks(scores, answers, filtered):
    ranks = []
    for row, answer, mask in zip(scores, answers, filtered):
        others = [s for e, s in enumerate(row) if e != answer and not mask[e]]
        above = sum(s > row[answer] for s in others)
        level = sum(s == row[answer] for s in others)
        ranks.append(1 + above + level / 2)  # ties: the mean of the ranks they share
    return np.array(ranks)


def test_filtered_ranks_equal_a_brute_force_count_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, (50, 12)).astype(np.float32)  # many ties
    answers = rng.integers(0, 12, 50)
    filtered = rng.random((50, 12)) < 0.3
    filtered[np.arange(50), answers] = False
    ranks = np.asarray(ranking.filtered_ranks(jnp.asarray(scores), jnp.asarray(answers), jnp.asarray(filtered)))
    np.testing.assert_array_equal(ranks, _brute_force_ranks(scores, answers, filtered))
    metrics = ranking.summary(ranks)
    np.testing.assert_allclose(metrics["mrr"], np.mean(1 / ranks), rtol=1e-6)
    np.testing.assert_allclose(metrics["hits@3"], np.mean(ranks <= 3))


def test_queries_filter_every_other_known_answer_in_both_directions(family):
    known = ranking.known_answers(family)
    queries = ranking.queries(family, family.test, known)
    n = len(family.test)
    np.testing.assert_array_equal(queries.answers[:n], family.test[:, 2])
    np.testing.assert_array_equal(queries.answers[n:], family.test[:, 0])  # head queries, inverse relations
    assert (queries.relations[n:] == family.test[:, 1] + family.num_relations).all()
    for i in range(0, 2 * n, 7):
        expected = known[(int(queries.heads[i]), int(queries.relations[i]))] - {int(queries.answers[i])}
        assert set(np.flatnonzero(queries.filtered[i])) == expected


def test_complex_scores_are_the_real_part_of_the_trilinear_product():
    model = embedding.KGEmbedding("complex", num_entities=5, num_relations=4, size=3)
    params = model.init(jax.random.PRNGKey(0), jnp.array([1]), jnp.array([2]))["params"]
    logits = model.apply({"params": params}, jnp.array([1, 4]), jnp.array([2, 0]))
    e = np.asarray(params["entity_real"]) + 1j * np.asarray(params["entity_imag"])
    w = np.asarray(params["relation_real"]) + 1j * np.asarray(params["relation_imag"])
    for row, (h, r) in enumerate([(1, 2), (4, 0)]):
        np.testing.assert_allclose(logits[row], np.real((e[h] * w[r]) @ np.conj(e).T), rtol=1e-5, atol=1e-6)


def test_training_targets_hold_every_known_tail():
    kg = data.KnowledgeGraph("tiny", ("a", "b", "c"), ("r",), np.array([[0, 0, 1], [0, 0, 2]], np.int32), None, None)
    heads, relations, targets = embedding.training_queries(kg)
    np.testing.assert_array_equal(heads, [0, 1, 2])
    np.testing.assert_array_equal(relations, [0, 1, 1])  # (a, r), (b, r^-1), (c, r^-1)
    np.testing.assert_array_equal(targets, [[0, 1, 1], [1, 0, 0], [1, 0, 0]])


def _config(**changes):
    config = embedding_config.get_config("family,distmult")
    config.update({"num_seeds": 1, "num_epochs": 120, "eval_every_epochs": 40, **changes})
    return config


@pytest.fixture(scope="module")
def family_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("kg") / "run")
    return workdir, embedding.train_and_evaluate(_config(), workdir)


def test_training_ranks_held_out_facts_far_above_chance(family_run, family):
    workdir, results = family_run
    # Chance: an MRR near (ln E) / E, about 0.01 for 463 entities.
    assert results["test/mrr_mean"] > 0.3, results  # measured 0.48
    assert results["test/hits@10_mean"] > 0.5, results  # measured 0.67
    with open(os.path.join(workdir, "entities.txt")) as f:
        assert f.read().split() == list(family.entities)


def test_resumed_run_equals_uninterrupted(tmp_path, interrupt_first_step, without_figures):
    from lepton_jax.interrupt import Interrupted

    small = dict(num_epochs=6, eval_every_epochs=3, embedding_size=16)
    full = embedding.train_and_evaluate(_config(**small), str(tmp_path / "full"))
    with interrupt_first_step(), pytest.raises(Interrupted, match="epoch 1/"):
        embedding.train_and_evaluate(_config(**small), str(tmp_path / "split"))
    resumed = embedding.train_and_evaluate(_config(**small), str(tmp_path / "split"))
    assert resumed["resumed_from_epoch"] == 1
    assert resumed["params_sha256"] == full["params_sha256"]
    assert resumed["per_seed/test/mrr"] == full["per_seed/test/mrr"]


def test_a_missing_or_malformed_triple_file_and_a_bad_dataset_are_one_line(tmp_path):
    from scripts import trainers

    missing = one_line_error(lambda: data.load_kg("umls", str(tmp_path)), "missing file", "train.txt")
    assert str(tmp_path) in missing  # names where it looked
    folder = tmp_path / "kg" / "umls"
    folder.mkdir(parents=True)
    (folder / "bad.txt").write_text("a\tb\tc\nd\te\n")
    malformed = one_line_error(lambda: data._read_triples(str(folder / "bad.txt")), "corrupt file", "line 2 has 2")
    assert str(folder / "bad.txt") in malformed
    (folder / "train.txt").write_text("a\tb\tc\n")
    one_line_error(lambda: data.load_kg("umls", str(tmp_path)), "corrupt file", "sha256")
    one_line_error(lambda: data.load_kg("freebase"), "unknown knowledge graph 'freebase'", "umls")
    config = embedding_config.get_config("umls,complex")
    config.model = "transe"
    one_line_error(lambda: trainers.validate(config), "config.model", "distmult")
    config = embedding_config.get_config("umls,complex")
    config.dataset = "fb15k"
    one_line_error(lambda: trainers.validate(config), "config.dataset='fb15k'", "kinship")
    one_line_error(lambda: embedding_config.get_config("umls,rotate"), "unknown config arg 'rotate'")


def test_rgcn_layer_equals_the_sum_over_relations_and_neighbours():
    triples = np.array([[0, 0, 1], [2, 0, 1], [1, 1, 0], [2, 1, 0], [0, 1, 2]], np.int32)
    graph = embedding.RelationalGraph.from_triples(triples, num_entities=3, num_relations=2)
    layer = embedding.RGCNLayer(features=4, num_relations=2, num_bases=2)
    h = jax.random.normal(jax.random.PRNGKey(1), (3, 5))
    params = layer.init(jax.random.PRNGKey(0), h, graph)["params"]
    out = layer.apply({"params": params}, h, graph)
    kernels = np.einsum("rb,bdf->rdf", params["coefficients"], params["bases"])  # W_r = sum_b a_rb V_b
    expected = np.asarray(h) @ np.asarray(params["self_kernel"])
    for i in range(3):
        for r in range(2):
            neighbours = [s for s, rel, t in triples if t == i and rel == r]
            for j in neighbours:
                expected[i] += np.asarray(h[j]) @ kernels[r] / len(neighbours)  # 1 / c_{i,r}
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_negative_sampling_weighs_the_known_tails_and_the_drawn_non_tails():
    logits = jnp.array([[0.5, -1.0, 2.0, 0.0]])
    targets = jnp.array([[0.0, 1.0, 0.0, 0.0]])
    key = jax.random.PRNGKey(3)
    drawn = np.asarray(jax.random.randint(key, (1, 6), 0, 4))[0]
    loss = float(embedding.sampled_bce(logits, targets, key, 6)[0])
    bce = lambda x, y: float(np.log1p(np.exp(-x)) if y else np.log1p(np.exp(x)))  # noqa: E731
    terms = [bce(-1.0, 1)] + [bce(float(logits[0, d]), 0) for d in drawn if d != 1]  # a drawn known tail is dropped
    np.testing.assert_allclose(loss, np.mean(terms), rtol=1e-5)
