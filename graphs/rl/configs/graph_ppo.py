"""PPO with a structure2vec policy (masked per-node logits and a graph value) on a graph environment.

    python -m scripts.train --config=graphs/rl/configs/graph_ppo.py:MVC-ER-15-20 --workdir=runs/gppo/mvc_er_15_20

The same route as S2V-DQN (`graphs/rl/configs/s2v_dqn.py`): the project's PPO (`agents/ppo.py`) with the graph network
plugged in, the same environments, fixed evaluation sets, ILP references and results.json keys.
"""

import ml_collections

from agents.configs import common, ppo
from graphs.rl.configs.s2v_dqn import graph_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c, smoke, preset = common.base("graph_ppo", arg, {}, default_env="MVC-ER-15-20")
    ppo.defaults(c)  # the project's PPO, then what differs on graphs:
    graph_config(c)
    c.total_timesteps = 200_000  # per seed
    c.num_envs = 32
    c.num_steps = 32  # rollout length per env
    c.lr = 3e-4
    c.gamma = 1.0  # finite episodes; the objective is the undiscounted solution quality
    c.hidden_sizes = ()  # not used by the graph network
    c.activation = "relu"
    c.chunk_updates = 20
    smoke_sizes = {
        "num_envs": 4,
        "num_steps": 8,
        "total_timesteps": 4 * 8 * 4,
        "chunk_updates": 2,
        "features": 16,
        "rounds": 2,
        "eval_graphs": 4,
    }
    return common.finish(c, preset, smoke, smoke_sizes)
