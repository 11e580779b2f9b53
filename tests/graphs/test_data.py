"""Loaders on tiny fixture files written here (and corrupted ones), the karate club, batching and edge splits."""

import os
import pickle

import numpy as np
import pytest
import scipy.sparse as sp

from graphs import batching, data
from lepton_jax.errors import UserError


def write_planetoid(directory, name="cora", skip=()):
    """A 6-node Planetoid-format dataset: 2 train nodes (x), 4 nodes in allx, 2 test nodes (ids 5, 4, unsorted)."""
    rng = np.random.default_rng(0)
    onehot = np.eye(2)[[0, 1, 0, 1, 1, 0]]
    features = rng.random((6, 3)) * (rng.random((6, 3)) < 0.7)
    parts = {
        "x": sp.csr_matrix(features[:2]),
        "y": onehot[:2],
        "allx": sp.csr_matrix(features[:4]),
        "ally": onehot[:4],
        "tx": sp.csr_matrix(features[[5, 4]]),  # rows in the order of test.index
        "ty": onehot[[5, 4]],
        "graph": {0: [1, 2], 1: [0], 2: [0, 3], 3: [2, 4], 4: [3, 5], 5: [4, 5]},  # 5-5: a self-loop, dropped
    }
    for part, value in parts.items():
        if part not in skip:
            with open(os.path.join(directory, f"ind.{name}.{part}"), "wb") as f:
                pickle.dump(value, f)
    with open(os.path.join(directory, f"ind.{name}.test.index"), "w") as f:
        f.write("5\n4\n")
    return features, onehot


def test_planetoid_loader_assembles_the_public_split(tmp_path, monkeypatch):
    features, onehot = write_planetoid(tmp_path)
    monkeypatch.setattr(data, "PLANETOID", ("cora",))
    dataset = data.load_planetoid(str(tmp_path), "cora", checksums={})
    np.testing.assert_allclose(dataset.features, features, rtol=1e-6)
    np.testing.assert_array_equal(dataset.labels, onehot.argmax(1))
    assert dataset.train_mask.tolist() == [True, True, False, False, False, False]
    assert dataset.test_mask.tolist() == [False, False, False, False, True, True]
    assert dataset.num_classes == 2 and len(dataset.senders) == 10  # 5 undirected edges, both directions


def test_corrupt_or_missing_planetoid_files_give_one_clear_line(tmp_path):
    write_planetoid(tmp_path, skip=("allx",))
    with pytest.raises(UserError, match=r"missing file .*ind\.cora\.allx \(expected Planetoid cora 'allx'"):
        data.load_planetoid(str(tmp_path), "cora", checksums={})
    write_planetoid(tmp_path)
    with open(tmp_path / "ind.cora.graph", "wb") as f:
        f.write(b"\x80\x04 truncated")
    with pytest.raises(UserError, match=r"corrupt file .*ind\.cora\.graph") as error:
        data.load_planetoid(str(tmp_path), "cora", checksums={})
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match=r"corrupt file .*ind\.cora\.x: sha256"):  # the real checksums
        data.load_planetoid(str(tmp_path), "cora")
    with pytest.raises(UserError, match="unknown Planetoid dataset 'cornell'; valid: cora, citeseer, pubmed"):
        data.load_planetoid(str(tmp_path), "cornell")


TU_TEXT = """3
3 1
0 2 1 2
1 2 0 2
0 2 0 1
1 0
2 0
2 1
0 1 1
1 1 0
"""


def write_tu(directory, text=TU_TEXT):
    root = directory / "MUTAG"
    os.makedirs(root / "10fold_idx", exist_ok=True)
    (root / "MUTAG.txt").write_text(text)
    for k in range(1, 11):
        (root / "10fold_idx" / f"train_idx-{k}.txt").write_text("0\n1\n")
        (root / "10fold_idx" / f"test_idx-{k}.txt").write_text("2\n")


