"""End to end through `python -m scripts.train`: workdir contents, resume, interruption, bad input."""

import json
import os
import re
import shutil
import signal
import time

import pytest

from tests.conftest import run_python, start_python

# A smoke run long enough to interrupt: 40 chunks of 2 updates, a checkpoint after each.
SMOKE = ["-m", "scripts.train", "--config=agents/configs/ppo.py:smoke", "--config.total_timesteps=5120"]


def _results(workdir):
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("reference") / "run")
    result = run_python(SMOKE + [f"--workdir={workdir}"])
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def test_smoke_run_fills_the_workdir(reference_run):
    files = set(os.listdir(reference_run))
    assert {"config.json", "checkpoints", "metrics.jsonl", "results.json", "plots", "tensorboard"} <= files
    assert os.path.getsize(os.path.join(reference_run, "plots", "learning_curve.png")) > 5000
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(reference_run, "tensorboard")))
    results = _results(reference_run)
    for key in (
        "eval/return_mean",
        "eval/return_std",
        "perf/env_steps",
        "perf/wall_seconds",
        "perf/compile_seconds",
        "perf/steps_per_second",
        "num_seeds",
        "num_devices",
        "params_sha256",
        "code_commit",
    ):
        assert key in results, key
    assert re.fullmatch(r"[0-9a-f]{7,40}(\+dirty)?", results["code_commit"]), results["code_commit"]  # a git checkout
    assert results["perf/env_steps"] == 5120 and results["num_seeds"] == 2
    assert 8 <= results["eval/return_mean"] <= 500  # CartPole returns are in [8, 500]
    with open(os.path.join(reference_run, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    steps = [r["step"] for r in records if "train/loss" in r]
    assert steps == [64 * i for i in range(1, 81)]  # one record per update, none repeated
    assert all(r["train/loss"] is not None for r in records if "train/loss" in r)
    ckpts = sorted(int(d) for d in os.listdir(os.path.join(reference_run, "checkpoints")) if d.isdigit())
    assert ckpts == [76, 78, 80]  # saved every chunk, the newest 3 kept


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, reference_run):
    workdir = str(tmp_path / "run")
    proc = start_python([*SMOKE, f"--workdir={workdir}"])
    metrics = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(metrics) and os.path.getsize(metrics) > 0:
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.02)
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "checkpoint saved" in stderr and "Traceback" not in stderr
    assert not os.path.exists(os.path.join(workdir, "results.json"))

    result = run_python(SMOKE + [f"--workdir={workdir}"])
    assert result.returncode == 0, result.stderr[-3000:]
    resumed, reference = _results(workdir), _results(reference_run)
    assert 0 < resumed["resumed_from_update"] < 80
    assert resumed["params_sha256"] == reference["params_sha256"]
    with open(metrics) as f:
        steps = [json.loads(line)["step"] for line in f if "train/loss" in line]
    assert steps == [64 * i for i in range(1, 81)]


def _corrupt(checkpoint_dir):
    for dirpath, _, filenames in os.walk(checkpoint_dir):
        for name in filenames:
            with open(os.path.join(dirpath, name), "wb") as f:
                f.write(b"garbage")


def test_corrupt_newest_checkpoint_falls_back_to_previous(tmp_path, reference_run):
    workdir = str(tmp_path / "run")
    shutil.copytree(reference_run, workdir)
    os.remove(os.path.join(workdir, "results.json"))  # unfinished (a finished run is not re-run)
    _corrupt(os.path.join(workdir, "checkpoints", "80"))
    result = run_python(SMOKE + [f"--workdir={workdir}"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "checkpoints/80 is not readable" in result.stderr
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "80.unreadable"))
    results = _results(workdir)
    assert results["resumed_from_update"] == 78
    assert results["params_sha256"] == _results(reference_run)["params_sha256"]


def test_no_intact_checkpoint_is_one_clear_error(tmp_path, reference_run):
    workdir = str(tmp_path / "run")
    shutil.copytree(reference_run, workdir)
    os.remove(os.path.join(workdir, "results.json"))  # unfinished (a finished run is not re-run)
    for step in ("76", "78", "80"):
        _corrupt(os.path.join(workdir, "checkpoints", step))
    result = run_python(SMOKE + [f"--workdir={workdir}"])
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "error: no intact checkpoint in" in result.stderr.strip().splitlines()[-1]


def test_misspelled_key_of_the_default_config_is_one_error_line(tmp_path):
    """End to end, with the default config (whose overrides absl's config flag would apply at import): exit 2,
    one `error:` line naming the key and a close match, no traceback, no workdir. Every other mistake goes through
    the same path, case by case in-process: test_promises.py."""
    result = run_python(["-m", "scripts.train", "--config.lrr=0.1", f"--workdir={tmp_path}/run"], timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and "Traceback" not in result.stderr and result.stdout == "", result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: --config.lrr: config has no key 'lrr'"), lines
    assert "did you mean 'lr'" in lines[0]
    assert not os.path.exists(tmp_path / "run")
