"""Trainer registry: the `trainer` name in a config -> the function that trains it.

A trainer is `train_and_evaluate(config, workdir) -> results dict`, registered by its own module with
`@register("name")`. The core names no trainer: the launcher tells the registry which module defines which
trainer (`add_sources`, from each pillar package's `TRAINERS` table: `scripts/trainers.py`), so that it imports only
the code a run needs.
"""

import importlib
from collections.abc import Callable

from lepton_jax.errors import UserError

TrainFn = Callable[..., dict]

_TRAINERS: dict[str, TrainFn] = {}
_SOURCES: dict[str, str] = {}  # trainer name -> the module whose import registers it


def register(name: str):
    """Decorator: `@register("my_agent") def train_and_evaluate(config, workdir): ...`."""

    def decorate(fn: TrainFn) -> TrainFn:
        _TRAINERS[name] = fn
        return fn

    return decorate


def add_sources(table: dict[str, str]) -> None:
    """Declares, for each trainer name, the module that registers it (imported on first `get`)."""
    _SOURCES.update(table)


def names() -> list[str]:
    return sorted(set(_TRAINERS) | set(_SOURCES))


def get(name: str) -> TrainFn:
    """The trainer `name`; a `UserError` listing the known names for an unknown one."""
    if name not in _TRAINERS and name in _SOURCES:
        importlib.import_module(_SOURCES[name])  # a module from a fixed table: registers `name`
    if name not in _TRAINERS:
        raise UserError(f"unknown trainer '{name}'; valid trainers: {', '.join(names())}")
    return _TRAINERS[name]


def module_of(name: str):
    """The module that defines trainer `name` (e.g. for its `make_agent` or `evaluate_workdir`)."""
    if name not in _SOURCES:
        raise UserError(f"unknown trainer '{name}'; valid trainers: {', '.join(names())}")
    return importlib.import_module(_SOURCES[name])
