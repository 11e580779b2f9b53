"""Configs of the graph-RL trainers (S2V-DQN, GNN-PPO).

`KEYS` declares their keys (the agents' ones, `agents.configs.KEYS`, plus the graph network's and the final
evaluation's) and `CHECKS` what is checked at launch: the graph env names, the generalisation sets included, so a
misspelled set is refused before training rather than after it.
"""

from agents import configs as agent_configs
from lepton_jax import placement
from lepton_jax.config import ANY_TEXT, FLAG, POSITIVE, count, one_of, require
from lepton_jax.rl import config as rl_config

KEYS = {
    **agent_configs.KEYS,
    "features": count(1),
    "rounds": count(1),
    "aggregation": one_of("sum", "mean"),  # `graphs.rl.policies`
    "pooling": one_of("sum", "mean"),
    "relative_features": FLAG,
    "gain_units": one_of("scaled", "reward"),
    "eval_graphs": count(1),
    "eval_set_seed": count(0),
    "generalization": ANY_TEXT,  # comma-separated env names
    "generalization_graphs": count(1),
    "ilp_time_limit": POSITIVE,
    "generalization_ilp_time_limit": POSITIVE,
}


def check_env_names(config) -> None:
    """The training env and every generalisation set are graph envs of one problem (`graphs.rl.envs` names)."""
    from graphs.rl.envs import factory
    from lepton_jax.errors import UserError

    def parse(key, name):
        try:
            return factory.parse_name(name)[0]
        except UserError as error:
            raise UserError(f"config.{key}: {error}") from None

    problem = parse("env_name", config.env_name)
    for name in (n.strip() for n in config.generalization.split(",")):
        if name:
            other = parse("generalization", name)
            require(
                other == problem,
                f"config.generalization: {name} is a different problem from config.env_name={config.env_name}",
            )


CHECKS = (
    rl_config.check_sweep,
    rl_config.check_on_policy,
    agent_configs.check_replay,
    check_env_names,
    placement.check,
)
