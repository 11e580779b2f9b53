"""Advantage actor-critic (A2C; Mnih et al. 2016, synchronous): one gradient step per short rollout.

Built only from shared parts: the rollout, network, optimiser, loss and agent skeleton come from
`lepton_jax.rl.onpolicy`, the advantages from `lepton_jax.rl.gae` (lambda = 1 gives A2C's bootstrapped n-step
returns; lambda < 1 gives GAE), the loop from `lepton_jax.rl.loop`. A fork's new agent can start from this file.
"""

import jax.numpy as jnp

from lepton_jax import registry
from lepton_jax.rl import envs, loop, onpolicy
from lepton_jax.rl.gae import gae


def targets(traj, last_value, hp):
    """GAE advantages and returns of the rollout, every step used; `hp` is the run's `sweep.HyperParams`."""
    advantages, returns = gae(traj.reward, traj.value, traj.done, last_value, hp.gamma, hp.gae_lambda)
    return advantages, returns, jnp.ones_like(returns)


def make_agent(config, spec: envs.EnvSpec):
    return onpolicy.make_policy_gradient_agent(config, spec, targets)


@registry.register("a2c")
def train_and_evaluate(config, workdir: str) -> dict:
    return loop.train_and_evaluate(config, workdir, make_agent)
