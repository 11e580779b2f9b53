"""The shared epoch loop of supervised, graph and generative trainers.

A trainer describes its work as a `Task` (initial state, one epoch, an evaluation) and hands it to `fit`, which
does what every run needs: `config.json`, resume from the newest intact Orbax checkpoint, a progress bar, JSONL +
TensorBoard metrics, a NaN guard on every `*loss*` metric, evaluation and checkpoints every few epochs, a clean
checkpoint-and-exit on SIGINT/SIGTERM, and timing. The epoch itself stays the trainer's: usually a Python loop over
batches calling one jitted `train_step(state, batch, rng) -> (state, metrics)`, or one jitted full-batch step.

The state must carry everything the next epoch depends on (params, optimiser state, rng, best-so-far values for
early stopping), so that a resumed run computes exactly what an uninterrupted one would.
"""

import json
import os
import resource
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
from absl import logging

from lepton_jax import checkpoint, parallel, plotting
from lepton_jax import metrics as metrics_lib
from lepton_jax.config import save_config
from lepton_jax.interrupt import Interrupted, InterruptGuard


class Task(NamedTuple):
    """What `fit` runs.

    init: `key -> state`, a pytree of arrays (traced once by `jax.eval_shape` to restore checkpoints).
    train_epoch: `(state, epoch) -> (state, metrics)`; `epoch` counts from 0; metrics map names (`train/...`) to
      scalars or per-seed arrays (their mean is logged, and `<name>_std` when there are several seeds).
    evaluate: `state -> metrics` (`val/...`, `eval/...`), floats or per-seed arrays; called every
      `config.eval_every_epochs` epochs and at the end.
    num_epochs: the length of the run.
    done: optional `state -> bool`: stop early (e.g. validation patience ran out); must depend only on the state.
    """

    init: Callable[[jax.Array], Any]
    train_epoch: Callable[[Any, int], tuple[Any, dict]]
    evaluate: Callable[[Any], dict]
    num_epochs: int
    done: Callable[[Any], bool] | None = None


def summarize(metrics: dict) -> dict:
    """`{name: scalar or per-seed array}` -> `{name: mean, name_std: std}` (std only for several values)."""
    out = {}
    for name, value in metrics.items():
        value = np.asarray(jax.device_get(value), np.float64)
        out[name] = float(value.mean())
        if value.size > 1:
            out[name + "_std"] = float(value.std())
    return out


def fit(config, workdir: str, task: Task, desc: str = "") -> tuple[Any, dict]:
    """Runs `task` into `workdir`, resuming from its newest intact checkpoint.

    Reads `config.seed`, and optionally `config.eval_every_epochs` (default 1), `config.checkpoint_every_epochs`
    (default 10) and `config.keep_checkpoints` (default 3).

    Returns:
      The final state and the last evaluation plus `perf/...` figures; the caller adds its test metrics and calls
      `write_results`.
    """
    wall_start = time.perf_counter()
    if parallel.is_main_process():
        os.makedirs(workdir, exist_ok=True)
        save_config(config, workdir)
    key = jax.random.PRNGKey(config.seed)
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.get("keep_checkpoints", 3))
    restored = ckpt.restore_latest(jax.eval_shape(task.init, key))
    if restored is None:
        start_epoch, state = 0, task.init(key)
    else:
        start_epoch, state, _ = restored
        logging.info("resuming from %s at epoch %d", ckpt.directory, start_epoch)
    eval_every = max(1, int(config.get("eval_every_epochs", 1)))
    ckpt_every = max(1, int(config.get("checkpoint_every_epochs", 10)))

    writer = metrics_lib.MetricsWriter(workdir, resume_step=None if restored is None else start_epoch)
    bar = metrics_lib.ProgressBar(task.num_epochs, start_epoch, unit="epoch", desc=desc)
    epoch_seconds, epoch = [], start_epoch
    eval_metrics = {}
    try:
        with InterruptGuard() as guard:
            while epoch < task.num_epochs and not (task.done and task.done(state)):
                tick = time.perf_counter()
                state, train_metrics = task.train_epoch(state, epoch)
                train_metrics = summarize(train_metrics)  # fetching them also waits for the epoch to finish
                epoch_seconds.append(time.perf_counter() - tick)
                epoch += 1
                for name, value in train_metrics.items():
                    if "loss" in name:
                        metrics_lib.check_finite([value], name, epoch, unit="epoch")
                last = epoch == task.num_epochs or (task.done is not None and task.done(state))
                record = dict(train_metrics)
                if epoch % eval_every == 0 or last:
                    eval_metrics = summarize(task.evaluate(state))
                    record.update(eval_metrics)
                writer.write(epoch, record)
                if epoch % ckpt_every == 0 or last or guard.requested:
                    ckpt.save(epoch, state, {"epoch": epoch})
                writer.flush()
                bar.update(1, **{k: v for k, v in record.items() if "loss" in k or "accuracy" in k})
                if guard.requested and not last:
                    ckpt.wait()
                    raise Interrupted(
                        guard.signum,
                        f"interrupted at epoch {epoch}/{task.num_epochs}; checkpoint saved in {ckpt.directory}; "
                        "run the same command again to resume",
                    )
    finally:
        bar.close()
        writer.close()
        ckpt.wait()
    ckpt.close()
    if not eval_metrics:  # nothing was left to train: evaluate the restored final state
        eval_metrics = summarize(task.evaluate(state))
    later = epoch_seconds[1:] or epoch_seconds
    results = dict(eval_metrics)
    results.update(
        {
            "perf/epochs": epoch,
            "perf/wall_seconds": time.perf_counter() - wall_start,
            # The first epoch of a process includes compiling its step functions.
            "perf/first_epoch_seconds": epoch_seconds[0] if epoch_seconds else float("nan"),
            "perf/epoch_seconds": float(np.median(later)) if later else float("nan"),
            "perf/peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "resumed_from_epoch": start_epoch,
            "num_devices": jax.device_count(),
        }
    )
    return state, results


def write_results(workdir: str, results: dict, plot_keys: tuple[str, ...] = (), title: str = "") -> None:
    """Writes `results.json` (flat) and, for `plot_keys`, `plots/learning_curve.png` against epochs."""
    if not parallel.is_main_process():
        return
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    if plot_keys:
        plotting.curves(
            metrics_lib.read_jsonl(os.path.join(workdir, "metrics.jsonl")),
            plot_keys,
            os.path.join(workdir, "plots", "learning_curve.png"),
            xlabel="epoch",
            title=title,
        )
