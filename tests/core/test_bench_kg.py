"""The knowledge-graph benchmark (`scripts/bench/kg.py`): its own row on the generated family tree, the report's
structure and the triples it hands to PyKEEN.

PyKEEN itself is not run (its venv takes minutes to install); the worker's stand-alone checks are test_bench.py's.
"""

import importlib
import json

import numpy as np
import pytest
from absl import flags

from graphs.kg.data import family_tree, with_inverses
from tests.conftest import run_python

EPOCHS, SIZE = 4, 8


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """`--peers=ours` on the family tree, ComplEx, 4 epochs of 8 dimensions: (report, stdout)."""
    out = tmp_path_factory.mktemp("bench_kg") / "report.json"
    args = ["--peers=ours", "--datasets=family", "--models=complex", f"--epochs={EPOCHS}", f"--embedding_size={SIZE}"]
    args.append("--walk_sizes=10,100")
    proc = run_python(["-m", "scripts.bench.kg", *args, f"--out={out}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out) as f:
        return json.load(f), proc.stdout


@pytest.fixture(scope="module")
def kg_module():
    """`scripts.bench.kg` imported here, its flags forgotten afterwards (every benchmark defines --out, --peers...)."""
    module = importlib.import_module("scripts.bench.kg")
    yield module
    for flag in flags.FLAGS.get_flags_for_module(module.__name__):
        delattr(flags.FLAGS, flag.name)


def test_report_holds_the_settings_both_sides_train_with(bench):
    report, _ = bench
    settings = report["settings"]
    # The trainer's config (graphs/kg/configs/embedding.py) with the benchmark's flags.
    assert settings == {
        "embedding_size": SIZE,
        "label_smoothing": 0.1,
        "lr": 0.003,
        "batch_size": 512,
        "max_grad_norm": 5.0,
        "seed": 0,
        "dropout": 0.3,
        "epochs": EPOCHS,
        "pykeen_smoothing": "ours",
    }
    assert report["machine"]["cpus"] >= 1 and "load_average_before" in report["machine"]


def test_the_walk_environment_is_timed_for_each_number_of_walks(bench):
    report, stdout = bench
    rows = report["walk_rates"]
    assert [r["walks"] for r in rows] == [10, 100] and all(r["steps"] == 20 for r in rows)
    for r in rows:
        assert r["walk_steps_per_second"] == pytest.approx(r["walks"] * r["steps"] / r["seconds"])
    assert "walk environment alone (family" in stdout


def test_our_row_counts_what_the_trainer_trains(bench):
    report, _ = bench
    rows = report["results"]["family"]["complex"]
    assert set(rows) == {"ours"}  # no PyKEEN row, so no speed ratio
    row = rows["ours"]
    kg = family_tree()
    relations = 2 * kg.num_relations  # with their inverses
    assert row["num_entities"] == kg.num_entities and row["num_relations"] == relations
    assert row["params"] == 2 * (kg.num_entities + relations) * SIZE  # real and imaginary tables
    queries = {(h, r) for h, r, _ in with_inverses(kg.train, kg.num_relations).tolist()}
    assert row["num_queries"] == len(queries) and row["num_test_triples"] == len(kg.test)
    assert row["epochs"] == EPOCHS and row["epoch_s"] > 0 and row["first_epoch_s"] > 0
    assert 0 <= row["hits@1"] <= row["hits@3"] <= row["hits@10"] <= 1
    # Jensen: the mean of 1 / rank is at least 1 / (mean rank); ranks are at least 1.
    assert 1 / row["mr"] <= row["mrr"] <= 1 and row["mr"] >= 1
    assert row["version"].startswith("lepton-jax, jax ")


def test_table_says_which_way_the_ratio_goes(bench):
    _, stdout = bench
    assert "ratio = PyKEEN row's s/epoch / ours s/epoch (> 1: ours is faster)" in stdout
    assert any(line.split()[:3] == ["family", "complex", "ours"] for line in stdout.splitlines())


def test_triples_for_the_peer_keep_the_ids(kg_module, tmp_path):
    kg = family_tree()
    kg_module.write_triples(kg, str(tmp_path))
    entities = (tmp_path / "entities.txt").read_text().splitlines()
    relations = (tmp_path / "relations.txt").read_text().splitlines()
    assert tuple(entities) == kg.entities and tuple(relations) == kg.relations
    entity_id = {name: i for i, name in enumerate(entities)}
    relation_id = {name: i for i, name in enumerate(relations)}
    for split in ("train", "valid", "test"):
        lines = (tmp_path / f"{split}.txt").read_text().splitlines()
        read = np.array([(entity_id[h], relation_id[r], entity_id[t]) for h, r, t in (x.split("\t") for x in lines)])
        np.testing.assert_array_equal(read, getattr(kg, split))


def test_ratio_divides_by_the_fastest_pykeen_row(kg_module):
    rows = {"ours": {"epoch_s": 0.1}, "pykeen": {"epoch_s": 2.0}, "pykeen_1_thread": {"epoch_s": 0.5}}
    assert kg_module.fastest_pykeen(rows) == "pykeen_1_thread"
    assert kg_module.fastest_pykeen({"ours": {"epoch_s": 0.1}}) is None


def test_an_unknown_model_is_one_line():
    proc = run_python(["-m", "scripts.bench.kg", "--peers=ours", "--models=transe"], timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "--models: unknown transe; valid: distmult, complex" in proc.stderr
