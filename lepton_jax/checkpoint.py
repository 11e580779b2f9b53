"""Orbax checkpoints of a whole training state, with fallback to the newest intact one.

Layout: `<workdir>/checkpoints/<step>/` (Orbax's), each holding the state pytree and a small JSON `meta` dict.
Orbax writes into a temporary directory and renames it when complete, so a save cut short never shows up as a
step. A step that is there but cannot be read back (truncated or deleted files) is skipped with a warning and the
previous one is used; if none can be read, one `UserError` line says so.
"""

import os
import shutil

import jax
import orbax.checkpoint as ocp
from absl import logging

from lepton_jax.errors import UserError


class Checkpointer:
    """Saves every call to `save`, keeps the newest `keep`, restores the newest intact one."""

    def __init__(self, directory: str, keep: int = 3):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, step: int, state, meta: dict | None = None, wait: bool = False) -> None:
        """Saves `state` (any pytree of arrays) at `step`; asynchronous unless `wait`."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta or {}))
        self._manager.save(step, args=args, force=True)
        if wait:
            self._manager.wait_until_finished()

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def restore_latest(self, abstract_state):
        """Returns `(step, state, meta)` from the newest readable checkpoint, or `None` when there is none.

        Args:
          abstract_state: the state's structure as `jax.ShapeDtypeStruct`s with shardings (from `jax.eval_shape`),
            so that arrays are restored straight onto the right devices.
        """
        steps = self.steps()
        for step in reversed(steps):
            try:
                restored = self._manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
                    ),
                )
                _check_structure(restored["state"], abstract_state)
                return step, restored["state"], dict(restored["meta"] or {})
            except Exception as error:  # noqa: BLE001 - any failure to read means "not intact"
                reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
                logging.warning(
                    "checkpoint %s/%d is not readable (%s); trying an older one", self.directory, step, reason
                )
                self._set_aside(step)
        if steps:
            raise UserError(
                f"no intact checkpoint in {self.directory} (tried steps {steps}); delete the directory to start afresh"
            )
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
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


def _check_structure(state, abstract_state) -> None:
    pairs = zip(jax.tree.leaves(state), jax.tree.leaves(abstract_state))
    ok = jax.tree.structure(state) == jax.tree.structure(abstract_state) and all(
        a.shape == b.shape and a.dtype == b.dtype for a, b in pairs
    )
    if not ok:
        raise ValueError("restored arrays do not match the expected shapes")
