"""The shared RL driver: runs any `Agent` in jitted chunks, vmapped over seeds and split across devices.

`train_and_evaluate(config, workdir, make_agent)` builds the agent, restores the newest intact checkpoint in
`workdir` (or initialises), then repeats: one compiled chunk of `config.chunk_updates` updates (a `lax.scan`,
state donated), log, evaluate every few chunks, checkpoint every few chunks. The chunk boundaries depend only on
the config, so an interrupted-and-resumed run executes exactly the same programs on exactly the same states as an
uninterrupted one and ends with the same parameters, bit for bit.

Layout of the state: every leaf has the run axis first (the seeds; with a hyperparameter sweep, every value x every
seed, value-major: see `lepton_jax.rl.sweep`); the agent's `env` field has the env axis second, which is split over
the mesh's `data` axis. Everything else is replicated, so gradients are averaged across devices by the all-reduce
that `jit` inserts.

With a sweep, metrics, evaluation and results are reported per value (`train/episode_return/lr=0.001`,
`sweep/lr=0.001/eval/return_mean`, ...), and a value whose loss stops being finite is reported and left to run on
(its runs are independent of the others'); the sweep stops only when every value has diverged.
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
from lepton_jax.rl import envs, sweep
from lepton_jax.rl.agent import run_updates_masked, with_hparams


def state_shardings(abstract_state, mesh):
    """Replicated everywhere except the agent's `env` field, whose (seed, env, ...) leaves split the env axis."""
    shardings = jax.tree.map(lambda _: parallel.replicated(mesh), abstract_state)
    return shardings.replace(env=jax.tree.map(lambda _: parallel.split_axis(mesh, 1), abstract_state.env))


def init_runs(agent):
    """`(keys, hparams) -> state` of every run: `agent.init` vmapped, each run's swept values put in its state."""
    return jax.vmap(functools.partial(with_hparams, agent))


def run_inputs(config, runs: sweep.Sweep):
    """The keys (num_runs, 2) and swept values ({name: (num_runs,)}) that `init_runs` starts the runs from."""
    seed_keys = jax.random.split(jax.random.PRNGKey(config.seed), config.num_seeds)
    return runs.run_keys(seed_keys), runs.hparams()


def abstract_state(agent, keys, mesh, hparams=None):
    """The run-batched state's shapes (with shardings, so a checkpoint restores onto the right devices)."""
    abstract = jax.eval_shape(init_runs(agent), keys, hparams or {})
    shardings = state_shardings(abstract, mesh)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    return abstract, shardings


def restore_for_evaluation(config, workdir: str, make_agent):
    """Rebuilds the agent of a finished or interrupted run and loads its newest intact checkpoint.

    Returns:
      (agent, env spec, state with the run axis first, the update it was saved at). The runs are the seeds, or
      with a sweep every value x every seed (`sweep.parse(config, agent.sweepable)` says which is which).
    """
    spec = envs.make_env(config.env_name)
    agent = make_agent(config, spec)
    keys, hparams = run_inputs(config, sweep.parse(config, agent.sweepable))
    abstract, _ = abstract_state(agent, keys, parallel.make_mesh(), hparams)
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


def _eval_keys(config, runs: sweep.Sweep, update: int) -> jax.Array:
    # An eval stream of its own: evaluating never touches the training state or its rng. Seed s of every swept
    # value is evaluated on the episodes that seed s of a separate run would be.
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed + 1_000_003), update)
    return runs.run_keys(jax.random.split(key, config.num_seeds))


def _suffix(label: str) -> str:
    return f"/{label}" if label else ""


def _train_records(runs: sweep.Sweep, chunk_metrics: dict, i: int) -> dict:
    """Update `i` of a chunk's metrics ({name: (runs, n)}): mean over seeds (and std of the return), per value."""
    record = {}
    for label, rows in zip(runs.labels, np.split(np.arange(runs.num_runs), runs.num_points)):
        record.update(
            {f"train/{k}{_suffix(label)}": _nan_stat(np.nanmean, v[rows, i]) for k, v in chunk_metrics.items()}
        )
        record[f"train/episode_return_std{_suffix(label)}"] = _nan_stat(
            np.nanstd, chunk_metrics["episode_return"][rows, i]
        )
    return record


def _check_finite(runs: sweep.Sweep, loss, first_update: int, diverged: dict) -> None:
    """Stops the run on a non-finite loss; a sweep only when every value has one (the others' runs are unaffected).

    `diverged` ({label: update}) collects the values whose loss stopped being finite.
    """
    if not runs.active:
        metrics_lib.check_finite(loss, "train/loss", first_update)
        return
    for label, values in zip(runs.labels, runs.by_point(loss)):
        bad = ~np.isfinite(values).all(axis=0)  # (n,)
        if bad.any() and label not in diverged:
            diverged[label] = first_update + int(np.argmax(bad))
            logging.warning("%s: train/loss is not finite at update %d; the other values go on", label, diverged[label])
    if len(diverged) == runs.num_points:
        where = ", ".join(f"{label} at update {update}" for label, update in diverged.items())
        raise metrics_lib.TrainingDiverged(
            f"train/loss is not finite for every swept value ({where}); the run is stopped (lower the learning rate "
            "or check the inputs)"
        )


