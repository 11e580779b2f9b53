"""Orbax checkpoints of a whole training state, with fallback to the newest intact one.

Layout: `<workdir>/checkpoints/<step>/` (Orbax's), each holding the state pytree and a small JSON `meta` dict.
Orbax writes into a temporary directory and renames it when complete, so a save cut short never shows up as a
step. What this module promises on top:

- **A failed save is one `UserError` line, never a hang.** The directories of a save are made synchronously, so a
  checkpoints path that is a file, gone or unwritable fails in `save` itself (made in Orbax's background threads, a
  failure there left its other threads waiting on the directory, and the process hung at exit).
- **Recovery is one warning line.** A step that is there but cannot be read back (truncated or deleted files) is
  set aside as `<step>.unreadable` and the previous one is used, with one line on stderr naming both; Orbax's own
  log records, and the stray reports of reads still in flight when one fails ("Event loop is closed", asyncio's
  "exception was never retrieved"), are dropped.
- **"No intact checkpoint" sticks.** When no step can be read, one `UserError` line says so, and a marker file in the
  directory keeps saying so on every later attempt (rather than starting afresh from step 0 because every step
  was set aside) until the run is restarted (`lepton_jax.run.restart_workdir`, the launcher's `--restart`).
"""

import logging as py_logging
import os
import shutil
import sys

import jax
import orbax.checkpoint as ocp
from absl import logging

from lepton_jax.errors import UserError

# Written into the checkpoints directory when no step in it can be read; its text is the refusal.
REFUSED_MARKER = "NO_INTACT_CHECKPOINT"


def saved_steps(workdir: str) -> list[int]:
    """The steps saved in `<workdir>/checkpoints`, oldest first, read from the directory names only (no Orbax, and
    nothing is changed there: safe on another run's workdir)."""
    directory = os.path.join(workdir, "checkpoints")
    return sorted(int(d) for d in os.listdir(directory) if d.isdigit()) if os.path.isdir(directory) else []


class Checkpointer:
    """Saves every call to `save`, keeps the newest `keep`, restores the newest intact one."""

    def __init__(self, directory: str, keep: int = 3):
        self.directory = os.path.abspath(directory)
        _quiet_orbax()
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise UserError(f"{self.directory} is not a directory, so no checkpoint can be saved there; move it away")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=True,
            # Made in the calling thread, a failure to make them is an error in `save` (see the module docstring).
            async_options=ocp.AsyncOptions(create_directories_asynchronously=False),
        )
        try:
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        except OSError as error:
            raise UserError(f"checkpoints cannot be saved in {self.directory}: {_reason(error)}") from None

    def save(self, step: int, state, meta: dict | None = None, wait: bool = False) -> None:
        """Saves `state` (any pytree of arrays) at `step`; asynchronous unless `wait`. A failure (of this save or
        of the previous one, still in flight) is a `UserError`."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta or {}))
        try:
            self._manager.save(step, args=args, force=True)
            if wait:
                self._manager.wait_until_finished()
        except Exception as error:  # noqa: BLE001 - whatever went wrong, the checkpoint is not on disk
            raise self._save_failed(error) from None

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def restore_latest(self, abstract_state):
        """Returns `(step, state, meta)` from the newest readable checkpoint, or `None` when there is none.

        Args:
          abstract_state: the state's structure as `jax.ShapeDtypeStruct`s with shardings (from `jax.eval_shape`),
            so that arrays are restored straight onto the right devices.

        Raises:
          UserError: there are checkpoints but none can be read (now, or at an earlier attempt: see the module
            docstring).
        """
        steps = self.steps()
        marker = os.path.join(self.directory, REFUSED_MARKER)
        unreadable = []  # (step, reason), newest first
        for step in reversed(steps):
            try:
                restored = self._manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
                    ),
                )
                _check_structure(restored["state"], abstract_state)
            except Exception as error:  # noqa: BLE001 - any failure to read means "not intact"
                unreadable.append((step, _reason(error)))
                self._set_aside(step)
                continue
            if jax.process_index() == 0:
                for bad, reason in unreadable:
                    print(
                        f"warning: checkpoint {self.directory}/{bad} is not readable ({reason}); "
                        f"using {self.directory}/{step}",
                        file=sys.stderr,
                        flush=True,
                    )
                if os.path.exists(marker):
                    os.remove(marker)
            return step, restored["state"], dict(restored["meta"] or {})
        if steps:
            workdir = os.path.dirname(self.directory)
            refusal = (
                f"no intact checkpoint in {self.directory} (steps {', '.join(map(str, steps))} are not readable; "
                f"set aside as <step>.unreadable); run again with --restart to start afresh (the old files are kept "
                f"in {workdir}/set_aside-<time>/)"
            )
            if jax.process_index() == 0:
                with open(marker, "w") as f:
                    f.write(refusal + "\n")
            raise UserError(refusal)
        if os.path.exists(marker):
            with open(marker) as f:
                raise UserError(f.read().strip())
        return None

    def _set_aside(self, step: int) -> None:
        """Renames an unreadable step to `<step>.unreadable` (kept for inspection) so it is re-saved cleanly."""
        if jax.process_index() == 0:
            path = os.path.join(self.directory, str(step))
            target = path + ".unreadable"
            if os.path.isdir(path):
                if os.path.exists(target):
                    shutil.rmtree(target)
                os.rename(path, target)
        self._manager.reload()

    def wait(self) -> None:
        """Waits for the save in flight; its failure is a `UserError`."""
        try:
            self._manager.wait_until_finished()
        except Exception as error:  # noqa: BLE001
            raise self._save_failed(error) from None

    def close(self) -> None:
        self._manager.close()

    def _save_failed(self, error: Exception) -> UserError:
        return UserError(
            f"a checkpoint could not be saved in {self.directory} ({_reason(error)}); make room or fix the directory, "
            "then run the same command again to resume from the last one saved"
        )


def _reason(error: BaseException) -> str:
    """The first line of an error's message (at most 160 characters), or its type."""
    text = str(error).strip()
    return text.splitlines()[0][:160] if text else type(error).__name__


