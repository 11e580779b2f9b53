"""The shared RL driver: runs any `Agent` in jitted chunks, vmapped over seeds and split across devices.

`train_and_evaluate(config, workdir, make_agent)` builds the agent, restores the newest intact checkpoint in
`workdir` (or initialises), then repeats: one compiled chunk of `config.chunk_updates` updates (a `lax.scan`,
state donated), log, evaluate every few chunks, checkpoint every few chunks. The chunk boundaries depend only on
the config, so an interrupted-and-resumed run executes exactly the same programs on exactly the same states as an
uninterrupted one and ends with the same parameters, bit for bit.

Layout of the state: every leaf has the seed axis first; the agent's `env` field has the env axis second, which
is split over the mesh's `data` axis. Everything else is replicated, so gradients are averaged across devices by
the all-reduce that `jit` inserts.
"""

import functools
import hashlib
import json
import os
import resource
import time

import jax
import numpy as np
from absl import logging

from lepton_jax import checkpoint, parallel, plotting
from lepton_jax import metrics as metrics_lib
from lepton_jax.config import save_config
from lepton_jax.errors import UserError
from lepton_jax.interrupt import Interrupted, InterruptGuard
from lepton_jax.rl import envs
from lepton_jax.rl.agent import run_updates_masked


def state_shardings(abstract_state, mesh):
    """Replicated everywhere except the agent's `env` field, whose (seed, env, ...) leaves split the env axis."""
    shardings = jax.tree.map(lambda _: parallel.replicated(mesh), abstract_state)
    return shardings.replace(env=jax.tree.map(lambda _: parallel.split_axis(mesh, 1), abstract_state.env))


def abstract_state(agent, keys, mesh):
    """The seed-batched state's shapes (with shardings, so a checkpoint restores onto the right devices)."""
    abstract = jax.eval_shape(jax.vmap(agent.init), keys)
    shardings = state_shardings(abstract, mesh)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    return abstract, shardings


def restore_for_evaluation(config, workdir: str, make_agent):
    """Rebuilds the agent of a finished or interrupted run and loads its newest intact checkpoint.

    Returns:
      (agent, env spec, state with the seed axis first, the update it was saved at).
    """
    spec = envs.make_env(config.env_name)
    agent = make_agent(config, spec)
    keys = jax.random.split(jax.random.PRNGKey(config.seed), config.num_seeds)
    abstract, _ = abstract_state(agent, keys, parallel.make_mesh())
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints)
    restored = ckpt.restore_latest(abstract)
    ckpt.close()
    if restored is None:
        raise UserError(f"no checkpoint in {ckpt.directory}; train first with --workdir={workdir}")
    update, state, _ = restored
    return agent, spec, state, update


