"""Devices, meshes and shardings: the one place that knows how work is split across devices and hosts.

The mesh has two named axes, `data` and `model`. Data parallelism splits a batch axis (for RL: the env axis) over
`data`; parameters are replicated, so `jit` inserts the all-reduce that averages gradients. The same code runs on
one CPU, N accelerators and many hosts: for several hosts call `initialize_distributed` first; each process then
drives its local devices and `jax.devices()` lists the global ones.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from lepton_jax.errors import UserError

DATA, MODEL = "data", "model"


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
    return Mesh(grid, (DATA, MODEL))


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
