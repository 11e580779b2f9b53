"""Benchmarks the knowledge-graph trainer's DistMult and ComplEx against PyKEEN (CPU): seconds per epoch and test MRR.

    python -m scripts.bench.kg --data_dir=/path/to/data --out=/tmp/bench_kg.json   # from the repo root

For each dataset (`--datasets`: UMLS and Kinship by default) and model (`--models`), both sides train one seed on
the same triples with the same settings for `--epochs` epochs, with no early stopping, and test the final
parameters. The settings are the trainer's config (`graphs/kg/configs/embedding.py`): 1-N training ("1-N scoring",
PyKEEN's LCWA loop: every distinct training query (h, r), inverse relations included, scored against all E entities),
binary cross-entropy with label smoothing 0.1, embedding dropout 0.3 on every embedding looked up (the query's
entity and relation, and the candidates), Adam at 0.003, batches of 512 queries (the last one smaller), gradients
clipped at global norm 5, `--embedding_size` 200 (ComplEx: 200 complex dimensions on both sides, a real and an
imaginary table of 200 each; PyKEEN's `ComplEx(embedding_dim=200)` counts them so too), Glorot-normal tables.

- ours: the `kg_embedding` trainer itself (`graphs.kg.embedding.train_and_evaluate`, `num_seeds=1`, `patience=0`,
  validated only after the last epoch, so the tested parameters are the last ones), in a fresh process of its own
  (`--measure`), into a temporary workdir; s/epoch is `perf/epoch_seconds` of its results.json (median over the
  epochs after the first, which compiles), MRR is `test/mrr_mean`.
- pykeen: PyKEEN 1.11.1 in its own venv (`<--peer_venv_dir>/pykeen-venv`, pip-installed on first use from
  `PYKEEN_PINS`; torch is never imported by this process) running `peers/pykeen_kg.py`: `ERModel` with PyKEEN's
  DistMult / ComplEx interactions and embeddings set as ours (the worker's docstring says how, and where it takes a
  few lines: ComplEx's dropout, the smoothing rule, the clipping), `LCWATrainingLoop` with `BCEWithLogitsLoss`;
  s/epoch is the median, over the epochs after the first, of the time between the ends of consecutive epochs; MRR
  from `RankBasedEvaluator`. One row per `--torch_threads` setting: `pykeen` with torch's intra- and inter-op
  threads set to every core (`os.cpu_count()`), `pykeen_1_thread` with one (on a busy machine torch's threads wait
  on each other, and one thread can be faster); `speed_ratio` divides by the faster.

Both test the same way: filtered by the known triples of train, valid and test, head and tail queries of every test
triple (head queries as tail queries of the inverse relation), ties at their mean rank (PyKEEN's "realistic" rank,
the mean of its optimistic and pessimistic ranks, is ours: 1 + above + tied / 2). The triples handed to PyKEEN are
written from the loaded dataset (whose files `graphs.kg.data` checks by SHA-256: byte for byte the ones PyKEEN
ships) with the project's entity and relation ids; each side reports its parameter, query and test-triple counts
and the benchmark warns when they differ.

What differs: the random streams (initialisation, shuffling, dropout masks), so the MRRs differ by about a seed's
spread; with `--pykeen_smoothing=pykeen` PyKEEN smooths by its own rule (zeros to eps / (E - 1), not 1 / E). How
each side computes: ours runs an epoch as one compiled program (a `lax.scan` over its batches), scoring a batch as
one (B, D) x (D, E) product (XLA's CPU backend runs on every core by default; the rows record `XLA_FLAGS`).
PyKEEN's DistMult broadcasts a (B, E, D) product and sums it, its ComplEx is a complex `einsum`, and its loop runs
`gc.collect()` after every epoch: inside the timed epoch (part of what a PyKEEN epoch costs), and reported apart
(`gc_s`, the table's "gc s"), since on these small graphs it is a large share of it.

The walk environment (`graphs/kg/walk.py`, the walking agent's) is timed alone on the first dataset: `--walk_sizes`
random walks in parallel (uniform over each entity's actions, the training rule applied), `--walk_steps` steps in
one jitted scan, walk steps per second (median of 3, compile apart).

Measured with the defaults on a 2-core CPU shared with other training (load average about 3.5, so the times are
loose): ours 0.013-0.042 s/epoch, 8-36x faster per epoch than the faster PyKEEN row (its one-thread row: with both
busy cores torch was 2.5-6x slower still), of which PyKEEN's `gc.collect()` is 0.15 s; test MRRs within 0.02 of
each other (ours / PyKEEN: UMLS DistMult 0.778 / 0.787, ComplEx 0.907 / 0.896; Kinship DistMult 0.553 / 0.544,
ComplEx 0.828 / 0.812). The run takes about 20 minutes, nearly all of it PyKEEN's, plus a minute or two to install
its venv once.
"""

