"""Magnitude pruning (Zhu & Gupta 2017, "To prune, or not to prune"): the smallest weights are set to zero, more of
them as training goes on, until a target sparsity is reached; the network trains on with them held at zero.

    tx = prune.magnitude_pruning(optax.adam(1e-3), target_sparsity=0.9, begin_step=1000, end_step=8000,
                                 frequency=100)
    tx = prune.magnitude_pruning(inner, **pruning)  # the factory: pruning = prune.settings(config, total_steps)
    report = prune.sparsity(params)  # the measured share of zeros, over all pruned leaves and per leaf

**The schedule.** The sparsity rises from `s_i` (`initial_sparsity`) at step `t0` (`begin_step`) to `s_f`
(`target_sparsity`) at `t0 + n Δt` (`end_step`) as

    s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n Δt))^3,

pruning every `Δt` (`frequency`) steps: fast at first, while the network has many redundant weights, then slower,
so that it can recover from each cut. Between two pruning events the sparsity is that of the last one; there is no
pruning before `t0` (sparsity 0) and `s_f` from `end_step` on (`end_step` is always an event, also when `n Δt` is not
a whole number of `Δt`; `begin_step == end_step` prunes once, to `s_f`). A step `t` is the optimiser's update
count: the update made with `t` updates behind it prunes to `s_t`.

**The masks.** At each event every prunable leaf ("layer" scope) or all of them together ("global": one threshold
for the whole network, so layers with small weights lose more of them) keeps its largest weights by magnitude and
has exactly `floor(s_t n)` of its `n` weights zeroed (ties are ranked by position, so equal weights never make the
count differ). Magnitudes are those the weights will have after this update. A weight once pruned stays pruned (it
ranks below every living weight): the masks only ever lose entries, as in the paper. By default only the kernels of
dense and convolutional layers are pruned (leaves named `kernel`, of two or more dimensions), never biases,
BatchNorm scales and offsets or embeddings; `prunable` chooses otherwise.

**Why an optimiser wrapper.** The masks live in the optimiser's state (`PruneState`), and every step's updates
take each pruned weight exactly to zero (`optax.apply_updates(params, updates)` gives `w + (-w) = 0`); living weights
get the inner optimiser's updates untouched (bit for bit as without pruning while the sparsity is 0). So any trainer
gets pruning by building its optimiser with the factory (`lepton_jax/techniques/optim.py`), without a line of its
own; checkpoints save the optimiser state, so a resumed run carries the masks and the step count, and continues
exactly as an uninterrupted one. The update needs the parameters (`tx.update(grads, state, params)`, as
`TrainState.apply_gradients` calls it). Wrap it outside `optax.flatten` (the masks need the parameters' names) and
inside `optax.MultiSteps` (so its steps are optimiser steps, not micro-batches).

**Config keys** (the factory's; `settings` reads them):

  prune_sparsity    the target sparsity s_f, in [0, 1); 0 is off
  prune_begin       when pruning starts, as a fraction of the run's optimiser steps (default 0.1)
  prune_end         when it reaches s_f, as a fraction of them (default 0.75): the last quarter fine-tunes the
                    pruned network at its final sparsity
  prune_every       Δt, in optimiser steps (default 100)
  prune_scope       layer (the paper's: each layer at s_t) | global (one threshold over all of them)

`prune_begin` and `prune_end` are fractions, like `warmup`, so one setting fits a smoke run and a full run, and
trainers whose step counts differ by orders of magnitude (RL updates, epochs of batches); `prune_every` is in steps,
as in the paper, since how often to cut is about how many updates the network gets to recover, not about the run's
length (a run shorter than one `Δt` still prunes at `begin` and reaches s_f at `end`).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lepton_jax.config import PRUNE_SCOPES, require, technique_settings
from lepton_jax.errors import UserError

SCOPES = PRUNE_SCOPES
Prunable = Callable[[str, Any], bool]  # (a leaf's path "params/Dense_0/kernel", the leaf) -> prune it?

# The pruned count is floor(s n) with s n in float32: this many ulps of slack (relative) make a product that is
# mathematically a whole number (0.7 of 10) count as one despite float32's rounding of s and of the product.
_COUNT_SLACK = 4 * float(np.finfo(np.float32).eps)


def path_name(path) -> str:
    """A key path from `jax.tree_util` as `"params/Dense_0/kernel"` (sequence indices as numbers)."""
    parts = []
    for entry in path:
        for attribute in ("key", "name", "idx"):
            if hasattr(entry, attribute):
                parts.append(str(getattr(entry, attribute)))
                break
        else:
            parts.append(str(entry))
    return "/".join(parts)


def is_kernel(name: str, leaf) -> bool:
    """The default `prunable`: the kernels of dense and convolutional layers (named `kernel`, two or more axes)."""
    return name.rsplit("/", 1)[-1] == "kernel" and np.ndim(leaf) >= 2


def check(
    target_sparsity: float,
    begin_step: int,
    end_step: int,
    frequency: int,
    scope: str = "layer",
    initial_sparsity: float = 0.0,
) -> None:
    """Raises a one-line `UserError` naming the first unusable argument of `magnitude_pruning` and what is allowed."""

    def allowed(name: str, value, condition: bool, must: str) -> None:
        require(condition, f"pruning: {name}={value!r} is not allowed: it must be {must}")

    def number(value) -> bool:
        return (
            isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, bool)
            and np.isfinite(value)
        )

    def whole(value) -> bool:
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

    allowed("target_sparsity", target_sparsity, number(target_sparsity) and 0 <= target_sparsity < 1, "in [0, 1)")
    allowed(
        "initial_sparsity",
        initial_sparsity,
        number(initial_sparsity) and 0 <= initial_sparsity <= target_sparsity,
        f"in [0, target_sparsity={target_sparsity!r}]",
    )
    allowed("begin_step", begin_step, whole(begin_step) and begin_step >= 0, "an integer >= 0")
    allowed("end_step", end_step, whole(end_step) and end_step >= 0, "an integer >= 0")
    require(
        begin_step <= end_step,
        f"pruning: begin_step={begin_step} is after end_step={end_step}: pruning must begin no later than it ends",
    )
    allowed("frequency", frequency, whole(frequency) and frequency >= 1, "an integer >= 1")
    allowed("scope", scope, scope in SCOPES, f"one of {', '.join(SCOPES)}")


def check_config(config) -> None:
    """The launch check between the keys (each key's own range is its declaration's): pruning begins no later than
    it ends."""
    begin, end = config.get("prune_begin", 0.1), config.get("prune_end", 0.75)
    if config.get("prune_sparsity", 0.0) and begin > end:
        raise UserError(
            f"config.prune_begin={begin!r} is after config.prune_end={end!r}: pruning must begin no later than it "
            "ends (both are fractions of the run's optimiser steps)"
        )


def settings(config, total_steps: int) -> dict | None:
    """`magnitude_pruning`'s arguments (but `inner`) from the config keys (the `prune` group of
    `lepton_jax.config.TECHNIQUES`), for a run of `total_steps` optimiser steps; None when `config.prune_sparsity`
    is 0 (or absent): no pruning."""
    values = technique_settings(config, "prune")
    if not values["prune_sparsity"]:
        return None
    check_config(config)
    return {
        "target_sparsity": values["prune_sparsity"],
        "begin_step": int(round(values["prune_begin"] * total_steps)),
        "end_step": int(round(values["prune_end"] * total_steps)),
        "frequency": values["prune_every"],
        "scope": values["prune_scope"],
    }


def schedule(
    step, target_sparsity: float, begin_step: int, end_step: int, frequency: int, initial_sparsity: float = 0.0
) -> jax.Array:
    """The sparsity Zhu & Gupta's schedule gives at `step` (see the module docstring): a () float32, 0 before
    `begin_step`, the cubic's value at the last pruning event (every `frequency` steps from `begin_step`, and
    `end_step`), `target_sparsity` from `end_step` on. `step` may be traced."""
    step = jnp.asarray(step, jnp.int32)
    last_event = begin_step + (step - begin_step) // frequency * frequency
    span = max(end_step - begin_step, 1)
    progress = jnp.where(step >= end_step, 1.0, (last_event - begin_step).astype(jnp.float32) / span)
    sparsity = target_sparsity + (initial_sparsity - target_sparsity) * (1.0 - progress) ** 3
    return jnp.where(step < begin_step, 0.0, sparsity).astype(jnp.float32)


def is_event(step, begin_step: int, end_step: int, frequency: int) -> jax.Array:
    """Whether the masks are recomputed at `step`: every `frequency` steps from `begin_step` to `end_step`, and at
    `end_step`."""
    step = jnp.asarray(step, jnp.int32)
    on_grid = (step - begin_step) % frequency == 0
    return (step >= begin_step) & (step <= end_step) & (on_grid | (step == end_step))


def pruned_count(sparsity, size: int) -> jax.Array:
    """How many of `size` weights a sparsity prunes: floor(sparsity * size), a () int32 (see `_COUNT_SLACK`).

    Exact for scopes of up to 2^24 weights; beyond, float32 counts to within its rounding of `sparsity * size`."""
    count = jnp.floor(jnp.asarray(sparsity, jnp.float32) * size * (1.0 + _COUNT_SLACK))
    return jnp.clip(count, 0, size).astype(jnp.int32)


def keep_largest(scores: jax.Array, num_pruned) -> jax.Array:
    """A bool mask of `scores` (n,) keeping all but the `num_pruned` smallest; ties go by position (a stable sort),
    so exactly `num_pruned` are dropped."""
    order = jnp.argsort(scores, stable=True)
    ranks = jnp.zeros(scores.shape, jnp.int32).at[order].set(jnp.arange(scores.size, dtype=jnp.int32))
    return ranks >= num_pruned


@jax.custom_batching.custom_vmap
def any_over_batch(flag: jax.Array) -> jax.Array:
    """`flag` (a () bool); under vmap, whether it holds for any member of the batch, unbatched.

    A `lax.cond` on a batched predicate runs both branches (a select); on this one it runs only the branch taken."""
    return flag


@any_over_batch.def_vmap
def _any_over_batch_rule(axis_size, in_batched, flag):
    del axis_size
    return (jnp.any(flag) if in_batched[0] else flag), False


class PruneState(NamedTuple):
    count: jax.Array  # () int32: updates taken, the schedule's step
    masks: Any  # the parameters' tree: bool, False where pruned; a () True for a leaf that is never pruned
    inner: Any  # the wrapped optimiser's state


def magnitude_pruning(
    inner: optax.GradientTransformation,
    target_sparsity: float,
    begin_step: int,
    end_step: int,
    frequency: int,
    scope: str = "layer",
    prunable: Prunable = is_kernel,
    initial_sparsity: float = 0.0,
) -> optax.GradientTransformation:
    """`inner` with the prunable weights pruned by magnitude on Zhu & Gupta's schedule (see the module docstring).

    Args:
      inner: the optimiser whose updates are masked.
      target_sparsity: s_f, in [0, 1).
      begin_step: t0, the first pruning event (an update count).
      end_step: the event that reaches s_f; >= begin_step.
      frequency: Δt, the steps between events; >= 1.
      scope: "layer" (each prunable leaf at the scheduled sparsity) or "global" (all of them together).
      prunable: `(path, leaf) -> bool`, from the leaf's name and static properties (shape, dtype) only.
      initial_sparsity: s_i, the sparsity of the first event; in [0, target_sparsity].

    Returns:
      A transformation whose `update(grads, state, params)` needs `params`.

    Raises:
      UserError: an argument out of range (`check`).
    """
    check(target_sparsity, begin_step, end_step, frequency, scope, initial_sparsity)

    def chosen(params) -> tuple[list[bool], list, Any]:
        named, treedef = jax.tree_util.tree_flatten_with_path(params)
        return [bool(prunable(path_name(path), leaf)) for path, leaf in named], [leaf for _, leaf in named], treedef

    def init(params):
        which, leaves, treedef = chosen(params)
        masks = [jnp.ones(jnp.shape(p) if c else (), bool) for c, p in zip(which, leaves)]
        return PruneState(jnp.zeros([], jnp.int32), treedef.unflatten(masks), inner.init(params))

    def recompute(candidates: list, masks: list, level) -> list:
        """New masks of the prunable leaves from their `candidates` (the weights after this update)."""
        # (n,) scores per leaf; pruned weights at -1, below every living magnitude, so they stay pruned.
        scores = [jnp.where(m, jnp.abs(c).astype(jnp.float32), -1.0).ravel() for c, m in zip(candidates, masks)]
        if scope == "layer":
            keeps = [keep_largest(s, pruned_count(level, s.size)) for s in scores]
        else:
            every = jnp.concatenate(scores)  # (sum of the leaves' sizes,)
            keeps = jnp.split(
                keep_largest(every, pruned_count(level, every.size)), np.cumsum([s.size for s in scores])[:-1]
            )
        return [k.reshape(m.shape) & m for k, m in zip(keeps, masks)]

    def update(grads, state: PruneState, params=None):
        if params is None:
            raise ValueError("magnitude_pruning needs the parameters: call tx.update(grads, state, params)")
        updates, inner_state = inner.update(grads, state.inner, params)
        which, leaves, treedef = chosen(params)
        steps, masks = treedef.flatten_up_to(updates), treedef.flatten_up_to(state.masks)
        index = [i for i, c in enumerate(which) if c]
        if not index:
            return updates, PruneState(optax.safe_int32_increment(state.count), state.masks, inner_state)
        # The weights this update would give (`optax.apply_updates`'s sum), the pruned ones at zero.
        candidates = [
            jnp.where(masks[i], (leaves[i] + steps[i]).astype(jnp.asarray(leaves[i]).dtype), 0) for i in index
        ]
        old = [masks[i] for i in index]
        level = schedule(state.count, target_sparsity, begin_step, end_step, frequency, initial_sparsity)
        event = is_event(state.count, begin_step, end_step, frequency)
        # The predicate is unbatched under vmap (`any_over_batch`), so the cond stays a cond and the ranking runs
        # only at events; inside, each run keeps its old masks unless this is its own event (seeds share the count,
        # so in practice all or none are).
        new = jax.lax.cond(
            any_over_batch(event),
            lambda: [jnp.where(event, n, o) for n, o in zip(recompute(candidates, old, level), old)],
            lambda: old,
        )
        for i, mask in zip(index, new):
            # w + (-w) is exactly 0: a pruned weight lands on zero; a living one moves as `inner` says.
            steps[i] = jnp.where(mask, steps[i], -jnp.asarray(leaves[i]).astype(steps[i].dtype))
            masks[i] = mask
        count = optax.safe_int32_increment(state.count)
        return treedef.unflatten(steps), PruneState(count, treedef.unflatten(masks), inner_state)

    return optax.GradientTransformation(init, update)


class Sparsity(NamedTuple):
    overall: float  # zeros over all prunable weights together
    per_leaf: dict[str, float]  # each prunable leaf's share of zeros, by path ("params/Dense_0/kernel")


def sparsity(params, prunable: Prunable = is_kernel) -> Sparsity:
    """The measured share of exact zeros in the prunable leaves of `params` (host numbers, for reporting); 0 when
    no leaf is prunable. With a leading seed axis, over all seeds."""
    per_leaf, zeros, total = {}, 0, 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        name = path_name(path)
        if prunable(name, leaf):
            values = np.asarray(leaf)
            per_leaf[name] = float(np.count_nonzero(values == 0) / max(values.size, 1))
            zeros, total = zeros + int(np.count_nonzero(values == 0)), total + values.size
    return Sparsity(zeros / total if total else 0.0, per_leaf)


def seed_sparsity(params, prunable: Prunable = is_kernel) -> np.ndarray:
    """(seeds,) the measured share of zeros in the prunable leaves of `params` with a leading seed axis, per seed
    (what a trainer reports as `sparsity`)."""
    leaves = [
        np.asarray(leaf).reshape(np.shape(leaf)[0], -1)
        for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
        if prunable(path_name(path), leaf[0])
    ]
    if not leaves:
        return np.zeros(jax.tree.leaves(params)[0].shape[0])
    values = np.concatenate(leaves, axis=1)  # (seeds, prunable weights)
    return (values == 0).mean(axis=1)