def test_tu_loader_reads_graphs_tags_and_folds(tmp_path):
    write_tu(tmp_path)
    dataset = data.load_tu(str(tmp_path), "mutag", checksums={})
    assert [len(n) for n in dataset.nodes] == [3, 1, 2]
    assert [len(s) for s in dataset.senders] == [6, 0, 2]
    assert dataset.labels.tolist() == [1, 0, 1] and dataset.num_classes == 2
    np.testing.assert_array_equal(dataset.nodes[0], np.eye(3)[[0, 1, 0]])  # tags 0, 1, 0 of the tags {0, 1, 2}
    assert len(dataset.folds) == 10 and dataset.folds[0][1].tolist() == [2]


def test_corrupt_tu_files_give_one_clear_line(tmp_path):
    write_tu(tmp_path, TU_TEXT.replace("0 2 0 1", "0 2 0 7"))  # a neighbour that does not exist
    with pytest.raises(UserError, match=r"corrupt file .*MUTAG\.txt: .*bad neighbour list"):
        data.load_tu(str(tmp_path), "MUTAG", checksums={})
    write_tu(tmp_path)
    (tmp_path / "MUTAG" / "10fold_idx" / "test_idx-3.txt").write_text("2\n99\n")
    with pytest.raises(UserError, match=r"corrupt file .*test_idx-3\.txt: ids out of range"):
        data.load_tu(str(tmp_path), "MUTAG", checksums={})
    write_tu(tmp_path)
    os.remove(tmp_path / "MUTAG" / "10fold_idx" / "train_idx-10.txt")
    with pytest.raises(UserError, match=r"missing file .*train_idx-10\.txt"):
        data.load_tu(str(tmp_path), "MUTAG", checksums={})
    with pytest.raises(UserError, match=r"corrupt file .*MUTAG\.txt: sha256"):
        data.load_tu(str(tmp_path), "MUTAG")


def test_karate_club_is_the_classic_two_label_setup():
    dataset = data.karate_club()
    assert dataset.features.shape == (34, 34) and len(dataset.senders) == 2 * 78
    assert np.flatnonzero(dataset.train_mask).tolist() == [0, 33]
    assert dataset.test_mask.sum() == 32 and dataset.labels.sum() == 17


def test_pack_fits_every_batch_in_the_budget():
    rng = np.random.default_rng(0)
    nodes, edges = rng.integers(1, 40, 200), rng.integers(0, 90, 200)
    nodes[7], edges[7] = 300, 500  # one large graph
    budget = batching.Budget(int(1.5 * nodes.mean() * 16) + 301, max(int(1.5 * edges.mean() * 16), 500), 17)
    batches = batching.pack(rng.permutation(200), nodes, edges, budget)
    assert sorted(np.concatenate(batches).tolist()) == list(range(200))
    for b in batches:
        assert len(b) <= 16 and nodes[b].sum() < budget.n_node and edges[b].sum() <= budget.n_edge


def test_link_split_is_seeded_disjoint_and_sized():
    dataset = data.barabasi_albert(200, num_features=4, m=3, seed=1)
    n = 200
    split = batching.link_split(dataset.senders, dataset.receivers, n, 0.05, 0.10, seed=3)
    again = batching.link_split(dataset.senders, dataset.receivers, n, 0.05, 0.10, seed=3)
    other = batching.link_split(dataset.senders, dataset.receivers, n, 0.05, 0.10, seed=4)
    for a, b in zip(split, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(split.test_pos, other.test_pos)
    num_edges = len(dataset.senders) // 2
    assert len(split.val_pos) == int(num_edges * 0.05) == len(split.val_neg)
    assert len(split.test_pos) == int(num_edges * 0.10) == len(split.test_neg)
    assert len(split.train_senders) // 2 == num_edges - len(split.val_pos) - len(split.test_pos)

    def codes(pairs):
        pairs = np.sort(np.asarray(pairs), 1)
        return set((pairs[:, 0] * n + pairs[:, 1]).tolist())

    edges = codes(np.stack([dataset.senders, dataset.receivers], 1))
    train = codes(np.stack([split.train_senders, split.train_receivers], 1))
    assert not (codes(split.val_neg) | codes(split.test_neg)) & edges  # negatives are non-edges
    assert not codes(split.val_neg) & codes(split.test_neg)
    assert not (codes(split.val_pos) | codes(split.test_pos)) & train  # held-out edges are not trained on
