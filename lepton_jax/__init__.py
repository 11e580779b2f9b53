"""lepton-jax: the shared core (config, parallelism, checkpoints, metrics, RL building blocks)."""

from lepton_jax import xla_cpu

xla_cpu.set_defaults()  # before anything starts JAX's backend

from lepton_jax.errors import UserError  # noqa: E402

__all__ = ["UserError"]
