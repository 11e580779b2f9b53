"""IPPO and MAPPO: PPO for a cooperative team, one network shared by its agents.

- IPPO (independent PPO; de Witt et al. 2020): each agent's actor and critic read its own observation with a one-hot
  of its index appended (parameters are shared, so the index lets agents behave differently).
- MAPPO (Yu et al. 2022): the same actor; the critic is centralised: it reads the global state (the env's world
  state; for MPE every agent's observation) with the agent's one-hot.

Both are `agents.ppo` run on a multi-agent env of `lepton_jax.rl.marl`, seen through its `GymnaxView` (observation
`marl.Observation`, action the agents' [A] joint action, the team reward): the rollout, GAE (per agent, under the
team's reward: `lepton_jax.rl.gae.gae`), the minibatch epochs, the clipped loss (`ppo.ppo_loss`), the optimiser, the
chunked loop, seeds and sweeps are PPO's. Only the network is this file's: its distribution and values carry the
agent axis, (..., A, num_actions) and (..., A), and `ppo_loss` averages over agents as over steps. Unavailable
actions (SMAX's `avail`) get their logits masked (`onpolicy.ActorCriticFns`). The networks are feed-forward (no
GRU); the trainer name chooses the critic (`CENTRAL_CRITIC`).
"""

from collections.abc import Sequence

import jax.numpy as jnp
from flax import linen as nn

from agents import ppo
from lepton_jax import registry
from lepton_jax.initializers import orthogonal
from lepton_jax.rl import envs, loop, marl
from lepton_jax.rl.agent import Agent
from lepton_jax.rl.agent import make_train as _make_train
from lepton_jax.rl.distributions import Categorical
from lepton_jax.rl.networks import torso

# trainer name -> whether its critic reads the global state (MAPPO) rather than the agent's observation (IPPO)
CENTRAL_CRITIC = {"ippo": False, "mappo": True}


class TeamActorCritic(nn.Module):
    """Actor and critic torsos shared by `num_agents` agents, over a `marl.Observation` with any leading axes.

    Returns a `Categorical` over (..., A, num_actions) and the values (..., A); `value` runs the critic alone.
    """

    num_agents: int
    num_actions: int
    central_critic: bool = False
    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "tanh"

    def setup(self):
        self.actor_torso = torso(self.hidden_sizes, self.activation)
        # A small last layer keeps the initial policy close to uniform (as `networks.ActorCritic`).
        self.actor_head = nn.Dense(self.num_actions, kernel_init=orthogonal(0.01), bias_init=nn.initializers.zeros)
        self.critic_torso = torso(self.hidden_sizes, self.activation)
        self.critic_head = nn.Dense(1, kernel_init=orthogonal(1.0), bias_init=nn.initializers.zeros)

    def __call__(self, obs: marl.Observation):
        logits = self.actor_head(self.actor_torso(marl.with_ids(obs.obs)))  # (..., A, num_actions)
        return Categorical(logits), self.value(obs)

    def value(self, obs: marl.Observation):
        if self.central_critic:  # the global state (..., S), the same for every agent: (..., A, S)
            x = jnp.broadcast_to(obs.state[..., None, :], obs.obs.shape[:-1] + obs.state.shape[-1:])
        else:
            x = obs.obs
        return jnp.squeeze(self.critic_head(self.critic_torso(marl.with_ids(x))), -1)  # (..., A)


def make_agent(config, spec: envs.EnvSpec) -> Agent:
    """IPPO or MAPPO (`config.trainer`) on the multi-agent env `spec` (a `marl.GymnaxView`): PPO with the team's
    shared `TeamActorCritic`.

    Raises:
      UserError: a single-agent env, or `config.bootstrap_truncated` (the multi-agent envs report no time-limit cut:
        every episode end is terminal, as in JaxMARL's baselines).
    """
    marl.check_team_config(config, spec.name)
    team = spec.env.env
    network = TeamActorCritic(
        team.num_agents,
        team.num_actions,
        CENTRAL_CRITIC[config.trainer],
        tuple(config.hidden_sizes),
        config.activation,
    )
    return ppo.make_agent(config, spec, network)


def make_train(config):
    """`train(rng) -> (state, metrics)`: the whole run as one pure function, vmappable over seeds."""
    return _make_train(make_agent(config, envs.make_env(config.env_name)))


@registry.register("ippo")
@registry.register("mappo")
def train_and_evaluate(config, workdir: str) -> dict:
    """The launcher's entry point: IPPO or MAPPO (`config.trainer`) through the shared chunked RL loop."""
    return loop.train_and_evaluate(config, workdir, make_agent)
