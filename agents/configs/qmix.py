"""QMIX and VDN (`agents/qmix.py`) on a cooperative multi-agent env; the arg is `ENV[,vdn][,smoke]`.

    python -m scripts.train --config=agents/configs/qmix.py:matrix_two_step --workdir=runs/qmix_two_step
    python -m scripts.train --config=agents/configs/qmix.py:matrix_two_step,vdn --workdir=runs/vdn_two_step
    python -m scripts.train --config=agents/configs/qmix.py:MPE_simple_spread_v3

`vdn` trains VDN (trainer `vdn`), else QMIX (trainer `qmix`); `smoke` is a seconds-long run for tests. The defaults
are JaxMARL's QLearning baseline for MPE (`baselines/QLearning/config/alg/ql_rnn_mpe.yaml`: 8 envs, a buffer of 5000
episodes, batches of 32, GRU agents of 64 units, a mixer of 32 with hypernetworks of 128, ε 1 -> 0.05 over the
first 10 %, lr 0.005 decaying linearly, gradient clipping at 25, gamma 0.9, the target copied every 200 updates),
except the optimiser: Adam for their RAdam, which the optimiser factory does not offer. SMAX maps take
`ql_rnn_smax.yaml`'s values. A recurrent agent is evaluated on the episode so far (`lepton_jax/rl/marl_view.py`).

The matrix games (`lepton_jax/rl/matrix_games.py`) take the QMIX paper's two-step-game setup: full exploration
(ε = 1 throughout: every joint action equally often), gamma 0.99, RMSprop at 5e-4, a buffer of 500 episodes,
batches of 32, one episode and one gradient step per update, the target copied every 100 episodes, feed-forward
agents of 64 units and a mixer of 8 with one-layer hypernetworks; 5000 episodes, a few seconds per run on a CPU.
"""

import ml_collections

from agents.configs import common
from lepton_jax.rl.config import DQN_SWEEPABLE

MATRIX_PREFIX = "matrix_"
# The paper's setup for its two-step game (module doc), in env steps: a one-step game's episode is 1 step, the
# two-step game's 2.
MATRIX = {
    "num_envs": 1,
    "gradient_steps": 1,
    "buffer_episodes": 500,
    "batch_size": 32,
    "learning_starts": 0,  # from the first full batch
    "eps_start": 1.0,
    "eps_end": 1.0,
    "gamma": 0.99,
    "optimizer": "rmsprop",
    "lr": 5e-4,
    "schedule": "constant",
    "max_grad_norm": 10.0,
    "recurrent": False,
    "hidden": 64,
    "mixer_embed_dim": 8,
    "mixer_hypernet_hidden": 0,
    "mixer_init_scale": 1.0,
    "chunk_updates": 500,
    "checkpoint_every_chunks": 5,
}
MATRIX_STEPS = {"matrix_two_step": 2}  # steps per episode; the other games have 1
# JaxMARL's `ql_rnn_smax.yaml` (their rollouts are 128 steps of 16 envs; an SMAX episode here is at most 101 steps).
SMAX = {
    "num_envs": 16,
    "gradient_steps": 8,
    "hidden": 512,
    "mixer_embed_dim": 64,
    "mixer_hypernet_hidden": 256,
    "max_grad_norm": 10.0,
    "target_update_interval": 10 * 16 * 101,  # 10 updates
    "lr": 5e-5,
    "schedule": "constant",
    "gamma": 0.99,
    "reward_scale": 10.0,
}
PRESETS = {"SMAX_3m": SMAX, "SMAX_2s3z": SMAX}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    parts = [p for p in (arg or "").split(",") if p]
    trainer = "vdn" if "vdn" in parts else "qmix"
    rest = ",".join(p for p in parts if p not in ("vdn", "qmix"))
    c, smoke, preset = common.base(trainer, rest, PRESETS, DQN_SWEEPABLE, default_env="MPE_simple_spread_v3")
    defaults(c, trainer)
    smoke_sizes = dict(SMOKE_SIZES)
    if c.env_name.startswith(MATRIX_PREFIX):
        steps = MATRIX_STEPS.get(c.env_name, 1)
        preset = dict(MATRIX, total_timesteps=5000 * steps, target_update_interval=100 * steps)
        smoke_sizes["total_timesteps"] = 2 * 12 * steps  # 12 updates of 2 envs
    if trainer == "vdn":  # VDN's sum has no mixer keys
        preset, smoke_sizes = (
            {k: v for k, v in d.items() if not k.startswith("mixer_")} for d in (preset, smoke_sizes)
        )
    return common.finish(c, preset, smoke, smoke_sizes)


def _without_mixer(values: dict) -> dict:
    return {k: v for k, v in values.items() if not k.startswith("mixer_")}


def defaults(c: ml_collections.ConfigDict, trainer: str) -> None:
    """JaxMARL's MPE QLearning hyperparameters, set on `c` (QMIX's mixer keys only for `qmix`)."""
    c.total_timesteps = 10_000_000  # per seed
    c.num_envs = 8  # episodes per update
    c.gradient_steps = 1  # per update
    c.buffer_episodes = 5000
    c.batch_size = 32  # episodes
    c.learning_starts = 10_000  # env steps before the first gradient step
    c.hidden = 64  # the agent network's width (dense and GRU)
    c.recurrent = True
    if trainer == "qmix":
        c.mixer_embed_dim = 32
        c.mixer_hypernet_hidden = 128  # 0: one dense layer per hypernetwork (the QMIX paper's)
        c.mixer_init_scale = 0.001  # the mixer's orthogonal initialisation scale
    c.eps_start = 1.0
    c.eps_end = 0.05
    c.exploration_fraction = 0.1
    c.target_update_interval = 200 * 8 * 26  # env steps: 200 updates of 8 MPE episodes of 26 steps
    c.tau = 1.0  # 1: hard copy; < 1: Polyak averaging at that interval
    c.lr = 0.005
    c.schedule = "linear"  # to 0 over the run
    c.max_grad_norm = 25.0
    c.gamma = 0.9
    c.reward_scale = 1.0
    c.chunk_updates = 100
    c.checkpoint_every_chunks = 2


SMOKE_SIZES = {
    "num_envs": 2,
    "total_timesteps": 2 * 12 * 26,  # 12 updates of 2 MPE episodes
    "buffer_episodes": 16,
    "batch_size": 4,
    "learning_starts": 0,
    "hidden": 8,
    "mixer_embed_dim": 4,
    "mixer_hypernet_hidden": 8,
    "target_update_interval": 4,
    "chunk_updates": 4,
}
