"""The raw gymnax env-step rate of a venv's gymnax: `python -I gymnax_env_rate.py PROBLEM_JSON OUT_PATH`.

`num_envs` envs vmapped, uniformly random actions, gymnax's own auto-reset, `num_steps` steps per scanned block and
`blocks` blocks in one compiled program; the fastest of `repeats` timed runs. Runs under any python with gymnax
(0.0.9's five-value `step` and 1.x's six-value one both work), so the project's venv and a peer's time the same code:
the difference between two agents' training rates that the env itself accounts for. Writes JSON to OUT_PATH.
"""

import json
import sys
import time
from importlib.metadata import version

import gymnax
import jax
import jax.numpy as jnp


def env_rate(p: dict) -> dict:
    env, params = gymnax.make(p["env"])
    num_envs, num_steps, blocks = p["num_envs"], p["num_steps"], p["blocks"]

    def run(key):
        _, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key, num_envs), params)

        def step(carry, key):
            state, total = carry
            action_key, step_key = jax.random.split(key)
            action = jax.random.randint(action_key, (num_envs,), 0, env.num_actions)
            out = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(step_key, num_envs), state, action, params
            )
            # obs, state, reward, ...: the sum keeps every step's observation and reward live.
            return (out[1], total + out[0].astype(jnp.float32).sum() + out[2].sum()), None

        (_, total), _ = jax.lax.scan(step, (state, 0.0), jax.random.split(key, num_steps * blocks))
        return total

    compiled = jax.jit(run).lower(jax.random.PRNGKey(0)).compile()
    best = float("inf")
    for i in range(p["repeats"]):
        start = time.perf_counter()
        jax.block_until_ready(compiled(jax.random.PRNGKey(i + 1)))
        best = min(best, time.perf_counter() - start)
    steps = num_envs * num_steps * blocks
    return {"steps": steps, "seconds": best, "steps_per_s": steps / best, "version": f"gymnax {version('gymnax')}"}


if __name__ == "__main__":
    problem, out_path = json.loads(sys.argv[1]), sys.argv[2]
    with open(out_path, "w") as f:
        json.dump(env_rate(problem), f)
