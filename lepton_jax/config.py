"""Config helpers: validation and saving.

Configs are Python files returning an `ml_collections.ConfigDict` from `get_config(arg)`. Values that follow from
others (number of updates, minibatch size, ...) are computed from the config each time they are needed, by the
pillar that needs them (RL's in `lepton_jax/rl/config.py`), never written back into it, so a
`--config.num_envs=...` override can never leave a stale derived value behind.
"""

import json
import os

import ml_collections

from lepton_jax.errors import UserError


def require(condition: bool, message: str) -> None:
    """Raises a one-line `UserError` when a config value is unusable."""
    if not condition:
        raise UserError(message)


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
