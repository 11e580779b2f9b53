"""The rollout record shared by on-policy agents, and generalized advantage estimation."""

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Transition(NamedTuple):
    """One rollout; every field is (T, N, ...) after a `lax.scan` over T steps of N envs."""

    obs: jax.Array  # (T, N, obs_dim)
    action: jax.Array  # (T, N) discrete or (T, N, action_dim) continuous
    reward: jax.Array  # (T, N), with the time-limit bootstrap already added (see `bootstrap_truncated`)
    done: jax.Array  # (T, N) the episode ended after this step (terminated or truncated)
    value: jax.Array  # (T, N) V(obs)
    log_prob: jax.Array  # (T, N) log pi(action | obs) under the behaviour policy


def bootstrap_truncated(reward, terminated, truncated, final_value, gamma):
    """Folds V(final observation) into the reward of steps cut by a time limit.

    A truncated episode did not end in the MDP, so its return continues past the cut: r + gamma * V(s_final).
    The step is then treated as done so that the next value (of the auto-reset observation) is not used.
    """
    cut = jnp.logical_and(truncated, jnp.logical_not(terminated))
    return reward + gamma * final_value * cut


def gae(rewards, values, dones, last_value, gamma: float, gae_lambda: float):
    """Generalized advantage estimation (Schulman et al. 2016) by a reverse scan over time.

    Args:
      rewards: (T, N) rewards.
      values: (T, N) V(s_t), or (T, N, A) one value per agent of a team sharing the reward and done (multi-agent
        envs, `lepton_jax.rl.marl`): each agent's advantages are those of its values under the team's rewards.
      dones: (T, N) 1 where the episode ended after step t (no bootstrap from s_{t+1}).
      last_value: (N,) V(s_T) for the observation after the rollout ((N, A) with per-agent values).
      gamma: discount.
      gae_lambda: GAE's lambda.

    Returns:
      advantages and value targets = advantages + values, both of `values`' shape.
    """
    if rewards.ndim < values.ndim:  # the team's (T, N) reward and done, for each of its agents: (T, N, A)
        rewards, dones = (jnp.broadcast_to(x[..., None], values.shape) for x in (rewards, dones))

    def step(carry, inputs):
        next_advantage, next_value = carry
        reward, value, done = inputs
        not_done = 1.0 - done.astype(jnp.float32)
        delta = reward + gamma * next_value * not_done - value
        advantage = delta + gamma * gae_lambda * not_done * next_advantage
        return (advantage, value), advantage

    _, advantages = jax.lax.scan(step, (jnp.zeros_like(last_value), last_value), (rewards, values, dones), reverse=True)
    return advantages, advantages + values
