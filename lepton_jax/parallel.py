"""Devices, meshes and shardings: the one place that knows how work is split across devices and hosts.

The mesh has two named axes, `data` and `model`, sized by `config.mesh` (`mesh_from_config`). Data parallelism
splits a batch axis (for RL: the env axis) over `data`; parameters are replicated there, so `jit` inserts the
all-reduce that averages gradients. Tensor parallelism splits parameters over `model`, Megatron style: a dense
pair whose first kernel `(in, hidden)` is split on its output axis ("column") and second `(hidden, out)` on its
input axis ("row"), so each device computes `hidden / model` of the hidden features from the whole input and a
partial sum of the output, and one all-reduce over `model` completes the pair. A module states the split on its
parameters when it makes them (`kernel_init` / `bias_init`, or the `dense` pair: Flax `nn.Partitioned` boxes, made
at init only); the trainer reads the splits from an abstract init (`state_shardings`), unboxes the parameters
(`nn.unbox`) before the optimiser sees them, so no box reaches optax or a checkpoint, and jits its init with
those shardings as `out_shardings` (`sharded_init`). Its step, given the donated state so placed, hands it back
there (give it the same `out_shardings`, or let XLA propagate them as `lepton_jax.epochs`' step does): no
resharding, one compile. On a `model` axis of 1 every split is the whole array: replicated, as without them.

The same code runs on one CPU, N accelerators and many hosts: for several hosts call `initialize_distributed`
first; each process then drives its local devices and `jax.devices()` lists the global ones.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from lepton_jax import config as config_lib
from lepton_jax.errors import UserError

DATA, MODEL = config_lib.MESH_AXES  # "data", "model"


def initialize_distributed(
    coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> None:
    """Joins a multi-host run via `jax.distributed.initialize` (auto-detected on SLURM, TPU pods, ...).

    Must be called before anything touches the JAX backend. On CPU the cross-process collectives use gloo.
    """
    # Only the CPU backend reads this; without it CPU processes could not all-reduce across hosts.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )


def make_mesh(model_parallelism: int = 1) -> Mesh:
    """A (data, model) mesh over all global devices; `model_parallelism` devices share one model replica."""
    devices = jax.devices()
    if model_parallelism < 1 or len(devices) % model_parallelism:
        raise UserError(f"model_parallelism={model_parallelism} must divide the {len(devices)} devices")
    grid = np.asarray(devices).reshape(len(devices) // model_parallelism, model_parallelism)
    return Mesh(grid, (DATA, MODEL))  # Auto axes: jit places what no sharding names (not jax.make_mesh's Explicit)


def mesh_from_config(config) -> Mesh:
    """The (data, model) mesh `config.mesh` names (`"data:2,model:2"`) over all global devices.

    Left out, `model` is 1 and `data` takes the devices the model axis leaves: "" puts every device on `data`.

    Raises:
      UserError: one line, for a malformed value or sizes whose product is not the number of devices.
    """
    text = config.get("mesh", "")
    config_lib.check("mesh", text, config_lib.KEYS["mesh"])
    sizes, devices = config_lib.mesh_axes(text), jax.device_count()
    model = sizes.get(MODEL, 1)
    data = sizes.get(DATA, max(devices // model, 1))
    if data * model != devices:
        raise UserError(
            f"config.mesh={text!r} asks for data x model = {data} x {model} = {data * model} devices, but the run "
            f"has {devices}"
        )
    return make_mesh(model)


def data_size(mesh: Mesh) -> int:
    return mesh.shape[DATA]


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def split_axis(mesh: Mesh, axis: int) -> NamedSharding:
    """Sharding that splits array axis `axis` over the `data` mesh axis (the others replicated)."""
    return NamedSharding(mesh, P(*([None] * axis), DATA))


def check_divisible(n: int, mesh: Mesh, what: str) -> None:
    if n % data_size(mesh):
        raise UserError(f"{what} ({n}) must be divisible by the number of data-parallel devices ({data_size(mesh)})")


def is_main_process() -> bool:
    return jax.process_index() == 0


# Tensor parallelism: how a dense layer's kernel `(in, out)` and bias `(out,)` are split over `model`.
KERNEL_SPLITS = {"": None, "column": (None, MODEL), "row": (MODEL, None)}
BIAS_SPLITS = {"": None, "column": (MODEL,), "row": None}  # a row-split layer's output (and bias) is whole


def _split(init: Callable, names: tuple | None) -> Callable:
    return init if names is None else nn.with_partitioning(init, names)


def kernel_init(init: Callable, split: str) -> Callable:
    """`init` for a dense kernel `(in, out)` split over `model` on its output axis ("column"), its input axis
    ("row"), or not at all (""): the values are `init`'s, boxed with the split (`nn.Partitioned`)."""
    if split not in KERNEL_SPLITS:
        raise ValueError(f"split must be one of '', 'column', 'row'; got {split!r}")
    return _split(init, KERNEL_SPLITS[split])


