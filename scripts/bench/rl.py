"""Benchmarks this project's PPO and DQN against rejax and stable-baselines3 on CartPole-v1, PPO against rejax on a
MinAtar game, and how PPO's speed scales.

    python -m scripts.bench.rl --out=/tmp/bench_rl.json [--algos=ppo,dqn,minatar] [--num_seeds=4]   # from the repo root

One run trains the same problem with three implementations and prints, per implementation, compile seconds,
training seconds, training env-steps/s (and gradient steps/s for DQN) and the final deterministic evaluation
return, then the ratios:

- PPO: CleanRL's CartPole settings: 4 envs x 128 steps, 4 epochs x 4 minibatches, 5e5 env steps, 64x64 tanh MLP,
  lr 2.5e-4 annealed.
- DQN: PureJaxRL's/CleanRL's CartPole settings: 10 envs, one gradient step (batch 128) per 10 env steps,
  10^4-transition buffer filled for 10^4 steps first, ε 1 -> 0.05 over half the run, hard target copy every 500 env
  steps, squared TD loss, 5e5 env steps; a 64x64 ReLU Q-network (rejax's is fixed at 64x64).

- ours: `agents.<algo>.make_train(config)`, compiled ahead of time (`jit(...).lower(key).compile()`) so that
  compiling and training are timed apart; with `--num_seeds=N > 1` also PPO's `jit(vmap(train))` over N seeds.
- rejax 0.1.3: it needs gymnax==0.0.9 (five-value `step`) while the project needs gymnax 1.x, so it runs in its own
  venv (`<--peer_venv_dir>/rejax-venv`, created and pip-installed on first use) in a subprocess that runs
  `peers/rejax_gymnax.py` and writes JSON back. Timed the same way as ours.
- stable-baselines3 (PyTorch, CPU) on gymnasium's CartPole-v1, in `<--peer_venv_dir>/sb3-venv`, installed from
  `requirements-bench.txt`, running `peers/sb3_cartpole.py`; torch is never imported by this process.
  `--sb3_timesteps` / `--sb3_dqn_timesteps` run fewer steps (the rate is then measured on what was actually run,
  which is what the table and JSON report).

Then a scaling table for PPO: training steps/s for each `--scaling_envs` value at num_steps=128 and
`--scaling_updates` updates. On 2 idle CPU cores the whole run takes about 10 minutes, most of it SB3 and the
first-time venv installs (~1-2 min, once).

`minatar` (`--minatar_game`, Breakout-MinAtar by default): the game's PPO preset (`agents/configs/ppo.py`; Breakout's:
the gymnax baselines' MLP 256-256 on the flattened 10x10xC grid, 64 envs x 128 steps, at lr 1e-3) for
`--minatar_timesteps` steps, one seed, ours against rejax (whose gymnax 0.0.9 has the same MinAtar games), ours again
without the time-limit bootstrap (rejax has none), and each venv's raw env-step rate (`peers/gymnax_env_rate.py`:
random actions, no network); then steps/s for every `--minatar_widths` x `--minatar_envs` pair (two hidden layers
of that width; num_steps=128, `--scaling_updates` updates). About 5 minutes.
"""

import json
import os
import sys
import time

import jax
import numpy as np
from absl import app, flags

from agents import dqn, ppo
from agents.configs import dqn as dqn_config
from agents.configs import ppo as ppo_config
from lepton_jax import seeds
from lepton_jax.rl import envs
from scripts.bench import common