def _check_structure(state, abstract_state) -> None:
    pairs = zip(jax.tree.leaves(state), jax.tree.leaves(abstract_state))
    ok = jax.tree.structure(state) == jax.tree.structure(abstract_state) and all(
        a.shape == b.shape and a.dtype == b.dtype for a, b in pairs
    )
    if not ok:
        raise ValueError("restored arrays do not match the expected shapes")


class _DropOrbaxRecords(py_logging.Filter):
    """Drops Orbax's log records (unless absl logs at INFO or more, i.e. `--verbosity=0` or higher): every failure
    of Orbax's that matters reaches the user as one line of this module's (warning or `UserError`); its records
    (a logged traceback per failed thread) would bury that line."""

    def filter(self, record):
        return logging.level_info() or f"{os.sep}orbax{os.sep}" not in record.pathname


def _drop_stray_reports(hook):
    """`sys.unraisablehook` without the "Event loop is closed" reports of Orbax reads still in flight when a restore
    fails (their callbacks find Orbax's event loop closed); anything else goes to `hook`."""

    def unraisablehook(unraisable):
        error = unraisable.exc_value
        if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
            hook(unraisable)

    unraisablehook.lepton_quiet = True
    return unraisablehook


class _DropStrayTasks(py_logging.Filter):
    """Drops asyncio's "... exception was never retrieved" records of Orbax / TensorStore reads left in flight when a
    restore fails (logged with a traceback whenever the failed task happens to be garbage-collected), unless absl logs
    at INFO or more."""

    def filter(self, record):
        if logging.level_info() or "never retrieved" not in record.getMessage():
            return True
        error = record.exc_info[1] if record.exc_info else None
        frames = []
        traceback = error.__traceback__ if error is not None else None
        while traceback is not None:
            frames.append(traceback.tb_frame.f_code.co_filename)
            traceback = traceback.tb_next
        text = f"{record.getMessage()} {error!r} {' '.join(frames)}".lower()
        return not ("orbax" in text or "tensorstore" in text)


def _quiet_orbax() -> None:
    """Installs the filters above, once per process."""
    absl_logger = logging.get_absl_logger()
    if not any(isinstance(f, _DropOrbaxRecords) for f in absl_logger.filters):
        absl_logger.addFilter(_DropOrbaxRecords())
    asyncio_logger = py_logging.getLogger("asyncio")
    if not any(isinstance(f, _DropStrayTasks) for f in asyncio_logger.filters):
        asyncio_logger.addFilter(_DropStrayTasks())
    if not getattr(sys.unraisablehook, "lepton_quiet", False):
        sys.unraisablehook = _drop_stray_reports(sys.unraisablehook)