def bias_init(init: Callable, split: str) -> Callable:
    """`init` for the bias `(out,)` of a dense layer split as `kernel_init`'s `split` (only "column" splits it)."""
    if split not in BIAS_SPLITS:
        raise ValueError(f"split must be one of '', 'column', 'row'; got {split!r}")
    return _split(init, BIAS_SPLITS[split])


def dense(features: int, split: str, name: str | None = None) -> nn.Dense:
    """`nn.Dense(features)` with its parameters split over `model`: a "column" layer followed by a "row" layer is a
    tensor-parallel pair. Names, shapes and initial values are `nn.Dense(features)`'s."""
    return nn.Dense(
        features,
        kernel_init=kernel_init(nn.linear.default_kernel_init, split),
        bias_init=bias_init(nn.initializers.zeros_init(), split),
        name=name,
    )


def state_shardings(abstract_state, boxed_params, mesh: Mesh, seed_axis: bool = True) -> Any:
    """Where each leaf of a training state lives: a parameter, or a value per parameter (an optimiser's moments,
    early stopping's kept copy), split as the parameter's box says; every other leaf replicated.

    A state leaf belongs to a parameter when its path ends with the parameter's (`.../params/conv_0/linear/kernel`)
    and its shape is the parameter's (after the seed axis).

    Args:
      abstract_state: the state's shapes (`jax.eval_shape` of the trainer's init), leaves with a leading seed axis
        when `seed_axis`.
      boxed_params: one seed's variables as `model.init` returns them, boxes kept (abstract is enough).
      mesh: the device mesh.
      seed_axis: the state's leaves have a leading seed axis (never split).

    Returns:
      A tree of `NamedSharding`s shaped like `abstract_state` (for `jit`'s `out_shardings`).

    Raises:
      UserError: a split axis whose length the size of its mesh axis does not divide.
    """
    lead = (None,) if seed_axis else ()
    shapes = dict(jax.tree_util.tree_flatten_with_path(nn.unbox(boxed_params))[0])
    splits = {}  # parameter path -> (its shape, its PartitionSpec with the seed axis)
    for path, spec in jax.tree_util.tree_flatten_with_path(nn.get_partition_spec(boxed_params))[0]:
        if not any(spec):
            continue
        shape = shapes[path].shape
        for axis, name in enumerate(spec):
            if name is not None and shape[axis] % mesh.shape[name]:
                raise UserError(
                    f"parameter {jax.tree_util.keystr(path, simple=True, separator='/')} {shape} cannot be split "
                    f"over the mesh's {name} axis: its size {mesh.shape[name]} (config.mesh) does not divide "
                    f"axis {axis} ({shape[axis]})"
                )
        splits[path] = (shape, P(*lead, *spec))

    def sharding(path, leaf):
        for param_path, (shape, spec) in splits.items():
            if path[-len(param_path) :] == param_path and leaf.shape[len(lead) :] == shape:
                return NamedSharding(mesh, spec)
        return replicated(mesh)

    return jax.tree_util.tree_map_with_path(sharding, abstract_state)


def sharded_init(init: Callable[[jax.Array], Any], boxed_params, mesh: Mesh) -> tuple[Callable, Any]:
    """`init` (`key -> state`, seed axis first) jitted to put its state where `state_shardings` says.

    Returns:
      The jitted init and the state's shardings: jit the step with them as `out_shardings` (and the state donated)
      so that it hands the state back where it found it.
    """
    shardings = state_shardings(jax.eval_shape(init, jax.random.PRNGKey(0)), boxed_params, mesh)  # shapes only
    return jax.jit(init, out_shardings=shardings), shardings
