"""On-device graph combinatorial-optimisation environments (gymnax): minimum vertex cover and maximum cut.

Importing this package registers the env names `MVC-{ER,BA}-MIN-MAX` and `MaxCut-{ER,BA}-MIN-MAX` with
`lepton_jax.rl.envs.make_env`, e.g. `make_env("MVC-ER-15-20")`: Erdős–Rényi (p = 0.15) or Barabási–Albert (m = 4)
graphs with a node count uniform in [MIN, MAX], a new graph at every reset.

- `generators.py`: the random graphs (on device, padded to static budgets) and NumPy conversions;
- `common.py`: the shared env machinery and the observation layout (`GraphObs`);
- `mvc.py`, `maxcut.py`: the two problems;
- `factory.py`: names -> envs; `eval_sets.py`: fixed evaluation graphs, saved as `.npz`.
"""

from graphs.rl.envs.common import (
    EDGE_FEATURES,
    NODE_FEATURES,
    EvalResult,
    GraphEnv,
    GraphEnvParams,
    GraphEnvState,
    GraphObs,
    evaluate_on_graphs,
)
from graphs.rl.envs.eval_sets import EvalSet, eval_set, load_eval_set, save_eval_set
from graphs.rl.envs.factory import make, parse_name
from graphs.rl.envs.generators import Graph, GraphDistribution, NumpyGraph, from_numpy, sample, to_numpy
from graphs.rl.envs.maxcut import MaxCut
from graphs.rl.envs.mvc import MinimumVertexCover
from lepton_jax.rl import envs as _envs

_envs.register_family("MVC-", make, "MVC-{ER,BA}-MIN-MAX")
_envs.register_family("MaxCut-", make, "MaxCut-{ER,BA}-MIN-MAX")

__all__ = [
    "EDGE_FEATURES",
    "NODE_FEATURES",
    "EvalResult",
    "EvalSet",
    "Graph",
    "GraphDistribution",
    "GraphEnv",
    "GraphEnvParams",
    "GraphEnvState",
    "GraphObs",
    "MaxCut",
    "MinimumVertexCover",
    "NumpyGraph",
    "eval_set",
    "evaluate_on_graphs",
    "from_numpy",
    "load_eval_set",
    "make",
    "parse_name",
    "sample",
    "save_eval_set",
    "to_numpy",
]
