"""The optimiser factory: every trainer's optax optimiser, built from the same config keys.

    tx = optim.make(config, total_steps, steps_per_epoch)   # a supervised trainer
    tx = optim.make(hp, num_gradient_steps, flatten=True)   # RL: `hp` (a `sweep.HyperParams`) may hold a traced lr

The keys (declared once, with the shared ones, in `lepton_jax.config.KEYS`; `lepton_jax.config.training_keys`
puts them in a config with that trainer's defaults):

  optimizer         sgd | momentum | nesterov | adam | adamw | rmsprop | adagrad
  lr                the peak learning rate
  schedule          constant | linear (to 0 at the last step) | cosine (to 0) | step (x `lr_decay_factor` every
                    `lr_decay_every` epochs; for RL an epoch is one update)
  warmup            the fraction of the run's steps over which the rate first rises linearly from 0 to `lr`; the
                    schedule then runs over the remaining steps (warm-up + cosine: schedule=cosine, warmup=0.05)
  momentum          momentum and nesterov's coefficient
  beta1, beta2      Adam and AdamW's moment decays
  opt_eps           the denominator's epsilon of Adam, AdamW, RMSProp and Adagrad
  weight_decay      AdamW: decoupled decay of the weights (Loshchilov & Hutter); every other optimiser: L2, `wd * w`
                    added to the gradient (torch's `weight_decay`); on the parameters a trainer's `decay_mask` picks
  max_grad_norm     clip the gradient to this global norm first (0: no clipping)
  accumulate        average the gradients of this many steps into one update (`optax.MultiSteps`; 1: off)
  precision         f16 wraps the optimiser in `precision.dynamic_loss_scale` (see `precision.py`)
  prune_*           magnitude pruning of the kernels to `prune_sparsity` (`prune.py`: Zhu & Gupta's schedule over
                    the run's optimiser steps, the masks in the optimiser state)

sgd, momentum and nesterov are the hand-written `sgd` below (an `optax.GradientTransformation`, tested equal to
`optax.sgd` step for step); the others are optax's. With the defaults each trainer sets, the factory builds exactly
the optimiser that trainer had before it existed (tests pin the trained parameters).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lepton_jax.config import OPTIMIZERS, SCHEDULES, require
from lepton_jax.techniques import precision, prune

Rate = float | jax.Array | Callable[[jax.Array], jax.Array]


class SGDState(NamedTuple):
    count: jax.Array  # () int32: steps taken, the schedule's argument
    velocity: Any  # the parameters' tree of momentum buffers; () without momentum


def sgd(learning_rate: Rate, momentum: float = 0.0, nesterov: bool = False) -> optax.GradientTransformation:
    """Stochastic gradient descent, with (heavy-ball or Nesterov) momentum: `v <- g + m v`; the step is `-lr v`,
    or `-lr (g + m v)` with Nesterov (Sutskever et al. 2013, as torch and optax write it).

    Args:
      learning_rate: a number (possibly traced) or a schedule `step -> rate`.
      momentum: the coefficient m; 0 is plain SGD.
      nesterov: Nesterov's look-ahead form.
    """

    def init(params):
        velocity = jax.tree.map(jnp.zeros_like, params) if momentum else ()
        return SGDState(jnp.zeros([], jnp.int32), velocity)

    def update(grads, state: SGDState, params=None):
        del params
        if momentum:
            velocity = jax.tree.map(lambda g, v: g + momentum * v, grads, state.velocity)
            direction = jax.tree.map(lambda g, v: g + momentum * v, grads, velocity) if nesterov else velocity
        else:
            velocity, direction = (), grads
        rate = learning_rate(state.count) if callable(learning_rate) else learning_rate
        updates = jax.tree.map(lambda d: jnp.asarray(-rate, d.dtype) * d, direction)
        return updates, SGDState(optax.safe_int32_increment(state.count), velocity)

    return optax.GradientTransformation(init, update)


def learning_rate(config, total_steps: int, steps_per_epoch: int = 1) -> Rate:
    """The rate `config.schedule` and `config.warmup` give over `total_steps` optimiser steps: `config.lr` itself
    (a number, possibly traced) for a constant rate without warm-up, else a schedule `step -> rate`.

    `steps_per_epoch` turns the step schedule's `lr_decay_every` (epochs) into steps.
    """
    peak, kind = config.lr, config.get("schedule", "constant")
    require(kind in SCHEDULES, f"config.schedule must be one of {', '.join(SCHEDULES)}, got '{kind}'")
    warm = int(round(config.get("warmup", 0.0) * total_steps))
    rest = max(1, total_steps - warm)
    if kind == "constant":
        main = peak if not warm else optax.constant_schedule(peak)
    elif kind == "linear":
        main = optax.linear_schedule(peak, 0.0, rest)
    elif kind == "cosine":
        main = optax.cosine_decay_schedule(peak, rest)
    else:
        every = config.get("lr_decay_every", 1) * steps_per_epoch
        main = optax.exponential_decay(peak, every, config.get("lr_decay_factor", 0.1), staircase=True)
    if not warm:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warm), main], [warm])


def base(config, rate: Rate, decay_mask: Any = None) -> optax.GradientTransformation:
    """`config.optimizer` at `rate`, with AdamW's decoupled weight decay (on `decay_mask` when given)."""
    name = config.get("optimizer", "adam")
    require(name in OPTIMIZERS, f"config.optimizer must be one of {', '.join(OPTIMIZERS)}, got '{name}'")
    eps = config.get("opt_eps", 1e-8)
    betas = {"b1": config.get("beta1", 0.9), "b2": config.get("beta2", 0.999)}
    if name == "sgd":
        return sgd(rate)
    if name in ("momentum", "nesterov"):
        return sgd(rate, config.get("momentum", 0.9), nesterov=name == "nesterov")
    if name == "adam":
        return optax.adam(rate, eps=eps, **betas)
    if name == "adamw":
        return optax.adamw(rate, eps=eps, weight_decay=config.get("weight_decay", 0.0), mask=decay_mask, **betas)
    if name == "rmsprop":
        return optax.rmsprop(rate, eps=eps)
    return optax.adagrad(rate, eps=eps)