def _sweep_results(runs: sweep.Sweep, eval_metrics: dict, last_returns, params, diverged: dict) -> dict:
    """results.json's per-value entries: `sweep/<label>/...` (eval mean and std over seeds, train return, hash)."""
    results = {"sweep/names": list(runs.names), "sweep/labels": runs.labels, "num_runs": runs.num_runs}
    params = jax.device_get(params)
    finite = runs.by_point(
        np.stack([np.isfinite(x).reshape(runs.num_runs, -1).all(axis=1) for x in jax.tree.leaves(params)]).all(axis=0)
    )
    for p, label in enumerate(runs.labels):
        prefix = f"sweep/{label}/"
        results[prefix + "eval/return_mean"] = float(eval_metrics[f"eval/return_mean/{label}"])
        results[prefix + "eval/return_std"] = float(eval_metrics[f"eval/return_std/{label}"])
        results[prefix + "train/episode_return"] = last_returns[p]
        results[prefix + "diverged_runs"] = int((~finite[p]).sum())
        if label in diverged:
            results[prefix + "diverged_at_update"] = diverged[label]
        point_params = [runs.by_point(x)[p] for x in jax.tree.leaves(params)]
        # A separate run with the value has these parameters: bit for bit when it has as many runs in its batch
        # (a one-value sweep), else to float rounding (XLA on CPU rounds some reductions by batch size).
        results[prefix + "params_sha256"] = params_sha256(point_params)
    best = max(
        range(runs.num_points),
        key=lambda p: np.nan_to_num(results[f"sweep/{runs.labels[p]}/eval/return_mean"], nan=-np.inf),
    )
    results["sweep/best"] = runs.labels[best]
    return results


def train_and_evaluate(config, workdir: str, make_agent) -> dict:
    """Trains `make_agent(config, env_spec)` per `config` into `workdir`; returns the final results dict."""
    return run(config, workdir, make_agent)[1]


def run(config, workdir: str, make_agent):
    """`train_and_evaluate`, also returning the final state (run axis first), for tests and notebooks."""
    wall_start = time.perf_counter()
    spec = envs.make_env(config.env_name)
    agent = make_agent(config, spec)
    runs = sweep.parse(config, agent.sweepable)
    mesh = parallel.make_mesh()
    parallel.check_divisible(config.num_envs, mesh, "config.num_envs")
    if parallel.is_main_process():
        os.makedirs(workdir, exist_ok=True)
        save_config(config, workdir)

    keys, hparams = run_inputs(config, runs)
    abstract, shardings = abstract_state(agent, keys, mesh, hparams)
    replicated = parallel.replicated(mesh)

    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints)
    restored = ckpt.restore_latest(abstract)
    compile_seconds = 0.0
    if restored is None:
        start_update = 0
        init_fn, seconds = _compile(jax.jit(init_runs(agent), out_shardings=shardings), keys, hparams)
        compile_seconds += seconds
        state = init_fn(keys, hparams)
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
        returns = np.asarray(eval_fn(state.train_state.params, _eval_keys(config, runs, update)))  # (runs, episodes)
        per_seed = runs.by_point(returns.mean(axis=1))  # (values, seeds)
        record = {}
        for label, values in zip(runs.labels, per_seed):
            record[f"eval/return_mean{_suffix(label)}"] = values.mean()
            record[f"eval/return_std{_suffix(label)}"] = values.std()
        return record

    resume_step = None if restored is None else start_update * steps_per_update
    writer = metrics_lib.MetricsWriter(workdir, resume_step=resume_step)
    bar = metrics_lib.ProgressBar(num_updates * steps_per_update, start_update * steps_per_update, desc=config.env_name)
    train_seconds, update = 0.0, start_update
    last_return = float("nan")
    last_returns = [float("nan")] * runs.num_points  # per swept value
    diverged = {}  # swept value -> the update its loss stopped being finite
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
                _check_finite(runs, loss, update + 1, diverged)
                for i in range(n):
                    writer.write((update + i + 1) * steps_per_update, _train_records(runs, chunk_metrics, i))
                update += n
                last_return = _nan_stat(np.nanmean, chunk_metrics["episode_return"][:, -1])
                last_returns = [_nan_stat(np.nanmean, r[:, -1]) for r in runs.by_point(chunk_metrics["episode_return"])]
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
                    sps=f"{runs.num_runs * n * steps_per_update / seconds:,.0f}",
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
    trained_steps = (num_updates - start_update) * steps_per_update * runs.num_runs
    if runs.active:
        results = _sweep_results(runs, eval_metrics, last_returns, state.train_state.params, diverged)
    else:
        results = {
            "eval/return_mean": float(eval_metrics["eval/return_mean"]),
            "eval/return_std": float(eval_metrics["eval/return_std"]),
            "train/episode_return": last_return,
        }
    results |= {
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
        records = metrics_lib.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
        title = f"{config.trainer} on {config.env_name} ({config.num_seeds} seeds)"
        if runs.active:
            plots = os.path.join(workdir, "plots")
            plotting.sweep_learning_curves(records, runs.labels, os.path.join(plots, "learning_curve.png"), title)
            plotting.sweep_summary(results, runs.labels, os.path.join(plots, "sweep.png"), title)
        else:
            plotting.learning_curve(records, os.path.join(workdir, "plots", "learning_curve.png"), title=title)
    ckpt.close()
    return state, results
