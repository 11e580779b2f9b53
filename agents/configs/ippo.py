"""IPPO on a cooperative multi-agent env (JaxMARL's MPE and SMAX through `lepton_jax/rl/marl.py`).

    python -m scripts.train --config=agents/configs/ippo.py:MPE_simple_spread_v3 --workdir=runs/ippo_spread

The arg is the env name (MPE_simple_spread_v3 by default; MPE_simple_reference_v3, SMAX_3m, SMAX_2s3z), optionally
followed by `,smoke` for a seconds-long run used by the tests. The defaults are JaxMARL's IPPO hyperparameters
(baselines/IPPO/config): `ippo_ff_mpe.yaml` for MPE (16 envs x 128 steps, 4 epochs of 4 minibatches, Adam 2.5e-4
annealed, an MLP 64-64 tanh, 10^7 env steps per seed) and `ippo_rnn_smax.yaml` for SMAX (128 envs, Adam 4e-3, clip
0.05, grad norm 0.25, ReLU; its 128-unit dense + GRU layers become a 128-128 MLP here). Every episode end is
terminal (no time-limit bootstrap), as there. Results report the greedy policy's return (`eval/return`), the
stochastic policy's (`eval/sampled_return`) and the last training episodes' (`train/episode_return`: what JaxMARL
plots), each the team reward summed over an episode (MPE: the agents' mean reward).

Expected on MPE_simple_spread_v3 (4 seeds, 7.5e5 env steps each, `--config.total_timesteps=750000`): training return
-23.0 +- 1.3 (-26.8 at the first update), in about 3 minutes on 2 busy CPU cores; the 10^7 default takes about half
an hour there. On SMAX_3m (4 seeds, `--config.total_timesteps=2000000`): greedy win rate (`eval/win_rate`) 0.84 +- 0.07,
about 9 minutes on 2 idle CPU cores.
"""

import ml_collections

from agents.configs import common
from agents.configs import ppo as ppo_config
from lepton_jax.rl.config import ON_POLICY_SWEEPABLE

DEFAULT_ENV = "MPE_simple_spread_v3"
SMAX_ENVS = ("SMAX_3m", "SMAX_2s3z")

# JaxMARL's IPPO: ippo_ff_mpe.yaml (the defaults below) and ippo_rnn_smax.yaml.
SMAX = {
    "num_envs": 128,
    "lr": 4e-3,
    "clip_eps": 0.05,
    "max_grad_norm": 0.25,
    "hidden_sizes": (128, 128),
    "activation": "relu",
}
PRESETS = {name: SMAX for name in SMAX_ENVS}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return team_config("ippo", arg, PRESETS)


def team_config(trainer: str, arg: str | None, presets: dict) -> ml_collections.ConfigDict:
    """The config of the team trainer `trainer` (IPPO or MAPPO, `agents/ippo.py`): PPO's keys with JaxMARL's MPE
    values, then the env's preset from `presets`."""
    c, smoke, preset = common.base(trainer, arg, presets, ON_POLICY_SWEEPABLE, default_env=DEFAULT_ENV)
    ppo_config.defaults(c)
    c.total_timesteps = 10_000_000  # env steps per seed (each moves every agent)
    c.num_envs = 16
    c.num_steps = 128
    c.lr = 2.5e-4
    c.bootstrap_truncated = False  # every episode end is terminal, as in JaxMARL's baselines
    c.eval_sampled = True  # also the stochastic policy's return (`eval/sampled_return`)
    return common.finish(c, preset, smoke, ppo_config.SMOKE_SIZES)
