"""Transfer learning: start from another run's trained parameters, optionally with the transferred trunk frozen.

    python -m scripts.train --config=...classifier.py:mnist --config.classes=0-4 --workdir=runs/digits0to4
    python -m scripts.train --config=...classifier.py:mnist --config.classes=5-9 \
        --config.init_from=runs/digits0to4 --config.freeze_trunk=True

Keys (`lepton_jax/config.py`): `init_from`, the workdir of a run of the same network (its newest checkpoint is
read; the run need not have finished); `transfer_exclude`, the top-level modules of the parameters that are *not*
copied but trained from their own initialisation (the new task's head, by default); `freeze_trunk`, whether every
copied module stays as it was: its parameters get no update (the optimiser is masked with `optax.set_to_zero`, so
neither gradient steps nor weight decay move them) and a network with BatchNorm keeps the copied statistics (the
trainer runs its normalisation in inference mode).

The source run's kept parameters are used: its early-stopping best when it held out a validation split, else its
last. With several seeds there, seed 0's are copied into every seed of the new run. A module of the new network
that the source lacks, or whose shapes differ, is one `UserError` line naming it and both shapes.
"""

import os

import jax
import numpy as np
import optax
from flax import traverse_util

from lepton_jax import checkpoint
from lepton_jax.errors import UserError

TRAIN, FROZEN = "train", "frozen"


def excluded(config) -> tuple[str, ...]:
    """The module names `config.transfer_exclude` lists (comma-separated)."""
    return tuple(name.strip() for name in config.get("transfer_exclude", "head").split(",") if name.strip())


def source_steps(workdir: str) -> list[int]:
    """The checkpoint steps of the source run `workdir` (oldest first); none is one `UserError` line."""
    steps = checkpoint.saved_steps(workdir)
    if not steps:
        raise UserError(f"config.init_from={workdir} holds no checkpoint to start from; point it at a trained run")
    return steps


def check_source(config) -> None:
    """At launch (a config check): `config.init_from`, when set, is a run with a checkpoint to start from."""
    if config.get("init_from"):
        source_steps(config.init_from)


def read_variables(workdir: str) -> dict:
    """Seed 0's kept variables (`{"params": ..., "batch_stats": ...}`) from the newest checkpoint in `workdir`.

    Reads only: the other run's files are never changed.
    """
    import orbax.checkpoint as ocp

    steps = source_steps(workdir)
    try:
        # Orbax takes absolute paths only: a workdir given relative to the working directory is made absolute.
        path = os.path.abspath(os.path.join(workdir, "checkpoints", str(steps[-1]), "state"))
        state = ocp.StandardCheckpointer().restore(path)
    except Exception as error:  # noqa: BLE001 - any failure to read is the user's file to fix
        first = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise UserError(f"config.init_from={workdir}: its checkpoint {steps[-1]} cannot be read ({first})") from None
    early = state.get("early") if isinstance(state, dict) else None
    if isinstance(early, dict) and "best_params" in early:
        variables = early["best_params"]
    elif isinstance(state, dict) and isinstance(state.get("params"), dict) and "params" in state["params"]:
        variables = {**state["params"], **(state.get("model_state") or {})}
    else:
        raise UserError(f"config.init_from={workdir}: its checkpoint holds no network parameters this trainer can use")
    return jax.tree.map(lambda x: np.asarray(x)[0], variables)  # seed 0


def transfer(target: dict, source: dict, exclude: tuple[str, ...], where: str = "config.init_from") -> dict:
    """`target` variables with every module not in `exclude` replaced by `source`'s (all collections: parameters
    and BatchNorm statistics alike). Shapes must match. A collection the source run does not have at all (the
    quantisation statistics of a quantisation-aware run started from a float one) keeps `target`'s values."""
    flat_target = traverse_util.flatten_dict(target)
    flat_source = traverse_util.flatten_dict(source)
    collections = {path[0] for path in flat_source}
    out = {}
    for path, value in flat_target.items():
        module = path[1] if len(path) > 1 else path[0]  # (collection, module, ...)
        if module in exclude or (len(path) > 1 and path[0] not in collections):
            out[path] = value
            continue
        name = "/".join(path)
        if path not in flat_source:
            raise UserError(
                f"{where}: the source network has no {name}; list its module in config.transfer_exclude to train it "
                "from scratch"
            )
        if tuple(flat_source[path].shape) != tuple(value.shape):
            raise UserError(
                f"{where}: {name} has shape {tuple(flat_source[path].shape)} there and {tuple(value.shape)} here; "
                "the networks must match outside config.transfer_exclude"
            )
        out[path] = np.asarray(flat_source[path], value.dtype)
    return traverse_util.unflatten_dict(out)


def freeze(tx: optax.GradientTransformation, exclude: tuple[str, ...]) -> optax.GradientTransformation:
    """`tx` for the modules in `exclude`; no update at all for every other (transferred) module.

    The parameters are a variables dict (`{"params": {module: ...}}`) or a bare `{module: ...}` tree."""

    def labels(params):
        def label(path, _):
            names = [getattr(p, "key", None) for p in path]
            module = names[1] if names and names[0] == "params" and len(names) > 1 else names[0]
            return TRAIN if module in exclude else FROZEN

        return jax.tree_util.tree_map_with_path(label, params)

    return optax.multi_transform({TRAIN: tx, FROZEN: optax.set_to_zero()}, labels)
