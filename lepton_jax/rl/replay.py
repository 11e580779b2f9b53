"""An on-device circular replay buffer of vectorised-env steps, and n-step returns read from it.

The buffer stores *rows*: one row is one step of all N envs, so every leaf is (capacity, N, ...). Keeping the env
axis means that consecutive rows of one env are consecutive steps of its trajectory, which is what n-step returns
need, and the whole buffer is a pytree of fixed-shape arrays that lives inside the jitted loop and is checkpointed
with the rest of the agent's state (so resuming is exact).

The rows may live in device memory (the default) or in the host's pinned memory (`lepton_jax.placement`,
`placement.replay`): then `add` moves each row there and `sample` gathers the batch there and moves it to the device,
so that only the batch occupies device memory. Where the rows live is read from their type, so the same functions
serve both; the write position and size stay on the device.
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from lepton_jax import placement


@struct.dataclass
class Replay:
    data: Any  # pytree; leaves (capacity, N, ...)
    pos: jax.Array  # int32 (): the row written next
    size: jax.Array  # int32 (): rows written so far, at most capacity

    @property
    def capacity(self) -> int:
        return jax.tree.leaves(self.data)[0].shape[0]


def init(example_row, capacity: int, memory_kind: str = "device") -> Replay:
    """An empty buffer of `capacity` rows shaped like `example_row` (leaves (N, ...)), its rows stored in
    `memory_kind` ("device" or "pinned_host")."""
    data = jax.tree.map(lambda x: jnp.zeros((capacity, *x.shape), x.dtype), example_row)
    return Replay(placement.in_memory(data, memory_kind), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def add(buffer: Replay, row) -> Replay:
    """Writes one row (leaves (N, ...)) over the oldest one once the buffer is full."""
    row = jax.tree.map(lambda d, x: x.astype(d.dtype), buffer.data, row)
    if placement.on_host(buffer.data):
        row = placement.to_host(row)
    data = jax.tree.map(lambda d, x: jax.lax.dynamic_update_index_in_dim(d, x, buffer.pos, 0), buffer.data, row)
    return Replay(data, (buffer.pos + 1) % buffer.capacity, jnp.minimum(buffer.size + 1, buffer.capacity))


def sample(buffer: Replay, key: jax.Array, batch_size: int, horizon: int = 1):
    """Uniformly samples `batch_size` (row, env) pairs and returns `horizon` consecutive steps from each.

    Only rows whose `horizon - 1` successors have been written are drawn. Call it once at least `horizon` rows are
    in (`size >= horizon`).

    Returns:
      The data with leaves (batch_size, horizon, ...): step k of sample b is row (start_b + k) of env e_b.
    """
    row_key, env_key = jax.random.split(key)
    num_envs = jax.tree.leaves(buffer.data)[0].shape[1]
    oldest = (buffer.pos - buffer.size) % buffer.capacity
    offsets = jax.random.randint(row_key, (batch_size,), 0, jnp.maximum(buffer.size - horizon + 1, 1))
    envs = jax.random.randint(env_key, (batch_size,), 0, num_envs)
    index = (
        (oldest + offsets[:, None] + jnp.arange(horizon)) % buffer.capacity,
        envs[:, None],
    )  # rows (B, horizon), envs (B, 1)
    if not placement.on_host(buffer.data):
        return jax.tree.map(lambda d: d[index], buffer.data)
    index = placement.to_host(index)  # gathered where the rows are; only the batch moves to the device
    return placement.to_device(jax.tree.map(lambda d: d[index], buffer.data))


def n_step_targets(rewards, terminated, done, gamma: float):
    """Discounted n-step returns up to the first episode end, and where to bootstrap from.

    Args:
      rewards, terminated, done: (B, n) for n consecutive steps; `done` = terminated or truncated.
      gamma: the discount.

    Returns:
      returns (B,): sum_{k<=m} gamma^k r_k, where m is the first step whose episode ended, else n - 1;
      last (B,) int: that m, the step whose next observation the target bootstraps from;
      discount (B,): gamma^(m+1), zero when step m terminated (no bootstrap past a true end; a time-limit
      truncation still bootstraps from the final observation).
    """
    n = rewards.shape[-1]
    ended_before = jnp.cumsum(done.astype(jnp.float32), axis=-1) - done  # episodes ended before step k
    alive = (ended_before == 0).astype(jnp.float32)  # (B, n): step k belongs to the first episode
    powers = gamma ** jnp.arange(n, dtype=jnp.float32)
    returns = jnp.sum(alive * powers * rewards, axis=-1)
    last = jnp.sum(alive, axis=-1).astype(jnp.int32) - 1
    last_terminated = jnp.take_along_axis(terminated, last[:, None], axis=-1)[:, 0]
    discount = gamma ** (last + 1).astype(jnp.float32) * (1.0 - last_terminated.astype(jnp.float32))
    return returns, last, discount
