"""RL config helpers: what each agent can sweep, and the sizes that follow from an agent's config.

Derived sizes are computed from the config when an agent is built (never written back), so a
`--config.num_envs=...` override can never leave a stale derived value behind. This module imports no JAX:
configs import it, and loading a config (or rejecting a misspelled flag) stays a fraction of a second.
"""

from typing import NamedTuple

from lepton_jax.config import FLAG, NON_NEGATIVE, POSITIVE, TEXT, UNIT, count, number, require

# The hyperparameters each agent's update can take traced (`Agent.sweepable`, see `lepton_jax.rl.sweep`); the one
# list of each: the agent returns it and its configs offer every name as `config.sweep.<name>`.
ON_POLICY_SWEEPABLE = ("lr", "gamma", "ent_coef")  # `lepton_jax.rl.onpolicy`: PPO, A2C, REINFORCE
DQN_SWEEPABLE = ("lr", "gamma", "eps_end", "exploration_fraction")  # `agents/dqn.py`

# The keys of the RL loop (`lepton_jax.rl.loop`), of the on-policy update (`lepton_jax.rl.onpolicy`) and of every
# sweepable hyperparameter (a swept value is checked against the same declaration); `lepton_jax.config` explains.
KEYS = {
    "env_name": TEXT,
    "total_timesteps": count(1),  # per seed
    "num_envs": count(1),
    "chunk_updates": count(1),
    "eval_every_chunks": count(1),
    "eval_episodes": count(1),
    "eval_sampled": FLAG,
    "checkpoint_every_chunks": count(1),
    "gamma": UNIT,
    "reward_scale": POSITIVE,
    "bootstrap_truncated": FLAG,
    "ent_coef": NON_NEGATIVE,
    "eps_start": UNIT,
    "eps_end": UNIT,
    "exploration_fraction": number(0, 1, low_open=True),
    "num_steps": count(1),
    "update_epochs": count(1),
    "num_minibatches": count(1),
    "gae_lambda": UNIT,
    "clip_eps": POSITIVE,
    "clip_value_loss": FLAG,
    "vf_coef": NON_NEGATIVE,
    "normalize_advantages": FLAG,
    "complete_episodes_only": FLAG,
}


def check_sweep(config) -> None:
    """The launch check of `config.sweep`: every swept value is a valid value of its key (`lepton_jax.rl.sweep`)."""
    if "sweep" in config:
        from lepton_jax.rl import sweep

        sweep.parse(config, tuple(config.sweep.keys()))


def check_on_policy(config) -> None:
    """The launch check of an on-policy config: its derived sizes exist (see `on_policy_derived`)."""
    if "num_steps" in config:
        on_policy_derived(config)


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
