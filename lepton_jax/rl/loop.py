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
import os
import time

import jax
import numpy as np
from absl import logging

from lepton_jax import checkpoint, parallel, placement
from lepton_jax import metrics as metrics_lib
from lepton_jax import run as run_lib
from lepton_jax.errors import UserError
from lepton_jax.rl import envs, sweep
from lepton_jax.rl import plots as rl_plots
from lepton_jax.rl.agent import run_updates_masked, with_hparams
from lepton_jax.techniques import prune


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
    # the memory kind of each leaf (a replay buffer may live in pinned host memory: `lepton_jax.placement`)
    abstract, kinds = placement.memory_kinds(init_runs(agent), keys, hparams or {})
    shardings = placement.with_memory_kinds(state_shardings(abstract, mesh), kinds)
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
    spec = agent.eval_spec or spec  # what its policy acts on (rendering, evaluation)
    keys, hparams = run_inputs(config, sweep.parse(config, agent.sweepable))
    abstract, _ = abstract_state(agent, keys, parallel.mesh_from_config(config), hparams)
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints)
    restored = ckpt.restore_latest(abstract)
    ckpt.close()
    if restored is None:
        raise UserError(f"no checkpoint in {ckpt.directory}; train first with --workdir={workdir}")
    update, state, _ = restored
    return agent, spec, state, update


def _nan_stat(fn, values) -> float:
    """nanmean/nanstd that returns NaN quietly when nothing is finite yet (no episode has finished)."""
    values = np.asarray(values, np.float64)
    return float(fn(values)) if np.isfinite(values).any() else float("nan")


def eval_policies(config, agent, spec: envs.EnvSpec, num_episodes: int) -> dict:
    """`{results name: (params, key) -> returns of num_episodes}` for one run: the greedy policy's (`eval/return`)
    and, with `config.eval_sampled`, the stochastic policy's (`eval/sampled_return`: actions drawn from it, as the
    gymnax baselines evaluate) on the same episodes.

    Raises:
      UserError: `config.eval_sampled` for an agent whose policy is deterministic.
    """
    spec = agent.eval_spec or spec
    policies = {"eval/return": lambda p, k: envs.evaluate(spec, agent.act, p, k, num_episodes)}
    if config.get("eval_sampled", False):
        if agent.sample is None:
            raise UserError(f"config.eval_sampled: {config.trainer}'s policy is deterministic; set it to False")
        policies["eval/sampled_return"] = lambda p, k: envs.evaluate(spec, agent.sample, p, k, num_episodes, True)
    return policies


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


def _seed_results(eval_per_seed: dict, last_returns) -> dict:
    """results.json's entries of an ordinary run: final eval returns ({name: per-seed values}) and last training
    return, per seed."""
    results = run_lib.seed_summary(eval_per_seed)
    returns = np.asarray(last_returns, np.float64)
    results["train/episode_return_mean"] = _nan_stat(np.nanmean, returns)
    results["train/episode_return_std"] = _nan_stat(np.nanstd, returns)
    results["per_seed/train/episode_return"] = [float(r) for r in returns]
    return results


