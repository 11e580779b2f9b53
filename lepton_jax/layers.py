"""Layers every pillar shares: the activation table (one name -> function map), the MLP, and the attention core
(`masked_softmax`, `dot_product_attention`) of the sequence models."""

from collections.abc import Callable, Sequence

import jax
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


def masked_softmax(logits, mask, axis: int = -1):
    """The softmax of `logits` over `axis` among the entries where `mask` is True; exactly 0 where it is False.

    The largest unmasked logit is subtracted first (as `jax.nn.softmax` and jraph's segment softmax do), so large
    logits do not overflow. A row with no unmasked entry is all 0 (nothing to attend to), not NaN.

    Args:
      logits: any shape.
      mask: booleans broadcastable to `logits`' shape.
      axis: the axis normalised over.
    """
    mask = jnp.broadcast_to(mask, logits.shape)
    logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    shifted = logits - jax.lax.stop_gradient(logits.max(axis, keepdims=True))
    unnormalised = jnp.where(mask, jnp.exp(shifted), 0.0)
    total = unnormalised.sum(axis, keepdims=True)
    return unnormalised / jnp.where(total > 0, total, 1.0)


def dot_product_attention(query, key, value, mask=None):
    """Scaled dot-product attention, `softmax(q k^T / sqrt(D)) v` over the keys `mask` allows, for every head.

    The weights are computed in float32 (`masked_softmax`) whatever the inputs' type, then cast back to it.

    Args:
      query: (..., Tq, H, D).
      key: (..., Tk, H, D).
      value: (..., Tk, H, Dv).
      mask: booleans broadcastable to (..., H, Tq, Tk): which key each query may attend to (None: all).

    Returns:
      `(out (..., Tq, H, Dv), weights (..., H, Tq, Tk))`; each row of `weights` sums to 1 over its allowed keys
      (0 for a query allowed none) and is 0 elsewhere.
    """
    logits = jnp.einsum("...qhd,...khd->...hqk", query, key).astype(jnp.float32) / jnp.sqrt(query.shape[-1])
    weights = masked_softmax(logits, True if mask is None else mask).astype(value.dtype)
    return jnp.einsum("...hqk,...khv->...qhv", weights, value), weights
