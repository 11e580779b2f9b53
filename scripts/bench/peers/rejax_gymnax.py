"""rejax's PPO or DQN on a gymnax env, timed like ours: `python -I rejax_gymnax.py {ppo,dqn} PROBLEM_JSON OUT_PATH`.

The env is the problem's `env` (default CartPole-v1; a MinAtar game too: rejax's MLP flattens the grid as ours
does). Runs in the rejax venv (rejax 0.1.3, gymnax 0.0.9; see `scripts/bench/rl.py`), never in the project's: compiles
`algo.train` ahead of time (one seed, and `vmap` over `num_seeds` when that is > 1), keeps the fastest of `repeats`
timed runs, then evaluates each seed's greedy policy for `eval_episodes` episodes. Writes JSON to OUT_PATH.
"""

import json
import sys
import time
from importlib.metadata import version

import jax
import jax.numpy as jnp
import numpy as np
from rejax import DQN, PPO
from rejax.evaluate import evaluate


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def bench(algo, p: dict, summary) -> dict:
    """Compiles and times `algo.train`; `summary(train_state, num_seeds)` gives steps, per-seed returns and more."""

    def run(train, keys, num_seeds):
        compiled, compile_s = timed(lambda: jax.jit(train).lower(keys).compile())
        train_s = float("inf")
        for _ in range(p["repeats"]):
            (train_state, _), seconds = timed(lambda: jax.block_until_ready(compiled(keys)))
            train_s = min(train_s, seconds)
        out = summary(train_state, num_seeds)
        returns = out.pop("returns")
        return {
            "compile_s": compile_s,
            "train_s": train_s,
            **out,
            "eval_return": float(np.mean(returns)),
            "eval_return_per_seed": returns,
            "num_seeds": num_seeds,
            "version": f"rejax {version('rejax')}, jax {jax.__version__}",
        }

    out = {"single": run(algo.train, jax.random.PRNGKey(p["seed"]), 1)}
    if p["num_seeds"] > 1:
        keys = jax.random.split(jax.random.PRNGKey(p["seed"]), p["num_seeds"])
        out["vmap"] = run(jax.vmap(algo.train), keys, p["num_seeds"])
    return out


def seed_params(params, num_seeds: int) -> list:
    """Per-seed parameter trees (the vmapped run stacks them on a leading axis)."""
    return [params] if num_seeds == 1 else [jax.tree.map(lambda x, i=i: x[i], params) for i in range(num_seeds)]


def no_eval(algo):
    # One no-op "evaluation" at the very end: rejax's own in-training evaluation would be timed as training.
    return algo.replace(eval_callback=lambda algo, train_state, rng: jnp.zeros(()))


def run_ppo(p: dict) -> dict:
    algo = PPO.create(
        env=p.get("env", "CartPole-v1"),
        num_envs=p["num_envs"],
        num_steps=p["num_steps"],
        num_epochs=p["update_epochs"],
        num_minibatches=p["num_minibatches"],
        total_timesteps=p["total_timesteps"],
        learning_rate=p["lr"],
        gamma=p["gamma"],
        gae_lambda=p["gae_lambda"],
        clip_eps=p["clip_eps"],
        ent_coef=p["ent_coef"],
        vf_coef=p["vf_coef"],
        max_grad_norm=p["max_grad_norm"],
        agent_kwargs={"hidden_layer_sizes": tuple(p["hidden_sizes"]), "activation": p["activation"]},
        eval_freq=p["total_timesteps"],
        skip_initial_evaluation=True,
    )
    algo = no_eval(algo)
    per_update = p["num_envs"] * p["num_steps"]
    steps = int(np.ceil(p["total_timesteps"] / algo.eval_freq)) * int(np.ceil(algo.eval_freq / per_update)) * per_update

    def greedy_returns(params, key):
        def act(obs, rng):
            return jnp.squeeze(algo.actor.apply(params, obs[None], method=lambda m, o: m._action_dist(o).mode()))

        _, returns = evaluate(act, key, algo.env, algo.env_params, p["eval_episodes"])
        return np.asarray(returns)

    def summary(train_state, num_seeds):
        eval_key = jax.random.PRNGKey(p["seed"] + 1000)
        params = seed_params(train_state.actor_ts.params, num_seeds)
        return {"steps": steps * num_seeds, "returns": [float(greedy_returns(q, eval_key).mean()) for q in params]}

    return bench(algo, p, summary)


def run_dqn(p: dict) -> dict:
    algo = DQN.create(
        env=p.get("env", "CartPole-v1"),
        num_envs=p["num_envs"],
        buffer_size=p["buffer_size"],
        fill_buffer=p["learning_starts"],
        batch_size=p["batch_size"],
        learning_rate=p["lr"],
        total_timesteps=p["total_timesteps"],
        eps_start=p["eps_start"],
        eps_end=p["eps_end"],
        exploration_fraction=p["exploration_fraction"],
        target_update_freq=p["target_update_interval"],
        polyak=0.0,
        num_epochs=1,
        gamma=p["gamma"],
        max_grad_norm=p["max_grad_norm"],
        ddqn=False,
        agent_kwargs={"activation": p["activation"]},
        eval_freq=p["total_timesteps"],
        skip_initial_evaluation=True,
    )
    algo = no_eval(algo)

    def greedy_return(params, key):
        def act(obs, rng):
            return jnp.squeeze(jnp.argmax(algo.agent.apply(params, obs[None]), axis=-1))

        _, returns = evaluate(act, key, algo.env, algo.env_params, p["eval_episodes"])
        return float(np.mean(returns))

    def summary(train_state, num_seeds):
        eval_key = jax.random.PRNGKey(p["seed"] + 1000)
        returns = [greedy_return(q, eval_key) for q in seed_params(train_state.q_ts.params, num_seeds)]
        return {
            "steps": int(np.sum(train_state.global_step)),
            "gradient_steps": int(np.sum(train_state.q_ts.step)),
            "returns": returns,
        }

    return bench(algo, p, summary)


RUNS = {"ppo": run_ppo, "dqn": run_dqn}

if __name__ == "__main__":
    algo_name, problem, out_path = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    result = RUNS[algo_name](problem)
    with open(out_path, "w") as f:
        json.dump(result, f)
