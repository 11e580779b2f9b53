"""Graph datasets: Planetoid (Cora, Citeseer, Pubmed), TU graph-classification sets, and Zachary's karate club.

Loaders read the standard files from a data directory (`config.data_dir`, else `$LEPTON_DATA_DIR`) and return
NumPy arrays; batching into padded `jraph.GraphsTuple`s lives in `graphs/batching.py`. A missing or corrupt file is
a one-line `UserError` naming the file and what was expected. `download` fetches the standard files for users with
internet; nothing calls it at run time.

Edges are stored once per direction (`senders[k] -> receivers[k]`), without self-loops (the models add those).
"""

import os
import pickle
from typing import NamedTuple

import numpy as np

from lepton_jax import datasets
from lepton_jax.errors import UserError

PLANETOID = ("cora", "citeseer", "pubmed")
TU = ("MUTAG", "PROTEINS", "PTC", "NCI1", "IMDBBINARY")
TU_ALIASES = {
    "mutag": "MUTAG",
    "proteins": "PROTEINS",
    "ptc": "PTC",
    "nci1": "NCI1",
    "imdb-binary": "IMDBBINARY",
    "imdbbinary": "IMDBBINARY",
    "imdb_binary": "IMDBBINARY",
}
_PLANETOID_PARTS = ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")
_PLANETOID_URL = "https://github.com/kimiyoung/planetoid/raw/master/data/"
_TU_URL = "https://raw.githubusercontent.com/muhanzhang/pytorch_DGCNN/master/data/"

# sha256 of the standard files (tkipf/gcn and muhanzhang/pytorch_DGCNN).
SHA256 = {
    "ind.citeseer.allx": "2ac30345d95c9ec933a817ee0bdd6a5f077f8c184a20e696910192d534414668",
    "ind.citeseer.ally": "f704b2d986dde6c2669934de1f3ae5696a6cf9455c0f6b2646a2d135ea0a1c95",
    "ind.citeseer.graph": "d79a4ef9d3e7169aee8946145f6b7306e35bc79bffad26346cfb94e10e9912a7",
    "ind.citeseer.test.index": "2af990671580b6b2df5d158d1038f8292e30c9cd821b5453f399659b25b723d4",
    "ind.citeseer.tx": "539a8906a2da97628d212f2fdd668c109a8b3f0d36574b59e5d3fd5b5303da21",
    "ind.citeseer.ty": "55e5bd1ba1e733a04598753ad1a8d57957f4b8f89e74519f41f4f4938767e4ce",
    "ind.citeseer.x": "d20de19150741e555de0ed037195630fc194114ebc7fd72ced62810148aa22f6",
    "ind.citeseer.y": "8ba87e515d8e3ee3cf52f6d2c5b86aa73f11ecad825a808455209ec26cd54924",
    "ind.cora.allx": "9419ba2f26f5c35243db64aba110e0f35a04851609e0dc5433450676ca6b8543",
    "ind.cora.ally": "2b998f5cc7fedc86e7f97ca2498f47a1ffc1462c29e2d578b23bf3f62b6e7d71",
    "ind.cora.graph": "58f13302f39dde8852dad6fe6d15b89b077b6d7f837626bce671ef80344b383d",
    "ind.cora.test.index": "297ce89af2b51a6a194181c7dbe1796c6a1cf9cd9349a88383b1b1e227867875",
    "ind.cora.tx": "b9afbaa4a400df991f6f02ef677e1e44da55ffc04801fd02f9e673987829226a",
    "ind.cora.ty": "41f5ac76596a1699cc33f53084a2419e92961c42bb75f36fc38e616d348532ad",
    "ind.cora.x": "23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab",
    "ind.cora.y": "94465c14eb53e04ca262198dcbb2521ee8af60fb3f3d546cd6ca24a511b0e7d1",
    "ind.pubmed.allx": "508e538e2abdccdd54c4d3e9f49d638b4af7107d85845f66ddea5a5152658b7e",
    "ind.pubmed.ally": "0c37bbe3b5014ec365e9d393cf4791925e5ed94fb194305d74f064a8d7b50f0e",
    "ind.pubmed.graph": "5b89f0036ca22909471f1e6558eb42fa06e0c730a577bde5b058b40638f81dc9",
    "ind.pubmed.test.index": "b101d421688bbaecbd82e8a18f1e282378d6830f3a37666f28ebc47f844341b5",
    "ind.pubmed.tx": "4eb5f5d0f30f26497eb0ac6ac9719d09c67e284f1ed0385c93f3ef27a671da3d",
    "ind.pubmed.ty": "ee2e0d4819d9fbcc403689c3bf2e49face401b605932f093bc58ab6461130fdd",
    "ind.pubmed.x": "fbe9cb5c47200d1b7769a26e579be3b7130b556831f9d850e77c4c74f2599b33",
    "ind.pubmed.y": "e6c807633307a07ed659249006536a147c7999c797f11a2560752990181b41b3",
    "MUTAG.txt": "5897dae243f6c773aab54ec99e86551c3b1e8601acef254714073042c632d30e",
    "PTC.txt": "711729eaf2a5308752aa7c11062dd99f645f978afc400909a5927051b314ec55",
    "PROTEINS.txt": "ed0730f9bf9da68aa6a8c80f2f2b6ecea5d05791ca254c709f3efab3b45d937b",
    "NCI1.txt": "415d2e0861484c2baef1e40ee3ca62dd13c06d6b99549fb25774f43533e9321d",
    "IMDBBINARY.txt": "1068c698677c07c04f3ad56fc4a175cb2161523c840abfdaf50e101ecc30504f",
}


