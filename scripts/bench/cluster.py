"""K-means and k-nearest-neighbour classification (`lepton_jax/techniques/cluster.py`) against scikit-learn, in one
run, and how the cost of each grows with the number of points.

    python -m scripts.bench.cluster --out=/tmp/bench_cluster.json      # from the repo root; N up to 10^6
    python -m scripts.bench.cluster --sizes=1000,10000                  # a quick look (seconds)

For each N in `--sizes`, N float32 points in `--dim` (64) dimensions around `--clusters` (10) Gaussian blobs (centres
uniform in [-10, 10]^D, standard deviation `--cluster_std`; the points' blob is their class), and:

- kmeans: Lloyd's algorithm from the same initial centres (the first k points) for both, at most `--iterations`
  updates and `tol=0`: ours `cluster.kmeans(points, k, init=centres, max_iter=..., tol=0)`, scikit-learn
  `KMeans(k, init=centres, n_init=1, algorithm="lloyd", max_iter=..., tol=0)`. Both stop early only when the centres
  stop moving (ours) or no label changes (scikit-learn), the same fixed point, so they run the same updates; the
  table shows each one's count, and compares time per update as well as per fit.
- knn: the `--k` nearest of the N points for `--queries` query points from the same blobs and their majority vote:
  ours `cluster.knn_classify`, scikit-learn `KNeighborsClassifier(k).fit(points, classes).predict(queries)` (its
  default algorithm; the one it picked is recorded).

Times are the median of `--repeats` runs; ours is jitted, and its first call (compiling for the shapes, then
running) is timed apart, its compile time reported as the first call minus the median run. Both run in this process
(scikit-learn is one of the project's own requirements, imported only here) on all cores (OpenMP for scikit-learn,
XLA's threads for ours). The growth column is the exponent b of time ~ N^b between consecutive sizes.
"""

import math
import sys

import jax
import numpy as np
from absl import app, flags

from lepton_jax.techniques import cluster
from scripts.bench import common

ALGORITHMS = ("kmeans", "knn")
PEERS = ("ours", "sklearn")
_SIZES = flags.DEFINE_list("sizes", ["1000", "10000", "100000", "1000000"], "Numbers of points N.")
_ALGORITHMS = flags.DEFINE_list("algorithms", list(ALGORITHMS), "What to time: " + ", ".join(ALGORITHMS) + ".")
_PEERS = flags.DEFINE_list("peers", list(PEERS), "Implementations: " + ", ".join(PEERS) + ".")
_DIM = flags.DEFINE_integer("dim", 64, "Dimension of the points.")
_CLUSTERS = flags.DEFINE_integer("clusters", 10, "Blobs, and k of k-means.")
_CLUSTER_STD = flags.DEFINE_float("cluster_std", 4.0, "Standard deviation of each blob (the centres span [-10, 10]).")
_ITERATIONS = flags.DEFINE_integer("iterations", 20, "The most Lloyd updates of a k-means fit (both sides).")
_QUERIES = flags.DEFINE_integer("queries", 1000, "Query points classified by KNN.")
_K = flags.DEFINE_integer("k", 5, "Neighbours that vote in KNN.")
_CHUNK_SIZE = flags.DEFINE_integer("chunk_size", None, "Our chunk size (default: the library's for each algorithm).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per measurement (the median is reported).")
_OUT = flags.DEFINE_string("out", None, "If set, writes everything as JSON to this file.")


def blobs(num_points: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, dim) float32 points around the benchmark's blobs (the same centres for every seed) and their (N,) blob."""
    centres = np.random.default_rng(0).uniform(-10, 10, (_CLUSTERS.value, _DIM.value)).astype(np.float32)
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, _CLUSTERS.value, num_points)
    noise = rng.standard_normal((num_points, _DIM.value), dtype=np.float32)
    return centres[classes] + _CLUSTER_STD.value * noise, classes


def chunk_kwargs() -> dict:
    """`chunk_size=--chunk_size` when the flag is set, else nothing (the library's default)."""
    return {} if _CHUNK_SIZE.value is None else {"chunk_size": _CHUNK_SIZE.value}


def median_time(fn, repeats: int) -> tuple[object, float]:
    """(the last result, the median seconds of `repeats` calls)."""
    seconds = []
    for _ in range(repeats):
        result, elapsed = common.timed(fn)
        seconds.append(elapsed)
    return result, float(np.median(seconds))


def time_ours(fn) -> dict:
    result, first_s = common.timed(lambda: jax.block_until_ready(fn()))
    result, seconds = median_time(lambda: jax.block_until_ready(fn()), _REPEATS.value)
    return {"result": result, "seconds": seconds, "compile_s": max(first_s - seconds, 0.0)}


def kmeans_row(points: np.ndarray) -> dict:
    k, iterations, chunk = _CLUSTERS.value, _ITERATIONS.value, chunk_kwargs()
    centres = points[:k].copy()
    row = {}
    if "ours" in _PEERS.value:
        timing = time_ours(lambda: cluster.kmeans(points, k, init=centres, max_iter=iterations, tol=0.0, **chunk))
        fit = timing.pop("result")
        row["ours"] = {**timing, "iterations": int(fit.iterations), "inertia": float(fit.inertia)}
    if "sklearn" in _PEERS.value:
        from sklearn.cluster import KMeans

        def fit_sklearn():
            return KMeans(k, init=centres, n_init=1, algorithm="lloyd", max_iter=iterations, tol=0.0).fit(points)

        fit, seconds = median_time(fit_sklearn, _REPEATS.value)
        row["sklearn"] = {"seconds": seconds, "iterations": int(fit.n_iter_), "inertia": float(fit.inertia_)}
    for r in row.values():
        r["per_iteration_s"] = r["seconds"] / max(r["iterations"], 1)
    return row


