"""The one run scaffold every trainer stands on: what a run needs besides the trainer's own work.

A `Run` owns the workdir of one training run:

- `config.json`, and the refusal (one line naming the keys that differ) to resume a workdir made by another config;
- Orbax checkpoints (`<workdir>/checkpoints/`), restored from the newest intact one (a corrupt newest one is set
  aside with a warning: `lepton_jax.checkpoint`);
- one metrics writer (console progress bar with an ETA, `metrics.jsonl`, TensorBoard), which on resume drops the
  records past the checkpoint so the file continues exactly as an uninterrupted run's would;
- the interrupt guard (SIGINT/SIGTERM: checkpoint, then `Interrupted`) and the NaN guard;
- timings (`perf/...`), the hash of the final parameters, `results.json` written once, and the learning-curve plot.

The trainer drives its own loop (the RL loop's jitted chunks, the epoch loop's epochs) and calls the scaffold at
each step boundary:

    run = Run(config, workdir)
    restored = run.restore(abstract_state)              # (step, state) or None
    with run.steps(total, initial, unit="epoch") as guard:
        while ...:
            state, metrics = ...
            run.log(step, metrics)
            run.end_step(step, state, n=1, save=..., last=..., postfix=...)
    results = run.finish(results, params, plot=...)    # writes results.json

**results.json key convention** (every trainer): a metric measured per seed (or fold, or run) is reported as
`<name>_mean` and `<name>_std` over the seeds and `per_seed/<name>`, the list of per-seed values (`seed_summary`);
quantities of the whole run (`perf/...`, `params_sha256`, `num_seeds`, configuration echoes) keep their own names.
Sweeps prefix each value's entries with `sweep/<value>/`.
"""

import contextlib
import hashlib
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from absl import logging

from lepton_jax import checkpoint, parallel
from lepton_jax import metrics as metrics_lib
from lepton_jax.config import save_config
from lepton_jax.interrupt import Interrupted, InterruptGuard


