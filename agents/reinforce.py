"""REINFORCE (Williams 1992) with a learned value baseline.

Each update runs every env for `num_steps` steps and takes one gradient step on
`-log pi(a_t|s_t) (G_t - V(s_t))` plus a value regression of V(s_t) onto G_t, where G_t is the Monte-Carlo
discounted return-to-go. Vectorised envs never line up with the rollout's edges, so the last, unfinished episode
of each env is handled in one of two ways (`config.complete_episodes_only`):
- True: its steps are left out of the loss: every G_t used is a pure Monte-Carlo return (the textbook method; a
  rollout of at least two maximum episode lengths keeps most steps).
- False: G_t of those steps is completed with the baseline's V at the rollout's end (one bootstrap per episode
  fragment).
"""

import jax
import jax.numpy as jnp

from lepton_jax import registry
from lepton_jax.rl import envs, loop, onpolicy
from lepton_jax.rl.agent import make_train as _make_train


def returns_to_go(rewards, dones, last_value, gamma: float):
    """G_t = r_t + gamma * G_{t+1} within an episode, G_T = last_value; and whether t's episode ended in the rollout.

    Args:
      rewards, dones: (T, N); `dones[t]` means the episode ended after step t.
      last_value: (N,) what the unfinished episode's return is completed with (zeros for none).
      gamma: the discount.

    Returns:
      returns (T, N), and complete (T, N): 1.0 where step t's episode ends within the rollout.
    """

    def backward(carry, step):
        future, ends = carry
        reward, done = step
        future = reward + gamma * future * (1.0 - done)
        ends = jnp.maximum(ends, done)
        return (future, ends), (future, ends)

    dones = dones.astype(jnp.float32)
    init = (last_value, jnp.zeros_like(last_value))
    _, (returns, complete) = jax.lax.scan(backward, init, (rewards, dones), reverse=True)
    return returns, complete


def targets(traj, last_value, hp):
    """Advantages `G_t - V(s_t)`, value targets `G_t` and the mask of steps used; `hp` is the run's
    `sweep.HyperParams`."""
    if hp.complete_episodes_only:
        last_value = jnp.zeros_like(last_value)
    returns, complete = returns_to_go(traj.reward, traj.done, last_value, hp.gamma)
    mask = complete if hp.complete_episodes_only else jnp.ones_like(complete)
    return returns - traj.value, returns, mask


def make_agent(config, spec: envs.EnvSpec):
    return onpolicy.make_policy_gradient_agent(config, spec, targets)


def make_train(config):
    """`train(rng) -> (state, metrics)`: the whole run as one pure function, vmappable over seeds."""
    return _make_train(make_agent(config, envs.make_env(config.env_name)))


@registry.register("reinforce")
def train_and_evaluate(config, workdir: str) -> dict:
    return loop.train_and_evaluate(config, workdir, make_agent)
