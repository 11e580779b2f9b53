"""Where work and data live: device memory, the host's memory, or the CPU device, chosen by the `placement` keys.

Three keys, one group (`config.placement`, declared in `lepton_jax.config.KEYS`), each at its default the layout the
trainers always had, bit for bit:

- `placement.replay` ("device" | "pinned_host"): DQN's replay buffer (`lepton_jax/rl/replay.py`) is stored in
  device memory, or in the host's pinned memory. Pinned: every env step's row is written into host memory and each
  gradient step's sampled batch is gathered there and moved to the device inside the jitted update; only the batch
  ever occupies device memory, so the buffer is bounded by the host's RAM, not the accelerator's.
- `placement.data` ("device" | "host"): the image classifier's training set is put on the device once and each
  batch gathered there inside the jitted step (`lepton_jax.epochs`), or kept in host memory, the numpy arrays it
  was read into, with each step's batch (of every seed) gathered there and moved to the device (`host_epoch`): one
  batch's transfer per step instead of the whole set resident in device memory. The batches are the same draws
  from the same keys. Augmentation runs in the jitted step on the device in either case: it draws from the step's
  key, and on an accelerator the resampling is cheapest there.
- `placement.eval` ("same" | "cpu"): evaluation runs where training does, or on the CPU device
  (`jax.devices("cpu")[0]`) with the parameters copied there: the classifier's test pass, and graph RL's evaluation
  sets. Training stays on the default device (and with it the classifier's validation pass, whose score steers
  early stopping in the training state); the accelerator is spared the evaluation's activations and time, at the
  cost of a parameter copy and a CPU forward pass.

The replay buffer's moves use JAX's memory spaces: inside `jit` an array's type carries its space
(`f32<host>[...]`), the writes into host memory are `dynamic_update_slice`s of rows moved there, and the reads are
gathers whose result is moved to `jax.memory.Space.Device`. A state whose leaves live in host memory keeps them
there through a jitted step when the step's shardings say so: `memory_kinds` reads where `init` puts each leaf and
`with_memory_kinds` gives the shardings that memory kind (`require_placed` refuses a step that dropped it).

A trainer honours the keys listed for it in `HONOURED`; `check` (a launch check) refuses any other key away from its
default, in one line, so no key is silently ignored. A backend without pinned host memory refuses the host
settings in one line naming the key.
"""

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lepton_jax import config as config_lib
from lepton_jax import epochs, parallel, seeds
from lepton_jax.errors import UserError

HOST, DEVICE = jax.memory.Space.Host, jax.memory.Space.Device
PINNED_HOST = "pinned_host"  # the memory kind of host memory the accelerator reads by DMA
DEFAULTS = {"replay": "device", "data": "device", "eval": "same"}
# What each key places, and the trainers that have that thing (their hooks call this module).
PLACES = {"replay": "replay buffer", "data": "device-resident training set", "eval": "evaluation pass"}
HONOURED = {
    "dqn": ("replay",),
    "graph_dqn": ("replay", "eval"),
    "graph_ppo": ("eval",),
    "classifier": ("data", "eval"),
}


def settings(config) -> dict[str, str]:
    """`{"replay", "data", "eval"}` of `config.placement` (a key or the whole group missing: its default), each
    checked against its declaration in `KEYS` (a bad value is one `UserError` line)."""
    group = config_lib.technique_settings(config, "placement")["placement"]
    return {name: group.get(name, default) for name, default in DEFAULTS.items()}


def check(config) -> None:
    """The launch check (a `CHECKS` entry): a placement key away from its default on a trainer that has nothing for
    it to place is one `UserError` line. A config without the group passes."""
    if "placement" not in config:
        return
    honoured = HONOURED.get(config.get("trainer"), ())
    for name, value in settings(config).items():
        if value != DEFAULTS[name] and name not in honoured:
            trainers = ", ".join(t for t, names in HONOURED.items() if name in names)
            raise UserError(
                f"config.placement.{name}={value!r}: trainer '{config.get('trainer')}' has no {PLACES[name]} to "
                f"place (placement.{name} applies to {trainers}); leave it at {DEFAULTS[name]!r}"
            )


