"""Datasets held whole on the device, and shuffled batches drawn from them inside jitted code.

The whole set lives on the device; `make_epoch` shuffles it per seed with the state's rng in a jitted function,
then dispatches one jitted step per batch that gathers its batch on the device. No Python touches a batch, and the
batch axis is constrained to the mesh's `data` axis, so the same program runs data-parallel on N devices. Used by
the image classifier (`lepton_jax/vision/`) and the generative models.
"""

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lepton_jax import parallel, seeds
from lepton_jax.errors import UserError


def to_device(tree, mesh) -> Any:
    """Puts host arrays on the mesh, replicated (the whole set fits on every device)."""
    return jax.device_put(tree, parallel.replicated(mesh))


def epoch_batches(key: jax.Array, num_examples: int, batch_size: int) -> jax.Array:
    """(num_batches, batch_size) int32 indices of a random permutation; the remainder is dropped."""
    num_batches = num_examples // batch_size
    return jax.random.permutation(key, num_examples)[: num_batches * batch_size].reshape(num_batches, batch_size)


# `sampler(key, data, num_batches, batch_size) -> (num_batches, batch_size)` int32 example indices of one epoch.
Sampler = Callable[[jax.Array, Any, int, int], jax.Array]


def make_shuffle(batch_size: int, over_seeds: Callable, sampler=None) -> Callable:
    """`shuffle(state, data, num_examples) -> (state, batches (seeds, num_batches, batch_size))`, jitted: each seed's
    epoch of example indices from a key split off its rng (the permutation, or `sampler`'s draws from `data`), as
    `make_epoch` and the host-memory epoch (`lepton_jax.placement`) both draw them. `over_seeds(fn, in_axes)` runs
    `fn` per seed."""

    def shuffle_one(state, data, num_examples):
        rng, perm_key = jax.random.split(state.rng)
        if sampler is None:
            return state.replace(rng=rng), epoch_batches(perm_key, num_examples, batch_size)
        return state.replace(rng=rng), sampler(perm_key, data, num_examples // batch_size, batch_size)

    return jax.jit(over_seeds(shuffle_one, (0, None, None)), static_argnums=2, donate_argnums=0)


def make_epoch(
    step_fn: Callable[[Any, Any, jax.Array], tuple[Any, dict]],
    batch_size: int,
    mesh,
    vmap_seeds: bool = True,
    seed_loop: str = "vmap",
    sampler: Sampler | None = None,
) -> Callable[[Any, Any], tuple[Any, dict]]:
    """One epoch over a device-resident dataset: `epoch(state, data) -> (state, metrics)`.

    A jitted shuffle draws each seed's permutation with its rng; then a Python loop calls one jitted step per batch
    (state donated), which gathers its batch on the device. The loop only dispatches: no batch ever reaches the
    host, and metrics are summed on the device. (Not a `lax.scan` over the batches: XLA:CPU ran the classifier's
    convolutions ~18x slower inside the scan's while loop than as a jitted step.)

    Args:
      step_fn: `step(state, batch, key) -> (state, metrics)` for one seed; `batch` is `data` indexed by a batch
        of example indices (any pytree whose leaves share the example axis).
      batch_size: examples per step (global; split over the mesh's `data` axis).
      mesh: the device mesh.
      vmap_seeds: the state has a leading seed axis (each seed shuffles with its own rng).
      seed_loop: how the seeds share a step, a `lepton_jax.seeds` mode: "vmap" (one batched program), "unroll"
        (one copy of the step per seed in the same jitted program: XLA:CPU runs vmapped convolutions, which become
        grouped ones, ~2.5x slower than one per seed), "map", or "auto" (unroll on CPU, vmap elsewhere).
      sampler: draws each epoch's batches instead of the permutation (`epoch_batches`), as many as the permutation
        gives, from the seed's key and the data (class-balanced draws: `lepton_jax.techniques.imbalance.sampler`).

    Returns:
      The epoch function. `state.rng` drives the shuffle and each step's key; metrics are the epoch means, shape
      (seeds,) when `vmap_seeds`.
    """
    parallel.check_divisible(batch_size, mesh, "config.batch_size")
    batch_sharding = parallel.split_axis(mesh, 0)
    if not vmap_seeds:
        over_seeds = lambda fn, axes: fn  # noqa: E731
    else:
        over_seeds = functools.partial(seeds.over_seeds, mode=seed_loop)

    def step_one(state, data, batches, i):
        rng, key = jax.random.split(state.rng)
        index = jax.lax.dynamic_index_in_dim(batches, i, keepdims=False)  # (B,)
        batch = jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a[index], batch_sharding), data)
        return step_fn(state.replace(rng=rng), batch, key)

    shuffle = make_shuffle(batch_size, over_seeds, sampler)
    step = jax.jit(over_seeds(step_one, (0, None, 0, None)), donate_argnums=0)
    add = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b), donate_argnums=0)

    def epoch(state, data):
        num_examples = jax.tree.leaves(data)[0].shape[0]
        if num_examples < batch_size:
            raise UserError(f"config.batch_size ({batch_size}) is larger than the training set ({num_examples})")
        num_batches = num_examples // batch_size
        state, batches = shuffle(state, data, num_examples)
        sums = None
        for i in range(num_batches):
            state, metrics = step(state, data, batches, np.int32(i))
            sums = metrics if sums is None else add(sums, metrics)
        return state, jax.tree.map(lambda total: total / num_batches, sums)

    epoch.step = step  # exposed for tests (trace counting) and benchmarks
    return epoch


def init_seeds(
    init_one: Callable[[jax.Array], Any], num_seeds: int, mesh, boxed_params=None
) -> Callable[[jax.Array], Any]:
    """Jitted `key -> state`: `init_one` for `num_seeds` keys split from `key`, stacked on a leading seed axis.

    The state comes out replicated on the mesh, exactly as the epoch returns it, so the epoch compiles once; with
    `boxed_params` (one seed's variables as the model's `init` gives them, partitioning boxes kept: abstract is
    enough), a tensor-parallel model's parameters and everything per parameter are split as its boxes say
    (`lepton_jax.parallel.sharded_init`).
    """
    init = lambda key: jax.vmap(init_one)(jax.random.split(key, num_seeds))  # noqa: E731
    if boxed_params is not None:
        return parallel.sharded_init(init, boxed_params, mesh)[0]
    return jax.jit(init, out_shardings=parallel.replicated(mesh))


def map_in_chunks(fn: Callable[[jax.Array], Any], x: jax.Array, chunk: int) -> Any:
    """`fn` over `x` in chunks of `chunk` examples (`lax.map`; `x` padded to a multiple of `chunk`, then cut).

    Bounds the memory of evaluating a large set (conv activations of 10k images) inside one jitted program.
    """
    n = x.shape[0]
    chunk = min(chunk, n)
    pad = -n % chunk
    padded = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
    out = jax.lax.map(fn, padded.reshape(-1, chunk, *x.shape[1:]))
    return jax.tree.map(lambda y: y.reshape(-1, *y.shape[2:])[:n], out)
