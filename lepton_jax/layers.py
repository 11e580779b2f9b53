"""Layers every pillar shares: the activation table (one name -> function map) and the MLP."""

from collections.abc import Callable, Sequence

import jax.numpy as jnp
from flax import linen as nn

from lepton_jax.errors import UserError

_ACTIVATIONS = {
    "elu": nn.elu,
    "gelu": nn.gelu,
    "identity": lambda x: x,
    "relu": nn.relu,
    "tanh": jnp.tanh,
}


def activation(name: str) -> Callable:
    """The activation function called `name` (a config's `activation`).

    Raises:
      UserError: an unknown name; the message lists the valid ones.
    """
    if name not in _ACTIVATIONS:
        raise UserError(f"unknown activation '{name}'; valid: {', '.join(sorted(_ACTIVATIONS))}")
    return _ACTIVATIONS[name]


class MLP(nn.Module):
    """Dense layers of `sizes` over the last axis, each followed by `activation` (not the last with
    `activate_final=False`).

    Its parameters are `Dense_0, Dense_1, ...`: the class name and the layers' automatic names are part of every
    parameter tree built on it (and so of its checkpoints and `params_sha256`), so keep both.
    """

    sizes: Sequence[int]
    activation: str = "relu"
    activate_final: bool = True
    kernel_init: Callable = nn.linear.default_kernel_init
    bias_init: Callable = nn.initializers.zeros

    @nn.compact
    def __call__(self, x):
        act = activation(self.activation)
        for i, size in enumerate(self.sizes):
            x = nn.Dense(size, kernel_init=self.kernel_init, bias_init=self.bias_init)(x)
            if self.activate_final or i < len(self.sizes) - 1:
                x = act(x)
        return x
