"""Multi-agent envs and the team trainers: the adapter against JaxMARL's own dicts, auto-reset, unknown names, GAE
with per-agent values, IPPO learning a task that needs the agent id, exact resume, and MAPPO's critic input."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import ippo
from agents.configs import ippo as ippo_config
from agents.configs import mappo as mappo_config
from lepton_jax.interrupt import Interrupted
from lepton_jax.rl import envs, loop, marl
from lepton_jax.rl.gae import gae
from tests.conftest import one_line_error

# ---- A tiny cooperative env that needs the agent id -----------------------------------------------------------------

GUESS = "TeamGuess-test"
GUESS_STEPS = 4  # steps per episode


def _team_guess() -> marl.MultiAgentEnv:
    """Two agents see the same target t in {0, 1, 2} (one-hot), drawn anew every step. The team scores 1/2 when agent
    0 plays t and 1/2 when agent 1 plays t + 1 (mod 3): the same observation needs different actions, told apart by
    the agent id. Action 3 is never available. A uniformly random valid policy scores 1/3 a step, 4/3 an episode.
    An episode is won when it scores the most, 4 (its `win_return`)."""
    num_agents, num_targets = 2, 3
    avail = jnp.array([[True, True, True, False]] * num_agents)

    def observe(target, t, reward, done) -> marl.Step:
        obs = jnp.broadcast_to(jax.nn.one_hot(target, num_targets), (num_agents, num_targets))
        state = jnp.concatenate([jax.nn.one_hot(target, num_targets), jnp.array([t / GUESS_STEPS])])
        return marl.Step(obs, state, avail, (target, t), jnp.float32(reward), jnp.asarray(done))

    def reset(key):
        return observe(jax.random.randint(key, (), 0, num_targets), 0, 0.0, False)

    def step(key, env_state, actions):
        target, t = env_state
        reward = ((actions[0] == target).astype(jnp.float32) + (actions[1] == (target + 1) % num_targets)) / 2
        done = t + 1 >= GUESS_STEPS
        next_target = jax.random.randint(key, (), 0, num_targets)
        return observe(next_target, jnp.where(done, 0, t + 1), reward, done)

    return marl.MultiAgentEnv(
        GUESS, ("a", "b"), num_targets, num_targets + 1, 4, GUESS_STEPS, reset, step, win_return=GUESS_STEPS - 0.25
    )


marl.register(GUESS, _team_guess)


def _guess_config(trainer_config=ippo_config, total_updates=48):
    config = trainer_config.get_config(f"{GUESS},smoke")
    config.num_seeds = 2
    config.num_envs, config.num_steps, config.num_minibatches = 4, 16, 2
    config.total_timesteps = total_updates * 4 * 16
    config.chunk_updates = 16
    config.lr, config.schedule = 3e-3, "constant"
    # Evaluated and saved at the end only (an interrupted run saves when stopped): each costs host time, not learning.
    config.eval_sampled, config.eval_every_chunks, config.checkpoint_every_chunks = False, 8, 8
    return config


# ---- The adapter ----------------------------------------------------------------------------------------------------


def _stack(tree: dict, agents):
    return np.stack([np.asarray(tree[a]) for a in agents])


def test_mpe_adapter_stacks_agents_in_jaxmarls_order():
    env = marl.make("MPE_simple_spread_v3")
    assert (env.num_agents, env.obs_dim, env.num_actions, env.state_dim) == (3, 18, 5, 54)
    raw, agents = env.source, list(env.source.agents)
    key, step_key = jax.random.split(jax.random.PRNGKey(0))
    start = env.reset(key)
    obs_dict, _ = raw.reset(key)
    np.testing.assert_array_equal(start.obs, _stack(obs_dict, agents))
    np.testing.assert_array_equal(start.state, _stack(obs_dict, agents).reshape(-1))  # every agent's obs, in order
    assert start.avail.shape == (3, 5) and bool(start.avail.all())

    actions = jnp.array([1, 3, 4], jnp.int32)  # a different move for each agent
    step = env.step(step_key, start.env_state, actions)
    obs_dict, _, rewards, dones, _ = raw.step(step_key, start.env_state, {a: actions[i] for i, a in enumerate(agents)})
    np.testing.assert_array_equal(step.obs, _stack(obs_dict, agents))
    assert not np.allclose(step.obs[0], step.obs[1])  # a swapped order would show
    # simple spread adds each agent's own collision term to the shared one: the team reward is their mean
    np.testing.assert_allclose(step.reward, _stack(rewards, agents).mean(), rtol=1e-6)
    assert bool(step.done) == bool(dones["__all__"]) is False


def test_smax_adapter_keeps_masks_rewards_and_world_state_in_order():
    env = marl.make("SMAX_3m")
    assert (env.num_agents, env.obs_dim, env.num_actions, env.state_dim) == (3, 75, 8, 72)
    raw, agents = env.source, list(env.source.agents)
    step = env.reset(jax.random.PRNGKey(1))
    masks_differed = False
    for i in range(12):
        # Every ally moves right, towards the enemies (action 2; 4 stops), so attacks come into range unevenly.
        actions = jnp.array([2, 2, 4] if i < 6 else [5, 6, 7], jnp.int32)
        actions = jnp.where(step.avail[jnp.arange(3), actions], actions, 4)
        key = jax.random.PRNGKey(100 + i)
        before = step.env_state
        step = env.step(key, before, actions)
        obs_dict, state, rewards, dones, _ = raw.step(key, before, {a: actions[j] for j, a in enumerate(agents)})
        np.testing.assert_array_equal(step.obs, _stack(obs_dict, agents))
        np.testing.assert_array_equal(step.avail, _stack(raw.get_avail_actions(state), agents).astype(bool))
        np.testing.assert_array_equal(step.state, obs_dict["world_state"])
        team = _stack(rewards, agents)
        assert np.all(team == team[0]) and float(step.reward) == team[0]  # SMAX gives every ally the team reward
        assert bool(step.done) == bool(dones["__all__"])
        masks_differed |= not np.all(np.asarray(step.avail) == np.asarray(step.avail[0]))
    assert masks_differed  # the order of the masks was tested, not only their values


def test_step_resets_a_finished_episode_itself():
    env = marl.make("MPE_simple_spread_v3")
    step = env.reset(jax.random.PRNGKey(0))
    for t in range(1, env.max_steps + 1):
        key = jax.random.PRNGKey(t)
        step = env.step(key, step.env_state, jnp.zeros(3, jnp.int32))
        assert bool(step.done) == (t == env.max_steps == 26), t
    # JaxMARL's step resets with the second half of its key: the observation is that new episode's first
    fresh = env.reset(jax.random.split(key)[1])
    np.testing.assert_array_equal(step.obs, fresh.obs)
    np.testing.assert_array_equal(step.state, fresh.state)
    assert int(step.env_state.step) == 0


def test_every_jaxmarl_name_builds_with_its_sizes():
    expected = {  # agents, obs_dim, num_actions, state_dim, episode limit (JaxMARL's max_steps + 1)
        "MPE_simple_spread_v3": (3, 18, 5, 3 * 18, 26),
        "MPE_simple_reference_v3": (2, 21, 50, 2 * 21, 26),
        "SMAX_3m": (3, 75, 8, 72, 101),
        "SMAX_2s3z": (5, 127, 10, 120, 101),
    }
    for name, sizes in expected.items():
        env = marl.make(name)
        assert (env.num_agents, env.obs_dim, env.num_actions, env.state_dim, env.max_steps) == sizes, name
        assert env.agents == tuple(env.source.agents)
        # SMAX's return above 1 is a won battle (evaluation reports the win rate); MPE has no win.
        assert env.win_return == (1.0 if name.startswith("SMAX") else None), name
        assert envs.make_env(name).env.win_return == env.win_return, name


def test_unknown_env_is_one_line_listing_the_valid_ones():
    one_line_error(lambda: marl.make("MPE_nope"), "'MPE_nope'", "MPE_simple_spread_v3", "SMAX_3m", "SMAX_2s3z")
    one_line_error(lambda: envs.make_env("SMAX_nope"), "'SMAX_nope'", "SMAX_2s3z")  # the launcher's path
    assert "MPE_simple_spread_v3" in marl.names() and GUESS in marl.names()


# ---- The team trainers ----------------------------------------------------------------------------------------------


def test_gae_gives_each_agent_the_team_reward():
    rng = np.random.default_rng(0)
    rewards, dones = rng.normal(size=(5, 2)), rng.random((5, 2)) < 0.3  # (T, N)
    values, last = rng.normal(size=(5, 2, 3)), rng.normal(size=(2, 3))  # (T, N, A), (N, A)
    advantages, targets = gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(dones), last, 0.9, 0.8)
    for agent in range(3):  # each agent: the single-agent GAE of its own values
        expected, expected_targets = gae(rewards, values[..., agent], dones, last[:, agent], 0.9, 0.8)
        np.testing.assert_allclose(advantages[..., agent], expected, rtol=1e-6)
        np.testing.assert_allclose(targets[..., agent], expected_targets, rtol=1e-6)


def test_ippo_learns_a_task_needing_the_agent_id_and_resumes_exactly(tmp_path, interrupt_first_step, without_figures):
    config = _guess_config()  # 48 updates, 3 chunks
    full, results = loop.run(config, str(tmp_path / "full"), ippo.make_agent)
    with open(os.path.join(tmp_path / "full", "metrics.jsonl")) as f:
        first = next(r for r in map(json.loads, f) if r.get("train/episode_return") is not None)
    # From about a random policy's 4/3 to past 2, the most a policy blind to the agent id can score (both agents
    # then play alike: at most one of them scores each step); 4 is the optimum.
    assert first["train/episode_return"] < 2.0, first
    assert results["eval/return_mean"] >= 3.0, results
    # The win rate is the share of episodes that scored 4 (the others score at most 3.5, in steps of 1/2), so from
    # each seed's mean return r: 2 (r - 3.5) <= win rate <= r / 4.
    for r, won in zip(results["per_seed/eval/return"], results["per_seed/eval/win_rate"]):
        assert 2 * (r - 3.5) - 1e-6 <= won <= r / 4 + 1e-6, (r, won)
    assert results["eval/win_rate_mean"] == pytest.approx(np.mean(results["per_seed/eval/win_rate"]))

    with interrupt_first_step(), pytest.raises(Interrupted, match="update 16/48"):
        loop.run(_guess_config(), str(tmp_path / "split"), ippo.make_agent)
    resumed, resumed_results = loop.run(_guess_config(), str(tmp_path / "split"), ippo.make_agent)
    assert resumed_results["resumed_from_update"] == 16
    assert resumed_results["params_sha256"] == results["params_sha256"]
    for a, b in zip(jax.tree.leaves(full.train_state), jax.tree.leaves(resumed.train_state)):
        np.testing.assert_array_equal(a, b)


def test_mappo_critic_reads_the_global_state_and_ippo_its_observation():
    spec = envs.make_env(GUESS)
    for trainer_config, critic_input in ((mappo_config, 4 + 2), (ippo_config, 3 + 2)):  # (+ the agent's one-hot)
        agent = ippo.make_agent(_guess_config(trainer_config), spec)
        params, probs, value, value_of_moved_state = jax.jit(functools.partial(_probe, agent))(jax.random.PRNGKey(0))
        assert params["actor_torso"]["Dense_0"]["kernel"].shape[0] == 3 + 2
        assert params["critic_torso"]["Dense_0"]["kernel"].shape[0] == critic_input
        assert probs.shape == (4, 2, 4) and value.shape == (4, 2)  # (envs, agents, actions), (envs, agents)
        assert float(probs[..., 3].max()) == 0.0  # the unavailable action
        assert (not np.allclose(value_of_moved_state, value)) == (trainer_config is mappo_config)


def _probe(agent, key):
    """A new agent's parameters, and its policy and values on its first observations, as they are and with the
    global state moved."""
    state = agent.init(key)
    apply, params, obs = state.train_state.apply_fn, state.train_state.params, state.env.obs  # leaves (N, ...)
    dist, value = apply(params, obs)
    _, value_of_moved_state = apply(params, obs._replace(state=obs.state + 1.0))
    return params["params"], jax.nn.softmax(dist.logits), value, value_of_moved_state


def test_a_single_agent_env_or_a_time_limit_bootstrap_is_refused():
    config = _guess_config()
    message = one_line_error(lambda: ippo.make_agent(config, envs.make_env("CartPole-v1")), "multi-agent env", GUESS)
    assert message.startswith("config.env_name=CartPole-v1:"), message  # it names the key and the value refused
    config.bootstrap_truncated = True
    message = one_line_error(lambda: ippo.make_agent(config, envs.make_env(GUESS)), "config.bootstrap_truncated")
    assert message.endswith("set it to False"), message  # and says what to do
