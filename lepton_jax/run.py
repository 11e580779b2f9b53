"""The one run scaffold every trainer stands on: what a run needs besides the trainer's own work.

A `Run` owns the workdir of one training run:

- `config.json`, and the refusal (one line naming the keys that differ) to resume a workdir made by another config;
- Orbax checkpoints (`<workdir>/checkpoints/`), restored from the newest intact one (a corrupt newest one is set
  aside with a warning: `lepton_jax.checkpoint`);
- one metrics writer (console progress bar with an ETA, `metrics.jsonl`, TensorBoard), which on resume drops the
  records past the checkpoint so the file continues exactly as an uninterrupted run's would;
- the interrupt guard (SIGINT/SIGTERM: checkpoint, then `Interrupted`) and the NaN guard;
- timings (`perf/...`), the hash of the final parameters, the code's commit (`code_commit`), `results.json` written
  once, and the learning-curve plot.

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

What a `Run` promises, whatever the trainer:

- **One run per workdir.** The main process holds `<workdir>/.lock` (an `fcntl.flock`, so it dies with its process:
  a lock left by a killed run is taken over silently) from `Run(...)` to `finish`; a second run on the workdir
  meanwhile is refused in one line naming the workdir and the pid holding it.
- **A finished run stays finished.** When `results.json` exists (and config.json matches), `Run(...)` raises
  `AlreadyComplete` and touches nothing; the launcher says so and exits 0.
- **Ctrl-C / SIGTERM at any phase** is one line saying what is saved (`Interrupted`; exit 128 + signal): during the
  training steps at the next step boundary, after a checkpoint; before them (start-up, restore, compile) and after
  them (the final evaluation, writing the results) at once, since the newest checkpoint is already on disk.
- A failed checkpoint save, or no intact checkpoint, is one `UserError` line (`lepton_jax.checkpoint`), and
  `restart_workdir` (the launcher's `--restart`) sets the old run's files aside to start afresh.
- metrics.jsonl and results.json are strict JSON (non-finite values are `null`), and a last metrics line cut short
  by a killed run is dropped on resume (`lepton_jax.metrics`).

**results.json key convention** (every trainer): a metric measured per seed (or fold, or run) is reported as
`<name>_mean` and `<name>_std` over the seeds and `per_seed/<name>`, the list of per-seed values (`seed_summary`);
quantities of the whole run (`perf/...`, `params_sha256`, `code_commit`, `num_seeds`, configuration echoes) keep their
own names.
Sweeps prefix each value's entries with `sweep/<value>/`.
"""

import contextlib
import datetime
import errno
import fcntl
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from absl import logging

from lepton_jax import checkpoint, parallel
from lepton_jax import metrics as metrics_lib
from lepton_jax.config import read_json, save_config
from lepton_jax.errors import UserError
from lepton_jax.interrupt import Interrupted, InterruptGuard, StopAtOnce

# What a run makes in its workdir, set aside by `restart_workdir` (`.lock` stays).
RUN_FILES = ("config.json", "checkpoints", "metrics.jsonl", "results.json", "eval.json", "tensorboard", "plots")


class AlreadyComplete(Exception):
    """The workdir holds a finished run (its `results.json`); nothing was changed.

    Attributes:
      path: the results.json.
      results: its contents.
    """

    def __init__(self, path: str, results: dict):
        super().__init__(f"already complete: results in {path}")
        self.path, self.results = path, results


