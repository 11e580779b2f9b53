"""Learning reaches the known values of `Probe-v0` (see lepton_jax/rl/probes.py): DQN's Q and PPO's V and policy."""

import jax
import jax.numpy as jnp
import numpy as np

from agents import dqn, ppo
from agents.configs import dqn as dqn_config
from agents.configs import ppo as ppo_config
from lepton_jax.rl import envs
from lepton_jax.rl.networks import ActorCritic, QNetwork

GAMMA = 0.9
# [cue, t] for t = 0 and t = 1, cue 0 and 1.
STATES = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])


def test_dqn_learns_the_probe_values():
    config = dqn_config.get_config("Probe-v0")
    config.update(
        num_envs=8,
        rollout_steps=2,
        gradient_steps=2,
        total_timesteps=8 * 2 * 500,
        learning_starts=256,
        buffer_size=2048,
        batch_size=64,
        lr=1e-3,
        gamma=GAMMA,
        loss="mse",
        target_update_interval=64,
        hidden_sizes=(32, 32),
        exploration_fraction=0.3,
    )
    state, _ = jax.jit(dqn.make_train(config))(jax.random.PRNGKey(0))
    q = np.asarray(QNetwork(2, (32, 32), "relu").apply(state.train_state.params, STATES))
    np.testing.assert_allclose(q[:2], GAMMA, atol=0.05)  # Q(s_0, a) = gamma: discounting across one step
    np.testing.assert_allclose(q[2], [1.0, 0.0], atol=0.05)  # cue 0: action 0 pays 1
    np.testing.assert_allclose(q[3], [0.0, 1.0], atol=0.05)  # cue 1: action 1 pays 1


def test_ppo_learns_the_probe_values_and_policy():
    config = ppo_config.get_config("Probe-v0")
    config.update(
        num_envs=8, num_steps=16, total_timesteps=8 * 16 * 150, lr=3e-3, gamma=GAMMA, gae_lambda=1.0, ent_coef=0.0
    )
    state, _ = jax.jit(ppo.make_train(config))(jax.random.PRNGKey(0))
    net = ActorCritic(2, False, tuple(config.hidden_sizes), config.activation)
    dist, value = net.apply(state.train_state.params, STATES)
    probs = np.asarray(jax.nn.softmax(dist.logits))
    assert probs[2, 0] > 0.95 and probs[3, 1] > 0.95, probs  # picks the cue
    np.testing.assert_allclose(np.asarray(value), [GAMMA, GAMMA, 1.0, 1.0], atol=0.1)
    assert envs.make_env("Probe-v0").max_episode_steps == 10
