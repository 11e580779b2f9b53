"""S2V-DQN (Khalil, Dai et al. 2017) on an on-device graph environment: Minimum Vertex Cover or MaxCut.

    python -m scripts.train --config=graphs/rl/configs/s2v_dqn.py:MVC-ER-15-20 --workdir=runs/s2v/mvc_er_15_20
    python -m scripts.train --config=graphs/rl/configs/s2v_dqn.py:MaxCut-BA-40-50 \
        --config.generalization=MaxCut-BA-100-200,MaxCut-BA-400-500

The arg is the environment, `{MVC,MaxCut}-{ER,BA}-MIN-MAX` (Erdős–Rényi p = 0.15 or Barabási–Albert m = 4 graphs
with MIN..MAX nodes, a new one at every reset), optionally followed by `,smoke`. Training is the project's DQN
(`agents/dqn.py`: replay, n-step targets, target network) with a structure2vec network giving Q(s, v) for every
node v; invalid nodes are masked. After training, every seed's greedy policy solves a fixed, seeded set of
evaluation graphs (saved in the workdir), which are also solved exactly by an ILP and by the heuristics; results.json
holds the approximation ratios, `test/approx_ratio_mean` for the agent.
"""

import ml_collections

from agents.configs import common, dqn
from lepton_jax import config as config_lib

# Exact references are cheap for small graphs; larger ones get a time limit (then the best bound is used and said).
ILP_TIME_LIMIT = 60.0


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c, smoke, preset = common.base("graph_dqn", arg, {}, default_env="MVC-ER-15-20")
    dqn.defaults(c)  # the project's DQN, then what differs on graphs:
    graph_config(c)
    c.total_timesteps = 200_000  # per seed
    c.num_envs = 32
    c.rollout_steps = 4  # env steps of every env per update
    c.gradient_steps = 4
    c.buffer_size = 50_000  # transitions
    c.batch_size = 64
    c.learning_starts = 5_000
    c.lr = 5e-4
    c.huber_delta = 10.0
    c.gamma = 1.0  # episodes are short and finite; the objective is the undiscounted solution quality
    c.exploration_fraction = 0.3
    c.target_update_interval = 2_000  # env steps
    c.double_dqn = True
    c.n_step = 3
    c.hidden_sizes = ()  # not used by the graph network (nor is `dueling`)
    c.chunk_updates = 250
    smoke_sizes = {
        "num_envs": 4,
        "rollout_steps": 2,
        "gradient_steps": 1,
        "total_timesteps": 4 * 2 * 8,
        "learning_starts": 16,
        "buffer_size": 64,
        "batch_size": 8,
        "target_update_interval": 16,
        "chunk_updates": 4,
        "features": 16,
        "rounds": 2,
        "eval_graphs": 4,
    }
    return common.finish(c, preset, smoke, smoke_sizes)


def graph_config(c: ml_collections.ConfigDict) -> None:
    """The graph network and the evaluation on fixed graph sets, shared by the graph agents' configs."""
    c.features = 64  # embedding size
    c.rounds = 4  # structure2vec rounds (T)
    c.aggregation = "mean"  # neighbour aggregation: "mean", or "sum" (S2V-DQN's)
    c.pooling = "mean"  # graph summary in the heads: "mean", or "sum" (S2V-DQN's)
    c.relative_features = True  # node features relative to the graph's largest value (generalises to larger graphs)
    # "scaled": the environments' gain / (n - 1). "reward": the gain in the objective's units (x (n - 1)), as the
    # Q-values are; for MaxCut (where the gain is the action's reward) that is the default, with absolute features.
    c.gain_units = "scaled"
    if c.env_name.startswith("MaxCut"):
        c.relative_features = False  # relative features would divide the gain by its largest value again
        c.gain_units = "reward"
    c.eval_graphs = 100  # graphs in the fixed evaluation set of the training distribution
    c.eval_set_seed = 2017
    c.generalization = ""  # comma-separated env names whose fixed sets are also solved (e.g. larger graphs)
    c.generalization_graphs = 20
    c.ilp_time_limit = ILP_TIME_LIMIT  # seconds per graph
    c.generalization_ilp_time_limit = 10.0  # seconds per graph of the (large) generalisation sets
    # The evaluation sets solved on the CPU device (`placement.eval`); S2V-DQN's replay buffer in host memory.
    config_lib.technique_keys(c, "placement")
