"""The launcher's table of trainers: each pillar package lists its own in `TRAINERS` ({name: module}), and its
`configs` package declares their config keys (`KEYS`) and the checks between them (`CHECKS`).

A fork adds a trainer by writing its module (which calls `lepton_jax.registry.register`), one line in its
pillar's `TRAINERS` and its new keys in the pillar's `configs.KEYS`; a new pillar adds its package here. No core
file changes.
"""

import importlib

from lepton_jax import config as config_lib
from lepton_jax import registry

PILLARS = ("agents", "graphs", "graphs.rl", "graphs.kg", "generative", "lepton_jax.vision", "lepton_jax.sequence")
RL_PILLARS = ("agents", "graphs.rl")  # their trainers define `make_agent` (what scripts.evaluate evaluates)


def names(pillars=PILLARS) -> list[str]:
    """The trainer names of `pillars`."""
    return sorted(name for package in pillars for name in importlib.import_module(package).TRAINERS)


def load() -> None:
    """Tells the registry where every pillar's trainers live (imports only the pillars' light `__init__`s)."""
    for package in PILLARS:
        registry.add_sources(importlib.import_module(package).TRAINERS)


def pillar_of(trainer: str) -> str:
    """The pillar package whose `TRAINERS` holds `trainer`; a `UserError` listing the trainers for an unknown one."""
    for package in PILLARS:
        if trainer in importlib.import_module(package).TRAINERS:
            return package
    load()
    registry.get(trainer)  # raises: unknown trainer, naming the valid ones
    raise AssertionError(trainer)


def validate(config) -> None:
    """Checks `config` against its trainer's declared keys and checks (`lepton_jax.config.validate`)."""
    configs = importlib.import_module(pillar_of(config.trainer) + ".configs")
    config_lib.validate(config, configs.KEYS, configs.CHECKS)