def code_commit() -> str | None:
    """The short commit of the checkout this code runs from, `+dirty` when tracked files other than the recorded
    results (`results/`, `RESULTS.md`: what `scripts.reproduce --record` writes between runs), the tests and the
    documentation (`*.md`), none of which a run reads, differ from it; None when it is not a git checkout (an
    installed copy) or git is missing."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=True).stdout

    try:
        head = git("rev-parse", "--short", "HEAD").strip()
        changed = git(
            "status", "--porcelain", "-uno", "--", ".", ":(exclude)results", ":(exclude)tests", ":(exclude)*.md"
        )
        return head + ("+dirty" if changed.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


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


class WorkdirLock:
    """An exclusive `fcntl.flock` on `<workdir>/.lock`, which holds the pid of its holder.

    Raises:
      UserError: another process holds it (one line naming the workdir and that pid).
    """

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, ".lock")
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise UserError(f"workdir {workdir} cannot be written: {error.strerror or error}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise UserError(
                f"workdir {workdir} is in use by another run (pid {holder}); wait for it to end, or use another "
                "--workdir"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def restart_workdir(workdir: str) -> str | None:
    """The launcher's `--restart`: moves the files of the run in `workdir` (`RUN_FILES`: config, checkpoints,
    metrics, results, TensorBoard events, plots) into `<workdir>/set_aside-<time>/`, kept rather than deleted, so
    that the next run starts afresh (this also clears a "no intact checkpoint" refusal). Main process only.

    Returns:
      The folder they were moved to, or None when there was nothing to move.

    Raises:
      UserError: a run holds the workdir.
    """
    present = [name for name in RUN_FILES if os.path.lexists(os.path.join(workdir, name))]
    if not present:
        return None
    lock = WorkdirLock(workdir)
    try:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        target, n = os.path.join(workdir, f"set_aside-{stamp}"), 1
        while os.path.lexists(target):
            n += 1
            target = os.path.join(workdir, f"set_aside-{stamp}-{n}")
        os.makedirs(target)
        for name in present:
            os.rename(os.path.join(workdir, name), os.path.join(target, name))
    finally:
        lock.release()
    print(f"restart: the previous run's files are kept in {target}", file=sys.stderr, flush=True)
    return target


# The open runs of this process, by workdir. A run whose trainer raised outside the scaffold's calls is never
# closed; the next run of this process on its workdir closes it (a process runs one run on a workdir at a time).
_OPEN: dict[str, "Run"] = {}


class Run:
    """One run in `workdir`; see the module docstring for the calls a trainer makes and what it promises.

    Args:
      config: the run's config (saved as config.json; `keep_checkpoints` is read, default 3).
      workdir: the run directory (created).
      unit: what a step of the loop is called in messages ("update", "epoch").

    Raises:
      AlreadyComplete: the workdir holds this config's finished run.
      UserError: another run holds the workdir, or it holds another config's run.
    """

    def __init__(self, config, workdir: str, unit: str = "step"):
        self.wall_start = time.perf_counter()
        self.config, self.workdir, self.unit = config, workdir, unit
        self.start_step = 0
        self.resumed = False
        self.compile_seconds = None  # set by `compile`
        self.step_seconds: list[float] = []  # wall time of each loop step (chunk or epoch) of this process
        self._writer = self._bar = self._guard = self._lock = self.ckpt = None
        self._x_per_step = 1
        self._phase = "during start-up"
        self._saved_step = None  # the newest step checkpointed (or restored) by this run
        self._closed = False
        self._key = os.path.realpath(workdir)
        if self._key in _OPEN:
            _OPEN[self._key].close()
        _OPEN[self._key] = self
        self._stop = StopAtOnce(self._interrupted_message)
        self._stop.__enter__()
        try:
            # The code as it was at launch (or at this resume): a later commit made while the run trains is not it.
            self.code_commit = code_commit() if parallel.is_main_process() else None
            if parallel.is_main_process():
                os.makedirs(workdir, exist_ok=True)
                self._lock = WorkdirLock(workdir)
                save_config(config, workdir)
            results_path = os.path.join(workdir, "results.json")
            if os.path.exists(results_path):
                raise AlreadyComplete(results_path, read_json(results_path, "the results of the finished run"))
            self.ckpt = checkpoint.Checkpointer(
                os.path.join(workdir, "checkpoints"), keep=config.get("keep_checkpoints", 3)
            )
        except BaseException:
            self.close()
            raise

    def restore(self, abstract_state):
        """`(step, state)` from the newest intact checkpoint, or None. `abstract_state` as for `Checkpointer`."""
        with self._closing_on_error():
            self._phase = "while restoring the checkpoint"
            if self.ckpt.steps():
                print(f"restoring the newest checkpoint in {self.ckpt.directory} ...", file=sys.stderr, flush=True)
            restored = self.ckpt.restore_latest(abstract_state)
            self._phase = "during compile"
            if restored is None:
                return None
            step, state, _ = restored
            self.start_step, self.resumed, self._saved_step = step, True, step
            logging.info("resuming from %s at %s %d", self.ckpt.directory, self.unit, step)
            return step, state

    def compile(self, fn, *args):
        """`fn.lower(*args).compile()`, its time added to `perf/compile_seconds`."""
        with self._closing_on_error():
            self._phase = "during compile"
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
        with self._closing_on_error():
            self._stop.raise_dropped()  # a signal dropped while starting up stops here, before training
            self._x_per_step = x_per_step
            resume_x = self.start_step * x_per_step if self.resumed else None
            self._writer = metrics_lib.MetricsWriter(self.workdir, resume_step=resume_x)
            self._bar = metrics_lib.ProgressBar(
                total * x_per_step, self.start_step * x_per_step, unit=bar_unit or self.unit, desc=desc
            )
            self._total = total
            self._phase = "during training"
            with InterruptGuard(self._interrupted_message) as guard:
                self._guard = guard
                yield guard
            self._guard = None
            self._bar.close()
            self._writer.close()
            self._bar = self._writer = None
            self.ckpt.wait()
            self._phase = "during the final evaluation"

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
            self._saved_step = step
        self._writer.flush()
        self._bar.update(n * self._x_per_step, **postfix)
        if requested:
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
        with self._closing_on_error():
            self._phase = "while writing the results"
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
            if self.code_commit is not None:
                results["code_commit"] = self.code_commit
            if parallel.is_main_process():
                if plot is not None:
                    records = metrics_lib.read_jsonl(os.path.join(self.workdir, "metrics.jsonl"))
                    plot(records, os.path.join(self.workdir, "plots"))
                # Last: a run with results.json is finished (`AlreadyComplete`), so everything else comes first.
                tmp = os.path.join(self.workdir, "results.json.tmp")
                with open(tmp, "w") as f:
                    json.dump(metrics_lib.strict_json(results), f, indent=2, allow_nan=False)
                os.replace(tmp, os.path.join(self.workdir, "results.json"))
        self.close()
        return results

    def close(self) -> None:
        """Ends the run's hold on the process and the workdir (interrupt handlers, checkpointer, lock); `finish`
        does it, and so does an error raised through the scaffold's calls. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for closer in (self._bar, self._writer, self.ckpt):
            if closer is not None:
                with contextlib.suppress(Exception):
                    closer.close()
        try:
            self._stop.__exit__(None, None, None)  # raises a signal that a gc callback dropped
        finally:
            if self._lock is not None:
                self._lock.release()
            if _OPEN.get(self._key) is self:
                del _OPEN[self._key]

    @contextlib.contextmanager
    def _closing_on_error(self):
        try:
            yield
        except BaseException:
            self.close()
            raise

    def _interrupted_message(self) -> str:
        """What an interrupt outside the training steps (or a second Ctrl-C within them) says was saved."""
        directory = os.path.join(os.path.abspath(self.workdir), "checkpoints")
        if self._phase == "while restoring the checkpoint":
            return f"interrupted {self._phase}; nothing was changed in {directory}; run the same command again"
        if self._phase in ("during the final evaluation", "while writing the results"):
            return (
                f"interrupted {self._phase}; the training checkpoint at {self.unit} {self._saved_step} is saved in "
                f"{directory}; run the same command again to finish"
            )
        what = "nothing to save yet" if self._phase != "during training" else "stopped at once (second Ctrl-C)"
        if self._saved_step is None:
            return f"interrupted {self._phase}; {what} (no checkpoint in {directory})"
        return (
            f"interrupted {self._phase}; {what} (last checkpoint: {self.unit} {self._saved_step} in {directory}); "
            "run the same command again to resume"
        )
