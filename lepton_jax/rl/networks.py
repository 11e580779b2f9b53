"""Policy and value networks on the shared `lepton_jax.layers.MLP`: an actor-critic with separate torsos (PPO's
usual choice) and a (dueling) Q-network.

A torso is an MLP over the flat observation, or, with `conv_filters > 0` and an image observation (MinAtar's
(10, 10, C) grids), the MinAtar paper's convolutional torso (Young & Tian 2019): one 3x3 convolution of
`conv_filters` filters (16 there), ReLU, then the MLP (128 units there) on its flattened output.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from lepton_jax.initializers import orthogonal
from lepton_jax.layers import MLP
from lepton_jax.rl.distributions import Categorical, DiagGaussian


class ConvTorso(nn.Module):
    """A 3x3 convolution (`filters`, VALID, ReLU) over the image `obs_shape`, then the MLP; input flat (..., D)."""

    obs_shape: tuple[int, ...]
    filters: int
    hidden_sizes: Sequence[int]
    activation: str

    @nn.compact
    def __call__(self, x):
        lead = x.shape[:-1]
        x = x.reshape((-1, *self.obs_shape))
        x = nn.Conv(self.filters, (3, 3), padding="VALID", kernel_init=orthogonal(np.sqrt(2)))(x)
        x = nn.relu(x).reshape(lead + (-1,))
        return MLP(tuple(self.hidden_sizes), self.activation, kernel_init=orthogonal(np.sqrt(2)))(x)


def torso(
    hidden_sizes: Sequence[int], activation: str, obs_shape: tuple[int, ...] | None = None, conv_filters: int = 0
) -> nn.Module:
    """The usual RL torso, orthogonal(sqrt 2) weights and zero biases, over a flat (B, D): the shared `MLP`, or with
    `conv_filters` and an image `obs_shape` (H, W, C) the convolutional `ConvTorso`."""
    if conv_filters and obs_shape is not None and len(obs_shape) == 3:
        return ConvTorso(tuple(obs_shape), conv_filters, tuple(hidden_sizes), activation)
    return MLP(tuple(hidden_sizes), activation, kernel_init=orthogonal(np.sqrt(2)))


class ActorCritic(nn.Module):
    """Separate actor and critic torsos over a flat observation (B, obs_dim).

    `action_dim` is the number of discrete actions, or the size of a continuous action vector when `continuous`.
    Calling it returns the action distribution and the value estimate (B,); `value` runs the critic alone.
    """

    action_dim: int
    continuous: bool = False
    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "tanh"
    obs_shape: tuple[int, ...] | None = None  # with `conv_filters`: the image shape of the flat input
    conv_filters: int = 0

    def setup(self):
        self.actor_torso = torso(self.hidden_sizes, self.activation, self.obs_shape, self.conv_filters)
        # A small last layer keeps the initial policy close to uniform (or to a zero-mean Gaussian).
        self.actor_head = nn.Dense(self.action_dim, kernel_init=orthogonal(0.01), bias_init=nn.initializers.zeros)
        if self.continuous:
            self.log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
        self.critic_torso = torso(self.hidden_sizes, self.activation, self.obs_shape, self.conv_filters)
        self.critic_head = nn.Dense(1, kernel_init=orthogonal(1.0), bias_init=nn.initializers.zeros)

    def __call__(self, obs):
        head = self.actor_head(self.actor_torso(obs))
        if self.continuous:
            dist = DiagGaussian(head, jnp.broadcast_to(self.log_std, head.shape))
        else:
            dist = Categorical(head)
        return dist, self.value(obs)

    def value(self, obs):
        return jnp.squeeze(self.critic_head(self.critic_torso(obs)), -1)


def flatten_obs(obs: jax.Array, obs_shape: tuple[int, ...] | None) -> jax.Array:
    """(..., *obs_shape) -> (..., prod(obs_shape)) float32, so MinAtar's (10, 10, C) grids feed an MLP.

    A structured observation (`obs_shape` None, e.g. a graph) goes to its network as it is.
    """
    if obs_shape is None:
        return obs
    lead = obs.shape[: obs.ndim - len(obs_shape)]
    return obs.reshape(lead + (-1,)).astype(jnp.float32)


class QNetwork(nn.Module):
    """Q-values (B, action_dim) from a flat observation; `dueling` splits the head into V + (A - mean A)."""

    action_dim: int
    hidden_sizes: Sequence[int] = (120, 84)
    activation: str = "relu"
    dueling: bool = False
    obs_shape: tuple[int, ...] | None = None
    conv_filters: int = 0

    @nn.compact
    def __call__(self, obs):
        x = torso(self.hidden_sizes, self.activation, self.obs_shape, self.conv_filters)(obs)
        advantages = nn.Dense(self.action_dim, kernel_init=orthogonal(1.0), bias_init=nn.initializers.zeros)(x)
        if not self.dueling:
            return advantages
        value = nn.Dense(1, kernel_init=orthogonal(1.0), bias_init=nn.initializers.zeros)(x)
        return value + advantages - advantages.mean(axis=-1, keepdims=True)
