"""lepton-jax: the shared core (config, parallelism, checkpoints, metrics, RL building blocks)."""

from lepton_jax.errors import UserError

__all__ = ["UserError"]
