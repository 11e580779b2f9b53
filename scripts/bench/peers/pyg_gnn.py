"""GCN or GAT on Cora in PyTorch Geometric (CPU): `python -I pyg_gnn.py PROBLEM_JSON OUT_PATH`.

Runs in the PyG venv (see `scripts/bench/graphs.py`), never in the project's. Reads the dataset from the `.npz`
that the benchmark wrote (row-normalised features, edges, labels, training mask), trains the papers' architectures
full batch (`GCNConv(cached=True)` as in PyG's example, and `GATConv`) for `warmup` untimed and `epochs` timed
epochs, and writes the median epoch time and peak memory as JSON to OUT_PATH.
"""

import json
import resource
import sys
import time
from importlib.metadata import version

import numpy as np
import torch
import torch.nn.functional as F
from torch_geometric.nn import GATConv, GCNConv


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class GCN(torch.nn.Module):
    """Kipf & Welling: 16 hidden, dropout 0.5 on the inputs and the hidden layer."""

    def __init__(self, num_features: int, num_classes: int):
        super().__init__()
        self.conv1 = GCNConv(num_features, 16, cached=True)
        self.conv2 = GCNConv(16, num_classes, cached=True)

    def forward(self, x, edge_index):
        x = F.dropout(x, 0.5, self.training)
        x = F.relu(self.conv1(x, edge_index))
        x = F.dropout(x, 0.5, self.training)
        return self.conv2(x, edge_index)


class GAT(torch.nn.Module):
    """Veličković et al.: 8 heads x 8 hidden, one output head, dropout 0.6 on inputs and attention."""

    def __init__(self, num_features: int, num_classes: int):
        super().__init__()
        self.conv1 = GATConv(num_features, 8, heads=8, dropout=0.6)
        self.conv2 = GATConv(64, num_classes, heads=1, concat=False, dropout=0.6)

    def forward(self, x, edge_index):
        x = F.dropout(x, 0.6, self.training)
        x = F.elu(self.conv1(x, edge_index))
        x = F.dropout(x, 0.6, self.training)
        return self.conv2(x, edge_index)


def run(p: dict) -> dict:
    if p["threads"]:
        torch.set_num_threads(p["threads"])
    torch.manual_seed(0)
    data = np.load(p["data"])
    x = torch.tensor(data["features"])  # (N, F)
    edge_index = torch.tensor(np.stack([data["senders"], data["receivers"]]).astype(np.int64))  # (2, E)
    labels = torch.tensor(data["labels"].astype(np.int64))
    train = torch.tensor(data["train_mask"])
    num_classes = int(labels.max()) + 1
    if p["model"] == "gcn":
        model = GCN(x.shape[1], num_classes)
        # Weight decay on the first layer only, as in Kipf & Welling.
        groups = [
            {"params": model.conv1.parameters(), "weight_decay": 5e-4},
            {"params": model.conv2.parameters(), "weight_decay": 0.0},
        ]
        optimizer = torch.optim.Adam(groups, lr=0.01)
    else:
        model = GAT(x.shape[1], num_classes)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.005, weight_decay=5e-4)
    rss_before = rss_mib()

    def epoch():
        model.train()
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x, edge_index)[train], labels[train])
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    for _ in range(p["warmup"]):
        epoch()
    seconds = []
    for _ in range(p["epochs"]):
        start = time.perf_counter()
        loss = epoch()
        seconds.append(time.perf_counter() - start)
    return {
        "epoch_s": float(np.median(seconds)),
        "epoch_s_mean": float(np.mean(seconds)),
        "rss_before_mib": rss_before,
        "peak_rss_mib": rss_mib(),
        "final_loss": loss,
        "threads": torch.get_num_threads(),
        "version": f"torch_geometric {version('torch_geometric')}, torch {torch.__version__}",
    }


if __name__ == "__main__":
    problem, out_path = json.loads(sys.argv[1]), sys.argv[2]
    result = run(problem)
    with open(out_path, "w") as f:
        json.dump(result, f)
