"""The launcher's table of trainers: each pillar package lists its own in `TRAINERS` ({name: module}).

A fork adds a trainer by writing its module (which calls `lepton_jax.registry.register`) and one line in its
pillar's `TRAINERS`; a new pillar adds its package here. No core file changes.
"""

import importlib

from lepton_jax import registry

PILLARS = ("agents", "graphs", "graphs.rl", "generative", "lepton_jax.vision")
RL_PILLARS = ("agents", "graphs.rl")  # their trainers define `make_agent` (what scripts.evaluate evaluates)


def names(pillars=PILLARS) -> list[str]:
    """The trainer names of `pillars`."""
    return sorted(name for package in pillars for name in importlib.import_module(package).TRAINERS)


def load() -> None:
    """Tells the registry where every pillar's trainers live (imports only the pillars' light `__init__`s)."""
    for package in PILLARS:
        registry.add_sources(importlib.import_module(package).TRAINERS)