def make(
    config,
    total_steps: int = 1,
    steps_per_epoch: int = 1,
    *,
    rate: Rate | None = None,
    decay_mask: Any = None,
    flatten: bool = False,
) -> optax.GradientTransformation:
    """The run's optimiser: clipping, then L2, then `config.optimizer` at the scheduled rate, pruned, accumulated;
    for f16 inside the dynamic loss scale.

    Args:
      config: the config, or an RL run's `sweep.HyperParams` (whose `lr` may be traced).
      total_steps: the optimiser steps of the whole run (what the schedule spans; counted before accumulation).
      steps_per_epoch: optimiser steps per epoch (RL: per update), for the step schedule.
      rate: a rate or schedule to use instead of the config's (a trainer that sets the rate itself, per epoch).
      decay_mask: a tree of bools (or a function of the params giving one) choosing the weight-decayed parameters;
        None decays them all.
      flatten: run the optimiser's arithmetic on one flat vector (`optax.flatten`): much faster on CPU for the
        many small arrays of RL networks.
    """
    accumulate = config.get("accumulate", 1)  # >= 1, checked at launch with the other keys
    if rate is None:
        rate = learning_rate(config, max(1, total_steps // accumulate), max(1, steps_per_epoch // accumulate))
    parts = []
    if config.get("max_grad_norm", 0.0):
        parts.append(optax.clip_by_global_norm(config.max_grad_norm))
    weight_decay = config.get("weight_decay", 0.0)
    if weight_decay and config.get("optimizer", "adam") != "adamw":
        l2 = optax.add_decayed_weights(weight_decay)
        parts.append(l2 if decay_mask is None else optax.masked(l2, decay_mask))
    parts.append(base(config, rate, decay_mask))
    tx = parts[0] if len(parts) == 1 else optax.chain(*parts)
    if flatten:
        tx = optax.flatten(tx)
    # Outside `flatten` (the masks need the parameters' names), inside `MultiSteps` (its steps are optimiser steps).
    pruning = prune.settings(config, max(1, total_steps // accumulate))
    if pruning:
        tx = prune.magnitude_pruning(tx, **pruning)
    if accumulate > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=accumulate).gradient_transformation()
    if precision.dtype(config) == jnp.float16:
        tx = precision.dynamic_loss_scale(tx)  # the trainer differentiates with `precision.value_and_grad`
    return tx
