"""Trainer registry: the `trainer` name in a config -> the function that trains it.

A trainer is `train_and_evaluate(config, workdir) -> results dict`. Built-in trainers register themselves when
their module is imported; `_BUILTIN` says which module that is, so the launcher imports only the code a run needs.
Forks add an entry to `_BUILTIN`, or call `register` from their own module.
"""

import importlib
from collections.abc import Callable

from lepton_jax.errors import UserError

TrainFn = Callable[..., dict]

_TRAINERS: dict[str, TrainFn] = {}
_BUILTIN = {
    "ppo": "agents.ppo",
    "dqn": "agents.dqn",
    "reinforce": "agents.reinforce",
    "a2c": "agents.a2c",
    "classifier": "lepton_jax.classifier",
    "vae": "generative.vae",
    "dcgan": "generative.dcgan",
    "node_classification": "graphs.node_classification",
    "link_prediction": "graphs.link_prediction",
    "graph_classification": "graphs.graph_classification",
    "graph_dqn": "graphs.combinatorial",
    "graph_ppo": "graphs.combinatorial",
}


def register(name: str):
    """Decorator: `@register("my_agent") def train_and_evaluate(config, workdir): ...`."""

    def decorate(fn: TrainFn) -> TrainFn:
        _TRAINERS[name] = fn
        return fn

    return decorate


def names() -> list[str]:
    return sorted(set(_TRAINERS) | set(_BUILTIN))


def get(name: str) -> TrainFn:
    if name not in _TRAINERS and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])  # a fixed, known module: registers `name`
    if name not in _TRAINERS:
        raise UserError(f"unknown trainer '{name}'; valid trainers: {', '.join(names())}")
    return _TRAINERS[name]


def module_of(name: str):
    """The built-in module that defines trainer `name` (e.g. for its `make_agent`)."""
    if name not in _BUILTIN:
        raise UserError(f"unknown trainer '{name}'; valid trainers: {', '.join(sorted(_BUILTIN))}")
    return importlib.import_module(_BUILTIN[name])
