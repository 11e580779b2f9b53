"""Weight initializers that are safe to `vmap` on every backend.

Why this file exists: flax's `orthogonal` initializer runs a QR decomposition. Under `jax.vmap` (e.g. a whole
`train` vmapped over seeds) the QR becomes a *batched* LAPACK call. jaxlib 0.10.2's CPU QR kernels (`geqrf`,
`orgqr`) split a batch into chunks queued on XLA's CPU worker pool and block until they finish; when the program
runs as many independent QRs at once as the pool has threads (actor and critic layers side by side), no thread is
left to run the chunks and the process hangs at 0 % CPU. It is a race: 12 independent 64x64 QRs under
`jit(vmap(...))` over 2 seeds hung in well under 300 executions on a 2-core machine.

`orthogonal` below gives exactly flax's weights (bit for bit, per seed) but, when vmapped, draws the batch one
matrix after another with `lax.map`, so no batched LAPACK call is ever emitted. It runs once, at initialisation,
so the sequential loop costs nothing measurable. `tests/core/test_initializers.py` repeats the vmapped program
hundreds of times under a timeout to keep this honest.
"""

import jax
import jax.numpy as jnp
from flax import linen as nn


def orthogonal(scale: float = 1.0, column_axis: int = -1, dtype=jnp.float32):
    """Orthogonal initializer, identical to `flax.linen.initializers.orthogonal`, but vmap-safe on CPU.

    Args:
      scale: multiplier of the orthogonal matrix (e.g. `sqrt(2)` for ReLU/tanh torsos).
      column_axis: the axis holding the columns, as in flax.
      dtype: default dtype of the weights.

    Returns:
      An initializer `init(key, shape, dtype) -> array`.
    """
    base = nn.initializers.orthogonal(scale, column_axis, dtype)

    def init(key, shape, dtype=dtype):
        @jax.custom_batching.custom_vmap
        def draw(k):
            return base(k, shape, dtype)

        @draw.def_vmap
        def draw_batched(axis_size, in_batched, keys):
            del axis_size
            if not in_batched[0]:
                return draw(keys), False
            # One QR at a time: a batched QR can deadlock XLA's CPU thread pool (see module docstring).
            return jax.lax.map(draw, keys), True

        return draw(key)

    return init