def params_sha256(params) -> str:
    """A hash of the parameters' exact bytes, for reproducibility checks (resume == uninterrupted)."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get(params)):
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


def seed_summary(metrics: dict) -> dict:
    """`{name: per-seed values}` -> `{name_mean, name_std, per_seed/name}` for each (the results.json convention)."""
    out = {}
    for name, values in metrics.items():
        values = np.asarray(jax.device_get(values), np.float64).reshape(-1)
        out[f"{name}_mean"] = float(values.mean())
        out[f"{name}_std"] = float(values.std())
        out[f"per_seed/{name}"] = [float(v) for v in values]
    return out


def phase(total: int, desc: str, unit: str = "it"):
    """A progress bar (with an ETA) for a phase after training: evaluation, sampling, exact solvers, ..."""
    return metrics_lib.ProgressBar(total, unit=unit, desc=desc)


class Run:
    """One run in `workdir`; see the module docstring for the calls a trainer makes.

    Args:
      config: the run's config (saved as config.json; `keep_checkpoints` is read, default 3).
      workdir: the run directory (created).
      unit: what a step of the loop is called in messages ("update", "epoch").
    """

    def __init__(self, config, workdir: str, unit: str = "step"):
        self.wall_start = time.perf_counter()
        self.config, self.workdir, self.unit = config, workdir, unit
        if parallel.is_main_process():
            os.makedirs(workdir, exist_ok=True)
            save_config(config, workdir)
        self.ckpt = checkpoint.Checkpointer(
            os.path.join(workdir, "checkpoints"), keep=config.get("keep_checkpoints", 3)
        )
        self.start_step = 0
        self.resumed = False
        self.compile_seconds = None  # set by `compile`
        self.step_seconds: list[float] = []  # wall time of each loop step (chunk or epoch) of this process
        self._writer = self._bar = self._guard = None
        self._x_per_step = 1

    def restore(self, abstract_state):
        """`(step, state)` from the newest intact checkpoint, or None. `abstract_state` as for `Checkpointer`."""
        if self.ckpt.steps():
            print(f"restoring the newest checkpoint in {self.ckpt.directory} ...", file=sys.stderr, flush=True)
        restored = self.ckpt.restore_latest(abstract_state)
        if restored is None:
            return None
        step, state, _ = restored
        self.start_step, self.resumed = step, True
        logging.info("resuming from %s at %s %d", self.ckpt.directory, self.unit, step)
        return step, state

    def compile(self, fn, *args):
        """`fn.lower(*args).compile()`, its time added to `perf/compile_seconds`."""
        start = time.perf_counter()
        compiled = fn.lower(*args).compile()
        self.compile_seconds = (self.compile_seconds or 0.0) + time.perf_counter() - start
        return compiled

    @contextlib.contextmanager
    def steps(self, total: int, desc: str = "", x_per_step: int = 1, bar_unit: str | None = None):
        """The loop's context: metrics writer, progress bar and interrupt guard, all closed on the way out.

        Args:
          total: the run's length in steps (updates, epochs).
          desc: the progress bar's label.
          x_per_step: the metrics' x axis per step (env steps per update; 1 for epochs).
          bar_unit: what the bar counts (default the step unit).

        Yields:
          The interrupt guard (`guard.requested` is set by SIGINT/SIGTERM).
        """
        self._x_per_step = x_per_step
        resume_x = self.start_step * x_per_step if self.resumed else None
        self._writer = metrics_lib.MetricsWriter(self.workdir, resume_step=resume_x)
        self._bar = metrics_lib.ProgressBar(
            total * x_per_step, self.start_step * x_per_step, unit=bar_unit or self.unit, desc=desc
        )
        self._total = total
        try:
            with InterruptGuard() as guard:
                self._guard = guard
                yield guard
        finally:
            self._bar.close()
            self._writer.close()
            self.ckpt.wait()
            self._guard = None

    def log(self, x: int, record: dict) -> None:
        """One metrics record at x-axis position `x` (env steps, epochs)."""
        self._writer.write(x, record)

    def check_finite(self, values, name: str, first_step: int) -> None:
        """The NaN guard: `TrainingDiverged` naming the first step where `values` (last axis = steps) is not finite."""
        metrics_lib.check_finite(values, name, first_step, unit=self.unit)

    def end_step(self, step: int, state, n: int, seconds: float, save: bool, last: bool, postfix: dict) -> None:
        """After `n` loop steps ending at `step`: checkpoint if due (or interrupted), flush, advance the bar, and
        honour an interrupt (checkpoint saved, then `Interrupted`)."""
        self.step_seconds.append(seconds)
        requested = self._guard is not None and self._guard.requested
        if save or last or requested:
            self.ckpt.save(step, state, {self.unit: step})
        self._writer.flush()
        self._bar.update(n * self._x_per_step, **postfix)
        if requested and not last:
            self.ckpt.wait()
            raise Interrupted(
                self._guard.signum,
                f"interrupted at {self.unit} {step}/{self._total}; checkpoint saved in {self.ckpt.directory}; "
                "run the same command again to resume",
            )

    def finish(self, results: dict, params=None, plot: Callable[[list[dict], str], Any] | None = None) -> dict:
        """Completes `results` with the run's figures, writes `results.json` and the plots; returns `results`.

        Args:
          results: the trainer's results (seed-summarised per the key convention).
          params: the final parameters, hashed into `params_sha256` (None: no hash).
          plot: `plot(metrics records, plots directory)` draws the run's pictures (main process only).
        """
        self.ckpt.wait()
        results = dict(results)
        results.update(
            {
                "perf/wall_seconds": time.perf_counter() - self.wall_start,
                "perf/peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                f"resumed_from_{self.unit}": self.start_step,
                "num_devices": jax.device_count(),
            }
        )
        if self.compile_seconds is not None:
            results["perf/compile_seconds"] = self.compile_seconds
        if params is not None:
            results["params_sha256"] = params_sha256(params)
        if parallel.is_main_process():
            tmp = os.path.join(self.workdir, "results.json.tmp")
            with open(tmp, "w") as f:
                json.dump(results, f, indent=2)
            os.replace(tmp, os.path.join(self.workdir, "results.json"))
            if plot is not None:
                records = metrics_lib.read_jsonl(os.path.join(self.workdir, "metrics.jsonl"))
                plot(records, os.path.join(self.workdir, "plots"))
        self.ckpt.close()
        return results