def params_sha256(params) -> str:
    """A hash of the parameters' exact bytes, for reproducibility checks (resume == uninterrupted)."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get(params)):
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


def _nan_stat(fn, values) -> float:
    """nanmean/nanstd that returns NaN quietly when nothing is finite yet (no episode has finished)."""
    values = np.asarray(values, np.float64)
    return float(fn(values)) if np.isfinite(values).any() else float("nan")


def _compile(fn, *args):
    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    return compiled, time.perf_counter() - start


def _eval_keys(config, update: int) -> jax.Array:
    # An eval stream of its own: evaluating never touches the training state or its rng.
    return jax.random.split(jax.random.fold_in(jax.random.PRNGKey(config.seed + 1_000_003), update), config.num_seeds)


def train_and_evaluate(config, workdir: str, make_agent) -> dict:
    """Trains `make_agent(config, env_spec)` per `config` into `workdir`; returns the final results dict."""
    return run(config, workdir, make_agent)[1]


def run(config, workdir: str, make_agent):
    """`train_and_evaluate`, also returning the final state (seed axis first), for tests and notebooks."""
    wall_start = time.perf_counter()
    spec = envs.make_env(config.env_name)
    agent = make_agent(config, spec)
    mesh = parallel.make_mesh()
    parallel.check_divisible(config.num_envs, mesh, "config.num_envs")
    if parallel.is_main_process():
        os.makedirs(workdir, exist_ok=True)
        save_config(config, workdir)

    keys = jax.random.split(jax.random.PRNGKey(config.seed), config.num_seeds)
    init = jax.vmap(agent.init)
    abstract, shardings = abstract_state(agent, keys, mesh)
    replicated = parallel.replicated(mesh)

    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints)
    restored = ckpt.restore_latest(abstract)
    compile_seconds = 0.0
    if restored is None:
        start_update = 0
        init_fn, seconds = _compile(jax.jit(init, out_shardings=shardings), keys)
        compile_seconds += seconds
        state = init_fn(keys)
    else:
        start_update, state, _ = restored
        logging.info("resuming from %s at update %d", ckpt.directory, start_update)

    num_updates, chunk = agent.num_updates, max(1, int(config.chunk_updates))
    steps_per_update = agent.steps_per_update
    # One program for every chunk: it runs the first `n` of `chunk` updates (n < chunk only for the last one).
    chunk_fn = jax.jit(
        jax.vmap(functools.partial(run_updates_masked, agent, length=chunk), in_axes=(0, None)),
        in_shardings=(shardings, replicated),
        out_shardings=(shardings, replicated),
        donate_argnums=0,
    )
    chunk_fn, seconds = _compile(chunk_fn, abstract, jax.ShapeDtypeStruct((), np.int32, sharding=replicated))
    compile_seconds += seconds

    evaluate = jax.jit(
        jax.vmap(lambda p, k: envs.evaluate(spec, agent.act, p, k, config.eval_episodes)), out_shardings=replicated
    )
    eval_fn, seconds = _compile(evaluate, abstract.train_state.params, keys)
    compile_seconds += seconds

    def run_eval(update):
        returns = np.asarray(eval_fn(state.train_state.params, _eval_keys(config, update)))  # (S, episodes)
        per_seed = returns.mean(axis=1)
        return {"eval/return_mean": per_seed.mean(), "eval/return_std": per_seed.std()}

    resume_step = None if restored is None else start_update * steps_per_update
    writer = metrics_lib.MetricsWriter(workdir, resume_step=resume_step)
    bar = metrics_lib.ProgressBar(num_updates * steps_per_update, start_update * steps_per_update, desc=config.env_name)
    train_seconds, update = 0.0, start_update
    last_return = float("nan")
    try:
        with InterruptGuard() as guard:
            while update < num_updates:
                n = min(chunk, num_updates - update)
                tick = time.perf_counter()
                state, chunk_metrics = chunk_fn(state, np.int32(n))
                chunk_metrics = {k: v[:, :n] for k, v in jax.device_get(chunk_metrics).items()}  # {name: (S, n)}
                seconds = time.perf_counter() - tick
                train_seconds += seconds
                loss = chunk_metrics["loss"]
                if "learning" in chunk_metrics:  # off-policy agents report a NaN loss before learning starts
                    loss = np.where(chunk_metrics["learning"] > 0, loss, 0.0)
                metrics_lib.check_finite(loss, "train/loss", update + 1)
                for i in range(n):
                    record = {f"train/{k}": _nan_stat(np.nanmean, v[:, i]) for k, v in chunk_metrics.items()}
                    record["train/episode_return_std"] = _nan_stat(np.nanstd, chunk_metrics["episode_return"][:, i])
                    writer.write((update + i + 1) * steps_per_update, record)
                update += n
                last_return = _nan_stat(np.nanmean, chunk_metrics["episode_return"][:, -1])
                chunks_done = -(-update // chunk)
                last = update == num_updates
                if chunks_done % config.eval_every_chunks == 0 or last:
                    eval_metrics = run_eval(update)
                    writer.write(update * steps_per_update, eval_metrics)
                if chunks_done % config.checkpoint_every_chunks == 0 or last or guard.requested:
                    ckpt.save(update, state, {"update": update})
                writer.flush()
                bar.update(
                    n * steps_per_update,
                    ret=last_return,
                    sps=f"{config.num_seeds * n * steps_per_update / seconds:,.0f}",
                )
                if guard.requested and not last:
                    ckpt.wait()
                    raise Interrupted(
                        guard.signum,
                        f"interrupted at update {update}/{num_updates}; checkpoint saved "
                        f"in {ckpt.directory}; run the same command again to resume",
                    )
    finally:
        bar.close()
        writer.close()
        ckpt.wait()

    if update == start_update:  # nothing left to train: the last checkpoint is the final state
        eval_metrics = run_eval(update)
    env_steps = num_updates * steps_per_update
    trained_steps = (num_updates - start_update) * steps_per_update * config.num_seeds
    results = {
        "eval/return_mean": float(eval_metrics["eval/return_mean"]),
        "eval/return_std": float(eval_metrics["eval/return_std"]),
        "train/episode_return": last_return,
        "perf/env_steps": env_steps,
        "perf/wall_seconds": time.perf_counter() - wall_start,
        "perf/compile_seconds": compile_seconds,
        "perf/train_seconds": train_seconds,
        "perf/steps_per_second": trained_steps / train_seconds if train_seconds else float("nan"),
        "perf/peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "resumed_from_update": start_update,
        "num_seeds": int(config.num_seeds),
        "num_devices": jax.device_count(),
        "params_sha256": params_sha256(state.train_state.params),
    }
    if parallel.is_main_process():
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
        plotting.learning_curve(
            metrics_lib.read_jsonl(os.path.join(workdir, "metrics.jsonl")),
            os.path.join(workdir, "plots", "learning_curve.png"),
            title=f"{config.trainer} on {config.env_name} ({config.num_seeds} seeds)",
        )
    ckpt.close()
    return state, results