import json
import os
import sys
import tempfile

from absl import app, flags, logging

from scripts.bench import common

IMPLS = ("ours", "pykeen")
MODELS = ("distmult", "complex")
SMOOTHING = ("ours", "pykeen")
_PEERS = flags.DEFINE_list("peers", list(IMPLS), "Implementations: " + ", ".join(IMPLS) + ".")
_DATASETS = flags.DEFINE_list("datasets", ["umls", "kinship"], "Knowledge graphs (graphs.kg.data.DATASETS).")
_MODELS = flags.DEFINE_list("models", list(MODELS), "Models: " + ", ".join(MODELS) + ".")
# Ours validates (and compiles that) in the last epoch only: from 4 epochs on, the median after the first is clean.
_EPOCHS = flags.DEFINE_integer("epochs", 100, "Training epochs, on both sides (no early stopping).", lower_bound=4)
_EMBEDDING_SIZE = flags.DEFINE_integer("embedding_size", 200, "Embedding dimensions (ComplEx: complex ones).")
_DROPOUT = flags.DEFINE_float("embedding_dropout", 0.3, "Dropout on every embedding looked up, on both sides.")
_SMOOTHING = flags.DEFINE_enum("pykeen_smoothing", "ours", SMOOTHING, "PyKEEN's label-smoothing rule: ours or its own.")
_TORCH_THREADS = flags.DEFINE_list(
    "torch_threads", ["0", "1"], "PyKEEN rows: torch thread counts (0: every core); ratios divide by the fastest."
)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Data directory (default: $LEPTON_DATA_DIR).")
_PEER_VENV_DIR = flags.DEFINE_string("peer_venv_dir", common.PEER_VENV_DIR, "Where pykeen-venv is created.")
_OUT = flags.DEFINE_string("out", None, "If set, writes everything as JSON to this file.")
_WALK_SIZES = flags.DEFINE_list(
    "walk_sizes", ["100", "1000", "10000", "100000"], "Parallel random walks timed on the first dataset ('': none)."
)
_WALK_STEPS = flags.DEFINE_integer("walk_steps", 20, "Steps of each timed random walk.", lower_bound=1)
_MEASURE = flags.DEFINE_string("measure", None, "Internal: DATASET,MODEL,OUT_PATH: train ours in this process.")

PYKEEN_PINS = "torch==2.13.0\npykeen==1.11.1\nnumpy==2.4.6\n"


def config_of(dataset: str, model: str):
    """The trainer's config for `dataset` and `model`, one seed, `--epochs` epochs, no early stopping."""
    from graphs.kg.configs import embedding

    config = embedding.get_config(f"{dataset},{model}")
    epochs = _EPOCHS.value
    config.update(num_seeds=1, num_epochs=epochs, patience=0, eval_every_epochs=epochs)
    config.update(checkpoint_every_epochs=epochs, keep_checkpoints=1, data_dir=_DATA_DIR.value)
    config.update(embedding_size=_EMBEDDING_SIZE.value, embedding_dropout=_DROPOUT.value)
    return config


