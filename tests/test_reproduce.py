"""The RESULTS.md reproductions (minutes each): `python -m pytest -m slow`."""

import json
import os

import pytest

from .conftest import run_python

# (config arg, threshold on the final deterministic eval return, mean over 4 seeds)
TARGETS = [("CartPole-v1", 475.0), ("Acrobot-v1", -100.0), ("Pendulum-v1", -300.0)]


@pytest.mark.slow
@pytest.mark.parametrize("env_name,threshold", TARGETS)
def test_ppo_reaches_target(tmp_path, env_name, threshold):
    workdir = str(tmp_path / "run")
    result = run_python(
        ["-m", "scripts.train", f"--config=agents/configs/ppo.py:{env_name}", f"--workdir={workdir}"], timeout=1800
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    assert results["num_seeds"] >= 4
    assert results["eval/return_mean"] >= threshold, results
