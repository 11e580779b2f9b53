"""Fixed evaluation graphs: drawn once from an env's own generator with a seeded key, saved and loaded as `.npz`.

An evaluation set is a batched `Graph` (NumPy leaves, a leading axis of `num_graphs`) padded to the env's budgets,
ready for `jax.vmap(env.reset_to_graph)` or `evaluate_on_graphs`. The same name and seed give the same graphs on a
given backend; save the set in the run's workdir so that later evaluations (and other machines) use exactly it.
MVC and MaxCut names with the same graph part and seed share the topology (MaxCut adds weights; this relies on
JAX's default `jax_threefry_partitionable=True`, under which a longer draw of random bits extends a shorter one).
"""

import os
import tempfile
from typing import NamedTuple

import jax
import numpy as np

from graphs.rl.envs import factory
from graphs.rl.envs.generators import Graph, sample_batch
from lepton_jax.errors import UserError

_FIELDS = ("senders", "receivers", "weights", "num_nodes", "num_edges")


class EvalSet(NamedTuple):
    name: str  # the env name, e.g. "MVC-ER-15-20"
    seed: int
    graphs: Graph  # NumPy leaves with a leading axis of num_graphs


def eval_set(name: str, num_graphs: int, seed: int) -> EvalSet:
    """`num_graphs` graphs of env `name`'s distribution from `PRNGKey(seed)`.

    Raises:
      RuntimeError: if an Erdős–Rényi graph overflowed the edge budget (about 1e-8 per graph; try another seed).
    """
    env, _ = factory.make(name)
    graphs, num_dropped = sample_batch(jax.random.split(jax.random.PRNGKey(seed), num_graphs), env.distribution)
    dropped = np.flatnonzero(np.asarray(num_dropped))
    if dropped.size:
        raise RuntimeError(
            f"evaluation graphs {dropped.tolist()} of {name} (seed {seed}) had more edges than the "
            f"budget of {env.distribution.undirected_budget}; use another seed"
        )
    return EvalSet(name, int(seed), jax.tree.map(np.asarray, graphs))


def save_eval_set(path: str, evaluation_set: EvalSet) -> None:
    """Writes `evaluation_set` to `path` (an `.npz` file; written to a temporary file, then renamed)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    arrays = {field: np.asarray(getattr(evaluation_set.graphs, field)) for field in _FIELDS}
    with tempfile.NamedTemporaryFile(dir=directory, suffix=".npz.tmp", delete=False) as f:
        np.savez(f, name=np.array(evaluation_set.name), seed=np.array(evaluation_set.seed), **arrays)
    os.replace(f.name, path)


def load_eval_set(path: str) -> EvalSet:
    """Reads an evaluation set written by `save_eval_set`; a `UserError` if it is missing or does not fit its env."""
    if not os.path.exists(path):
        raise UserError(f"evaluation set file '{path}' does not exist")
    try:
        with np.load(path) as data:
            name, seed = str(data["name"]), int(data["seed"])
            graphs = Graph(**{field: data[field] for field in _FIELDS})
    except (KeyError, ValueError, OSError) as error:
        raise UserError(f"'{path}' is not an evaluation set file ({error})") from None
    env, _ = factory.make(name)
    if graphs.senders.shape[1:] != (env.distribution.edge_budget,) or np.any(
        graphs.num_nodes > env.distribution.max_nodes
    ):
        raise UserError(f"evaluation set '{path}' does not fit the budgets of {name}")
    return EvalSet(name, seed, graphs)
