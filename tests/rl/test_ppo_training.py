"""PPO through the shared loop: chunking does not change the result, NaNs stop the run, and it learns."""

import jax
import numpy as np
import pytest

from agents import ppo
from agents.configs import ppo as ppo_config
from lepton_jax.metrics import TrainingDiverged
from lepton_jax.rl import envs, loop


def _params(state):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state.train_state.params))]


def test_one_chunk_equals_many_chunks(tmp_path):
    config = ppo_config.get_config("smoke")
    many, _ = loop.run(config, str(tmp_path / "many"), ppo.make_agent)  # 4 chunks of 2 updates
    config.chunk_updates = 8
    one, _ = loop.run(config, str(tmp_path / "one"), ppo.make_agent)  # 1 chunk of 8 updates
    for a, b in zip(_params(one), _params(many)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_non_finite_loss_stops_the_run_naming_the_update(tmp_path):
    config = ppo_config.get_config("smoke")
    config.reward_scale = float("nan")
    with pytest.raises(TrainingDiverged, match="train/loss is not finite at update 1;"):
        loop.run(config, str(tmp_path / "run"), ppo.make_agent)


def test_ppo_learns_cartpole_vmapped_over_seeds():
    # 2 seeds vmapped in one program (the pure `train`), 1.5e5 steps: a random policy scores ~22.
    config = ppo_config.get_config("CartPole-v1")
    config.total_timesteps = 150_000
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    state, metrics = jax.jit(jax.vmap(ppo.make_train(config)))(keys)
    spec = envs.make_env("CartPole-v1")
    act = ppo.make_agent(config, spec).act
    returns = jax.jit(jax.vmap(lambda p, k: envs.evaluate(spec, act, p, k, 8)))(state.train_state.params, keys)
    assert metrics["episode_return"].shape == (2, 150_000 // 512)
    assert float(returns.mean()) >= 200, returns.mean(axis=1)


def test_sampled_evaluation_draws_actions_on_the_greedy_evaluations_episodes():
    spec = envs.make_env("CartPole-v1")
    config = ppo_config.get_config("smoke")
    agent = ppo.make_agent(config, spec)
    params = agent.init(jax.random.PRNGKey(0)).train_state.params
    key = jax.random.PRNGKey(1)
    greedy = envs.evaluate(spec, agent.act, params, key, 8)
    # A "sampler" that ignores its key is the greedy policy: the same episodes, so the same returns.
    same = envs.evaluate(spec, lambda p, obs, k: agent.act(p, obs), params, key, 8, sample=True)
    np.testing.assert_array_equal(np.asarray(same), np.asarray(greedy))
    # Actions drawn from the (untrained, near-uniform) policy: a random walk, unlike the argmax.
    sampled = envs.evaluate(spec, agent.sample, params, key, 8, sample=True)
    assert not np.array_equal(np.asarray(sampled), np.asarray(greedy))
    assert len(set(np.asarray(sampled).tolist())) > 1  # each episode draws its own actions


def test_eval_sampled_reports_both_returns_and_leaves_the_greedy_one_unchanged(tmp_path):
    config = ppo_config.get_config("smoke")
    _, plain = loop.run(config, str(tmp_path / "plain"), ppo.make_agent)
    config.eval_sampled = True
    _, both = loop.run(config, str(tmp_path / "both"), ppo.make_agent)
    assert "eval/sampled_return_mean" not in plain
    assert both["per_seed/eval/return"] == plain["per_seed/eval/return"]
    assert len(both["per_seed/eval/sampled_return"]) == config.num_seeds
    assert np.isfinite(both["eval/sampled_return_mean"])


def test_continuous_actions_are_clipped_to_the_box():
    spec = envs.make_env("Pendulum-v1")
    assert spec.continuous and spec.action_dim == 1
    clipped = envs.to_env_action(spec, jax.numpy.array([[5.0], [-0.5], [-9.0]]))
    np.testing.assert_allclose(np.asarray(clipped).reshape(-1), [2.0, -0.5, -2.0])


def test_smoke_pendulum_runs(tmp_path):
    config = ppo_config.get_config("Pendulum-v1,smoke")
    state, results = loop.run(config, str(tmp_path / "run"), ppo.make_agent)
    assert np.isfinite(results["eval/return_mean"]) and results["eval/return_mean"] < 0
    assert state.train_state.params["params"]["log_std"].shape == (2, 1)
