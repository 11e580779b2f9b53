"""Seed axes: how the independent runs of one program (seeds, folds, swept values) share a step.

Every trainer keeps its state with the run axis first. A function of one run is lifted to all of them by
`over_seeds(fn, in_axes, mode)`, with one set of mode names used by every config's `seed_loop` key:

- "vmap": one batched computation (the default; fastest for dense layers and on accelerators).
- "map": `lax.map`, the runs one after another inside the same compiled program (XLA:CPU runs GAT's batched
  gathers and scatters several times slower than one run at a time).
- "unroll": one copy of `fn` per run in the same compiled program, outputs stacked (XLA:CPU turns vmapped
  convolutions into grouped ones, ~2.5x slower than one per run).
- "auto": "unroll" on CPU, "vmap" elsewhere.

All modes give the same numbers up to float rounding. The tree helpers below are the one place that slices,
stacks and unstacks a run axis.
"""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from lepton_jax.errors import UserError

MODES = ("vmap", "map", "unroll", "auto")


def tree_slice(tree, index: int):
    """Run `index` of a tree whose leaves have the run axis first."""
    return jax.tree.map(lambda x: x[index], tree)


def tree_stack(trees: Sequence[Any]):
    """Trees of equal structure -> one tree with a new leading axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def tree_unstack(tree) -> list:
    """The inverse of `tree_stack`: one tree per index of the leading axis."""
    count = jax.tree.leaves(tree)[0].shape[0]
    return [tree_slice(tree, i) for i in range(count)]


def resolve(mode: str) -> str:
    """`mode` with "auto" made concrete for this backend; a `UserError` listing the modes for an unknown one."""
    if mode not in MODES:
        raise UserError(f"config.seed_loop must be one of {', '.join(MODES)}, got '{mode}'")
    if mode == "auto":
        return "unroll" if jax.default_backend() == "cpu" else "vmap"
    return mode


def over_seeds(fn: Callable, in_axes: Sequence[int | None], mode: str = "vmap") -> Callable:
    """`fn` over a leading run axis of the arguments whose `in_axes` entry is 0 (the others are shared)."""
    mode = resolve(mode)
    in_axes = tuple(in_axes)
    if mode == "vmap":
        return jax.vmap(fn, in_axes=in_axes)

    def split(args, i):
        return [tree_slice(a, i) if axis == 0 else a for a, axis in zip(args, in_axes)]

    if mode == "unroll":

        def unrolled(*args):
            count = jax.tree.leaves(args[in_axes.index(0)])[0].shape[0]
            return tree_stack([fn(*split(args, i)) for i in range(count)])

        return unrolled

    def mapped(*args):
        batched = [a for a, axis in zip(args, in_axes) if axis == 0]

        def one(slices):
            it = iter(slices)
            return fn(*(next(it) if axis == 0 else a for a, axis in zip(args, in_axes)))

        return jax.lax.map(one, batched)

    return mapped
