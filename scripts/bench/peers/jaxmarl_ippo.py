"""JaxMARL's own IPPO baseline, timed like ours: `python -I jaxmarl_ippo.py SCRIPT PROBLEM_JSON OUT_PATH`.

SCRIPT is JaxMARL's `baselines/IPPO/ippo_ff_mpe.py`, extracted from a JaxMARL checkout by `scripts/bench/marl.py`
and run unchanged: it is imported as a module and its `make_train(config)` is called with PROBLEM_JSON's `config`
(their upper-case keys). Runs in the jaxmarl venv (see `scripts/bench/marl.py`), never in the project's.

Their `train` logs every update's metrics through `wandb.log` (an `io_callback`, so a host round trip per update
stays in what is timed, as in their runs). wandb itself is not installed: a stub module whose `init` and `log` do
nothing stands in for it (their own config runs with `WANDB_MODE: disabled`, where `log` also does nothing).

Compiles `train` ahead of time (`jax.jit(train).lower(key).compile()`), keeps the fastest of `repeats` timed runs,
and writes JSON to OUT_PATH: compile_s, train_s, steps (NUM_ENVS x NUM_STEPS x NUM_UPDATES) and the training return
per update (their metric: `returned_episode_returns`, averaged over the update's steps, envs and agents).
"""

import importlib.util
import json
import sys
import time
import types
from importlib.metadata import version

import jax
import numpy as np


def stub_wandb() -> None:
    """Puts a `wandb` whose `init` and `log` do nothing where their script's `import wandb` finds it."""
    wandb = types.ModuleType("wandb")
    wandb.init = lambda *args, **kwargs: None
    wandb.log = lambda *args, **kwargs: None
    sys.modules["wandb"] = wandb


def load_script(path: str) -> types.ModuleType:
    """Their script imported as the module `ippo_ff_mpe` (its `@hydra.main` entry point is defined, not run)."""
    spec = importlib.util.spec_from_file_location("ippo_ff_mpe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run(script: str, problem: dict) -> dict:
    stub_wandb()
    module = load_script(script)
    config = dict(problem["config"])  # their make_train writes NUM_ACTORS, NUM_UPDATES, MINIBATCH_SIZE into it
    train = module.make_train(config)
    key = jax.random.PRNGKey(problem["seed"])
    compiled, compile_s = timed(lambda: jax.jit(train).lower(key).compile())
    train_s = float("inf")
    for _ in range(problem["repeats"]):
        out, seconds = timed(lambda: jax.block_until_ready(compiled(key)))
        train_s = min(train_s, seconds)
    returns = np.asarray(out["metrics"]["returned_episode_returns"], np.float64)  # (NUM_UPDATES,)
    return {
        "compile_s": compile_s,
        "train_s": train_s,
        "steps": config["NUM_ENVS"] * config["NUM_STEPS"] * config["NUM_UPDATES"],
        "num_updates": config["NUM_UPDATES"],
        "returned_episode_returns": returns.tolist(),
        "version": f"jaxmarl {version('jaxmarl')}, jax {jax.__version__}",
    }


if __name__ == "__main__":
    script_path, problem_json, out_path = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    result = run(script_path, problem_json)
    with open(out_path, "w") as f:
        json.dump(result, f)