def settings(config) -> dict:
    """The hyperparameters both sides train with, from our config (the peer worker's problem reads them here)."""
    keys = ("embedding_size", "label_smoothing", "lr", "batch_size", "max_grad_norm", "seed")
    return {key: config[key] for key in keys} | {"dropout": config.embedding_dropout, "epochs": config.num_epochs}


def measure_worker(spec: str) -> None:
    """`--measure=DATASET,MODEL,OUT`: trains ours in this fresh process (so its peak memory is its own)."""
    import jax
    import jax.numpy as jnp

    from graphs.kg import embedding
    from graphs.kg.data import load_kg
    from scripts import trainers

    dataset, model, out = spec.split(",")
    logging.set_verbosity(logging.WARNING)  # as scripts.train: Orbax logs every file it writes at INFO
    config = config_of(dataset, model)
    trainers.load()
    trainers.validate(config)
    kg = load_kg(dataset, config.data_dir)
    ids = jnp.zeros((1,), jnp.int32)
    shapes = jax.eval_shape(embedding.make_model(config, kg).init, jax.random.PRNGKey(0), ids, ids)
    rss_before = common.rss_mib()
    with tempfile.TemporaryDirectory(prefix="lepton_bench_") as workdir:
        r = embedding.train_and_evaluate(config, workdir)
    result = {name: r[f"test/{name}_mean"] for name in ("mrr", "hits@1", "hits@3", "hits@10", "mr")}
    result |= {
        "epoch_s": r["perf/epoch_seconds"],
        "first_epoch_s": r["perf/first_epoch_seconds"],
        "epochs": r["perf/epochs"],
        "num_entities": kg.num_entities,
        "num_relations": 2 * kg.num_relations,
        "num_queries": len(embedding.training_queries(kg)[0]),
        "num_test_triples": len(kg.test),
        "params": sum(x.size for x in jax.tree.leaves(shapes)),
        "rss_before_mib": rss_before,
        "peak_rss_mib": common.rss_mib(),
        # XLA's CPU backend sizes its intra-op pool to the cores; XLA_FLAGS would say otherwise.
        "threads": {"cpus": os.cpu_count(), "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")},
        "version": f"lepton-jax, jax {jax.__version__}",
    }
    with open(out, "w") as f:
        json.dump(result, f)


def run_ours(dataset: str, model: str) -> dict:
    args = [f"--epochs={_EPOCHS.value}", f"--embedding_size={_EMBEDDING_SIZE.value}"]
    args.append(f"--embedding_dropout={_DROPOUT.value}")
    if _DATA_DIR.value:
        args.append(f"--data_dir={_DATA_DIR.value}")
    return common.run_measure("scripts.bench.kg", f"{dataset},{model}", args)


