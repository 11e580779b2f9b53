"""Config helpers: derived quantities (computed, never written back), validation, and saving.

Configs are Python files returning an `ml_collections.ConfigDict` from `get_config(arg)`. Values that follow from
others (number of updates, minibatch size, ...) are computed here from the config each time they are needed, so a
`--config.num_envs=...` override can never leave a stale derived value behind.
"""

import json
import os
from typing import NamedTuple

import ml_collections

from lepton_jax.errors import UserError


class OnPolicyDerived(NamedTuple):
    steps_per_update: int  # env steps per update, per seed (num_envs * num_steps)
    num_updates: int
    minibatch_size: int  # transitions per gradient step


def require(condition: bool, message: str) -> None:
    """Raises a one-line `UserError` when a config value is unusable."""
    if not condition:
        raise UserError(message)


def on_policy_derived(config: ml_collections.ConfigDict) -> OnPolicyDerived:
    """Derived sizes of an on-policy agent (PPO, A2C, REINFORCE), validated."""
    for key in ("num_envs", "num_steps", "num_minibatches", "update_epochs"):
        require(int(config[key]) >= 1, f"config.{key} must be >= 1, got {config[key]}")
    require(
        config.num_steps % config.num_minibatches == 0,
        f"config.num_steps ({config.num_steps}) must be divisible by config.num_minibatches "
        f"({config.num_minibatches}): each minibatch takes num_steps/num_minibatches steps of every env",
    )
    steps_per_update = config.num_envs * config.num_steps
    num_updates = int(config.total_timesteps) // steps_per_update
    require(
        num_updates >= 1,
        f"config.total_timesteps ({config.total_timesteps}) is smaller than one update "
        f"(num_envs * num_steps = {steps_per_update})",
    )
    return OnPolicyDerived(steps_per_update, num_updates, steps_per_update // config.num_minibatches)


def to_dict(config: ml_collections.ConfigDict) -> dict:
    return json.loads(config.to_json_best_effort())


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes `config.json`; if the workdir already has one from a different config, refuses to mix them."""
    path = os.path.join(workdir, "config.json")
    new = to_dict(config)
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if changed:
            raise UserError(
                f"workdir {workdir} holds a run with a different config (changed: {', '.join(changed)}); "
                "use a new --workdir, or the same flags to resume"
            )
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(new, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