_PEERS = flags.DEFINE_list("peers", ["ours", "rejax", "sb3"], "Implementations to run: ours, rejax, sb3.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the single-seed runs (the headline comparison).")
_NUM_SEEDS = flags.DEFINE_integer("num_seeds", 1, "If > 1, also train ours and rejax vmapped over this many seeds.")
_ALGOS = flags.DEFINE_list(
    "algos", ["ppo", "dqn", "minatar"], "Comparisons to run: ppo, dqn (CartPole-v1), minatar (PPO on --minatar_game)."
)
_TOTAL = flags.DEFINE_integer("total_timesteps", 500_000, "Env steps per seed for ours and rejax.")
_SB3_TIMESTEPS = flags.DEFINE_integer("sb3_timesteps", None, "Env steps for SB3 PPO (default: as ours).")
_SB3_DQN_TIMESTEPS = flags.DEFINE_integer(
    "sb3_dqn_timesteps", 100_000, "Env steps for SB3 DQN (its steps/s is measured on what it ran)."
)
_REPEATS = flags.DEFINE_integer("repeats", 1, "Timed training runs of each compiled function; the fastest counts.")
_EVAL_EPISODES = flags.DEFINE_integer("eval_episodes", 100, "Episodes of the final deterministic evaluation.")
_SCALING_ENVS = flags.DEFINE_list(
    "scaling_envs", ["16", "64", "256", "1024", "4096"], "num_envs values of the scaling table (empty: skip it)."
)
_MINATAR_GAME = flags.DEFINE_string("minatar_game", "Breakout-MinAtar", "The game of the MinAtar comparison.")
_MINATAR_TOTAL = flags.DEFINE_integer("minatar_timesteps", 2_000_000, "Env steps of the MinAtar comparison (one seed).")
_MINATAR_WIDTHS = flags.DEFINE_list(
    "minatar_widths", ["64", "256", "512"], "MLP widths (two hidden layers) of the MinAtar scaling table."
)
_MINATAR_ENVS = flags.DEFINE_list(
    "minatar_envs", ["16", "64", "256", "1024"], "num_envs values of the MinAtar scaling table (empty: skip it)."
)
_SCALING_UPDATES = flags.DEFINE_integer("scaling_updates", 10, "Updates per scaling run (num_steps stays 128).")
_PEER_VENV_DIR = flags.DEFINE_string(
    "peer_venv_dir", common.PEER_VENV_DIR, "Where the peers' venvs (rejax-venv, sb3-venv) are created and reused."
)
_PEER_TIMEOUT = flags.DEFINE_integer("peer_timeout", 1800, "Seconds before a peer subprocess is killed.")
_OUT = flags.DEFINE_string("out", None, "If set, writes everything as JSON to this file.")

# rejax's set (see requirements-bench.txt): JAX pinned to the project's versions so both compile with the same XLA.
REJAX_PINS = (
    "rejax==0.1.3\ngymnax==0.0.9\ndistrax==0.1.9\njax==0.10.2\njaxlib==0.10.2\nflax==0.12.8\n"
    "optax==0.2.8\nchex==0.1.92\nnumpy==2.4.6\n"
)


def run_peer(peer: str, algo: str, problem: dict) -> dict:
    """Runs the peer's worker (`peers/rejax_gymnax.py` or `peers/sb3_cartpole.py`) for `algo`; returns its JSON."""
    python = {"rejax": _rejax_python, "sb3": _sb3_python}[peer]()
    args = [algo, json.dumps(problem)]
    worker = {"rejax": "rejax_gymnax", "sb3": "sb3_cartpole"}[peer]
    return common.run_worker(python, worker, args, timeout=_PEER_TIMEOUT.value)


def make_config(preset: str = "CartPole-v1", **overrides):
    """The project's PPO config of `preset` with `overrides` assigned."""
    config = ppo_config.get_config(preset)
    for key, value in overrides.items():
        config[key] = value
    return config


def bench_ours(config, seed: int, num_seeds: int = 1, eval_episodes: int = 0, module=ppo) -> dict:
    """Compiles and trains the project's agent `module` (ppo or dqn); times the two apart and evaluates it.

    Args:
      config: the agent's config (its `num_seeds` is ignored; `num_seeds` below decides).
      seed: the seed of the single run, or of the keys split for the vmapped one.
      num_seeds: 1 for `jit(train)`, more for `jit(vmap(train))` over that many seeds.
      eval_episodes: episodes of deterministic evaluation per seed (0: skip it).

    Returns:
      compile_s, train_s (fastest of --repeats), steps (all seeds), eval_return (mean over seeds) and more.
    """
    train = module.make_train(config)
    key = jax.random.PRNGKey(seed)
    keys = key if num_seeds == 1 else jax.random.split(key, num_seeds)
    start = time.perf_counter()
    compiled = jax.jit(train if num_seeds == 1 else jax.vmap(train)).lower(keys).compile()
    compile_s = time.perf_counter() - start
    train_s = float("inf")
    for _ in range(_REPEATS.value):
        start = time.perf_counter()
        state, metrics = jax.block_until_ready(compiled(keys))
        train_s = min(train_s, time.perf_counter() - start)
    agent = module.make_agent(config, envs.make_env(config.env_name))
    steps = agent.num_updates * agent.steps_per_update * num_seeds
    result = {
        "compile_s": compile_s,
        "train_s": train_s,
        "steps": steps,
        "num_seeds": num_seeds,
        "final_train_return": float(np.nanmean(np.asarray(metrics["episode_return"])[..., -1])),
        "version": f"lepton-jax, jax {jax.__version__}",
    }
    if module is dqn:
        # Gradient steps actually taken: none before `learning_starts` env steps are in the buffer.
        result["gradient_steps"] = int(np.asarray(metrics["learning"]).sum()) * config.gradient_steps
    if eval_episodes:
        spec = envs.make_env(config.env_name)
        evaluate = jax.jit(lambda params, k: envs.evaluate(spec, agent.act, params, k, eval_episodes))
        params = state.train_state.params
        eval_key = jax.random.PRNGKey(seed + 1000)
        per_seed = [params] if num_seeds == 1 else seeds.tree_unstack(params)
        returns = [float(np.mean(evaluate(p, eval_key))) for p in per_seed]
        result.update(eval_return=float(np.mean(returns)), eval_return_per_seed=returns)
    return result


