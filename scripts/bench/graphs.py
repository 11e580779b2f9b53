"""Benchmarks this project's GCN and GAT on Cora against PyTorch Geometric (CPU), and GCN's scaling in graph size.

    python -m scripts.bench.graphs --data_dir=/path/to/data --out=/tmp/bench_graphs.json   # from the repo root

One run measures, for GCN and GAT on Cora with the papers' architectures (GCN 1433-16-7, dropout 0.5, Adam 0.01,
weight decay 5e-4 on the first layer; GAT 8 heads x 8 hidden + 1 output head, dropout 0.6 on inputs and attention,
Adam 0.005, weight decay 5e-4), full batch, one seed:

- training seconds per epoch (forward, backward, Adam step; median over `--epochs` after `--warmup` epochs and,
  for ours, after compiling), and
- peak resident memory of the process that trained it (each implementation runs in a fresh subprocess; the
  figure before training, after imports and data, is reported beside it).

Implementations: ours with the features stored sparse (the default in the trainers: dropout draws only for the
non-zero inputs, the same random function), ours with dense features (as PyG holds them), and PyTorch Geometric
with torch's default threads (`pyg`) and with one thread (`pyg_1thread`, which suffers less on a busy machine),
in its own venv (`<--peer_venv_dir>/pyg-venv`, pip-installed on first use from `PYG_PINS`; torch is never
imported by this process) running `peers/pyg_gnn.py`: `GCNConv(cached=True)` (as in PyG's example) and `GATConv`.

Then a scaling table for ours: GCN (16 features, 16 hidden, 2 classes) on generated Barabási–Albert graphs of
`--scaling_nodes` nodes (4 edges per new node), seconds per epoch against the number of edges.
"""

import json
import os
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

from scripts.bench import common

_IMPLS = ("ours", "ours_dense", "pyg", "pyg_1thread")
_PEERS = flags.DEFINE_list("peers", list(_IMPLS), "Implementations: " + ", ".join(_IMPLS) + ".")
_MODELS = flags.DEFINE_list("models", ["gcn", "gat"], "Models to time on Cora.")
_EPOCHS = flags.DEFINE_integer("epochs", 100, "Timed training epochs per implementation and model.")
_WARMUP = flags.DEFINE_integer("warmup", 5, "Untimed epochs first (after compiling, for ours).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Data directory (default: $LEPTON_DATA_DIR).")
_SCALING_NODES = flags.DEFINE_list(
    "scaling_nodes", ["1000", "10000", "100000", "1000000"], "Node counts of the scaling table (empty: skip it)."
)
_SCALING_EPOCHS = flags.DEFINE_integer("scaling_epochs", 10, "Timed epochs per scaling size.")
_PEER_VENV_DIR = flags.DEFINE_string("peer_venv_dir", common.PEER_VENV_DIR, "Where pyg-venv is created.")
_OUT = flags.DEFINE_string("out", None, "If set, writes everything as JSON to this file.")
_MEASURE = flags.DEFINE_string("measure", None, "Internal: MODEL,VARIANT,OUT_PATH: time ours in this process.")

PYG_PINS = "torch==2.13.0\ntorch_geometric==2.8.1\nnumpy==2.4.6\n"


