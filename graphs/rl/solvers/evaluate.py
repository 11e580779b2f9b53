"""The exact solver and the heuristics over a list of graphs, with the ILP results cached in a JSON file."""

import json
import os
from collections.abc import Callable, Sequence

import numpy as np

from graphs.rl.solvers import maxcut, mvc
from graphs.rl.solvers.common import cut_value, graph_key, is_vertex_cover

MVC_HEURISTICS = {"greedy": mvc.mvc_greedy, "matching": mvc.mvc_matching}
MAXCUT_HEURISTICS = {"local_search": maxcut.maxcut_local_search, "random": maxcut.maxcut_random}
PROBLEMS = ("mvc", "maxcut")


def _as_graph(problem, graph):
    """`(n, edges[, weights])` as `n`, `(k, 2)` ints and `(k,)` floats (None for MVC; MaxCut default: ones)."""
    n, edges, *rest = graph
    edges = np.asarray(edges, np.int64).reshape(-1, 2)
    if problem == "mvc":
        return int(n), edges, None
    return int(n), edges, np.asarray(rest[0], np.float64) if rest and rest[0] is not None else np.ones(len(edges))


def evaluate(
    problem: str,
    graphs: Sequence,
    time_limit: float = 60.0,
    *,
    methods: dict[str, Callable] | None = None,
    cache_path: str | None = None,
    progress: str | None = None,
) -> list[dict]:
    """Runs the exact solver and the heuristics on each graph.

    Args:
      problem: "mvc" or "maxcut".
      graphs: `(n, edges)` or `(n, edges, weights)` tuples (MaxCut without weights: unit weights).
      time_limit: seconds of ILP per graph.
      methods: name -> function(n, edges) for MVC, function(n, edges, weights) for MaxCut, returning the cover or
        the side `(n,)`; default `MVC_HEURISTICS` or `MAXCUT_HEURISTICS`. MVC covers are checked.
      cache_path: a JSON file of ILP results keyed by `graph_key`: a graph found there is not solved again unless
        its entry is unproved and was solved with a shorter time limit. Written after each solve.
      progress: a label: show a progress bar (with an ETA) over the graphs.

    Returns:
      One dict per graph: `key`, `n`, `num_edges`, `values` (method -> objective, "ilp" included), `optimal`
      (the ILP proved its value optimal), `bound` (the proven bound), `reference` (the best value of all methods:
      the optimum when `optimal`), `ilp_seconds`.
    """
    if problem not in PROBLEMS:
        raise ValueError(f"unknown problem {problem!r}; valid choices: {', '.join(PROBLEMS)}")
    if methods is None:
        methods = MVC_HEURISTICS if problem == "mvc" else MAXCUT_HEURISTICS
    cache = {}
    if cache_path is not None and os.path.exists(cache_path):
        with open(cache_path) as f:
            cache = json.load(f)
    records = []
    bar = None
    if progress:
        from lepton_jax import run  # the scaffold's progress bar (main process only)

        bar = run.phase(len(graphs), progress, unit="graph")
    for graph in graphs:
        n, edges, weights = _as_graph(problem, graph)
        key = graph_key(problem, n, edges, weights)
        entry = cache.get(key)
        if entry is None or not (entry["optimal"] or entry["time_limit"] >= time_limit):
            if problem == "mvc":
                solved = mvc.mvc_ilp(n, edges, time_limit)
            else:
                solved = maxcut.maxcut_ilp(n, edges, weights, time_limit)
            entry = {
                "value": solved.value,
                "bound": solved.bound,
                "optimal": solved.optimal,
                "seconds": solved.seconds,
                "time_limit": float(time_limit),
                "solution": "".join(map(str, solved.solution.tolist())),
            }
            if cache_path is not None:
                cache[key] = entry
                _write_json(cache_path, cache)
        values = {"ilp": float(entry["value"])}
        for name, method in methods.items():
            if problem == "mvc":
                cover = np.asarray(method(n, edges))
                if not is_vertex_cover(n, edges, cover):
                    raise ValueError(f"method {name!r} returned a set that is not a vertex cover")
                values[name] = float(cover.astype(bool).sum())
            else:
                values[name] = cut_value(n, edges, weights, method(n, edges, weights))
        reference = (min if problem == "mvc" else max)(values.values())
        record = {"key": key, "n": n, "num_edges": len(edges), "values": values, "reference": reference}
        record.update(optimal=bool(entry["optimal"]), bound=float(entry["bound"]), ilp_seconds=entry["seconds"])
        records.append(record)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return records


def _write_json(path, payload):
    temporary = f"{path}.tmp"
    with open(temporary, "w") as f:
        json.dump(payload, f, indent=1, sort_keys=True)
    os.replace(temporary, path)