def require_memory_kind(kind: str, key: str, value: str, device=None) -> None:
    """Refuses, in one line naming `config.<key>`, a memory kind that `device` (default: the first device) lacks."""
    device = device or jax.devices()[0]
    kinds = sorted(memory.kind for memory in device.addressable_memories())
    if kind not in kinds:
        raise UserError(
            f"config.{key}={value!r} needs {kind} memory, which the {device.platform} device {device} lacks (its "
            f"memories: {', '.join(kinds)}); set config.{key}='device'"
        )


# --- the replay buffer -------------------------------------------------------------------------------------------


def replay_memory(config) -> str:
    """The memory kind DQN's replay buffer is stored in ("device" or "pinned_host"), checked (`check`, and the
    backend has it)."""
    check(config)
    kind = settings(config)["replay"]
    if kind != "device":
        require_memory_kind(kind, "placement.replay", kind)
    return kind


def require_placed(tree, memory_kind: str, key: str) -> None:
    """Refuses, in one line naming `config.<key>`, arrays that reach a jitted step in other memory than `memory_kind`
    (a program whose shardings dropped the memory kind its init gave them: `with_memory_kinds` keeps it)."""
    if on_host(tree) != (memory_kind != "device"):
        found = "host" if on_host(tree) else "device"
        raise UserError(
            f"config.{key}={memory_kind!r}: the arrays it places reached the jitted step in {found} memory; the "
            "program's shardings must keep the memory kind its init gives them (lepton_jax.placement.with_memory_kinds)"
        )


def on_host(tree) -> bool:
    """Whether the (traced or concrete) arrays of `tree` live in host memory (its first leaf says)."""
    return jax.typeof(jax.tree.leaves(tree)[0]).memory_space == HOST


def to_host(tree):
    """`tree` moved into host memory (inside `jit`: a transfer XLA schedules; outside: a copy)."""
    return jax.device_put(tree, HOST)


def to_device(tree):
    """`tree` moved into device memory."""
    return jax.device_put(tree, DEVICE)


def in_memory(tree, memory_kind: str):
    """`tree` in `memory_kind` ("device": as it is)."""
    return tree if memory_kind == "device" else to_host(tree)


def memory_kinds(fn: Callable, *args) -> tuple[Any, Any]:
    """`fn(*args)`'s shapes (as `jax.eval_shape` gives them) and the memory kind ("device" or "pinned_host") each
    output leaf is made in, from one trace of `fn`."""
    closed, shapes = jax.make_jaxpr(fn, return_shape=True)(*args)
    kinds = [PINNED_HOST if aval.memory_space == HOST else "device" for aval in closed.out_avals]
    return shapes, jax.tree.unflatten(jax.tree.structure(shapes), kinds)


def with_memory_kinds(shardings, kinds):
    """`shardings` (a tree of `Sharding`s) with each leaf that `kinds` puts in host memory given that memory kind;
    the others unchanged (so a layout without host leaves is exactly the one given)."""
    return jax.tree.map(lambda s, k: s if k == "device" else s.with_memory_kind(k), shardings, kinds)


# --- the image trainer's training set ------------------------------------------------------------------------------


def put_data(config, host_tree, mesh):
    """The training set (host numpy arrays, example axis first) where `placement.data` keeps it: replicated on the
    mesh's devices (`epochs.to_device`), or for "host" left in host memory as it is. Checked (`check`)."""
    check(config)
    return epochs.to_device(host_tree, mesh) if settings(config)["data"] == "device" else host_tree


def make_epoch(config, step_fn: Callable, batch_size: int, mesh, seed_loop: str = "vmap", sampler=None) -> Callable:
    """`epoch(state, data) -> (state, metrics)` over a training set placed by `put_data`: `epochs.make_epoch` for
    "device"; for "host", the same batches fed from host memory (`host_epoch`). Arguments as `epochs.make_epoch`'s."""
    if settings(config)["data"] == "device":
        return epochs.make_epoch(step_fn, batch_size, mesh, seed_loop=seed_loop, sampler=sampler)
    return host_epoch(step_fn, batch_size, mesh, seed_loop=seed_loop, sampler=sampler)