def problem_of(config) -> dict:
    """The hyperparameters handed to the peers, read from our config so that all three solve the same problem."""
    keys = (
        "num_envs",
        "num_steps",
        "update_epochs",
        "num_minibatches",
        "lr",
        "gamma",
        "gae_lambda",
        "clip_eps",
        "clip_value_loss",
        "ent_coef",
        "vf_coef",
        "max_grad_norm",
        "activation",
    )
    # The peers take the rate as annealed linearly to 0 (our schedule="linear") or constant.
    return _problem(config, keys, config.num_envs * config.num_steps) | {"anneal_lr": config.schedule == "linear"}


def _problem(config, keys, per_update: int) -> dict:
    """`keys` of `config`, the network's sizes and the budget in whole updates of `per_update` env steps (as ours
    runs, so every implementation trains on the same number of env steps)."""
    problem = {k: config[k] for k in keys}
    problem.update(
        total_timesteps=config.total_timesteps // per_update * per_update, hidden_sizes=list(config.hidden_sizes)
    )
    return problem


def problem_of_dqn(config) -> dict:
    """DQN's shared problem: one gradient step per `num_envs` env steps, a hard target copy every 500 env steps."""
    keys = (
        "num_envs",
        "buffer_size",
        "batch_size",
        "learning_starts",
        "lr",
        "max_grad_norm",
        "gamma",
        "eps_start",
        "eps_end",
        "exploration_fraction",
        "target_update_interval",
        "activation",
    )
    return _problem(config, keys, config.num_envs * config.rollout_steps)


def dqn_bench_config(total_timesteps: int):
    """Our CartPole DQN preset, with rejax's fixed 64x64 Q-network so that all three train the same network."""
    config = dqn_config.get_config("CartPole-v1")
    config.total_timesteps = total_timesteps
    config.hidden_sizes = (64, 64)
    config.num_seeds = 1
    return config


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_tables(results: dict, ratios: dict, scaling: list, title: str = "PPO on CartPole-v1") -> None:
    print(f"\n{title}, same hyperparameters (2-core CPU unless noted); steps/s is training only")
    header = (
        f"{'run':<27}{'seeds':>6}{'compile s':>11}{'train s':>9}{'env steps':>11}{'steps/s':>11}"
        f"{'eval return':>13}  version"
    )
    print(header + "\n" + "-" * len(header))
    for name, r in results.items():
        print(
            f"{name:<27}{r['num_seeds']:>6}{fmt(r['compile_s'], '.1f'):>11}{r['train_s']:>9.1f}{r['steps']:>11,}"
            f"{r['steps_per_s']:>11,.0f}{fmt(r.get('eval_return'), '.1f'):>13}  {r['version']}"
            + (f", {r['gradient_steps'] / r['train_s']:,.0f} gradient steps/s" if "gradient_steps" in r else "")
        )
    for name, ratio in ratios.items():
        print(f"  {name}: {ratio:.2f}x")
    if scaling:
        print("\nScaling of ours (num_steps=128, training only)")
        print(f"{'num_envs':>9}{'updates':>9}{'compile s':>11}{'train s':>9}{'env steps':>12}{'steps/s':>13}")
        for r in scaling:
            print(
                f"{r['num_envs']:>9}{r['updates']:>9}{r['compile_s']:>11.1f}{r['train_s']:>9.2f}{r['steps']:>12,}"
                f"{r['steps_per_s']:>13,.0f}"
            )


def _ratios(results: dict, per_second: str = "steps_per_s", what: str = "training steps/s") -> dict:
    return {
        f"{what}, ours / {peer}": results["ours"][per_second] / results[peer][per_second]
        for peer in ("rejax", "sb3")
        if "ours" in results and peer in results and per_second in results[peer]
    }