class NodeDataset(NamedTuple):
    """One graph with node labels and the train/val/test node masks (boolean, `(num_nodes,)`)."""

    features: np.ndarray  # (N, F) float32
    labels: np.ndarray  # (N,) int32; nodes without a label (Citeseer's isolated test ids) carry 0 and no mask
    senders: np.ndarray  # (E,) int32, both directions of every undirected edge
    receivers: np.ndarray  # (E,)
    train_mask: np.ndarray
    val_mask: np.ndarray
    test_mask: np.ndarray
    num_classes: int


class GraphDataset(NamedTuple):
    """Many small graphs with a label each, and the standard 10-fold split (lists of index arrays)."""

    nodes: list  # per graph (n_i, F) float32
    senders: list  # per graph (e_i,) int32, local node ids
    receivers: list
    labels: np.ndarray  # (G,) int32
    num_classes: int
    folds: list  # [(train_idx, test_idx)] * 10


def undirected_edges(pairs: np.ndarray, num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """`(k, 2)` node pairs -> (senders, receivers) holding both directions once each, self-loops dropped."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    both = np.concatenate([pairs, pairs[:, ::-1]])
    codes = np.unique(both[:, 0] * num_nodes + both[:, 1])
    return (codes // num_nodes).astype(np.int32), (codes % num_nodes).astype(np.int32)


def _planetoid_path(directory: str, name: str, part: str, checksums: dict) -> str:
    filename = f"ind.{name}.{part}"
    nested = os.path.join(directory, "planetoid")
    if not os.path.isfile(os.path.join(directory, f"ind.{name}.graph")) and os.path.isdir(nested):
        directory = nested
    path = os.path.join(directory, filename)
    return datasets.verify_sha256(
        path, checksums.get(filename), f"Planetoid {name} '{part}' file (ind.<name>.* format)"
    )


def _unpickle(path: str):
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")  # written by Python 2
    except Exception as error:  # noqa: BLE001 - any failure to parse is a corrupt file
        raise datasets.corrupt(path, "a Python pickle of the Planetoid format", f"{type(error).__name__}") from None


def load_planetoid(directory: str, name: str, checksums: dict = SHA256) -> NodeDataset:
    """Cora, Citeseer or Pubmed with the public split (Yang et al. 2016), assembled as in Kipf & Welling's code.

    Args:
      directory: the data directory, holding `ind.<name>.*` directly or in a `planetoid/` subdirectory.
      name: "cora", "citeseer" or "pubmed".
      checksums: expected sha256 by file name (files not named are not checked).
    """
    if name not in PLANETOID:
        raise UserError(f"unknown Planetoid dataset '{name}'; valid: {', '.join(PLANETOID)}")
    paths = {part: _planetoid_path(directory, name, part, checksums) for part in _PLANETOID_PARTS}
    x, y, tx, ty, allx, ally, graph = (_unpickle(paths[p]) for p in _PLANETOID_PARTS[:-1])
    try:
        test_index = np.loadtxt(paths["test.index"], dtype=np.int64).reshape(-1)
    except ValueError as error:
        raise datasets.corrupt(paths["test.index"], "one node id per line", str(error)) from None
    test_sorted = np.sort(test_index)
    if name == "citeseer":
        # Citeseer has isolated test ids with no row in tx/ty: give them zero rows (no label, no test mask).
        full = np.arange(test_sorted[0], test_sorted[-1] + 1)
        tx_full = np.zeros((len(full), tx.shape[1]), np.float32)
        tx_full[test_sorted - test_sorted[0]] = tx.toarray()
        ty_full = np.zeros((len(full), ty.shape[1]), np.float32)
        ty_full[test_sorted - test_sorted[0]] = ty
        tx, ty = tx_full, ty_full
    else:
        tx = tx.toarray()
    features = np.vstack([allx.toarray(), tx]).astype(np.float32)
    onehot = np.vstack([ally, ty]).astype(np.float32)
    features[test_index] = features[test_sorted]
    onehot[test_index] = onehot[test_sorted]
    num_nodes = features.shape[0]
    pairs = [(u, v) for u, neighbours in graph.items() for v in neighbours]
    pairs = np.asarray(pairs, np.int64)
    if len(pairs) == 0 or pairs.max() >= max(num_nodes, len(graph)):
        raise datasets.corrupt(paths["graph"], f"an adjacency dict over {num_nodes} nodes", "bad node ids")
    num_nodes = max(num_nodes, int(pairs.max()) + 1)
    senders, receivers = undirected_edges(pairs, num_nodes)

    def mask(index):
        m = np.zeros(num_nodes, bool)
        m[index] = True
        return m

    labelled = onehot.sum(1) > 0
    return NodeDataset(
        features=features,
        labels=onehot.argmax(1).astype(np.int32),
        senders=senders,
        receivers=receivers,
        train_mask=mask(np.arange(y.shape[0])),
        val_mask=mask(np.arange(y.shape[0], min(y.shape[0] + 500, num_nodes))),
        test_mask=mask(test_index) & labelled,
        num_classes=onehot.shape[1],
    )


def karate_club() -> NodeDataset:
    """Zachary's karate club (networkx): identity features, the two leaders (nodes 0 and 33) as the only labels.

    Labels are the club each member joined (0 = Mr. Hi, 1 = Officer); the other 32 members are the test set. The
    validation set is the two labelled nodes themselves, so nothing is chosen by looking at the test members.
    """
    import networkx as nx

    graph = nx.karate_club_graph()
    num_nodes = graph.number_of_nodes()
    labels = np.array([graph.nodes[i]["club"] != "Mr. Hi" for i in range(num_nodes)], np.int32)
    senders, receivers = undirected_edges(np.array(graph.edges()), num_nodes)
    train = np.zeros(num_nodes, bool)
    train[[0, num_nodes - 1]] = True
    return NodeDataset(np.eye(num_nodes, dtype=np.float32), labels, senders, receivers, train, train, ~train, 2)


def _parse_tu(path: str, degree_as_tag: bool) -> tuple[list, list, list, list]:
    """The DGCNN/GIN text format -> per-graph (tags, senders, receivers) and raw labels."""
    tags, senders, receivers, labels = [], [], [], []
    with open(path) as f:
        tokens = [line.split() for line in f]

    def ints(k):
        return [int(t) for t in tokens[k]]

    num_graphs = ints(0)[0]
    row = 1
    for _ in range(num_graphs):
        n, label = ints(row)[:2]
        row += 1
        node_tags, s, r = [], [], []
        for i in range(n):
            values = ints(row)
            row += 1
            node_tags.append(values[0])
            neighbours = values[2 : 2 + values[1]]
            if len(neighbours) != values[1] or any(j < 0 or j >= n for j in neighbours):
                raise ValueError(f"line {row}: bad neighbour list")
            s.extend([i] * len(neighbours))
            r.extend(neighbours)
        s, r = undirected_edges(np.stack([s, r], 1) if s else np.zeros((0, 2)), max(n, 1))
        if degree_as_tag:
            node_tags = np.bincount(s, minlength=n).tolist()
        tags.append(node_tags)
        senders.append(s)
        receivers.append(r)
        labels.append(label)
    if any(tokens[row:]):
        raise ValueError(f"unexpected lines after {num_graphs} graphs")
    return tags, senders, receivers, labels


def load_tu(directory: str, name: str, checksums: dict = SHA256) -> GraphDataset:
    """A TU graph-classification set in the DGCNN/GIN text format with its 10 folds.

    Node features are one-hot node tags (degrees for IMDB-BINARY, which has none), as in the GIN paper's code.

    Args:
      directory: the data directory, holding `<NAME>/<NAME>.txt` directly or under `tu_graphs_dgcnn_format/`.
      name: MUTAG, PROTEINS, PTC, NCI1 or IMDBBINARY (case-insensitive; IMDB-BINARY also accepted).
      checksums: expected sha256 by file name (files not named are not checked).
    """
    name = TU_ALIASES.get(name.lower(), name)
    if name not in TU:
        raise UserError(f"unknown TU dataset '{name}'; valid: {', '.join(TU)}")
    root = os.path.join(directory, name)
    if not os.path.isdir(root) and os.path.isdir(os.path.join(directory, "tu_graphs_dgcnn_format", name)):
        root = os.path.join(directory, "tu_graphs_dgcnn_format", name)
    path = datasets.verify_sha256(
        os.path.join(root, f"{name}.txt"), checksums.get(f"{name}.txt"), f"{name} graphs in the DGCNN/GIN text format"
    )
    try:
        tags, senders, receivers, raw_labels = _parse_tu(path, degree_as_tag=name == "IMDBBINARY")
    except (ValueError, IndexError) as error:
        raise datasets.corrupt(path, "the DGCNN/GIN text format", str(error) or "truncated") from None
    vocabulary = {t: i for i, t in enumerate(sorted({t for g in tags for t in g}))}
    nodes = [np.eye(len(vocabulary), dtype=np.float32)[[vocabulary[t] for t in g]] for g in tags]
    classes = sorted(set(raw_labels))
    labels = np.array([classes.index(label) for label in raw_labels], np.int32)
    folds = []
    for k in range(1, 11):
        pair = []
        for split in ("train", "test"):
            fold_path = datasets.require_file(
                os.path.join(root, "10fold_idx", f"{split}_idx-{k}.txt"), f"{name} fold {k} {split} graph ids"
            )
            try:
                index = np.loadtxt(fold_path, dtype=np.int64).reshape(-1)
            except ValueError as error:
                raise datasets.corrupt(fold_path, "one graph id per line", str(error)) from None
            if index.size == 0 or index.min() < 0 or index.max() >= len(labels):
                raise datasets.corrupt(fold_path, f"graph ids in [0, {len(labels)})", "ids out of range")
            pair.append(index)
        folds.append(tuple(pair))
    return GraphDataset(nodes, senders, receivers, labels, len(classes), folds)


def barabasi_albert(num_nodes: int, num_features: int = 16, m: int = 4, seed: int = 0) -> NodeDataset:
    """A generated Barabási–Albert graph with random features and labels (for scaling benchmarks and tests)."""
    rng = np.random.default_rng(seed)
    # Preferential attachment by sampling from the list of edge endpoints (networkx is slow past 10^5 nodes).
    targets = np.arange(m)
    ends = np.zeros(2 * m * num_nodes, np.int64)
    count = 0
    pairs = np.zeros((m * max(num_nodes - m, 0), 2), np.int64)
    for k, node in enumerate(range(m, num_nodes)):
        pairs[k * m : (k + 1) * m, 0] = node
        pairs[k * m : (k + 1) * m, 1] = targets
        ends[count : count + m] = targets
        ends[count + m : count + 2 * m] = node
        count += 2 * m
        targets = np.unique(ends[rng.integers(0, count, m)])
        while len(targets) < m:
            targets = np.unique(np.concatenate([targets, ends[rng.integers(0, count, m)]]))[:m]
    senders, receivers = undirected_edges(pairs, num_nodes)
    labels = rng.integers(0, 2, num_nodes).astype(np.int32)
    train = rng.random(num_nodes) < 0.5
    return NodeDataset(
        rng.normal(size=(num_nodes, num_features)).astype(np.float32),
        labels,
        senders,
        receivers,
        train,
        ~train,
        ~train,
        2,
    )


def load_node_dataset(name: str, directory: str | None = None) -> NodeDataset:
    """A node-classification dataset by name: "karate" (built in) or a Planetoid set from the data directory."""
    if name == "karate":
        return karate_club()
    if name in PLANETOID:
        return load_planetoid(datasets.data_dir(directory), name)
    raise UserError(f"unknown node-classification dataset '{name}'; valid: karate, {', '.join(PLANETOID)}")


def download(directory: str, name: str) -> list[str]:
    """Fetches the standard files of `name` (a Planetoid or TU set) into `directory`, checking their sha256.

    For users with internet; the training code never calls it.
    """
    if name in PLANETOID:
        files = [f"ind.{name}.{part}" for part in _PLANETOID_PARTS]
        return [datasets.download(_PLANETOID_URL + f, directory, f, SHA256.get(f)) for f in files]
    name = TU_ALIASES.get(name.lower(), name)
    if name not in TU:
        raise UserError(f"unknown dataset '{name}'; valid: {', '.join(PLANETOID + TU)}")
    root = os.path.join(directory, name)
    paths = [datasets.download(f"{_TU_URL}{name}/{name}.txt", root, f"{name}.txt", SHA256[f"{name}.txt"])]
    for k in range(1, 11):
        for split in ("train", "test"):
            filename = f"{split}_idx-{k}.txt"
            paths.append(datasets.download(f"{_TU_URL}{name}/10fold_idx/{filename}", root + "/10fold_idx", filename))
    return paths
