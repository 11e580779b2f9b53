"""Hyperparameter sweeps: every value of a swept hyperparameter x every seed, trained in one compiled program.

`--config.sweep.lr=1e-3,3e-3,1e-2` trains 3 x `num_seeds` runs at once. The loop's leading state axis, the seed
axis of an ordinary run, becomes the *run* axis: run `r = v * num_seeds + s` has value `v` and seed `s`
(value-major), and seed `s` of every value starts from the key of seed `s` of an ordinary run. So each value's
runs are exactly the runs of a separate run with that value in the config. Several swept hyperparameters make a
grid (their cartesian product, in the order of `Agent.sweepable`, the first one slowest).

Swept hyperparameters are traced, not static: each run keeps its values in the agent's state (`state.hparams`, a
dict of float32 scalars), so one compiled chunk program serves every value. Hyperparameters that are not swept stay
Python constants of the config, and a run with no sweep has `hparams == {}` (no leaves): its programs are those of
a run without sweep support.

One path carries the config into an agent's update: `bind(config, update)` makes the agent's `update(state)` from
a function `update(hp, state)` that is given a `HyperParams`, built once per update from `(config,
state.hparams)`, and never the config itself. `hp` answers every config read inside the update (a swept name with
the run's traced value, any other with the config's constant), so no read can take a swept name from the static
config and silently ignore the sweep.

An agent lists the hyperparameters its update can take traced in `Agent.sweepable` (declared once, in the agent);
its config offers them as `config.sweep.<name>` (a string, "" when not swept). A config without a `sweep` field
sweeps nothing.
"""

import dataclasses
import itertools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lepton_jax import config as config_lib
from lepton_jax.errors import UserError
from lepton_jax.rl import config as rl_config


@dataclasses.dataclass(frozen=True)
class Sweep:
    """The runs of one launch: `points` (one tuple of values of `names` each) x `num_seeds` seeds.

    With nothing swept, `names == ()` and there is one point, `()`: the runs are the seeds.
    """

    names: tuple[str, ...]
    points: tuple[tuple[float, ...], ...]
    num_seeds: int

    @property
    def active(self) -> bool:
        return bool(self.names)

    @property
    def num_points(self) -> int:
        return len(self.points)

    @property
    def num_runs(self) -> int:
        return self.num_points * self.num_seeds

    @property
    def labels(self) -> list[str]:
        """One per point, e.g. `lr=0.001` or `lr=0.001,gamma=0.99`; `""` when nothing is swept."""
        return [",".join(f"{n}={v!r}" for n, v in zip(self.names, point)) for point in self.points]

    def hparams(self) -> dict[str, np.ndarray]:
        """The swept values of every run, `{name: (num_runs,) float32}`, value-major; `{}` when nothing is swept."""
        return {
            name: np.repeat(np.asarray([p[i] for p in self.points], np.float32), self.num_seeds)
            for i, name in enumerate(self.names)
        }

    def run_keys(self, seed_keys: jax.Array) -> jax.Array:
        """(num_seeds, ...) keys, one per seed -> (num_runs, ...): every point reuses the seeds' keys."""
        return jnp.concatenate([seed_keys] * self.num_points) if self.active else seed_keys

    def by_point(self, values) -> np.ndarray:
        """(num_runs, ...) -> (num_points, num_seeds, ...)."""
        values = np.asarray(values)
        return values.reshape((self.num_points, self.num_seeds) + values.shape[1:])


def _declared(name: str) -> config_lib.Key:
    """The declaration of a sweepable key: the one its plain value is checked with (`lepton_jax.config`)."""
    return {**config_lib.KEYS, **rl_config.KEYS}.get(name, config_lib.number())


def _parse_values(name: str, text) -> tuple[float, ...]:
    example = f"e.g. --config.sweep.{name}=0.001,0.003"
    parts = [part.strip() for part in str(text).split(",")]
    values = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise UserError(
                f"config.sweep.{name}='{text}': '{part}' is not a number; give comma-separated numbers, {example}"
            ) from None
        problem = _declared(name).problem(value)
        if problem is not None:
            raise UserError(f"config.sweep.{name}='{text}': {part} is not a valid {name} (must be {problem})")
        values.append(value)
    # Values that float32 cannot tell apart would be the same runs twice.
    if len({np.float32(v) for v in values}) < len(values):
        raise UserError(f"config.sweep.{name}='{text}' repeats a value")
    return tuple(values)


