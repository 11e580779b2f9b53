"""Configs for the agents; each returns an `ml_collections.ConfigDict` from `get_config(arg)`.

`KEYS` declares the agents' keys beyond the RL loop's (`lepton_jax.rl.config.KEYS`) and `CHECKS` the relations
between them, both checked at launch (`lepton_jax.config.validate`).
"""

from agents.nas import METHODS as NAS_METHODS
from lepton_jax import placement
from lepton_jax.config import FLAG, POSITIVE, UNIT, Key, count, number, one_of, require, sizes
from lepton_jax.rl import config as rl_config
from lepton_jax.techniques import distill


def _methods_ok(value: str) -> bool:
    methods = [m.strip() for m in value.split(",")]
    return set(methods) <= set(NAS_METHODS) and len(set(methods)) == len(methods)


KEYS = {
    **rl_config.KEYS,
    # DQN (`agents/dqn.py`)
    "rollout_steps": count(1),
    "gradient_steps": count(1),
    "buffer_size": count(1),
    # VDN and QMIX (`agents/qmix.py`)
    "buffer_episodes": count(1),
    "recurrent": FLAG,
    "mixer_embed_dim": count(1),
    "mixer_hypernet_hidden": count(0),
    "mixer_init_scale": POSITIVE,
    "learning_starts": count(0),
    "loss": one_of("huber", "mse"),
    "huber_delta": POSITIVE,
    "target_update_interval": count(1),
    "tau": number(0, 1, low_open=True),
    "double_dqn": FLAG,
    "dueling": FLAG,
    "n_step": count(1),
    # the torso of every agent's network (`lepton_jax.rl.networks.torso`)
    "conv_filters": count(0),
    # neural architecture search (`agents/nas/`, `agents/configs/nas.py`)
    "search": Key("str", f"comma-separated methods out of {', '.join(NAS_METHODS)}, each once", _methods_ok),
    "max_layers": count(1, 8),
    "filter_choices": sizes(1),
    "kernel_choices": Key(
        "ints", "(distinct odd sizes)", lambda v: len(v) >= 1 and all(k % 2 for k in v) and len(set(v)) == len(v)
    ),
    "children_per_step": count(1),
    "child_epochs": count(1),
    "child_lr": POSITIVE,
    "child_examples": count(0),
    "retrain_epochs": count(1),
    "baseline_decay": UNIT,
    "population_size": count(1),
    "tournament_size": count(1),
}


def check_replay(config) -> None:
    """A DQN config: at least one update, a batch that fits in the buffer, and no sampled evaluation."""
    if "buffer_size" not in config:
        return
    require(
        not config.get("eval_sampled", False),
        "config.eval_sampled: DQN's policy is greedy (its ε-greedy training returns are train/episode_return); "
        "set it to False",
    )
    rl_config.num_updates(config, config.num_envs * config.rollout_steps)
    require(
        config.batch_size <= config.buffer_size,
        f"config.batch_size ({config.batch_size}) is larger than config.buffer_size ({config.buffer_size})",
    )


def check_env(config) -> None:
    """The env exists (gymnax's, or a probe), and has discrete actions for DQN."""
    from lepton_jax.errors import UserError
    from lepton_jax.rl import envs

    if "env_name" not in config:  # neural architecture search: no env
        return
    # The multi-agent env names (`lepton_jax.rl.marl`: JaxMARL's and the matrix games) register on import.
    from lepton_jax.rl import marl  # noqa: F401

    try:
        spec = envs.make_env(config.env_name)
    except UserError as error:
        raise UserError(f"config.env_name: {error}") from None
    if config.get("trainer") in ("ippo", "mappo", "vdn", "qmix"):
        marl.check_team_config(config)
    if "buffer_size" in config:
        require(not spec.continuous, f"DQN needs discrete actions; {spec.name} has continuous ones")
        _check_replay_memory(config, spec)


def _check_replay_memory(config, spec) -> None:
    """The replay buffers of all seeds fit in this machine's memory (float32 observations, a lower bound)."""
    import math
    import os

    if spec.obs_shape is None:
        return
    transition = 4 * (math.prod(spec.obs_shape) + 4)  # the observation, action, reward, done, truncated
    needed = config.num_seeds * config.buffer_size * transition
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    require(
        needed < memory,
        f"config.buffer_size={config.buffer_size} x config.num_seeds={config.num_seeds} needs about "
        f"{needed / 2**30:.1f} GiB of replay memory for {spec.name}; this machine has {memory / 2**30:.1f} GiB",
    )


def check_nas(config) -> None:
    """A search config: its dataset is an image set, a tournament fits in the population, and a validation split
    exists (the children's reward)."""
    if "search" not in config:
        return
    from lepton_jax.vision.data import DATASETS

    require(
        config.dataset in DATASETS,
        f"config.dataset={config.dataset!r} is not an image dataset: choose one of {', '.join(DATASETS)}",
    )
    require(
        config.tournament_size <= config.population_size,
        f"config.tournament_size ({config.tournament_size}) is larger than config.population_size "
        f"({config.population_size})",
    )
    require(
        config.val_fraction > 0,
        f"config.val_fraction={config.val_fraction}: the search scores its children on held-out training images; "
        "set it above 0",
    )


CHECKS = (
    rl_config.check_sweep,
    rl_config.check_on_policy,
    check_replay,
    check_env,
    distill.check_config,
    check_nas,
    placement.check,
)