def time_ours_epochs(model_name: str, dataset, sparse: bool, epochs: int, warmup: int) -> dict:
    """Compiles our single-seed training step for `model_name` on `dataset` and times `epochs` epochs of it."""
    import jax

    from graphs import common as graph_common
    from graphs import models, node_classification
    from graphs.configs import gat, gcn

    config = (gcn if model_name == "gcn" else gat).get_config("cora")
    graph = graph_common.full_graph(dataset, True, sparse=sparse)
    labels = node_classification.labels_of(dataset)
    model = models.make_node_model(config, dataset.num_classes)
    init, _, _, train_step = node_classification.make_steps(config, model)
    state = init(jax.random.PRNGKey(0), graph)
    # The graph is an argument, not a constant baked into the program (XLA would try to constant-fold through it).
    step = jax.jit(lambda ts, key, g, y: train_step(ts, g, y, key), donate_argnums=0)
    keys = jax.random.split(jax.random.PRNGKey(1), warmup + epochs + 1)
    rss_before = common.rss_mib()
    start = time.perf_counter()
    train_state, metrics = jax.block_until_ready(step(state.train_state, keys[0], graph, labels))
    compile_s = time.perf_counter() - start
    for k in range(warmup):
        train_state, metrics = jax.block_until_ready(step(train_state, keys[1 + k], graph, labels))
    seconds = []
    for k in range(epochs):
        start = time.perf_counter()
        train_state, metrics = jax.block_until_ready(step(train_state, keys[1 + warmup + k], graph, labels))
        seconds.append(time.perf_counter() - start)
    return {
        "epoch_s": float(np.median(seconds)),
        "epoch_s_mean": float(np.mean(seconds)),
        "compile_s": compile_s,
        "rss_before_mib": rss_before,
        "peak_rss_mib": common.rss_mib(),
        "final_loss": float(metrics["train/loss"]),
        "version": f"lepton-jax, jax {jax.__version__}",
    }


def measure_worker(spec: str) -> None:
    """`--measure=MODEL,VARIANT,OUT`: times ours in this fresh process (so its peak memory is its own)."""
    from graphs.data import load_node_dataset

    model_name, variant, out = spec.split(",")
    dataset = load_node_dataset("cora", _DATA_DIR.value)
    result = time_ours_epochs(model_name, dataset, variant == "ours", _EPOCHS.value, _WARMUP.value)
    with open(out, "w") as f:
        json.dump(result, f)


def run_ours(model_name: str, variant: str) -> dict:
    args = [f"--epochs={_EPOCHS.value}", f"--warmup={_WARMUP.value}"]
    if _DATA_DIR.value:
        args.append(f"--data_dir={_DATA_DIR.value}")
    return common.run_measure("scripts.bench.graphs", f"{model_name},{variant}", args)


def run_pyg(model_name: str, data_path: str, threads: int = 0) -> dict:
    """PyG in its venv; `threads` > 0 sets torch's intra-op threads (0: torch's default, one per core)."""
    python = common.ensure_venv(os.path.join(_PEER_VENV_DIR.value, "pyg-venv"), PYG_PINS)
    problem = {"model": model_name, "data": data_path, "epochs": _EPOCHS.value, "warmup": _WARMUP.value}
    problem["threads"] = threads
    return common.run_worker(python, "pyg_gnn", [json.dumps(problem)], timeout=3600)


def scaling_table(sizes: list[int]) -> list[dict]:
    """Ours: GCN seconds per epoch on Barabási–Albert graphs with 16 random features and random binary labels."""
    from graphs.data import barabasi_albert

    rows = []
    for num_nodes in sizes:
        print(f"scaling: {num_nodes:,} nodes...", flush=True)
        dataset, generate_s = common.timed(lambda n=num_nodes: barabasi_albert(n, num_features=16, m=4))
        r = time_ours_gcn_generic(dataset)
        r.update(nodes=num_nodes, edges=int(len(dataset.senders)), generate_s=generate_s)
        r["us_per_edge"] = 1e6 * r["epoch_s"] / r["edges"]
        rows.append(r)
    return rows