def write_triples(kg, directory: str) -> None:
    """`kg`'s splits as `head<TAB>relation<TAB>tail` names, and its names in id order, for the peer."""
    for split in ("train", "valid", "test"):
        with open(os.path.join(directory, f"{split}.txt"), "w", encoding="utf-8") as f:
            for h, r, t in getattr(kg, split):
                f.write(f"{kg.entities[h]}\t{kg.relations[r]}\t{kg.entities[t]}\n")
    for name, values in (("entities", kg.entities), ("relations", kg.relations)):
        with open(os.path.join(directory, f"{name}.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(values) + "\n")


def run_pykeen(python: str, model: str, directory: str, config, threads: int) -> dict:
    """PyKEEN in its venv; `threads` > 0 sets torch's intra- and inter-op threads (0: one per core)."""
    problem = settings(config) | {"model": model, "data": directory, "smoothing": _SMOOTHING.value}
    problem |= {"threads": threads, "eval_batch_size": 256}
    return common.run_worker(python, "pykeen_kg", [json.dumps(problem)], timeout=7200)


def fastest_pykeen(rows: dict) -> str | None:
    """The fastest PyKEEN row (the one `speed_ratio` divides by), or None."""
    names = [name for name in rows if name.startswith("pykeen")]
    return min(names, key=lambda name: rows[name]["epoch_s"], default=None)


def print_table(report: dict) -> None:
    s = report["settings"]
    print(
        f"\nDistMult / ComplEx, 1-N training, one seed, {s['epochs']} epochs, {s['embedding_size']} dimensions, "
        f"dropout {s['dropout']}, CPU ({os.cpu_count()} cores)"
    )
    print("ratio = PyKEEN row's s/epoch / ours s/epoch (> 1: ours is faster); MRR: filtered test, head and tail")
    print("gc s: of PyKEEN's s/epoch, the gc.collect() its training loop runs after every epoch")
    header = f"{'dataset':<9}{'model':<10}{'impl':<17}{'s/epoch':>9}{'gc s':>7}{'first s':>9}{'MRR':>7}{'H@10':>7}"
    header += f"{'ratio':>8}"
    print(header + "  version\n" + "-" * (len(header) + 9))
    for dataset, by_model in report["results"].items():
        for model, rows in by_model.items():
            ours = rows.get("ours", {}).get("epoch_s")
            for impl, r in rows.items():
                if not isinstance(r, dict):
                    continue
                ratio = f"{r['epoch_s'] / ours:.1f}x" if ours and impl != "ours" else ""
                collect = f"{r['gc_s']:.3f}" if "gc_s" in r else ""
                print(
                    f"{dataset:<9}{model:<10}{impl:<17}{r['epoch_s']:>9.3f}{collect:>7}{r['first_epoch_s']:>9.2f}"
                    f"{r['mrr']:>7.3f}{r['hits@10']:>7.3f}{ratio:>8}  {r['version']}"
                )
    m = report["machine"]
    print(f"load average before/after: {m['load_average_before']:.2f} / {m['load_average_after']:.2f}")


def walk_rates(kg_name: str, data_dir, sizes, steps: int, repeats: int) -> list[dict]:
    """Random walks through `graphs/kg/walk.py` alone (uniform over the real actions, stay where the training rule
    forbids the draw): env steps
    per second for each number of parallel walks, compile apart."""
    import functools
    import time

    import jax
    import jax.numpy as jnp
    import numpy as np

    from graphs.kg import walk
    from graphs.kg.data import load_kg

    kg = load_kg(kg_name, data_dir)
    table = walk.action_table(kg)
    rows = []
    for size in sizes:

        @functools.partial(jax.jit, static_argnums=1)
        def run(key, size):
            starts = jax.random.randint(key, (size,), 0, kg.num_entities)
            relations = jax.random.randint(jax.random.fold_in(key, 1), (size,), 0, 2 * kg.num_relations)
            states = jax.vmap(lambda s, r: walk.reset(s, r, table.stay_relation))(starts, relations)

            def one(states, key):
                legal = jax.vmap(lambda s: walk.legal_actions(table, s, True))(states)
                # a uniform draw among the entity's real actions (a prefix of its row), stay where it is illegal
                count = jnp.sum(table.mask[states.current], 1)
                actions = jnp.floor(jax.random.uniform(key, count.shape) * count).astype(jnp.int32)
                actions = jnp.where(jnp.take_along_axis(legal, actions[:, None], 1)[:, 0], actions, 0)
                return jax.vmap(lambda s, a: walk.step(table, s, a))(states, actions), None

            states, _ = jax.lax.scan(one, states, jax.random.split(key, steps))
            return states.current

        key = jax.random.PRNGKey(0)
        jax.block_until_ready(run(key, size))
        seconds = []
        for i in range(repeats):
            tick = time.perf_counter()
            jax.block_until_ready(run(jax.random.fold_in(key, i), size))
            seconds.append(time.perf_counter() - tick)
        median = float(np.median(seconds))
        rows.append({"walks": size, "steps": steps, "seconds": median, "walk_steps_per_second": size * steps / median})
    return rows


def print_walk_table(rows: list[dict], dataset: str) -> None:
    print(f"\nwalk environment alone ({dataset}, graphs/kg/walk.py): random walks of {rows[0]['steps']} steps, jitted")
    print(f"{'walks':>9}{'s':>9}{'walk steps/s':>14}")
    for r in rows:
        print(f"{r['walks']:>9,}{r['seconds']:>9.3f}{r['walk_steps_per_second']:>14,.0f}")


def say(dataset: str, model: str, impl: str, row: dict) -> None:
    print(f"{dataset} {model} {impl}: {row['epoch_s']:.3f} s/epoch, test MRR {row['mrr']:.3f}", flush=True)


def main(argv):
    del argv
    if _MEASURE.value:
        measure_worker(_MEASURE.value)
        return
    from graphs.kg.data import DATASETS, load_kg

    for flag, values, valid in ((_PEERS, _PEERS.value, IMPLS), (_MODELS, _MODELS.value, MODELS)):
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise app.UsageError(f"--{flag.name}: unknown {', '.join(unknown)}; valid: {', '.join(valid)}")
    unknown = sorted(set(_DATASETS.value) - set(DATASETS))
    if unknown:
        raise app.UsageError(f"--datasets: unknown {', '.join(unknown)}; valid: {', '.join(DATASETS)}")
    if not all(t.isdigit() for t in _TORCH_THREADS.value):
        raise app.UsageError(f"--torch_threads: {','.join(_TORCH_THREADS.value)}; want counts >= 0 (0: every core)")
    load_before = common.warn_if_busy()
    python = None
    if "pykeen" in _PEERS.value:
        python = common.ensure_venv(os.path.join(_PEER_VENV_DIR.value, "pykeen-venv"), PYKEEN_PINS)
    report = {"command": sys.argv, "settings": settings(config_of(_DATASETS.value[0], _MODELS.value[0]))}
    report["settings"]["pykeen_smoothing"] = _SMOOTHING.value
    report["results"] = {}
    with tempfile.TemporaryDirectory(prefix="lepton_bench_") as tmp:
        for dataset in _DATASETS.value:
            directory = os.path.join(tmp, dataset)
            os.makedirs(directory)
            write_triples(load_kg(dataset, _DATA_DIR.value), directory)
            for model in _MODELS.value:
                rows = report["results"].setdefault(dataset, {})[model] = {}
                if "ours" in _PEERS.value:
                    rows["ours"] = run_ours(dataset, model)
                    say(dataset, model, "ours", rows["ours"])
                for threads in map(int, _TORCH_THREADS.value if python else []):
                    name = f"pykeen_{threads}_thread{'s' * (threads > 1)}" if threads else "pykeen"
                    rows[name] = run_pykeen(python, model, directory, config_of(dataset, model), threads)
                    say(dataset, model, name, rows[name])
                peer = fastest_pykeen(rows)
                if "ours" in rows and peer:
                    rows["speed_ratio"] = rows[peer]["epoch_s"] / rows["ours"]["epoch_s"]
                    rows["speed_ratio_vs"] = peer
                    for key in ("params", "num_queries", "num_test_triples"):
                        if rows["ours"][key] != rows[peer][key]:
                            print(
                                f"WARNING: {dataset} {model}: {key}: ours {rows['ours'][key]}, {peer} {rows[peer][key]}"
                            )
    if _WALK_SIZES.value:
        sizes = [int(n) for n in _WALK_SIZES.value]
        report["walk_rates"] = walk_rates(_DATASETS.value[0], _DATA_DIR.value, sizes, _WALK_STEPS.value, 3)
    report["machine"] = common.machine(load_before)
    print_table(report)
    if "walk_rates" in report:
        print_walk_table(report["walk_rates"], _DATASETS.value[0])
    if _OUT.value:
        common.write_report(_OUT.value, report)


if __name__ == "__main__":
    app.run(main)