def _sweep_results(runs: sweep.Sweep, eval_record, last_returns, params, diverged: dict) -> dict:
    """results.json's per-value entries: `sweep/<label>/...` (the per-seed entries of `_seed_results`, the number
    of diverged runs, the parameters' hash), and `sweep/best`."""
    results = {"sweep/names": list(runs.names), "sweep/labels": runs.labels, "num_runs": runs.num_runs}
    params = jax.device_get(params)
    finite = runs.by_point(
        np.stack([np.isfinite(x).reshape(runs.num_runs, -1).all(axis=1) for x in jax.tree.leaves(params)]).all(axis=0)
    )
    _, eval_per_point = eval_record
    for p, (label, last) in enumerate(zip(runs.labels, runs.by_point(np.asarray(last_returns)))):
        prefix = f"sweep/{label}/"
        point_evals = {name: values[p] for name, values in eval_per_point.items()}
        results |= {prefix + k: v for k, v in _seed_results(point_evals, last).items()}
        results[prefix + "diverged_runs"] = int((~finite[p]).sum())
        if label in diverged:
            results[prefix + "diverged_at_update"] = diverged[label]
        point_params = [runs.by_point(x)[p] for x in jax.tree.leaves(params)]
        # A separate run with the value has these parameters: bit for bit when it has as many runs in its batch
        # (a one-value sweep), else to float rounding (XLA on CPU rounds some reductions by batch size).
        results[prefix + "params_sha256"] = run_lib.params_sha256(point_params)
    best = max(
        range(runs.num_points),
        key=lambda p: np.nan_to_num(results[f"sweep/{runs.labels[p]}/eval/return_mean"], nan=-np.inf),
    )
    results["sweep/best"] = runs.labels[best]
    return results


def train_and_evaluate(config, workdir: str, make_agent, after_training=None) -> dict:
    """Trains `make_agent(config, env_spec)` per `config` into `workdir`; returns the final results dict."""
    return run(config, workdir, make_agent, after_training)[1]


