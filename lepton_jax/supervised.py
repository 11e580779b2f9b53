"""The shared epoch loop of supervised, graph and generative trainers.

A trainer describes its work as a `Task` (initial state, one epoch, an evaluation, the work after training) and
hands it to `fit`, which runs the epochs on the run scaffold (`lepton_jax.run`: config.json, resume from the newest
intact Orbax checkpoint, progress bar, JSONL + TensorBoard metrics, the NaN guard on every `*loss*` metric, the
interrupt guard, timing, results.json written once) with evaluation and checkpoints every few epochs. The epoch
itself stays the trainer's: usually a Python loop over batches calling one jitted
`train_step(state, batch, rng) -> (state, metrics)`, or one jitted full-batch step.

The state must carry everything the next epoch depends on (params, optimiser state, rng, best-so-far values for
early stopping), so that a resumed run computes exactly what an uninterrupted one would.
"""

import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from lepton_jax import plotting
from lepton_jax import run as run_lib


class Task(NamedTuple):
    """What `fit` runs.

    init: `key -> state`, a pytree of arrays (traced once by `jax.eval_shape` to restore checkpoints).
    train_epoch: `(state, epoch) -> (state, metrics)`; `epoch` counts from 0; metrics map names (`train/...`) to
      scalars or per-seed arrays (their mean is logged, and `<name>_std` when there are several seeds).
    evaluate: `state -> metrics` (`val/...`, `eval/...`), floats or per-seed arrays; called every
      `config.eval_every_epochs` epochs and at the end.
    num_epochs: the length of the run.
    done: optional `state -> bool`: stop early (e.g. validation patience ran out); must depend only on the state.
    final: optional `(state, last evaluation) -> results`, the work after training (test metrics of the kept
      parameters, FID, pictures ...), returning results.json entries in the key convention
      (`lepton_jax.run.seed_summary`). Default: the last evaluation, seed-summarised.
    params: optional `state -> parameters` hashed into `params_sha256` (default: the whole state).
    plot_keys: the metrics drawn against epochs in `plots/learning_curve.png` (none: no plot).
    title: the plot's title.
    examples_per_epoch: training examples one epoch processes, over all seeds (gives `perf/examples_per_second`).
    """

    init: Callable[[jax.Array], Any]
    train_epoch: Callable[[Any, int], tuple[Any, dict]]
    evaluate: Callable[[Any], dict]
    num_epochs: int
    done: Callable[[Any], bool] | None = None
    final: Callable[[Any, dict], dict] | None = None
    params: Callable[[Any], Any] | None = None
    plot_keys: tuple[str, ...] = ()
    title: str = ""
    examples_per_epoch: int = 0


def summarize(metrics: dict) -> dict:
    """`{name: scalar or per-seed array}` -> `{name: mean, name_std: std}` (std only for several values): what the
    console and metrics.jsonl show each epoch."""
    out = {}
    for name, value in metrics.items():
        value = np.asarray(jax.device_get(value), np.float64)
        out[name] = float(value.mean())
        if value.size > 1:
            out[name + "_std"] = float(value.std())
    return out


def fit(config, workdir: str, task: Task, desc: str = "") -> tuple[Any, dict]:
    """Runs `task` into `workdir`, resuming from its newest intact checkpoint, and writes results.json.

    Reads `config.seed`, and optionally `config.eval_every_epochs` (default 1), `config.checkpoint_every_epochs`
    (default 10) and `config.keep_checkpoints` (default 3).

    Returns:
      The final state and the results (`task.final`'s, plus the `perf/...` figures and `params_sha256`).
    """
    run = run_lib.Run(config, workdir, unit="epoch")
    key = jax.random.PRNGKey(config.seed)
    restored = run.restore(jax.eval_shape(task.init, key))
    state = task.init(key) if restored is None else restored[1]
    eval_every = max(1, int(config.get("eval_every_epochs", 1)))
    ckpt_every = max(1, int(config.get("checkpoint_every_epochs", 10)))

    epoch = run.start_step
    last_eval = None  # the newest evaluation, per seed
    with run.steps(task.num_epochs, desc=desc):
        while epoch < task.num_epochs and not (task.done and task.done(state)):
            tick = time.perf_counter()
            state, train_metrics = task.train_epoch(state, epoch)
            train_metrics = summarize(train_metrics)  # fetching them also waits for the epoch to finish
            seconds = time.perf_counter() - tick
            epoch += 1
            for name, value in train_metrics.items():
                if "loss" in name:
                    run.check_finite([value], name, epoch)
            last = epoch == task.num_epochs or (task.done is not None and task.done(state))
            record = dict(train_metrics)
            if epoch % eval_every == 0 or last:
                last_eval = jax.device_get(task.evaluate(state))
                record.update(summarize(last_eval))
            run.log(epoch, record)
            # The bar shows the plotted metrics (a few chosen ones), by their short names.
            shown = task.plot_keys or [k for k in record if "loss" in k and not k.endswith("_std")][:2]
            postfix = {k.removeprefix("train/"): record[k] for k in shown if k in record}
            run.end_step(epoch, state, n=1, seconds=seconds, save=epoch % ckpt_every == 0, last=last, postfix=postfix)
    if last_eval is None:  # nothing was left to train: evaluate the restored final state
        last_eval = jax.device_get(task.evaluate(state))
    results = task.final(state, last_eval) if task.final else run_lib.seed_summary(last_eval)
    epoch_seconds = run.step_seconds
    later = epoch_seconds[1:] or epoch_seconds
    results.update(
        {
            "perf/epochs": epoch,
            # The first epoch of a process includes compiling its step functions.
            "perf/first_epoch_seconds": epoch_seconds[0] if epoch_seconds else float("nan"),
            "perf/epoch_seconds": float(np.median(later)) if later else float("nan"),
        }
    )
    if task.examples_per_epoch and later:
        results["perf/examples_per_second"] = task.examples_per_epoch / results["perf/epoch_seconds"]

    def plot(records, plots):
        plotting.curves(records, task.plot_keys, os.path.join(plots, "learning_curve.png"), "epoch", title=task.title)

    results = run.finish(results, (task.params or (lambda s: s))(state), plot=plot if task.plot_keys else None)
    return state, results