def parse(config, sweepable=()) -> Sweep:
    """The runs `config` asks for: its `sweep` values (if any) x `config.num_seeds`.

    Args:
      config: the run's config; `config.sweep.<name>` holds comma-separated numbers, or "" for not swept. A config
        without `sweep` sweeps nothing.
      sweepable: the hyperparameters the agent can sweep (`Agent.sweepable`).

    Raises:
      UserError: a value that is not a number or out of range, a repeated value, or a hyperparameter the agent
        cannot sweep.
    """
    num_seeds = int(config.num_seeds)
    if num_seeds < 1:
        raise UserError(f"config.num_seeds must be >= 1, got {num_seeds}")
    fields = config.get("sweep") or {}
    swept = {name: fields[name] for name in fields.keys() if fields[name] is not None and str(fields[name]).strip()}
    for name in swept:
        if name not in sweepable:
            can = ", ".join(sweepable) if sweepable else "nothing"
            raise UserError(f"config.sweep.{name}: this agent cannot sweep '{name}'; it can sweep {can}")
    names = tuple(name for name in sweepable if name in swept)  # the agent's order: the grid's, slowest first
    grids = [_parse_values(name, swept[name]) for name in names]
    return Sweep(names, tuple(itertools.product(*grids)), num_seeds)


class HyperParams:
    """Every config value an agent's update reads: the run's traced value where swept, else the config's constant.

    Reads like a config (`hp.gamma`, `hp["gamma"]`, `hp.get("gamma")`); read-only. Built by `bind` once per update.
    """

    __slots__ = ("_config", "_values")

    def __init__(self, config, values: dict):
        object.__setattr__(self, "_config", config)
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name: str):
        values = object.__getattribute__(self, "_values")
        if name in values:
            return values[name]
        return getattr(object.__getattribute__(self, "_config"), name)

    def __getitem__(self, name: str):
        return self.__getattr__(name)

    def __setattr__(self, name, value):
        raise AttributeError(f"HyperParams is read-only (tried to set '{name}')")

    def __contains__(self, name: str) -> bool:
        return name in object.__getattribute__(self, "_values") or name in object.__getattribute__(self, "_config")

    def get(self, name: str, default=None):
        values = object.__getattribute__(self, "_values")
        return values[name] if name in values else object.__getattribute__(self, "_config").get(name, default)

    def is_swept(self, name: str) -> bool:
        return name in object.__getattribute__(self, "_values")


def bind(config, update: Callable[[HyperParams, Any], tuple[Any, dict]]) -> Callable[[Any], tuple[Any, dict]]:
    """An agent's `update(state) -> (state, metrics)` from `update(hp, state)`, which never sees `config`.

    `hp` is the run's `HyperParams(config, state.hparams)`, built here once per update. Define `update` (and what
    it calls) where `config` is not in scope (at module level, its build-time products passed in with
    `functools.partial`), so that every hyperparameter it reads comes from `hp`.
    """

    def bound_update(state):
        return update(HyperParams(config, getattr(state, "hparams", None) or {}), state)

    return bound_update


def apply_gradients(train_state, grads, tx: optax.GradientTransformation | None = None):
    """`train_state.apply_gradients(grads=grads)`, or the same step with `tx` in place of the state's own optimiser.

    An optimiser whose learning rate is swept is built inside `update` from the traced value (`tx`); its state has
    the same structure as that of the state's `tx`, built at init from the config's constant. The state's static
    `tx` field is left as it was, so the state's structure does not change within a `lax.scan`.
    """
    if tx is None:
        return train_state.apply_gradients(grads=grads)
    updates, opt_state = tx.update(grads, train_state.opt_state, train_state.params)
    params = optax.apply_updates(train_state.params, updates)
    return train_state.replace(step=train_state.step + 1, params=params, opt_state=opt_state)