def host_epoch(step_fn: Callable, batch_size: int, mesh, seed_loop: str = "vmap", sampler=None) -> Callable:
    """`epochs.make_epoch`'s epoch over a training set that stays in host memory (numpy arrays, example axis first).

    The epoch's batches are drawn as `make_epoch` draws them (its permutation, or `sampler`'s draws, from the same
    key of each seed's rng, on the device); each batch of every seed is then gathered on the host and moved to the
    device with the step that consumes it (one transfer of (seeds, batch, ...) per step), and the step is
    `make_epoch`'s without its gather, so the parameters are those of the device-resident set, bit for bit. Only the
    per-example values (1-D leaves: the labels a class-balanced `sampler` reads) are moved to the device, once an
    epoch, for the draws; the images never are, whole.

    Returns:
      The epoch function, with `epoch.step` the jitted step (as `make_epoch`'s).
    """
    parallel.check_divisible(batch_size, mesh, "config.batch_size")
    batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, parallel.DATA))  # (S, B, ...)
    over_seeds = functools.partial(seeds.over_seeds, mode=seed_loop)

    def step_one(state, batch):
        rng, key = jax.random.split(state.rng)
        return step_fn(state.replace(rng=rng), batch, key)

    shuffle = epochs.make_shuffle(batch_size, over_seeds, sampler)
    step = jax.jit(over_seeds(step_one, (0, 0)), donate_argnums=0)
    add = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b), donate_argnums=0)

    def epoch(state, data):
        num_examples = jax.tree.leaves(data)[0].shape[0]
        if num_examples < batch_size:
            raise UserError(f"config.batch_size ({batch_size}) is larger than the training set ({num_examples})")
        num_batches = num_examples // batch_size
        per_example = jax.tree.map(lambda a: epochs.to_device(a, mesh) if a.ndim == 1 else None, data)
        state, batches = shuffle(state, per_example, num_examples)
        batches = np.asarray(batches)  # (seeds, num_batches, batch_size) example indices, on the host
        sums = None
        for i in range(num_batches):
            batch = jax.tree.map(lambda a, rows=batches[:, i]: a[rows], data)  # (seeds, batch_size, ...)
            state, metrics = step(state, jax.device_put(batch, batch_sharding))
            sums = metrics if sums is None else add(sums, metrics)
        return state, jax.tree.map(lambda total: total / num_batches, sums)

    epoch.step = step
    return epoch


# --- evaluation --------------------------------------------------------------------------------------------------


def eval_device(config) -> jax.Device | None:
    """The device evaluation runs on: the CPU device for `placement.eval="cpu"`, None (where training runs) for
    "same". Checked (`check`)."""
    check(config)
    if settings(config)["eval"] == "same":
        return None
    try:
        return jax.devices("cpu")[0]
    except RuntimeError:
        raise UserError(
            "config.placement.eval='cpu' needs the CPU backend, which this process has not loaded "
            f"(JAX_PLATFORMS={jax.config.jax_platforms!r}); add cpu to it, or set config.placement.eval='same'"
        ) from None


def to_eval_device(config, tree):
    """`tree` (arrays, or host numpy) copied to the evaluation device; as it is for "same"."""
    device = eval_device(config)
    return tree if device is None else jax.device_put(tree, device)


def eval_arrays(config, host_tree, mesh):
    """An evaluation set where evaluation runs: on the mesh (`epochs.to_device`), or on the CPU device."""
    device = eval_device(config)
    return epochs.to_device(host_tree, mesh) if device is None else jax.device_put(host_tree, device)


def on_eval_device(config, fn: Callable) -> Callable:
    """`fn` run where evaluation runs: for "cpu" its array arguments are copied to the CPU device first (arrays
    already there are not copied), so a jitted `fn` runs there; `fn` itself for "same"."""
    device = eval_device(config)
    if device is None:
        return fn
    return lambda *args: fn(*jax.device_put(args, device))
