"""PPO on a gymnax env.

    python -m scripts.train --config=agents/configs/ppo.py:CartPole-v1 --workdir=runs/ppo_cartpole

The arg is the env name (any of gymnax's registered envs), optionally followed by `,smoke` for a seconds-long run
used by the tests (`ppo.py:smoke` is CartPole's). Tuned presets exist for CartPole-v1 (eval return 500 after
5e5 steps, about 50 s on 2 CPU cores for 4 seeds, compile included), Acrobot-v1, Pendulum-v1 and the MinAtar games
(Breakout, Asterix, Freeway, SpaceInvaders: the gymnax baselines' settings, 10^7 steps; Breakout at twice their
learning rate, Freeway and SpaceInvaders with an MLP 128-128 to fit ~30 minutes); other envs get the CleanRL defaults.
"""

import ml_collections

from agents.configs import common
from lepton_jax import config as config_lib
from lepton_jax.rl.config import ON_POLICY_SWEEPABLE

# Per-env overrides of the defaults below. CartPole uses CleanRL's defaults exactly.
PRESETS = {
    "CartPole-v1": {},
    "Acrobot-v1": {"total_timesteps": 1_000_000, "num_envs": 16},
    "Pendulum-v1": {
        "total_timesteps": 1_000_000,
        "num_envs": 16,
        "num_steps": 64,
        "update_epochs": 10,
        "num_minibatches": 8,
        "lr": 1e-3,
        "gamma": 0.95,
        "ent_coef": 0.0,
        "reward_scale": 0.1,
    },
}
# The published gymnax baselines' PPO for MinAtar (gymnax-blines, the same for every game): 64 envs x 128 steps,
# 8 minibatches x 4 epochs, constant lr 5e-4 (their 5 % warm-up goes from 5e-4 to 5e-4), gamma 0.999, ent 0.01, and
# an MLP 256-256 on the flattened 10x10xC grid. 10^7 steps per seed. They evaluate the stochastic policy (actions
# sampled), so the preset reports that return too (`eval/sampled_return`) beside the greedy one.
MINATAR = {
    "total_timesteps": 10_000_000,
    "num_envs": 64,
    "num_steps": 128,
    "num_minibatches": 8,
    "update_epochs": 4,
    "lr": 5e-4,
    "schedule": "constant",
    "gamma": 0.999,
    "hidden_sizes": (256, 256),
    "activation": "relu",
    "chunk_updates": 20,
    "eval_sampled": True,
}
PRESETS.update({f"{game}-MinAtar": MINATAR for game in common.MINATAR_GAMES})
# Breakout at lr 5e-4 ends with 3 of 4 seeds under 90 % of the baseline at 10^7 steps; a vmapped sweep at 3 * 10^6
# (lr 5e-4, 1e-3 x gamma 0.99, 0.999, 4 seeds) put lr 1e-3 far ahead (30.5 against 14.1 at gamma 0.999), and at
# 10^7 every seed ends above the baseline with it (RESULTS.md, "PPO and DQN on MinAtar at the published budget").
PRESETS["Breakout-MinAtar"] = {**MINATAR, "lr": 1e-3}
# Freeway and SpaceInvaders at 256 units take 38 and 33 minutes on the 2-core CPU; at 128 units 23 and 20, both still
# above the baseline with every seed (RESULTS.md, the same section).
PRESETS.update({f"{game}-MinAtar": {**MINATAR, "hidden_sizes": (128, 128)} for game in ("Freeway", "SpaceInvaders")})
# Their published PPO returns at 10^7 steps (gymnax-blines' README), drawn as the baseline in MinAtar figures.
GYMNAX_BASELINES = {"Breakout-MinAtar": 28, "Asterix-MinAtar": 15, "Freeway-MinAtar": 58, "SpaceInvaders-MinAtar": 131}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c, smoke, preset = common.base("ppo", arg, PRESETS, ON_POLICY_SWEEPABLE)
    defaults(c)
    config_lib.technique_keys(c, "distill")  # a finished PPO run as the teacher (`agents/ppo.py`); off
    return common.finish(c, preset, smoke, SMOKE_SIZES)


def defaults(c: ml_collections.ConfigDict) -> None:
    """PPO's hyperparameters (CartPole's values), set on `c`; other configs built on PPO start from them."""
    c.total_timesteps = 500_000  # per seed
    c.num_envs = 4
    c.num_steps = 128  # rollout length per env
    c.update_epochs = 4
    c.num_minibatches = 4
    c.lr = 2.5e-4
    c.schedule = "linear"  # Adam (eps 1e-5), the rate annealed to 0 over the run
    c.opt_eps = 1e-5
    c.max_grad_norm = 0.5
    c.gamma = 0.99
    c.gae_lambda = 0.95
    c.clip_eps = 0.2
    c.clip_value_loss = True
    c.ent_coef = 0.01
    c.vf_coef = 0.5
    c.reward_scale = 1.0
    c.bootstrap_truncated = True  # add gamma * V(final obs) on time-limit cuts
    c.hidden_sizes = (64, 64)
    c.activation = "tanh"


SMOKE_SIZES = {"num_envs": 4, "num_steps": 16, "total_timesteps": 4 * 16 * 8, "chunk_updates": 2}
