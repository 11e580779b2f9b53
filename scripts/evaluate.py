"""Evaluates a trained agent: deterministic episodes per seed from the newest checkpoint of a workdir.

    python -m scripts.evaluate --workdir=runs/ppo-CartPole-v1-1a2b3c4d --episodes=100 [--render]

Prints the return per seed and mean ± std across seeds, and writes `eval.json` into the workdir (keys as in
results.json: `eval/return_mean`, `eval/return_std`, `per_seed/eval/return`). For a
hyperparameter sweep it does so per swept value (`eval.json`: `sweep/<value>/eval/return_mean`, ...). `--render`
also writes `plots/episode.png`, a strip of frames of one episode of seed 0 (of the first swept value;
image-observation envs such as MinAtar, and CartPole drawn from its state).

It evaluates the workdirs of the RL trainers (every trainer whose module defines `make_agent`: the agents and
graph RL); for any other trainer it says so in one line (their final evaluation is in results.json).
"""

import json
import os
import sys

from absl import app, flags, logging

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's directory (holds config.json and checkpoints/).")
_EPISODES = flags.DEFINE_integer("episodes", 32, "Deterministic episodes per seed.")
_SEED = flags.DEFINE_integer("seed", 12345, "Seed of the evaluation episodes.")
_RENDER = flags.DEFINE_bool("render", False, "Also write plots/episode.png of one episode.")
_FRAMES = flags.DEFINE_integer("frames", 12, "Frames in the rendered strip.")


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    import jax
    import ml_collections
    import numpy as np

    from lepton_jax import registry, seeds
    from lepton_jax.errors import UserError
    from lepton_jax.rl import envs, loop, render, sweep
    from scripts import trainers

    trainers.load()

    try:
        path = os.path.join(_WORKDIR.value or "", "config.json")
        if not _WORKDIR.value or not os.path.isfile(path):
            raise UserError(f"no config.json in --workdir={_WORKDIR.value}; pass the directory of a training run")
        with open(path) as f:
            config = ml_collections.ConfigDict(json.load(f))
        module = registry.module_of(config.trainer)
        if not hasattr(module, "make_agent"):
            rl = trainers.names(trainers.RL_PILLARS)
            raise UserError(
                f"scripts.evaluate evaluates the RL trainers ({', '.join(rl)}); trainer '{config.trainer}' "
                f"reports its final evaluation in {os.path.join(_WORKDIR.value, 'results.json')}"
            )
        make_agent = module.make_agent
        agent, spec, state, update = loop.restore_for_evaluation(config, _WORKDIR.value, make_agent)
        runs = sweep.parse(config, agent.sweepable)  # the runs are the seeds, or every swept value x every seed
        keys = runs.run_keys(jax.random.split(jax.random.PRNGKey(_SEED.value), config.num_seeds))
        evaluate = jax.jit(jax.vmap(lambda p, k: envs.evaluate(spec, agent.act, p, k, _EPISODES.value)))
        returns = np.asarray(evaluate(state.train_state.params, keys))  # (runs, episodes)
        result = {"episodes_per_seed": _EPISODES.value, "checkpoint_update": int(update)}
        for label, per_seed in zip(runs.labels, runs.by_point(returns.mean(axis=1))):
            prefix, name = (f"sweep/{label}/", f"{label}: ") if label else ("", "")
            result[prefix + "eval/return_mean"] = float(per_seed.mean())
            result[prefix + "eval/return_std"] = float(per_seed.std())
            result[f"{prefix}per_seed/eval/return"] = per_seed.tolist()
            for i, value in enumerate(per_seed):
                print(f"{name}seed {i}: {value:.2f}")
            print(f"{name}return {per_seed.mean():.2f} ± {per_seed.std():.2f} over {len(per_seed)} seeds")
        if _RENDER.value:
            params = seeds.tree_slice(state.train_state.params, 0)
            out = os.path.join(_WORKDIR.value, "plots", "episode.png")
            render.episode_strip(spec, agent.act, params, jax.random.PRNGKey(_SEED.value), out, _FRAMES.value)
            result["render"] = out
            print(f"frames: {out}")
        with open(os.path.join(_WORKDIR.value, "eval.json"), "w") as f:
            json.dump(result, f, indent=2)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
