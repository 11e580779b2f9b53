"""A2C on a gymnax env.

    python -m scripts.train --config=agents/configs/a2c.py:CartPole-v1 --workdir=runs/a2c_cartpole

The arg is the env name, optionally followed by `,smoke`. CartPole: 16 envs x 5 steps, n-step returns
(gae_lambda = 1), Adam 7e-4, 10^6 env steps.
"""

import ml_collections

from agents.configs import common
from lepton_jax.rl.config import ON_POLICY_SWEEPABLE

PRESETS = {"CartPole-v1": {}}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c, smoke, preset = common.base("a2c", arg, PRESETS, ON_POLICY_SWEEPABLE)
    c.total_timesteps = 1_000_000  # per seed
    c.num_envs = 16
    c.num_steps = 5
    c.gae_lambda = 1.0  # 1: A2C's n-step returns; < 1: GAE
    c.lr = 7e-4
    c.schedule = "linear"  # Adam (eps 1e-5), the rate annealed to 0 over the run
    c.opt_eps = 1e-5
    c.max_grad_norm = 0.5
    c.gamma = 0.99
    c.ent_coef = 0.01
    c.vf_coef = 0.5
    c.normalize_advantages = False
    c.reward_scale = 1.0
    c.bootstrap_truncated = True
    c.hidden_sizes = (64, 64)
    c.activation = "tanh"
    c.chunk_updates = 1000
    c.checkpoint_every_chunks = 2
    smoke_sizes = {"num_envs": 4, "num_steps": 5, "total_timesteps": 4 * 5 * 8, "chunk_updates": 2}
    return common.finish(c, preset, smoke, smoke_sizes)
