"""Evaluates a trained agent: episodes per seed from the newest checkpoint of a workdir.

    python -m scripts.evaluate --workdir=runs/ppo-CartPole-v1-1a2b3c4d --episodes=100 [--render]

Prints the greedy policy's return per seed and mean ± std across seeds, and writes `eval.json` into the workdir
(keys as in results.json: `eval/return_mean`, `eval/return_std`, `per_seed/eval/return`). For a run whose config
has `eval_sampled` (the MinAtar PPO presets) it also evaluates the stochastic policy on the same episodes
(`eval/sampled_return_mean`, ...). For a hyperparameter sweep it does so per swept value (`eval.json`:
`sweep/<value>/eval/return_mean`, ...). `--render` also writes `plots/episode.png`, a strip of frames of one
episode of seed 0 (of the first swept value; image-observation envs such as MinAtar, and CartPole drawn from its
state).

It evaluates the workdirs of the RL trainers (every trainer whose module defines `make_agent`: the agents and
graph RL); for any other trainer it says so in one line (their final evaluation is in results.json).
"""

import json
import os
import sys

from absl import flags, logging

from scripts import cli

_EPISODES = flags.DEFINE_integer("episodes", 32, "Episodes per seed.", lower_bound=1)
_SEED = flags.DEFINE_integer("eval_seed", 12345, "Seed of the evaluation episodes.", lower_bound=0)
_RENDER = flags.DEFINE_bool("render", False, "Also write plots/episode.png of one episode.")
_FRAMES = flags.DEFINE_integer("frames", 12, "Frames in the rendered strip.", lower_bound=1)


def prepare(argv: list[str]):
    """The checks made before anything is built: the flags, and a workdir holding an RL run's valid config.json.

    Returns `(config, the trainer's make_agent)`.
    """
    import ml_collections

    from lepton_jax import config as config_lib
    from lepton_jax import registry
    from lepton_jax.errors import UserError
    from scripts import trainers

    cli.parse_flags(argv)
    workdir = cli.WORKDIR.value
    path = os.path.join(workdir or "", "config.json")
    if not workdir or not os.path.isfile(path):
        raise UserError(f"no config.json in --workdir={workdir}; pass the directory of a training run")
    config = ml_collections.ConfigDict(config_lib.read_json(path, "the run's config"))
    config_lib.require("trainer" in config, f"{path} names no trainer; it is not the config of a training run")
    trainers.load()
    module = registry.module_of(config.trainer)
    if not hasattr(module, "make_agent"):
        rl = [n for n in trainers.names(trainers.RL_PILLARS) if hasattr(registry.module_of(n), "make_agent")]
        raise UserError(
            f"scripts.evaluate evaluates the RL trainers ({', '.join(rl)}); trainer '{config.trainer}' "
            f"reports its final evaluation in {os.path.join(workdir, 'results.json')}"
        )
    trainers.validate(config)
    if _RENDER.value:
        from lepton_jax.rl import envs, render

        render.check_renderable(envs.make_env(config.env_name))  # before the evaluation, not after it
    return config, module.make_agent


def evaluate(argv: list[str]) -> None:
    config, make_agent = prepare(argv)
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    import jax
    import numpy as np

    from lepton_jax import metrics, seeds
    from lepton_jax.rl import loop, render, sweep

    workdir = cli.WORKDIR.value
    agent, spec, state, update = loop.restore_for_evaluation(config, workdir, make_agent)
    runs = sweep.parse(config, agent.sweepable)  # the runs are the seeds, or every swept value x every seed
    keys = runs.run_keys(jax.random.split(jax.random.PRNGKey(_SEED.value), config.num_seeds))
    result = {"episodes_per_seed": _EPISODES.value, "checkpoint_update": int(update)}
    for name, run_episodes in loop.eval_policies(config, agent, spec, _EPISODES.value).items():
        returns = np.asarray(jax.jit(jax.vmap(run_episodes))(state.train_state.params, keys))  # (runs, episodes)
        what = name.removeprefix("eval/").replace("_", " ")
        for label, per_seed in zip(runs.labels, runs.by_point(returns.mean(axis=1))):
            prefix, point = (f"sweep/{label}/", f"{label}: ") if label else ("", "")
            result[f"{prefix}{name}_mean"] = float(per_seed.mean())
            result[f"{prefix}{name}_std"] = float(per_seed.std())
            result[f"{prefix}per_seed/{name}"] = per_seed.tolist()
            for i, value in enumerate(per_seed):
                print(f"{point}seed {i}: {what} {value:.2f}")
            print(f"{point}{what} {per_seed.mean():.2f} ± {per_seed.std():.2f} over {len(per_seed)} seeds")
    if _RENDER.value:
        params = seeds.tree_slice(state.train_state.params, 0)
        out = os.path.join(workdir, "plots", "episode.png")
        render.episode_strip(spec, agent.act, params, jax.random.PRNGKey(_SEED.value), out, _FRAMES.value)
        result["render"] = out
        print(f"frames: {out}")
    tmp = os.path.join(workdir, "eval.json.tmp")
    with open(tmp, "w") as f:
        json.dump(metrics.strict_json(result), f, indent=2, allow_nan=False)
    os.replace(tmp, os.path.join(workdir, "eval.json"))


if __name__ == "__main__":
    sys.exit(cli.run(evaluate, sys.argv))
