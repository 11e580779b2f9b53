"""The two action distributions PPO-style agents need, in a few lines each (no distrax/tfp dependency)."""

from typing import NamedTuple

import jax
import jax.numpy as jnp

_LOG_2PI = jnp.log(2.0 * jnp.pi)


class Categorical(NamedTuple):
    """Categorical over the last axis of `logits` (..., A)."""

    logits: jax.Array

    def sample(self, key):
        return jax.random.categorical(key, self.logits)

    def log_prob(self, action):
        # A one-hot product rather than a gather: the gather's gradient is a scatter, slow on CPU.
        log_p = jax.nn.log_softmax(self.logits)
        return jnp.sum(log_p * jax.nn.one_hot(action, self.logits.shape[-1], dtype=log_p.dtype), axis=-1)

    def entropy(self):
        log_p = jax.nn.log_softmax(self.logits)
        return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)

    def mode(self):
        return jnp.argmax(self.logits, axis=-1)


class DiagGaussian(NamedTuple):
    """Diagonal Gaussian; `mean` and `log_std` are (..., D), densities sum over D."""

    mean: jax.Array
    log_std: jax.Array

    def sample(self, key):
        return self.mean + jnp.exp(self.log_std) * jax.random.normal(key, self.mean.shape)

    def log_prob(self, action):
        z = (action - self.mean) * jnp.exp(-self.log_std)
        return jnp.sum(-0.5 * z**2 - self.log_std - 0.5 * _LOG_2PI, axis=-1)

    def entropy(self):
        return jnp.sum(self.log_std + 0.5 * (1.0 + _LOG_2PI), axis=-1) * jnp.ones(self.mean.shape[:-1])

    def mode(self):
        return self.mean