def knn_row(points: np.ndarray, classes: np.ndarray) -> dict:
    queries, _ = blobs(_QUERIES.value, seed=1)
    row, predictions, chunk = {}, {}, chunk_kwargs()
    if "ours" in _PEERS.value:
        timing = time_ours(lambda: cluster.knn_classify(points, classes, queries, _K.value, **chunk).predictions)
        predictions["ours"] = np.asarray(timing.pop("result"))
        row["ours"] = timing
    if "sklearn" in _PEERS.value:
        from sklearn.neighbors import KNeighborsClassifier

        def fit_predict():
            model = KNeighborsClassifier(_K.value).fit(points, classes)
            return model, model.predict(queries)

        (model, predictions["sklearn"]), seconds = median_time(fit_predict, _REPEATS.value)
        row["sklearn"] = {"seconds": seconds, "method": model._fit_method}
    if len(predictions) == 2:
        row["agreement"] = float(np.mean(predictions["ours"] == predictions["sklearn"]))
    return row


def growth(rows: list[dict], algorithm: str, peer: str, index: int) -> str:
    """The exponent b of time ~ N^b from the previous size to this one."""
    if index == 0 or peer not in rows[index - 1][algorithm] or peer not in rows[index][algorithm]:
        return "-"
    before, now = rows[index - 1], rows[index]
    ratio = now[algorithm][peer]["seconds"] / before[algorithm][peer]["seconds"]
    return f"{math.log(ratio) / math.log(now['n'] / before['n']):.2f}"


def print_tables(rows: list[dict]) -> None:
    for algorithm in _ALGORITHMS.value:
        if algorithm == "kmeans":
            title = f"k-means, k={_CLUSTERS.value}, at most {_ITERATIONS.value} Lloyd updates, same initial centres"
            extra = f"{'iters':>6}{'ms/iter':>10}{'inertia/sk':>11}"
        else:
            title = f"KNN, k={_K.value}, {_QUERIES.value} queries (scikit-learn: fit + predict)"
            extra = f"{'method':>8}{'agree':>7}"
        print(f"\n{title}, D={_DIM.value}, {jax.devices()[0].platform}")
        header = f"{'N':>10} {'impl':<8}{'s/fit':>10}{'compile s':>10}{'vs sklearn':>11}{'growth':>8}{extra}"
        print(header + "\n" + "-" * len(header))
        for index, row in enumerate(rows):
            results = row[algorithm]
            for peer in _PEERS.value:
                r = results[peer]
                compile_s = f"{r['compile_s']:.2f}" if "compile_s" in r else "-"
                ratio = "-"
                if "sklearn" in results and peer != "sklearn":
                    key = "per_iteration_s" if algorithm == "kmeans" else "seconds"
                    ratio = f"{r[key] / results['sklearn'][key]:.2f}x"
                line = f"{row['n']:>10,} {peer:<8}{r['seconds']:>10.4f}{compile_s:>10}{ratio:>11}"
                line += f"{growth(rows, algorithm, peer, index):>8}"
                if algorithm == "kmeans":
                    agreement = f"{r['inertia'] / results['sklearn']['inertia']:.5f}" if "sklearn" in results else "-"
                    line += f"{r['iterations']:>6}{1000 * r['per_iteration_s']:>10.3f}{agreement:>11}"
                else:
                    agreement = f"{results['agreement']:.3f}" if "agreement" in results else "-"
                    line += f"{r.get('method', '-'):>8}{agreement:>7}"
                print(line)
    print("\nvs sklearn: ours / scikit-learn (k-means: per Lloyd update); growth: b in time ~ N^b from the row above;")
    print("inertia/sk and agree: the final inertia over scikit-learn's, the share of equal KNN predictions.")


def main(argv):
    del argv
    for name, values, valid in (("algorithms", _ALGORITHMS, ALGORITHMS), ("peers", _PEERS, PEERS)):
        unknown = set(values.value) - set(valid)
        if unknown:
            raise app.UsageError(f"unknown --{name} {sorted(unknown)}; valid: {', '.join(valid)}")
    load_before = common.warn_if_busy()
    rows = []
    for size in (int(n) for n in _SIZES.value):
        print(f"N = {size:,}...", flush=True)
        points, classes = blobs(size, seed=0)
        row = {"n": size}
        if "kmeans" in _ALGORITHMS.value:
            row["kmeans"] = kmeans_row(points)
        if "knn" in _ALGORITHMS.value:
            row["knn"] = knn_row(points, classes)
        rows.append(row)
    print_tables(rows)
    if _OUT.value:
        import sklearn

        flag_values = {f.name: f.value for f in flags.FLAGS.get_key_flags_for_module(sys.modules[__name__])}
        report = {
            "command": sys.argv,
            "flags": flag_values,
            "versions": {"jax": jax.__version__, "sklearn": sklearn.__version__},
            "rows": rows,
            "machine": common.machine(load_before),
        }
        common.write_report(_OUT.value, report)


if __name__ == "__main__":
    app.run(main)
