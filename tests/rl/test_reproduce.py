"""The RESULTS.md reproductions (minutes each): `python -m pytest -m slow`."""

import pytest

from tests.conftest import launch

# (config arg, threshold on the final deterministic eval return, mean over 4 seeds)
TARGETS = [("CartPole-v1", 475.0), ("Acrobot-v1", -100.0), ("Pendulum-v1", -300.0)]


@pytest.mark.slow
@pytest.mark.parametrize("env_name,threshold", TARGETS)
def test_ppo_reaches_target(tmp_path, env_name, threshold):
    results = launch([f"--config=agents/configs/ppo.py:{env_name}"], str(tmp_path / "run"), timeout=1800)
    assert results["num_seeds"] >= 4
    assert results["eval/return_mean"] >= threshold, results
