"""`scripts.explain`: the walks behind a trained agent's answers, and one line for each mistake."""

import pytest

from scripts import cli, explain


@pytest.fixture(scope="module")
def workdir(walker_run):
    return walker_run[0]


def test_explain_prints_each_answer_with_its_walk(workdir, capsys):
    code = cli.run(explain.explain, ["explain", f"--workdir={workdir}", "--query=person0,grandparent", "--top=3"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and out[0] == "query: (person0, grandparent, ?)"
    answers = [line for line in out if line.strip()[:2] in ("1.", "2.", "3.")]
    assert answers and all("person0 -[" in line and line.count("]-> ") == 2 for line in answers)  # 2-step walks
    assert out[-1].endswith("plots/explain.png")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--query=person0"], "give HEAD,RELATION"),
        (["--query=persn0,grandparent"], "no entity 'persn0' in this knowledge graph (did you mean person0"),
        (["--query=person0,grandfather"], "no relation 'grandfather'"),
    ],
)
def test_a_bad_query_is_one_line(workdir, capsys, args, fragment):
    assert cli.run(explain.explain, ["explain", f"--workdir={workdir}", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and fragment in err, err


def test_a_run_of_another_trainer_is_one_line(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"trainer": "kg_embedding"}')
    assert cli.run(explain.explain, ["explain", f"--workdir={tmp_path}", "--query=a,b"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "explains kg_walker runs" in err, err
