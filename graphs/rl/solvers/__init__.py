"""Reference solvers and classical heuristics for Minimum Vertex Cover (MVC) and MaxCut, in NumPy and SciPy.

- Exact: `mvc_ilp` and `maxcut_ilp` (integer programs solved by HiGHS through `scipy.optimize.milp`, with a time
  limit; on a time-out they return the best solution found and the best proven bound), and `mvc_brute_force` /
  `maxcut_brute_force` for tiny graphs (tests).
- Heuristics: `mvc_greedy`, `mvc_matching`, `maxcut_local_search`, `maxcut_random`.
- Evaluation: `approximation_ratio`; `evaluate` (the exact solver and the heuristics over a list of graphs, the
  ILP results cached in a JSON file), which the graph-RL trainer scores its agents against.
- Also exported for the tests (production code uses them only inside this package): `SolverResult`,
  `is_vertex_cover`, `graph_key`, `maximal_matching`, `edge_clique_cover`, the heuristic tables and `PROBLEMS`.

One module per problem (`mvc.py`, `maxcut.py`), the shared graph format in `common.py`, the driver in
`evaluate.py`.
"""

from graphs.rl.solvers.common import (
    SolverResult,
    approximation_ratio,
    cut_value,
    graph_key,
    is_vertex_cover,
)
from graphs.rl.solvers.evaluate import MAXCUT_HEURISTICS, MVC_HEURISTICS, PROBLEMS, evaluate
from graphs.rl.solvers.maxcut import maxcut_brute_force, maxcut_ilp, maxcut_local_search, maxcut_random
from graphs.rl.solvers.mvc import (
    edge_clique_cover,
    maximal_matching,
    mvc_brute_force,
    mvc_greedy,
    mvc_ilp,
    mvc_matching,
)

__all__ = [
    "MAXCUT_HEURISTICS",
    "MVC_HEURISTICS",
    "PROBLEMS",
    "SolverResult",
    "approximation_ratio",
    "cut_value",
    "edge_clique_cover",
    "evaluate",
    "graph_key",
    "is_vertex_cover",
    "maximal_matching",
    "maxcut_brute_force",
    "maxcut_ilp",
    "maxcut_local_search",
    "maxcut_random",
    "mvc_brute_force",
    "mvc_greedy",
    "mvc_ilp",
    "mvc_matching",
]
