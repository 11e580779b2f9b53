"""DQN (Double DQN, dueling, n-step as flags) on a gymnax env with discrete actions.

    python -m scripts.train --config=agents/configs/dqn.py:CartPole-v1 --workdir=runs/dqn_cartpole
    python -m scripts.train --config=agents/configs/dqn.py:CartPole-v1 --config.double_dqn=True

The arg is the env name, optionally followed by `,smoke` (a seconds-long run for tests; `dqn.py:smoke` is
CartPole's). The defaults are PureJaxRL's / CleanRL's CartPole DQN: 10 envs, 10^4-transition buffer, batch 128,
ε 1 -> 0.05 over half the run, a hard target copy every 500 env steps, one gradient step per 10 env steps.
The MinAtar games (Breakout, Asterix, Freeway, SpaceInvaders) have a preset (below).
"""

import ml_collections

from agents.configs import common
from lepton_jax import config as config_lib
from lepton_jax.rl.config import DQN_SWEEPABLE

# CartPole's rewards (+1 per step, values up to ~100) put a Huber loss with delta 1 in its L1 regime, which fits
# the median TD target: the rare terminal targets (~1 in 10 samples) no longer anchor the values and Q diverges
# (measured: Q ~ 10^5 after 10^5 steps). The squared loss, as in CleanRL and PureJaxRL, learns it in ~6 * 10^4.
PRESETS = {"CartPole-v1": {"loss": "mse"}}
# MinAtar (after Young & Tian 2019's DQN: 100k-transition buffer, lr 2.5e-4, target copy every 1000 steps, gamma 0.99,
# Huber loss; exploration 1 -> 0.05 over the first 10 %), with more envs and fewer gradient steps per env step
# (one per 32, batch 128) to suit a vmapped run, and the PPO baselines' MLP 256-256 on the flattened grid.
MINATAR = {
    "total_timesteps": 10_000_000,
    "num_envs": 32,
    "rollout_steps": 4,
    "gradient_steps": 4,
    "buffer_size": 100_000,
    "batch_size": 128,
    "learning_starts": 10_000,
    "exploration_fraction": 0.1,
    "target_update_interval": 1_000,
    "hidden_sizes": (256, 256),
    # 500 updates (64k env steps per seed) per compiled chunk: the same trained parameters as the default 50, in half
    # the time (measured on SpaceInvaders, 10^6 steps: 157 s against 328 s), and evaluations every 128k steps.
    "chunk_updates": 500,
}
PRESETS.update({f"{game}-MinAtar": MINATAR for game in common.MINATAR_GAMES})
# Freeway and SpaceInvaders at 256 units take 49 and 66 minutes on the 2-core CPU; at 128 units 30 and 24 (idle),
# learning as much (RESULTS.md, "PPO and DQN on MinAtar at the published budget"). Asterix at 128 learns far less.
PRESETS.update({f"{game}-MinAtar": {**MINATAR, "hidden_sizes": (128, 128)} for game in ("Freeway", "SpaceInvaders")})


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c, smoke, preset = common.base("dqn", arg, PRESETS, DQN_SWEEPABLE)
    defaults(c)
    config_lib.technique_keys(c, "placement")  # the replay buffer in device or pinned host memory (`placement.replay`)
    return common.finish(c, preset, smoke, SMOKE_SIZES)


def defaults(c: ml_collections.ConfigDict) -> None:
    """DQN's hyperparameters (CartPole's values), set on `c`; other configs built on DQN start from them."""
    c.total_timesteps = 500_000  # per seed
    c.num_envs = 10
    c.rollout_steps = 10  # env steps of every env per update
    c.gradient_steps = 10  # gradient steps per update: one per 10 env steps
    c.buffer_size = 10_000  # transitions
    c.batch_size = 128
    c.learning_starts = 10_000  # env steps before the first gradient step
    c.lr = 2.5e-4
    c.max_grad_norm = 10.0
    c.loss = "huber"  # or "mse"
    c.huber_delta = 1.0
    c.gamma = 0.99
    c.eps_start = 1.0
    c.eps_end = 0.05
    c.exploration_fraction = 0.5
    c.target_update_interval = 500  # env steps
    c.tau = 1.0  # 1: hard copy; < 1: Polyak averaging
    c.double_dqn = False
    c.dueling = False
    c.n_step = 1
    c.reward_scale = 1.0
    c.hidden_sizes = (120, 84)
    c.activation = "relu"
    c.chunk_updates = 500
    c.checkpoint_every_chunks = 2


SMOKE_SIZES = {
    "num_envs": 4,
    "rollout_steps": 4,
    "gradient_steps": 2,
    "total_timesteps": 4 * 4 * 12,
    "learning_starts": 64,
    "buffer_size": 128,
    "batch_size": 16,
    "target_update_interval": 32,
    "chunk_updates": 4,
}
