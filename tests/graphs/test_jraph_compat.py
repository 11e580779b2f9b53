"""jraph's helpers that call JAX's removed tree aliases work through `graphs.jraph_compat`."""

import jax
import jax.numpy as jnp
import numpy as np

from graphs.jraph_compat import jraph


def test_zero_out_padding_and_fully_connected_graph():
    graph = jraph.GraphsTuple(
        nodes=jnp.ones((3, 2)),
        edges=jnp.ones((2, 1)),
        senders=jnp.array([0, 1]),
        receivers=jnp.array([1, 2]),
        n_node=jnp.array([3]),
        n_edge=jnp.array([2]),
        globals=jnp.ones((1, 1)),
    )
    padded = jraph.pad_with_graphs(graph, n_node=5, n_edge=4, n_graph=2)
    padded = padded._replace(nodes=padded.nodes + 7.0, edges=padded.edges + 7.0)  # padding is non-zero now
    zeroed = jraph.zero_out_padding(padded)
    np.testing.assert_array_equal(zeroed.nodes[3:], 0.0)
    np.testing.assert_array_equal(zeroed.edges[2:], 0.0)
    np.testing.assert_array_equal(zeroed.nodes[:3], 8.0)
    full = jraph.get_fully_connected_graph(3, 1, jnp.ones((3, 2)))
    assert int(full.n_edge[0]) == 9
    assert not hasattr(jax, "tree_map")  # the mend is local to jraph, not a global alias