def run_all(config, problem: dict, module, algo: str, num_seeds: int | None = None) -> dict:
    """Ours (one seed, and vmapped over `num_seeds`, default --num_seeds), rejax and SB3 (CartPole only) on the same
    problem; adds steps_per_s."""
    num_seeds = _NUM_SEEDS.value if num_seeds is None else num_seeds
    results = {}
    if "ours" in _PEERS.value:
        print(f"ours: {algo}, single seed...", flush=True)
        results["ours"] = bench_ours(config, _SEED.value, 1, _EVAL_EPISODES.value, module)
        if num_seeds > 1:
            print(f"ours: {algo}, vmap over {num_seeds} seeds...", flush=True)
            results["ours (vmap)"] = bench_ours(config, _SEED.value, num_seeds, _EVAL_EPISODES.value, module)
    if "rejax" in _PEERS.value:
        print(f"rejax: {algo}...", flush=True)
        peer = run_peer("rejax", algo, problem)
        results["rejax"] = peer["single"]
        if "vmap" in peer:
            results["rejax (vmap)"] = peer["vmap"]
    if "sb3" in _PEERS.value and problem.get("env", "CartPole-v1") == "CartPole-v1":  # SB3 has no MinAtar
        print(f"sb3: {algo}, {problem['sb3_timesteps']:,} steps...", flush=True)
        results["sb3"] = run_peer("sb3", algo, problem)["single"]
    for r in results.values():
        r["steps_per_s"] = r["steps"] / r["train_s"]
    return results


def bench_ppo(load_before: float) -> dict:
    config = make_config(total_timesteps=_TOTAL.value, num_seeds=_NUM_SEEDS.value)
    problem = problem_of(config)
    problem.update(
        seed=_SEED.value,
        num_seeds=_NUM_SEEDS.value,
        repeats=_REPEATS.value,
        eval_episodes=_EVAL_EPISODES.value,
        sb3_timesteps=_SB3_TIMESTEPS.value or problem["total_timesteps"],
    )
    print("PPO problem:", json.dumps(problem), flush=True)
    results = run_all(config, problem, ppo, "ppo")

    scaling = []
    for num_envs in [int(n) for n in _SCALING_ENVS.value]:
        print(f"scaling: num_envs={num_envs}...", flush=True)
        scaled = make_config(num_envs=num_envs, num_steps=128, total_timesteps=num_envs * 128 * _SCALING_UPDATES.value)
        r = bench_ours(scaled, _SEED.value)
        scaling.append(
            {
                "num_envs": num_envs,
                "updates": _SCALING_UPDATES.value,
                "compile_s": r["compile_s"],
                "train_s": r["train_s"],
                "steps": r["steps"],
                "steps_per_s": r["steps"] / r["train_s"],
            }
        )
    ratios = _ratios(results)
    print_tables(results, ratios, scaling)
    return {"problem": problem, "results": results, "ratios": ratios, "scaling": scaling}


