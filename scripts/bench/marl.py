"""Benchmarks this project's IPPO against JaxMARL's own IPPO baseline on MPE simple spread: training env steps/s.

    python -m scripts.bench.marl --jaxmarl_repo=/path/to/JaxMARL --total_timesteps=1000000 --repeats=1 \
        --out=/tmp/bench_marl.json   # from the repo root

Both sides train one seed of MPE_simple_spread_v3 with JaxMARL's `baselines/IPPO/config/ippo_ff_mpe.yaml`
hyperparameters, which are the defaults of `agents/configs/ippo.py:MPE_simple_spread_v3` (16 envs x 128 steps,
4 epochs x 4 minibatches, Adam 2.5e-4 annealed linearly, gamma 0.99, GAE lambda 0.95, clip 0.2 (value loss clipped
too), entropy 0.01, value 0.5, grad norm 0.5, a 64-64 tanh MLP for the actor and another for the critic), for
`--total_timesteps` env steps rounded down to whole updates (an env step moves all three agents of one env).

- ours: `agents.ippo.make_train(config)`, compiled ahead of time (`jax.jit(train).lower(key).compile()`) so that
  compiling and training are timed apart, then the fastest of `--repeats` training runs.
- jaxmarl: THEIR script, `baselines/IPPO/ippo_ff_mpe.py`, taken from the JaxMARL checkout `--jaxmarl_repo` (a work
  tree, or a bare git dir whose HEAD holds it) into a temporary directory and run unchanged by
  `peers/jaxmarl_ippo.py`: it imports the file and times its `make_train(config)` the same way, with the config dict
  built here from ours (`jaxmarl_config`). JaxMARL is not on PyPI in this form (the baselines are not in the wheel),
  and the script needs distrax, hydra and omegaconf, so it runs in its own venv (`<--peer_venv_dir>/jaxmarl-venv`,
  pip-installed from `JAXMARL_PINS` on first use: a few minutes) with the project's JAX, Flax and Optax versions.
  wandb is a stub there (`log` and `init` do nothing), as with their config's `WANDB_MODE: disabled`.

Env steps = NUM_ENVS x NUM_STEPS x NUM_UPDATES on both sides. The table gives compile and training seconds, env
steps/s and the final training return, then the ratio of training env steps/s (ours / jaxmarl). The returns are on
one scale: ours is the team return (the agents' mean reward summed over an episode, `train/episode_return`'s
metric, last update); theirs is `returned_episode_returns` averaged over the last update's steps, envs and agents,
divided by the number of agents, since their MPE log wrapper multiplies every reward by it (the raw value is in the
JSON, with both sides' per-update curves).

What differs besides speed (the algorithm is the same PPO): our network reads each agent's observation with the
one-hot of its index appended; our agents share the team reward (their agents each learn from their own, which in
simple spread differs by the agent's collision penalty); our minibatches are slices of envs, theirs shuffled actor
steps; their `train` makes a host callback every update (`wandb.log`), ours none. Random streams differ, so the
returns differ by about a seed's spread.

Measured at 10^6 env steps (999,424: 488 updates), `--repeats=2`, on a 2-core CPU shared with other training (load
average 6.5-8, so the times are loose): ours 34,400 env steps/s (compile 9.4 s, train 29.1 s), JaxMARL's 33,200
(11.2 s, 30.1 s), ratio 1.04x; final training returns -23.4 and -24.3. The run takes under 3 minutes, plus under a
minute to install the venv once.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

from absl import app, flags

from lepton_jax.errors import UserError
from scripts import cli
from scripts.bench import common

_JAXMARL_REPO = flags.DEFINE_string(
    "jaxmarl_repo", None, "A JaxMARL checkout (a work tree or a bare git dir) holding baselines/IPPO/ippo_ff_mpe.py."
)
_PEERS = flags.DEFINE_list("peers", ["ours", "jaxmarl"], "Implementations to run: ours, jaxmarl.")
_SEED = flags.DEFINE_integer("seed", 0, "The seed of both runs.")
_TOTAL = flags.DEFINE_integer("total_timesteps", 1_000_000, "Env steps per side (rounded down to whole updates).")
_REPEATS = flags.DEFINE_integer("repeats", 1, "Timed training runs of each compiled function; the fastest counts.")
_PEER_VENV_DIR = flags.DEFINE_string(
    "peer_venv_dir", common.PEER_VENV_DIR, "Where the peer venv (jaxmarl-venv) is created and reused."
)
_PEER_TIMEOUT = flags.DEFINE_integer("peer_timeout", 1800, "Seconds before the peer subprocess is killed.")
_OUT = flags.DEFINE_string("out", None, "If set, writes everything as JSON to this file.")

PEERS = ("ours", "jaxmarl")
ENV_NAME = "MPE_simple_spread_v3"
SCRIPT = "baselines/IPPO/ippo_ff_mpe.py"
# Their script's imports; JAX, Flax and Optax pinned to the project's versions so both compile with the same XLA.
JAXMARL_PINS = (
    "jaxmarl==0.2.0\ndistrax==0.1.9\njax==0.10.2\njaxlib==0.10.2\nflax==0.12.8\noptax==0.2.8\nchex==0.1.92\n"
    "numpy==2.4.6\ngymnax==1.0.1\nhydra-core==1.3.8\nomegaconf==2.3.1\n"
)
# What their script fixes in code: ours must equal it for the two to train the same problem.
THEIR_FIXED = {
    "hidden_sizes": (64, 64),
    "optimizer": "adam",
    "opt_eps": 1e-5,
    "beta1": 0.9,
    "beta2": 0.999,
    "warmup": 0.0,
    "weight_decay": 0.0,
    "accumulate": 1,
    "clip_value_loss": True,
    "reward_scale": 1.0,
    "bootstrap_truncated": False,
    "precision": "f32",
}
# our key -> their config key, for the hyperparameters their config sets
THEIR_KEYS = {
    "lr": "LR",
    "num_envs": "NUM_ENVS",
    "num_steps": "NUM_STEPS",
    "update_epochs": "UPDATE_EPOCHS",
    "num_minibatches": "NUM_MINIBATCHES",
    "gamma": "GAMMA",
    "gae_lambda": "GAE_LAMBDA",
    "clip_eps": "CLIP_EPS",
    "ent_coef": "ENT_COEF",
    "vf_coef": "VF_COEF",
    "max_grad_norm": "MAX_GRAD_NORM",
    "activation": "ACTIVATION",
    "env_name": "ENV_NAME",
}


def make_config(total_timesteps: int):
    """Our IPPO config on MPE simple spread (JaxMARL's hyperparameters), one seed of `total_timesteps` env steps."""
    from agents.configs import ippo as ippo_config

    config = ippo_config.get_config(ENV_NAME)
    config.total_timesteps = total_timesteps
    config.num_seeds = 1
    return config


def jaxmarl_config(config) -> dict:
    """Their script's config dict with our `config`'s hyperparameters (ippo_ff_mpe.yaml's keys, less the seeds and
    wandb's), the budget in whole updates as ours runs.

    Raises:
      UserError: `config` sets something their script fixes in code (`THEIR_FIXED`) to another value, or a learning
        rate schedule other than linear annealing or a constant one.
    """
    for key, theirs in THEIR_FIXED.items():
        value = tuple(config[key]) if isinstance(theirs, tuple) else config[key]
        if value != theirs:
            raise UserError(f"config.{key}={value!r}: JaxMARL's {SCRIPT} fixes it to {theirs!r}")
    if config.schedule not in ("linear", "constant"):
        raise UserError(f"config.schedule={config.schedule!r}: JaxMARL's {SCRIPT} has linear or constant")
    per_update = config.num_envs * config.num_steps
    their = {theirs: config[ours] for ours, theirs in THEIR_KEYS.items()}
    their.update(
        TOTAL_TIMESTEPS=config.total_timesteps // per_update * per_update,
        ENV_KWARGS={},
        ANNEAL_LR=config.schedule == "linear",
    )
    return their


def _git_show(git_dir: str, *args: str) -> str | None:
    """`git --git-dir=GIT_DIR *args`'s output, or None when it fails (not a git dir, no such file or commit)."""
    proc = subprocess.run(["git", f"--git-dir={git_dir}", *args], capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else None


def extract_script(repo: str | None, dest_dir: str) -> tuple[str, str]:
    """Copies JaxMARL's IPPO script (`SCRIPT`) from the checkout `repo` into `dest_dir`.

    Args:
      repo: a work tree (the file is read from it as it is) or a git dir (bare or `.git`: read from its HEAD).
      dest_dir: where the copy goes.

    Returns:
      (the copy's path, where it came from: HEAD's commit, "+ work tree" added when read from the work tree).

    Raises:
      UserError: no `repo`, no such directory, or no `SCRIPT` in it.
    """
    if not repo:
        raise UserError("--jaxmarl_repo: give the path of a JaxMARL checkout (a work tree or a bare git dir)")
    if not os.path.isdir(repo):
        raise UserError(f"--jaxmarl_repo={repo}: no such directory")
    dest = os.path.join(dest_dir, os.path.basename(SCRIPT))
    # `--git-dir` rather than `-C`: a directory that is no checkout must not be read from a repository around it.
    git_dir = os.path.join(repo, ".git") if os.path.exists(os.path.join(repo, ".git")) else repo
    head = (_git_show(git_dir, "rev-parse", "--short=12", "HEAD") or "unknown commit").strip()
    if os.path.isfile(os.path.join(repo, SCRIPT)):
        shutil.copyfile(os.path.join(repo, SCRIPT), dest)
        return dest, f"{head} + work tree"
    text = _git_show(git_dir, "show", f"HEAD:{SCRIPT}")
    if text is None:
        raise UserError(f"--jaxmarl_repo={repo}: no {SCRIPT} in it (neither in a work tree nor at a git HEAD)")
    with open(dest, "w") as f:
        f.write(text)
    return dest, head


def bench_ours(config, seed: int, repeats: int) -> dict:
    """Compiles and trains `agents.ippo.make_train(config)`; times the two apart (the fastest of `repeats` runs)."""
    import jax
    import numpy as np

    from agents import ippo
    from lepton_jax.rl.config import on_policy_derived

    train = ippo.make_train(config)
    key = jax.random.PRNGKey(seed)
    compiled, compile_s = common.timed(lambda: jax.jit(train).lower(key).compile())
    train_s = float("inf")
    for _ in range(repeats):
        (_, metrics), seconds = common.timed(lambda: jax.block_until_ready(compiled(key)))
        train_s = min(train_s, seconds)
    derived = on_policy_derived(config)
    returns = np.asarray(metrics["episode_return"], np.float64)  # (num_updates,)
    return {
        "compile_s": compile_s,
        "train_s": train_s,
        "steps": derived.num_updates * derived.steps_per_update,
        "num_updates": derived.num_updates,
        "returns": returns.tolist(),
        "final_return": float(returns[-1]),
        "version": f"lepton-jax, jax {jax.__version__}",
    }


def bench_jaxmarl(script: str, their: dict, seed: int, repeats: int, num_agents: int) -> dict:
    """Their script's `make_train(their)` timed by `peers/jaxmarl_ippo.py` in the jaxmarl venv; its return is put on
    our scale (divided by `num_agents`, the factor their MPE log wrapper multiplies rewards by)."""
    python = common.ensure_venv(os.path.join(_PEER_VENV_DIR.value, "jaxmarl-venv"), JAXMARL_PINS)
    problem = {"config": their, "seed": seed, "repeats": repeats}
    result = common.run_worker(python, "jaxmarl_ippo", [script, json.dumps(problem)], timeout=_PEER_TIMEOUT.value)
    raw = result.pop("returned_episode_returns")
    result.update(
        raw_returns=raw,
        raw_final_return=raw[-1],
        returns=[r / num_agents for r in raw],
        final_return=raw[-1] / num_agents,
    )
    return result


def print_table(results: dict, ratio: float | None, their: dict) -> None:
    print(
        f"\nIPPO on {ENV_NAME}, JaxMARL's ippo_ff_mpe hyperparameters ({their['NUM_ENVS']} envs x "
        f"{their['NUM_STEPS']} steps, {their['UPDATE_EPOCHS']} epochs x {their['NUM_MINIBATCHES']} minibatches), "
        "one seed; steps/s is training only"
    )
    header = f"{'run':<9}{'compile s':>11}{'train s':>9}{'env steps':>12}{'steps/s':>10}{'final return':>14}  version"
    print(header + "\n" + "-" * len(header))
    for name, r in results.items():
        print(
            f"{name:<9}{r['compile_s']:>11.1f}{r['train_s']:>9.1f}{r['steps']:>12,}{r['steps_per_s']:>10,.0f}"
            f"{r['final_return']:>14.2f}  {r['version']}"
        )
    if ratio is not None:
        print(f"  training env steps/s, ours / jaxmarl: {ratio:.2f}x")
    if "jaxmarl" in results:
        print(
            "final return: the team return of the last update (jaxmarl: returned_episode_returns / number of agents; "
            f"raw {results['jaxmarl']['raw_final_return']:.2f})"
        )


def run(argv: list[str]) -> None:
    del argv
    unknown = sorted(set(_PEERS.value) - set(PEERS))
    if unknown:
        raise UserError(f"--peers: unknown {', '.join(unknown)}; valid: {', '.join(PEERS)}")
    with tempfile.TemporaryDirectory(prefix="lepton_bench_") as tmp:
        script, source = extract_script(_JAXMARL_REPO.value, tmp) if "jaxmarl" in _PEERS.value else (None, None)
        config = make_config(_TOTAL.value)
        their = jaxmarl_config(config)
        load_before = common.warn_if_busy()  # timings on 2 cores are only comparable on an idle machine
        print("problem:", json.dumps(their), flush=True)
        results, loads = {}, {}
        if "ours" in _PEERS.value:
            print("ours: ippo...", flush=True)
            results["ours"] = bench_ours(config, _SEED.value, _REPEATS.value)
            loads["ours"] = os.getloadavg()[0]
        if script:
            from lepton_jax.rl import marl

            print(f"jaxmarl: {SCRIPT} at {source}...", flush=True)
            num_agents = marl.make(config.env_name).num_agents
            results["jaxmarl"] = bench_jaxmarl(script, their, _SEED.value, _REPEATS.value, num_agents)
            results["jaxmarl"]["version"] += f", {SCRIPT} at {source}"
            loads["jaxmarl"] = os.getloadavg()[0]
    for r in results.values():
        r["steps_per_s"] = r["steps"] / r["train_s"]
    ratio = results["ours"]["steps_per_s"] / results["jaxmarl"]["steps_per_s"] if len(results) == 2 else None
    print_table(results, ratio, their)
    if _OUT.value:
        report = {
            "command": sys.argv,
            "problem": their | {"seed": _SEED.value, "repeats": _REPEATS.value},
            "jaxmarl_script": source,
            "results": results,
            "ratio_steps_per_s": ratio,
            "load_average_after": loads,
            "machine": common.machine(load_before),
        }
        common.write_report(_OUT.value, report)


def main(argv):
    sys.exit(cli.run(run, argv))


if __name__ == "__main__":
    app.run(main)
