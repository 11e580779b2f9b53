"""DQN: the replay buffer, n-step and Double-DQN targets on worked examples, and exact resume with the buffer."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import dqn
from agents.configs import dqn as dqn_config
from lepton_jax.interrupt import Interrupted
from lepton_jax.rl import loop, replay
from tests.conftest import run_python


def _filled_buffer():
    # capacity 4 rows of 2 envs; rows 0..5 written, so rows 4, 5 overwrote 0, 1. obs = 10 * row + env.
    buffer = replay.init({"obs": jnp.zeros((2,), jnp.int32)}, capacity=4)
    for row in range(6):
        buffer = replay.add(buffer, {"obs": 10 * row + jnp.arange(2)})
    return buffer


def test_replay_wraps_around():
    buffer = _filled_buffer()
    assert int(buffer.pos) == 2 and int(buffer.size) == 4
    np.testing.assert_array_equal(buffer.data["obs"][:, 0], [40, 50, 20, 30])


def test_replay_samples_consecutive_steps_uniformly():
    buffer = _filled_buffer()
    obs = np.asarray(replay.sample(buffer, jax.random.PRNGKey(0), 6000, horizon=2)["obs"])  # (B, 2)
    np.testing.assert_array_equal(obs[:, 1] - obs[:, 0], 10)  # the next step of the same env, across the wrap
    starts, counts = np.unique(obs[:, 0], return_counts=True)
    # Start rows 2, 3, 4 (row 5 has no successor yet; rows 0, 1 are overwritten), each env: 6 equally likely pairs.
    np.testing.assert_array_equal(starts, [20, 21, 30, 31, 40, 41])
    np.testing.assert_allclose(counts / counts.sum(), 1 / 6, atol=0.02)


def test_n_step_targets_worked_example():
    rewards = jnp.array([[1.0, 2.0, 3.0]] * 4)
    # (a) no episode end; (b) terminated at step 1; (c) truncated at step 0; (d) truncated at 1, new episode at 2.
    terminated = jnp.array([[0, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 1]], bool)
    done = jnp.array([[0, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 1]], bool)
    returns, last, discount = replay.n_step_targets(rewards, terminated, done, gamma=0.5)
    np.testing.assert_allclose(returns, [1 + 0.5 * 2 + 0.25 * 3, 1 + 0.5 * 2, 1, 1 + 0.5 * 2])
    np.testing.assert_array_equal(last, [2, 1, 0, 1])
    np.testing.assert_allclose(discount, [0.125, 0.0, 0.5, 0.25])


def test_double_dqn_bootstrap_value():
    q_target = jnp.array([[1.0, 5.0, 3.0], [2.0, 0.0, -1.0]])
    q_online = jnp.array([[4.0, 0.0, 9.0], [0.0, 1.0, 0.5]])
    np.testing.assert_allclose(dqn.bootstrap_value(q_target, q_online, double=False), [5.0, 2.0])
    np.testing.assert_allclose(dqn.bootstrap_value(q_target, q_online, double=True), [3.0, 0.0])


def test_epsilon_schedule():
    config = dqn_config.get_config("CartPole-v1")
    eps = [float(dqn.epsilon(config, t)) for t in (0, 125_000, 250_000, 400_000)]
    np.testing.assert_allclose(eps, [1.0, 0.525, 0.05, 0.05], atol=1e-6)


def test_resume_with_replay_buffer_equals_uninterrupted(tmp_path, interrupt_first_step):
    config = dqn_config.get_config("smoke")  # 3 chunks of 4 updates; learning starts in the first
    config.n_step, config.double_dqn, config.dueling = 3, True, True
    full, _ = loop.run(config, str(tmp_path / "full"), dqn.make_agent)
    with interrupt_first_step():
        with pytest.raises(Interrupted, match="update 4/12"):
            loop.run(config, str(tmp_path / "split"), dqn.make_agent)
    resumed, results = loop.run(config, str(tmp_path / "split"), dqn.make_agent)
    assert results["resumed_from_update"] == 4
    for a, b in zip(
        jax.tree.leaves((full.train_state, full.replay)), jax.tree.leaves((resumed.train_state, resumed.replay))
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # 12 updates x 4 steps = 48 rows into 32: the buffer wrapped before the checkpoint was restored.
    assert (np.asarray(full.replay.size) == 32).all() and (np.asarray(full.replay.pos) == 16).all()
    assert np.isfinite(results["eval/return_mean"])

    # The evaluation script reads the same workdir: per-seed returns, eval.json and a frame strip.
    result = run_python(["-m", "scripts.evaluate", f"--workdir={tmp_path / 'full'}", "--episodes=2", "--render"])
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "full" / "eval.json") as f:
        evaluation = json.load(f)
    assert len(evaluation["per_seed/eval/return"]) == 2 and evaluation["checkpoint_update"] == 12
    assert os.path.getsize(tmp_path / "full" / "plots" / "episode.png") > 1000
