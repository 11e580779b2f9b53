"""Early stopping on a validation split, with the best parameters kept: one piece for every supervised trainer.

    early = early_stopping.EarlyStopping.create(params)                       # in the state, per seed
    early = early.update(params, (val_accuracy,), epoch, config.patience)     # after each evaluation
    ... task.done = all seeds stopped; the test metrics use `early.best_params`

Keys (`lepton_jax/config.py`): `val_fraction`, the share of the training data held out for validation
(`holdout`), and `patience`, the evaluations without improvement after which a seed stops (0: it never stops, but
the best parameters are still the ones kept). The image trainers also take `monitor` (`watch`: the validation loss,
or accuracy) and `val_from` (`"rest"`: the validation images follow the training subset instead of ending it).

The scores are "higher is better" (pass `-loss` for a loss). With several scores an evaluation *improves* when any
of them is at least its best so far, and the parameters are *kept* when all are: the rule of the GAT paper's code
(validation loss and accuracy), which a single score reduces to the usual one. Once a seed has stopped its
bookkeeping is frozen, so seeds trained together (vmapped) each stop on their own evidence.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from lepton_jax.config import MONITORS, require


def where(condition, new, old):
    """`new` where `condition` (a scalar) holds, else `old`, leaf by leaf."""
    return jax.tree.map(lambda a, b: jnp.where(condition, a, b), new, old)


@struct.dataclass
class EarlyStopping:
    """Per-seed validation bookkeeping: the best scores so far, the epoch and parameters kept, the evaluations
    without improvement, and whether the seed has stopped."""

    best_params: Any
    best_scores: tuple[jax.Array, ...]
    best_epoch: jax.Array
    bad_epochs: jax.Array
    stopped: jax.Array

    @classmethod
    def create(cls, params, num_scores: int = 1) -> "EarlyStopping":
        # Strong dtypes: a weakly typed initial value would make the second step call compile again.
        worst = tuple(jnp.array(-jnp.inf, jnp.float32) for _ in range(num_scores))
        return cls(params, worst, jnp.array(-1, jnp.int32), jnp.array(0, jnp.int32), jnp.array(False))

    def update(self, params, scores, epoch, patience: int) -> "EarlyStopping":
        """The bookkeeping after an evaluation of `params` with `scores` (higher is better) at `epoch`.

        `patience` 0 never stops."""
        scores = tuple(jnp.asarray(s, jnp.float32) for s in scores)
        at_least = [s >= b for s, b in zip(scores, self.best_scores)]
        improved = jnp.any(jnp.stack(at_least))
        keep = jnp.all(jnp.stack(at_least))
        bad_epochs = jnp.where(improved, 0, self.bad_epochs + 1)
        new = EarlyStopping(
            best_params=where(keep, params, self.best_params),
            best_scores=tuple(jnp.maximum(s, b) for s, b in zip(scores, self.best_scores)),
            best_epoch=jnp.where(keep, jnp.asarray(epoch, jnp.int32), self.best_epoch),
            bad_epochs=bad_epochs,
            stopped=(bad_epochs >= patience) if patience > 0 else jnp.array(False),
        )
        return where(self.stopped, self, new)


def watch(train_epoch: Callable, validate: Callable | None, patience: int, monitor: str = "loss"):
    """`(train_epoch, kept)` for a trainer whose state (seed axis first) has `variables()` and an `early` field.

    Each epoch of the returned `train_epoch` ends with `validate(variables)` (per-seed metrics with `val/loss` and
    `val/accuracy`, added to the epoch's) and the early-stopping update on the `monitor`ed score (`-val/loss`, or
    `val/accuracy`); `kept(state)` is then the variables to test, the best so far. With `validate` None:
    `train_epoch` itself, and `kept` the last variables.
    """
    if validate is None:
        return train_epoch, lambda state: state.variables()
    require(monitor in MONITORS, f"config.monitor must be one of {', '.join(MONITORS)}, got '{monitor}'")

    @jax.jit
    def update(state, score, epoch):
        def one(early, variables, value):
            return early.update(variables, (value,), epoch, patience)

        return state.replace(early=jax.vmap(one)(state.early, state.variables(), score))

    def watched_epoch(state, epoch):
        state, metrics = train_epoch(state, epoch)
        val = validate(state.variables())
        score = -val["val/loss"] if monitor == "loss" else val["val/accuracy"]
        return update(state, score, epoch), metrics | val

    return watched_epoch, lambda state: state.early.best_params


def all_stopped(early: EarlyStopping) -> bool:
    """Whether every seed has stopped (a host value: `Task.done`)."""
    return bool(np.all(jax.device_get(early.stopped)))


def holdout(num_examples: int, val_fraction: float) -> int:
    """How many of the last training examples are held out for validation (at least one when asked for, and at
    least one left to train on)."""
    if val_fraction <= 0:
        return 0
    held = max(1, int(round(num_examples * val_fraction)))
    require(
        held < num_examples,
        f"config.val_fraction={val_fraction} leaves no training example (of {num_examples}); lower it",
    )
    return held
