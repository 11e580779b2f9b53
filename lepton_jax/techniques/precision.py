"""Mixed precision: compute in a low type, keep the parameters and the optimiser state in float32.

    model = precision.module(make_model(config), config)   # a trainer wraps its model once
    (loss, aux), grads = precision.value_and_grad(loss_fn, state.opt_state, has_aux=True)(params)

`config.precision` is f32 (the default: nothing changes), bf16 or f16. `wrap` casts the floating leaves of the
variables and of the inputs to the low type, so that every layer (dense, conv, message passing) computes in it, and
casts the floating outputs back to float32, where the losses, the softmax and any updated batch statistics live (the
policy of DeepMind's jmp: parameters f32, compute low, output f32). The gradients reach the float32 parameters
through the casts, so the optimiser works in float32.

f16's 5 exponent bits underflow small gradients, so f16 scales the loss dynamically (Micikevicius et al. 2018): the
optimiser (`lepton_jax/techniques/optim.py` adds `dynamic_loss_scale` when `precision` is f16) holds the scale,
`value_and_grad` multiplies the loss by it before differentiating, and the optimiser divides the gradients by it:
a step whose gradients are not finite is skipped (no update, the optimiser's state unchanged) and halves the scale;
`period` finite steps in a row double it. bf16 has float32's exponent range and needs no scaling.

On a CPU, bf16 is not faster (XLA's CPU backend emulates most bf16 arithmetic in float32): precision is for GPUs
and TPUs; here it is tested for its numbers, not its speed.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lepton_jax.config import PRECISIONS, require

DTYPES = {"f32": jnp.float32, "bf16": jnp.bfloat16, "f16": jnp.float16}


def dtype(config) -> Any:
    """The compute type `config.precision` names (float32 when the config has no such key)."""
    name = config.get("precision", "f32")
    require(name in PRECISIONS, f"config.precision must be one of {', '.join(PRECISIONS)}, got '{name}'")
    return DTYPES[name]


def cast(tree, to) -> Any:
    """`tree` with its floating leaves in type `to` (integers, booleans and PRNG keys untouched)."""

    def one(x):
        floating = hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)
        return x.astype(to) if floating and x.dtype != to else x

    return jax.tree.map(one, tree)


def wrap(apply: Callable, config) -> Callable:
    """`apply(variables, *args, **kwargs)` computing in `config.precision`'s type, its outputs float32; `apply`
    itself when the precision is f32."""
    low = dtype(config)
    if low == jnp.float32:
        return apply

    def low_apply(variables, *args, **kwargs):
        out = apply(cast(variables, low), *cast(args, low), **{k: cast(v, low) for k, v in kwargs.items()})
        return cast(out, jnp.float32)

    return low_apply


class LowPrecisionModule:
    """A Flax module whose `apply` computes in the low type (`wrap`); `init` and every attribute are the module's."""

    def __init__(self, module, config):
        self.module = module
        self.apply = wrap(module.apply, config)

    def __getattr__(self, name):
        return getattr(self.module, name)


def module(model, config):
    """`model` computing in `config.precision`'s type: the module itself for f32, else a `LowPrecisionModule`."""
    return model if dtype(config) == jnp.float32 else LowPrecisionModule(model, config)


class LossScaleState(NamedTuple):
    scale: jax.Array  # () float32: the loss is multiplied by it before differentiating
    good_steps: jax.Array  # () int32: finite steps since the scale last changed
    inner: Any  # the wrapped optimiser's state


def dynamic_loss_scale(
    inner: optax.GradientTransformation, initial: float = 2.0**15, period: int = 2000
) -> optax.GradientTransformation:
    """`inner` on gradients of a loss scaled by a dynamic factor: they are unscaled first; non-finite ones skip the
    step and halve the factor (to at least 1); `period` finite steps in a row double it."""

    def init(params):
        return LossScaleState(jnp.float32(initial), jnp.zeros([], jnp.int32), inner.init(params))

    def update(grads, state: LossScaleState, params=None):
        grads = jax.tree.map(lambda g: g / state.scale.astype(g.dtype), grads)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
        updates, inner_state = inner.update(grads, state.inner, params)
        updates = jax.tree.map(lambda u: jnp.where(finite, u, jnp.zeros_like(u)), updates)
        inner_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), inner_state, state.inner)
        good = jnp.where(finite, state.good_steps + 1, 0)
        grow = good >= period
        scale = jnp.where(finite, jnp.where(grow, state.scale * 2, state.scale), jnp.maximum(state.scale / 2, 1.0))
        return updates, LossScaleState(scale, jnp.where(grow, 0, good), inner_state)

    return optax.GradientTransformation(init, update)


def loss_scale(opt_state) -> jax.Array | None:
    """The current loss scale held in an optimiser state (None when it has no dynamic loss scaling)."""
    found = [
        s
        for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, LossScaleState))
        if isinstance(s, LossScaleState)
    ]
    return found[0].scale if found else None


def value_and_grad(fn: Callable, opt_state, has_aux: bool = False, argnums: int = 0) -> Callable:
    """`jax.value_and_grad(fn, argnums, has_aux)`, differentiating the loss times the scale `opt_state` holds
    (f16); the value returned is the unscaled loss. Plain `jax.value_and_grad` without loss scaling."""
    scale = loss_scale(opt_state)
    if scale is None:
        return jax.value_and_grad(fn, argnums=argnums, has_aux=has_aux)

    def scaled(*args):
        out = fn(*args)
        loss, aux = out if has_aux else (out, None)
        return loss * scale.astype(loss.dtype), (loss, aux)

    def run(*args):
        (_, (loss, aux)), grads = jax.value_and_grad(scaled, argnums=argnums, has_aux=True)(*args)
        return ((loss, aux) if has_aux else loss), grads

    return run


def grad(fn: Callable, opt_state, has_aux: bool = False, argnums: int = 0) -> Callable:
    """`jax.grad` with the loss scaling of `value_and_grad`."""
    run = value_and_grad(fn, opt_state, has_aux, argnums)

    def only_grad(*args):
        value, grads = run(*args)
        return (grads, value[1]) if has_aux else grads

    return only_grad
