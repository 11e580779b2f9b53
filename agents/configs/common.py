"""What every agent config shares: the arg format, the seeds, the loop's cadence, sweeps, and the `smoke` shrink."""

import ml_collections

from lepton_jax import config as config_lib

# The MinAtar games with published gymnax baselines; the agents' configs give each the same preset.
MINATAR_GAMES = ("Breakout", "Asterix", "Freeway", "SpaceInvaders")


def base(
    trainer: str, arg: str | None, presets: dict, sweep: tuple[str, ...] = (), default_env: str = "CartPole-v1"
) -> tuple[ml_collections.ConfigDict, bool, dict]:
    """Parses `ENV[,smoke]` (ENV is `default_env` when not given) and returns the shared part of a config, whether
    `smoke` was asked, and ENV's preset.

    The caller adds its algorithm's keys, then calls `finish` (the preset, then the smoke sizes if smoke).

    `sweep` names the hyperparameters the agent can sweep (its `Agent.sweepable`, declared in
    `lepton_jax/rl/config.py`): each gets a `config.sweep.<name>` field, "" (not swept) by default, or
    comma-separated values (`--config.sweep.lr=1e-3,3e-3`): every value x every seed trains in one program, the
    update reading the run's value for `<name>` (see `lepton_jax/rl/sweep.py`). Several swept names make a grid.
    """
    parts = [p for p in (arg or "").split(",") if p]
    names = [p for p in parts if p != "smoke"]
    c = ml_collections.ConfigDict()
    c.trainer = trainer
    c.env_name = names[0] if names else default_env
    c.seed = 0
    c.num_seeds = 4
    # The loop: updates per jitted chunk; evaluation and checkpoints every few chunks.
    c.chunk_updates = 50
    c.eval_every_chunks = 2
    c.eval_episodes = 16
    # Also evaluate the stochastic policy (actions drawn from it, as the gymnax baselines evaluate): results'
    # `eval/sampled_return`, beside the greedy policy's `eval/return`. Policy-gradient agents only.
    c.eval_sampled = False
    c.checkpoint_every_chunks = 4
    c.keep_checkpoints = 3
    # The torso: an MLP of `hidden_sizes` (0), or on image observations a 3x3 convolution of this many filters first
    # (the MinAtar paper's: 16, with hidden_sizes=(128,)); `lepton_jax/rl/networks.py`.
    c.conv_filters = 0
    if sweep:
        c.sweep = ml_collections.ConfigDict({name: "" for name in sweep})
    return c, "smoke" in parts, presets.get(c.env_name, {})


def finish(c: ml_collections.ConfigDict, preset: dict, smoke: bool, smoke_sizes: dict) -> ml_collections.ConfigDict:
    """Adds the optimiser keys the algorithm did not set (`lepton_jax/techniques/optim.py`), applies the env's
    preset, then (for `smoke`) a seconds-long run: 2 seeds and `smoke_sizes`."""
    config_lib.training_keys(c)
    config_lib.technique_keys(c, "mesh", "prune")
    for key, value in preset.items():
        c[key] = value
    if smoke:
        c.num_seeds = 2
        c.eval_every_chunks = 2
        c.checkpoint_every_chunks = 1
        c.eval_episodes = 2
        for key, value in smoke_sizes.items():
            c[key] = value
    return c