def time_ours_gcn_generic(dataset) -> dict:
    import jax

    from graphs import common as graph_common
    from graphs import models, node_classification
    from graphs.configs import gcn

    config = gcn.get_config("cora")
    graph = graph_common.full_graph(dataset, False)
    labels = node_classification.labels_of(dataset)
    init, _, _, train_step = node_classification.make_steps(config, models.make_node_model(config, 2))
    state = init(jax.random.PRNGKey(0), graph)
    step = jax.jit(lambda ts, key, g, y: train_step(ts, g, y, key), donate_argnums=0)
    keys = jax.random.split(jax.random.PRNGKey(1), _SCALING_EPOCHS.value + 2)
    (train_state, _), compile_s = common.timed(
        lambda: jax.block_until_ready(step(state.train_state, keys[0], graph, labels))
    )
    train_state, _ = jax.block_until_ready(step(train_state, keys[1], graph, labels))
    seconds = []
    for key in keys[2:]:
        start = time.perf_counter()
        train_state, _ = jax.block_until_ready(step(train_state, key, graph, labels))
        seconds.append(time.perf_counter() - start)
    return {"epoch_s": float(np.median(seconds)), "compile_s": compile_s}


def print_tables(results: dict, scaling: list) -> None:
    print("\nCora, full batch, one seed, training epoch = forward + backward + Adam (2-core CPU unless noted)")
    header = f"{'model':<6}{'implementation':<16}{'ms/epoch':>10}{'vs PyG':>8}{'RSS before MiB':>16}{'peak MiB':>10}"
    header += "  version"
    print(header + "\n" + "-" * len(header))
    for model_name, by_impl in results.items():
        pyg = by_impl.get("pyg", {}).get("epoch_s")
        for impl, r in by_impl.items():
            ratio = f"{r['epoch_s'] / pyg:.2f}x" if pyg else "-"
            print(
                f"{model_name:<6}{impl:<16}{1000 * r['epoch_s']:>10.2f}{ratio:>8}{r['rss_before_mib']:>16.0f}"
                f"{r['peak_rss_mib']:>10.0f}  {r['version']}"
            )
    if scaling:
        print("\nScaling of ours: GCN (16 features, 16 hidden) on Barabási–Albert graphs (m=4)")
        print(f"{'nodes':>10}{'edges':>12}{'ms/epoch':>10}{'us/edge':>9}{'compile s':>11}")
        for r in scaling:
            print(
                f"{r['nodes']:>10,}{r['edges']:>12,}{1000 * r['epoch_s']:>10.2f}{r['us_per_edge']:>9.3f}"
                f"{r['compile_s']:>11.1f}"
            )


def main(argv):
    del argv
    if _MEASURE.value:
        measure_worker(_MEASURE.value)
        return
    unknown = set(_PEERS.value) - set(_IMPLS)
    if unknown:
        raise app.UsageError(f"unknown --peers {sorted(unknown)}; valid: {', '.join(_IMPLS)}")
    from graphs.data import load_node_dataset

    load_before = common.warn_if_busy()
    dataset = load_node_dataset("cora", _DATA_DIR.value)
    results = {}
    with tempfile.TemporaryDirectory(prefix="lepton_bench_") as tmp:
        data_path = os.path.join(tmp, "cora.npz")
        features = dataset.features / np.maximum(dataset.features.sum(1, keepdims=True), 1e-12)
        np.savez(
            data_path,
            features=features.astype(np.float32),
            senders=dataset.senders,
            receivers=dataset.receivers,
            labels=dataset.labels,
            train_mask=dataset.train_mask,
        )
        for model_name in _MODELS.value:
            results[model_name] = {}
            for impl in _PEERS.value:
                print(f"{model_name}: {impl}...", flush=True)
                if impl.startswith("pyg"):
                    results[model_name][impl] = run_pyg(model_name, data_path, 1 if impl == "pyg_1thread" else 0)
                else:
                    results[model_name][impl] = run_ours(model_name, impl)
    scaling = scaling_table([int(n) for n in _SCALING_NODES.value])
    print_tables(results, scaling)
    if _OUT.value:
        report = {
            "command": sys.argv,
            "results": results,
            "scaling": scaling,
            "machine": common.machine(load_before),
        }
        common.write_report(_OUT.value, report)


if __name__ == "__main__":
    app.run(main)