def bench_minatar(load_before: float) -> dict:
    """Ours against rejax on a MinAtar game with the gymnax-baselines preset, then steps/s by width x num_envs."""
    game = _MINATAR_GAME.value
    config = make_config(game, total_timesteps=_MINATAR_TOTAL.value, num_seeds=1)
    problem = problem_of(config)
    problem.update(env=game, seed=_SEED.value, num_seeds=1, repeats=_REPEATS.value, eval_episodes=_EVAL_EPISODES.value)
    print(f"PPO on {game}:", json.dumps(problem), flush=True)
    results = run_all(config, problem, ppo, "ppo", num_seeds=1)
    if "ours" in _PEERS.value:
        # What a gap to rejax is made of: our time-limit bootstrap (one more critic pass, over the pre-reset
        # observations, per update; rejax has none) and the env itself (rejax's venv has an older gymnax).
        print("ours: ppo without the time-limit bootstrap...", flush=True)
        no_bootstrap = make_config(game, total_timesteps=_MINATAR_TOTAL.value, num_seeds=1, bootstrap_truncated=False)
        r = bench_ours(no_bootstrap, _SEED.value, 1, _EVAL_EPISODES.value)
        results["ours, no trunc. bootstrap"] = r | {"steps_per_s": r["steps"] / r["train_s"]}
    env_problem = {"env": game, "num_envs": config.num_envs, "num_steps": config.num_steps, "blocks": 40, "repeats": 3}
    env_rates = {}
    for name in ("ours", "rejax"):
        if name in _PEERS.value:
            print(f"{name}: raw env steps/s of its gymnax...", flush=True)
            python = sys.executable if name == "ours" else _rejax_python()
            env_rates[name] = common.run_worker(python, "gymnax_env_rate", [json.dumps(env_problem)])
    scaling = []
    for width in [int(w) for w in _MINATAR_WIDTHS.value]:
        for num_envs in [int(n) for n in _MINATAR_ENVS.value]:
            print(f"scaling: width={width} num_envs={num_envs}...", flush=True)
            steps = num_envs * 128 * _SCALING_UPDATES.value
            scaled = make_config(
                game, hidden_sizes=(width, width), num_envs=num_envs, num_steps=128, total_timesteps=steps
            )
            r = bench_ours(scaled, _SEED.value)
            scaling.append(
                {
                    "width": width,
                    "num_envs": num_envs,
                    "updates": _SCALING_UPDATES.value,
                    "compile_s": r["compile_s"],
                    "train_s": r["train_s"],
                    "steps": r["steps"],
                    "steps_per_s": r["steps"] / r["train_s"],
                }
            )
    ratios = _ratios(results)
    print_tables(results, ratios, [], f"PPO (gymnax-baselines preset) on {game}")
    for name, r in env_rates.items():
        print(
            f"raw env steps/s, {name} ({r['version']}, {config.num_envs} envs, random actions): {r['steps_per_s']:,.0f}"
        )
    if scaling:
        print(f"\nScaling of ours on {game}: training env steps/s (num_steps=128, {_SCALING_UPDATES.value} updates)")
        envs_list = sorted({r["num_envs"] for r in scaling})
        print(f"{'width':>7}" + "".join(f"{f'{n} envs':>13}" for n in envs_list))
        for width in sorted({r["width"] for r in scaling}):
            row = {r["num_envs"]: r["steps_per_s"] for r in scaling if r["width"] == width}
            print(f"{width:>7}" + "".join(f"{row[n]:>13,.0f}" for n in envs_list))
    return {"problem": problem, "results": results, "ratios": ratios, "scaling": scaling, "env_rates": env_rates}


def bench_dqn(load_before: float) -> dict:
    config = dqn_bench_config(_TOTAL.value)
    problem = problem_of_dqn(config)
    problem.update(
        seed=_SEED.value,
        num_seeds=_NUM_SEEDS.value,
        repeats=_REPEATS.value,
        eval_episodes=_EVAL_EPISODES.value,
        sb3_timesteps=_SB3_DQN_TIMESTEPS.value,
    )
    print("DQN problem:", json.dumps(problem), flush=True)
    results = run_all(config, problem, dqn, "dqn")
    for r in results.values():
        r["gradient_steps_per_s"] = r["gradient_steps"] / r["train_s"]
    ratios = {**_ratios(results), **_ratios(results, "gradient_steps_per_s", "gradient steps/s")}
    print_tables(results, ratios, [], "DQN on CartPole-v1")
    return {"problem": problem, "results": results, "ratios": ratios}


def _rejax_python() -> str:
    return common.ensure_venv(os.path.join(_PEER_VENV_DIR.value, "rejax-venv"), REJAX_PINS)


def _sb3_python() -> str:
    with open(os.path.join(common.REPO, "requirements-bench.txt")) as f:
        return common.ensure_venv(os.path.join(_PEER_VENV_DIR.value, "sb3-venv"), f.read())


def main(argv):
    del argv
    unknown = (set(_PEERS.value) - {"ours", "rejax", "sb3"}) | (set(_ALGOS.value) - {"ppo", "dqn", "minatar"})
    if unknown:
        raise app.UsageError(f"unknown --peers/--algos {sorted(unknown)}; valid: ours, rejax, sb3 / ppo, dqn, minatar")
    load_before = common.warn_if_busy()  # timings on 2 cores are only comparable on an idle machine
    report = {"command": sys.argv}
    if "ppo" in _ALGOS.value:
        report["ppo"] = bench_ppo(load_before)
    if "dqn" in _ALGOS.value:
        report["dqn"] = bench_dqn(load_before)
    if "minatar" in _ALGOS.value:
        report["minatar"] = bench_minatar(load_before)
    report["machine"] = common.machine(load_before)
    if _OUT.value:
        common.write_report(_OUT.value, report)


if __name__ == "__main__":
    app.run(main)
