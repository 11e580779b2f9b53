"""Throughput of the graph environments (`graphs/rl/envs`): env steps/s of vmapped envs taking random valid actions.

    python -m scripts.bench.graph_envs --num_envs=256 --num_steps=1000 --sizes=15-20,40-50   # from the repo root

For each env `{MVC,MaxCut}-{ER,BA}-SIZE`, `num_envs` envs run `num_steps` steps in one jitted `lax.scan`, each
action drawn uniformly among the valid ones, three ways: gymnax's `step` (auto-reset: a new random graph is drawn
at every step and kept only where an episode ended, which is what agents see), `step_env` alone (no reset), and the
graph generator alone (resets/s). Compile time is timed apart from the run (the median of `--repeats` runs).
"""

import time

import jax
import numpy as np
from absl import app, flags

import graphs.rl.envs  # noqa: F401  (registers the graph env names)
from graphs.rl.envs import generators
from lepton_jax.rl import envs
from scripts.bench import common

_NUM_ENVS = flags.DEFINE_integer("num_envs", 256, "Environments stepped in parallel.")
_NUM_STEPS = flags.DEFINE_integer("num_steps", 1000, "Steps of every environment per timed run.")
_PROBLEMS = flags.DEFINE_list("problems", ["MVC", "MaxCut"], "Problems.")
_GRAPHS = flags.DEFINE_list("graphs", ["ER", "BA"], "Graph distributions.")
_SIZES = flags.DEFINE_list("sizes", ["15-20", "40-50"], "Node ranges MIN-MAX (e.g. add 100-200).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per measurement (the median is reported).")
_OUT = flags.DEFINE_string("out", None, "If set, writes the table as JSON to this file.")


def programs(spec, num_envs, num_steps):
    """Jitted `key -> result` programs: gymnax step with auto-reset, step_env alone, and graph generation."""
    env, params = spec.env, spec.params
    step = jax.vmap(env.step, in_axes=(0, 0, 0, None))
    step_env = jax.vmap(env.step_env, in_axes=(0, 0, 0, None))

    def rollout(step_fn, key):
        obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key, num_envs), params)

        def body(carry, key):
            obs, state = carry
            action_key, step_key = jax.random.split(key)
            actions = envs.random_action(spec, action_key, obs)
            outputs = step_fn(jax.random.split(step_key, num_envs), state, actions, params)
            return (outputs[0], outputs[1]), outputs[2]

        # The final state is returned too, so that no part of a step is dead code (MVC's rewards are constant).
        final, rewards = jax.lax.scan(body, (obs, state), jax.random.split(key, num_steps))
        return rewards.sum(), final

    def generate(key):
        def body(total, key):
            graphs, _ = generators.sample_batch(jax.random.split(key, num_envs), env.distribution)
            return total + graphs.senders.sum() + graphs.weights.sum(), None  # every output used

        return jax.lax.scan(body, 0.0, jax.random.split(key, num_steps))[0]

    return {
        "step": jax.jit(lambda key: rollout(step, key)),
        "step_env": jax.jit(lambda key: rollout(step_env, key)),
        "generate": jax.jit(generate),
    }


def measure(program, repeats):
    key = jax.random.PRNGKey(0)
    start = time.perf_counter()
    compiled = program.lower(key).compile()
    compile_seconds = time.perf_counter() - start
    times = [common.timed(lambda: jax.block_until_ready(compiled(key)))[1] for _ in range(repeats)]
    return compile_seconds, float(np.median(times))


def main(argv):
    del argv
    load = common.warn_if_busy()
    count = _NUM_ENVS.value * _NUM_STEPS.value
    rows = []
    print(f"{_NUM_ENVS.value} envs x {_NUM_STEPS.value} steps on {jax.devices()[0].platform}; steps/s (compile s)")
    print(f"{'env':<18} {'N':>4} {'E':>6} {'step (auto-reset)':>20} {'step_env (no reset)':>20} {'graphs/s':>18}")
    for problem in _PROBLEMS.value:
        for kind in _GRAPHS.value:
            for size in _SIZES.value:
                name = f"{problem}-{kind}-{size}"
                spec = envs.make_env(name)
                distribution = spec.env.distribution
                row = {"env": name, "node_budget": distribution.node_budget, "edge_budget": distribution.edge_budget}
                for label, program in programs(spec, _NUM_ENVS.value, _NUM_STEPS.value).items():
                    compile_seconds, seconds = measure(program, _REPEATS.value)
                    row[label] = {"per_second": count / seconds, "seconds": seconds, "compile_seconds": compile_seconds}
                rows.append(row)
                step, step_env, generate = (
                    f"{row[k]['per_second']:>11,.0f} ({row[k]['compile_seconds']:4.1f})"
                    for k in ("step", "step_env", "generate")
                )
                sizes = f"{row['node_budget']:>4} {row['edge_budget']:>6}"
                print(f"{name:<18} {sizes} {step:>20} {step_env:>20} {generate:>18}", flush=True)
    if _OUT.value:
        result = {
            "num_envs": _NUM_ENVS.value,
            "num_steps": _NUM_STEPS.value,
            "rows": rows,
            "machine": common.machine(load),
        }
        common.write_report(_OUT.value, result)


if __name__ == "__main__":
    app.run(main)
