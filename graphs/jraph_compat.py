"""jraph, mended for current JAX. Import it from here: `from graphs.jraph_compat import jraph`.

jraph 0.0.6.dev0 (unmaintained since 2022) still calls `jax.tree_map` and `jax.tree_leaves`, which JAX has
removed, so `jraph.zero_out_padding`, `jraph.get_fully_connected_graph` and the GraphsTuple batching checks raise
AttributeError. Rather than put the old names back on the global `jax` module (which would hide the same mistake in
our own code), jraph's utils module alone is handed a view of `jax` that still has them.
"""

import types

import jax
import jraph
from jraph._src import utils as _jraph_utils


class _JaxWithTreeAliases(types.ModuleType):
    """`jax`, plus the two removed aliases jraph's utils module calls."""

    tree_map = staticmethod(jax.tree.map)
    tree_leaves = staticmethod(jax.tree.leaves)

    def __getattr__(self, name):
        return getattr(jax, name)


if not hasattr(jax, "tree_map"):
    _jraph_utils.jax = _JaxWithTreeAliases("jax")

__all__ = ["jraph"]
