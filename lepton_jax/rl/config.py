"""RL config helpers: what each agent can sweep, and the sizes that follow from an agent's config.

Derived sizes are computed from the config when an agent is built (never written back), so a
`--config.num_envs=...` override can never leave a stale derived value behind. This module imports no JAX:
configs import it, and loading a config (or rejecting a misspelled flag) stays a fraction of a second.
"""

from typing import NamedTuple

from lepton_jax.config import require

# The hyperparameters each agent's update can take traced (`Agent.sweepable`, see `lepton_jax.rl.sweep`); the one
# list of each: the agent returns it and its configs offer every name as `config.sweep.<name>`.
ON_POLICY_SWEEPABLE = ("lr", "gamma", "ent_coef")  # `lepton_jax.rl.onpolicy`: PPO, A2C, REINFORCE
DQN_SWEEPABLE = ("lr", "gamma", "eps_end", "exploration_fraction")  # `agents/dqn.py`


def num_updates(config, steps_per_update: int) -> int:
    """Updates per seed: `config.total_timesteps // steps_per_update` (env steps per update, per seed).

    Raises:
      UserError: the run is shorter than one update.
    """
    updates = int(config.total_timesteps) // steps_per_update
    require(
        updates >= 1,
        f"config.total_timesteps ({config.total_timesteps}) is smaller than one update "
        f"({steps_per_update} env steps per seed)",
    )
    return updates


class OnPolicyDerived(NamedTuple):
    steps_per_update: int  # env steps per update, per seed (num_envs * num_steps)
    num_updates: int
    minibatch_size: int  # transitions per gradient step


def on_policy_derived(config) -> OnPolicyDerived:
    """Derived sizes of an on-policy agent (PPO, A2C, REINFORCE), validated.

    A config without `num_minibatches` / `update_epochs` (A2C, REINFORCE: one gradient step per rollout) counts as
    one minibatch and one epoch.
    """
    minibatches = config.get("num_minibatches", 1)
    sizes = {
        "num_envs": config.num_envs,
        "num_steps": config.num_steps,
        "num_minibatches": minibatches,
        "update_epochs": config.get("update_epochs", 1),
    }
    for key, value in sizes.items():
        require(int(value) >= 1, f"config.{key} must be >= 1, got {value}")
    require(
        config.num_steps % minibatches == 0,
        f"config.num_steps ({config.num_steps}) must be divisible by config.num_minibatches "
        f"({minibatches}): each minibatch takes num_steps/num_minibatches steps of every env",
    )
    steps_per_update = config.num_envs * config.num_steps
    return OnPolicyDerived(steps_per_update, num_updates(config, steps_per_update), steps_per_update // minibatches)