def run(config, workdir: str, make_agent, after_training=None):
    """`train_and_evaluate`, also returning the final state (run axis first), for tests and notebooks.

    Args:
      config, workdir, make_agent: as for `train_and_evaluate`.
      after_training: optional `(agent, params with the run axis first, workdir) -> dict`, work done after the
        training loop (e.g. graph RL scoring its seeds against exact solvers); its entries join results.json,
        which is written once, after it.
    """
    spec = envs.make_env(config.env_name)
    agent = make_agent(config, spec)
    runs = sweep.parse(config, agent.sweepable)
    mesh = parallel.mesh_from_config(config)
    parallel.check_divisible(config.num_envs, mesh, "config.num_envs")
    scaffold = run_lib.Run(config, workdir, unit="update")

    keys, hparams = run_inputs(config, runs)
    abstract, shardings = abstract_state(agent, keys, mesh, hparams)
    replicated = parallel.replicated(mesh)

    restored = scaffold.restore(abstract)
    if restored is None:
        state = scaffold.compile(jax.jit(init_runs(agent), out_shardings=shardings), keys, hparams)(keys, hparams)
    else:
        state = restored[1]
    start_update = scaffold.start_step

    num_updates, chunk = agent.num_updates, max(1, int(config.chunk_updates))
    steps_per_update = agent.steps_per_update
    # One program for every chunk: it runs the first `n` of `chunk` updates (n < chunk only for the last one).
    chunk_fn = jax.jit(
        jax.vmap(functools.partial(run_updates_masked, agent, length=chunk), in_axes=(0, None)),
        in_shardings=(shardings, replicated),
        out_shardings=(shardings, replicated),
        donate_argnums=0,
    )
    chunk_fn = scaffold.compile(chunk_fn, abstract, jax.ShapeDtypeStruct((), np.int32, sharding=replicated))
    eval_fns = {}
    for name, evaluate in eval_policies(config, agent, spec, config.eval_episodes).items():
        evaluate = jax.jit(jax.vmap(evaluate), out_shardings=replicated)
        eval_fns[name] = scaffold.compile(evaluate, abstract.train_state.params, keys)

    # An env with a win (e.g. SMAX: `marl.MultiAgentEnv.win_return`) also reports the greedy policy's win rate: the
    # share of its evaluation episodes whose return exceeds the env's threshold.
    win_return = getattr((agent.eval_spec or spec).env, "win_return", None)

    def run_eval(update):
        keys = _eval_keys(config, runs, update)
        record, per_seed = {}, {}
        for name, eval_fn in eval_fns.items():
            returns = np.asarray(eval_fn(state.train_state.params, keys))  # (runs, episodes)
            per_seed[name] = runs.by_point(returns.mean(axis=1))  # (values, seeds)
            if name == "eval/return" and win_return is not None:
                per_seed["eval/win_rate"] = runs.by_point((returns > win_return).mean(axis=1))
        for name, values_by_point in per_seed.items():
            for label, values in zip(runs.labels, values_by_point):
                record[f"{name}_mean{_suffix(label)}"] = values.mean()
                record[f"{name}_std{_suffix(label)}"] = values.std()
        return record, per_seed

    update = start_update
    last_returns = np.full(runs.num_runs, np.nan)  # each run's mean return of its last update's finished episodes
    diverged = {}  # swept value -> the update its loss stopped being finite
    eval_record = None
    # Three steps/s figures, each labelled: the bar's rate counts env steps of one seed ("seed-step/s"), `all_sps`
    # the env steps of all runs per second in the last chunk, results.json's `perf/steps_per_second` the same over
    # the whole training (compile excluded).
    with scaffold.steps(num_updates, desc=config.env_name, x_per_step=steps_per_update, bar_unit="seed-step"):
        while update < num_updates:
            n = min(chunk, num_updates - update)
            tick = time.perf_counter()
            state, chunk_metrics = chunk_fn(state, np.int32(n))
            chunk_metrics = {k: v[:, :n] for k, v in jax.device_get(chunk_metrics).items()}  # {name: (S, n)}
            seconds = time.perf_counter() - tick
            loss = chunk_metrics["loss"]
            if "learning" in chunk_metrics:  # off-policy agents report a NaN loss before learning starts
                loss = np.where(chunk_metrics["learning"] > 0, loss, 0.0)
            _check_finite(runs, loss, update + 1, diverged)
            for i in range(n):
                scaffold.log((update + i + 1) * steps_per_update, _train_records(runs, chunk_metrics, i))
            update += n
            last_returns = chunk_metrics["episode_return"][:, -1]
            chunks_done = -(-update // chunk)
            last = update == num_updates
            if chunks_done % config.eval_every_chunks == 0 or last:
                eval_record = run_eval(update)
                scaffold.log(update * steps_per_update, eval_record[0])
            scaffold.end_step(
                update,
                state,
                n=n,
                seconds=seconds,
                save=chunks_done % config.checkpoint_every_chunks == 0,
                last=last,
                postfix={
                    "ret": _nan_stat(np.nanmean, last_returns),
                    "all_sps": f"{runs.num_runs * n * steps_per_update / seconds:,.0f}",
                },
            )

    if eval_record is None:  # nothing left to train: the last checkpoint is the final state
        eval_record = run_eval(update)
    train_seconds = sum(scaffold.step_seconds)
    trained_steps = (num_updates - start_update) * steps_per_update * runs.num_runs
    if runs.active:
        results = _sweep_results(runs, eval_record, last_returns, state.train_state.params, diverged)
    else:
        results = _seed_results({name: values[0] for name, values in eval_record[1].items()}, last_returns)
    results |= {
        "perf/env_steps": num_updates * steps_per_update,
        "perf/train_seconds": train_seconds,
        "perf/steps_per_second": trained_steps / train_seconds if train_seconds else float("nan"),
        "num_seeds": int(config.num_seeds),
    }
    if prune.settings(config, 1) and not runs.active:  # the share of zeroed kernel weights, per seed
        results |= run_lib.seed_summary({"sparsity": prune.seed_sparsity(jax.device_get(state.train_state.params))})
    if after_training is not None:
        results |= after_training(agent, jax.device_get(state.train_state.params), workdir)
    title = f"{config.trainer} on {config.env_name} ({config.num_seeds} seeds)"

    def plot(records, plots):
        if runs.active:
            rl_plots.sweep_learning_curves(records, runs.labels, os.path.join(plots, "learning_curve.png"), title)
            rl_plots.sweep_summary(results, runs.labels, os.path.join(plots, "sweep.png"), title)
        else:
            rl_plots.learning_curve(records, os.path.join(plots, "learning_curve.png"), title=title)

    results = scaffold.finish(results, state.train_state.params, plot=plot)
    return state, results
