"""The results registry: RESULTS.md is what it renders, and `scripts.reproduce` tells reproduced from drifted."""

import json
import os

import pytest

from scripts import reproduce, results
from tests.conftest import run_python


def test_results_md_is_generated_from_the_registry():
    registry = results.load()
    assert results.problems(registry) == []
    with open(results.TEMPLATE) as f:
        rendered = results.render(registry, f.read())
    with open(results.RESULTS_MD) as f:
        assert f.read() == rendered, "RESULTS.md differs from the registry: run python -m scripts.results"


def test_a_hand_written_copy_under_a_table_marker_is_refused():
    registry = results.load()
    table = registry["tables"][0]["id"]
    row = next(r for r in registry["rows"] if r["table"] == table)
    template = f"text\n<!-- table: {table} -->\n| {row['label']} | copied by hand |\n"
    with pytest.raises(ValueError, match="a table row right under"):
        results.render(registry, template)


def test_every_row_names_a_full_command_without_a_workdir():
    for row in results.load()["rows"]:
        assert row["command"].startswith("python -m scripts."), row["id"]
        assert "..." not in row["command"] and "--workdir" not in row["command"], row["id"]


def test_budget_picks_the_cheapest_rows_that_fit():
    rows = [{"id": "a", "wall_seconds": 600}, {"id": "b", "wall_seconds": 60}, {"id": "c", "wall_seconds": 120}]
    assert [r["id"] for r in reproduce.select(rows, None, 3.5)] == ["b", "c"]
    assert [r["id"] for r in reproduce.select(rows, ["a", "c"], None)] == ["a", "c"]
    assert reproduce.select(rows, ["z*"], None) == []


def test_row_patterns_keep_the_commas_of_row_ids(tmp_path):
    ids = ["gin/mutag", "kg_walker/umls", "kg_walker/umls,reward_shaping=complex", "ppo/CartPole-v1"]
    split = reproduce.split_patterns
    assert split("kg_walker/umls,reward_shaping=complex", ids) == ["kg_walker/umls,reward_shaping=complex"]
    assert split("gin/mutag,kg_walker/umls,reward_shaping=complex", ids) == [
        "gin/mutag",
        "kg_walker/umls,reward_shaping=complex",
    ]
    assert split("kg_walker/umls,ppo/*", ids) == ["kg_walker/umls", "ppo/*"]
    assert split("ppo/*,gin/*", ids) == ["ppo/*", "gin/*"]
    # A pattern that matches no row is one line naming it, not a silently smaller selection.
    path = tmp_path / "registry.json"
    row = {"id": "gin/mutag", "mean": 85.0, "std": 7.5, "wall_seconds": 60, "command": "python -m scripts.train"}
    path.write_text(json.dumps({"tables": [], "rows": [row]}))
    result = run_python(["-m", "scripts.reproduce", f"--registry={path}", "--rows=gin/mutag,nope/*", "--list"])
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --rows: no row id matches 'nope/*'"), lines


def test_tolerance_is_the_widest_given():
    row = {"mean": 1.0, "std": 0.5, "seeds": 4, "tolerance": {"stds": 2, "abs": 0.1}}
    assert reproduce.allowed_difference(row) == 1.0
    assert reproduce.compare(row, 1.9)[0] == "reproduced" and reproduce.compare(row, 2.1)[0] == "drifted"
    assert reproduce.allowed_difference(row | {"tolerance": {"stderrs": 2}}) == 0.5
    assert reproduce.compare(row | {"tolerance": {"exact": True}}, 1.0 + 1e-9)[0] == "drifted"


def test_reproduce_reruns_rows_and_flags_drift(tmp_path):
    """Two rows of the smoke PPO command: one recorded within its tolerance of any outcome, one far from it."""
    row = {
        "table": "t",
        "label": "smoke",
        "command": "python -m scripts.train --config=agents/configs/ppo.py:smoke",
        "metric": "eval/return",
        "std": 1.0,
        "seeds": 2,
        "wall_seconds": 10,
    }
    registry = {
        "tables": [{"id": "t", "columns": [["run", "label"]]}],
        "rows": [
            row | {"id": "smoke/holds", "mean": 20.0, "tolerance": {"abs": 1e6}},
            row | {"id": "smoke/drifted", "mean": 1e7, "tolerance": {"stds": 2}},
        ],
    }
    path = tmp_path / "registry.json"
    path.write_text(json.dumps(registry))
    out = tmp_path / "out"
    args = ["-m", "scripts.reproduce", f"--registry={path}", f"--outdir={out}", "--record"]
    result = run_python(args, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr[-3000:]
    with open(out / "report.json") as f:
        report = json.load(f)
    assert [(e["id"], e["status"]) for e in report["rows"]] == [
        ("smoke/holds", "reproduced"),
        ("smoke/drifted", "drifted"),
    ]
    assert os.path.isfile(out / "smoke__holds" / "results.json")
    assert result.stderr.strip().splitlines()[-1] == "error: 1 of 2 rows did not reproduce: smoke/drifted"
    assert "[2/2] smoke/drifted" in result.stdout and "recorded stds" in result.stdout
    recorded = json.loads(path.read_text())["rows"]  # --record: each re-run in its row's history
    assert [len(r["history"]) for r in recorded] == [1, 1]
    assert recorded[0]["commit"] and recorded[0]["history"][0]["note"].endswith("reproduced")
    assert "commit" not in recorded[1]  # a drifted row keeps what it had


def test_a_row_that_needs_another_runs_it_first_and_gets_its_workdir(tmp_path):
    """`needs`: the needed row runs once, beside the row, and `{needs}` in the command names its workdir."""
    writer = (
        "import json, os, sys; args = dict(a.split('=', 1) for a in sys.argv[1:]); "
        "base = json.load(open(os.path.join(args['--source'], 'results.json')))['m'] if '--source' in args else 0; "
        "os.makedirs(args['--workdir']); "
        "json.dump({'m': base + 1}, open(os.path.join(args['--workdir'], 'results.json'), 'w'))"
    )
    source = {
        "id": "a/source",
        "command": f'python -c "{writer}"',
        "metric": "m",
        "mean": 1.0,
        "tolerance": {"exact": True},
    }
    target = source | {
        "id": "a/target",
        "command": f'python -c "{writer}" --source={{needs}}',
        "mean": 2.0,
        "needs": "a/source",
    }
    rows = {r["id"]: r for r in (source, target)}
    entry = reproduce.run_row(target, str(tmp_path / reproduce.slug("a/target")), str(tmp_path / "t.log"), rows)
    assert entry["status"] == "reproduced", entry
    assert json.load(open(tmp_path / reproduce.slug("a/source") / "results.json")) == {"m": 1}
    missing = target | {"needs": "a/absent"}
    assert reproduce.run_row(missing, str(tmp_path / "x"), str(tmp_path / "x.log"), rows)["status"] == "failed"
