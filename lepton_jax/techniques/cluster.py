"""Clustering and nearest neighbours in JAX: k-means, Gaussian mixtures, DBSCAN, k-nearest-neighbour classification,
and the scores of a clustering against known classes.

    fit = cluster.kmeans(points, k=10, key=jax.random.PRNGKey(0))      # centres, labels, inertia, iterations
    mixture = cluster.gaussian_mixture(points, k=3, key=key, covariance_type="diag")
    labels, core = cluster.dbscan(points, eps=0.5, min_samples=5)      # label -1: noise
    predictions, indices, distances = cluster.knn_classify(train, train_labels, queries, k=5)
    cluster.cluster_accuracy(classes, fit.labels), cluster.normalized_mutual_info(classes, fit.labels)

- `kmeans`: k-means++ seeding (Arthur & Vassilvitskii 2007: the first centre uniform, each next one a data point
  drawn with probability proportional to its squared distance to the nearest centre so far), then Lloyd iterations
  until the centres' total squared shift is at most `tol` times the data's mean per-feature variance (scikit-learn's
  rule, so `KMeans(init=centres, n_init=1, algorithm="lloyd")` runs the same iterations) or `max_iter`. A cluster
  that loses all its points keeps its centre (scikit-learn moves it to a far point instead).
- `gaussian_mixture`: EM (Dempster et al. 1977) for "full" or "diag" covariances, each with `reg_covar` added to
  its diagonal, stopping when the mean log-likelihood (the lower bound, computed before each M-step) changes by less
  than `tol`: scikit-learn's `GaussianMixture` step for step, initialised from given weights/means/precisions or,
  as scikit-learn by default, from the labels of a k-means fit.
- `dbscan` (Ester et al. 1996): a core point has at least `min_samples` points (itself included) within `eps`;
  clusters are the connected components of the core points' eps-graph, found by min-label propagation (each core
  point takes the smallest label among its core neighbours, then pointer jumping, label <- label[label]) until no
  label changes. A border point joins the cluster of its core neighbour whose cluster has the smallest first core
  point, clusters being numbered in the order of their first core point: scikit-learn's numbering and its choice for
  a border point that two clusters reach (its depth-first expansion runs in that order). Noise is -1.
- `knn_classify`: the k nearest training points of each query (ties in distance: the lower index first) and their
  majority vote, a tie going to the smallest label (as scikit-learn's `KNeighborsClassifier(weights="uniform")`).
- `cluster_accuracy` (the best one-to-one matching of clusters to classes, Hungarian method) and
  `normalized_mutual_info` (arithmetic-mean normalisation, as scikit-learn's default), on the host.

Chunking. Pairwise quantities are computed `chunk_size` points at a time, so that memory stays
O(chunk_size x max(K, chunk_size)) whatever N, and a million points cluster in the memory of a few chunks: the points
are padded to a multiple of the chunk (the padding masked out of every sum, count, minimum and top-k) and reshaped
to (num_chunks, chunk, D) for a `lax.scan`. K-means and EM see one chunk against all K centres at once, (chunk, K)
(EM: (chunk, K, D); k-means' default chunks hold at most `KMEANS_DISTANCES` / K points); DBSCAN and KNN, which
compare points with points, tile the N x N pairs as chunk x chunk blocks (a scan over query chunks around a scan
over reference chunks). Results depend on `chunk_size` only through the order of float32 sums. Pairwise squared
distances are |x|^2 - 2 x.y + |y|^2 (one matrix product at full float32 precision), clipped at 0 (to rank neighbours
or centres, the term every candidate shares is left out); the distances a function returns (the inertia, the
neighbours' distances) are recomputed as sums of squared differences, which do not cancel.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from scipy import optimize

from lepton_jax import metrics as core_metrics
from lepton_jax.errors import UserError

CHUNK_SIZE = 2048
# K-means' default chunk holds at most this many point-centre distances: (chunk, K) is all it keeps per chunk, and
# large chunks let XLA:CPU spread each matrix product over the cores (2048 points a chunk ran 1.5x slower at N = 10^6;
# one chunk of 10^6 points runs an update in the same time as ten of 10^5).
KMEANS_DISTANCES = 2**20
COVARIANCE_TYPES = ("full", "diag")
HIGHEST = lax.Precision.HIGHEST  # float32 products on accelerators too (their default may round to bf16/tf32)


class KMeansFit(NamedTuple):
    centres: jax.Array  # (K, D)
    labels: jax.Array  # (N,) int32 index of each point's nearest centre
    inertia: jax.Array  # () sum of squared distances to the assigned centres
    iterations: jax.Array  # () Lloyd updates run


class Mixture(NamedTuple):
    weights: jax.Array  # (K,)
    means: jax.Array  # (K, D)
    covariances: jax.Array  # (K, D, D) full, (K, D) diag
    log_likelihood: jax.Array  # () mean log-likelihood of the points under the final parameters
    labels: jax.Array  # (N,) the component of largest responsibility
    iterations: jax.Array  # () EM steps run
    converged: jax.Array  # () bool


class DBSCANFit(NamedTuple):
    labels: jax.Array  # (N,) cluster ids 0, 1, ..., -1 for noise
    core: jax.Array  # (N,) bool


class Neighbours(NamedTuple):
    predictions: jax.Array  # (Q,) the majority label
    indices: jax.Array  # (Q, k) training indices, nearest first
    distances: jax.Array  # (Q, k) Euclidean distances


# ---- Checks and chunks ------------------------------------------------------------------------------------------


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _as_points(points, name: str = "points") -> jax.Array:
    points = jnp.asarray(points, jnp.float32)
    _check(points.ndim == 2 and points.shape[0] > 0, f"{name} must be a non-empty (N, D) array, got {points.shape}")
    return points


def _check_count(name: str, value, low: int, high: int | None = None) -> None:
    ok = isinstance(value, int | np.integer) and value >= low and (high is None or value <= high)
    bounds = f"[{low}, {high}]" if high is not None else f">= {low}"
    _check(ok, f"{name} must be an integer {bounds}, got {value!r}")


def _chunk(chunk_size: int, n: int) -> int:
    _check_count("chunk_size", chunk_size, 1)
    return int(min(chunk_size, n))


def _chunked(arrays: tuple, chunk: int) -> tuple:
    """The per-point `arrays` (each (N, ...)) zero-padded to a multiple of `chunk` and cut into (num_chunks, chunk,
    ...), and the row positions (num_chunks, chunk): `_scan_chunks`'s input, made once where a loop scans it often."""
    n = arrays[0].shape[0]
    num = -(-n // chunk)
    padded = tuple(
        jnp.pad(a, [(0, num * chunk - n)] + [(0, 0)] * (a.ndim - 1)).reshape(num, chunk, *a.shape[1:]) for a in arrays
    )
    return padded, jnp.arange(num * chunk, dtype=jnp.int32).reshape(num, chunk)


def _scan_chunks(fn, carry, arrays: tuple, chunk: int, chunked: tuple | None = None):
    """Runs `fn(carry, chunk_arrays, index, valid) -> (carry, outputs)` over `chunk` rows at a time of the per-point
    `arrays` (each (N, ...)), zero-padded to a multiple of `chunk` (or `chunked`, `_chunked`'s output for them);
    `index` (chunk,) holds the rows' positions and `valid` (chunk,) is False on padding. Returns the final carry and
    the per-row outputs, (N, ...) each."""
    n = arrays[0].shape[0]
    padded, index = chunked or _chunked(arrays, chunk)
    carry, out = lax.scan(lambda c, xs: fn(c, xs[0], xs[1], xs[1] < n), carry, (padded, index))
    return carry, jax.tree.map(lambda o: o.reshape(-1, *o.shape[2:])[:n], out)


def _squared_distances(x, y):
    """(A, B) squared Euclidean distances between x (A, D) and y (B, D)."""
    cross = jnp.matmul(x, y.T, precision=HIGHEST)
    return jnp.maximum(jnp.sum(x * x, 1)[:, None] - 2 * cross + jnp.sum(y * y, 1)[None, :], 0.0)


# ---- K-means ----------------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames="k")
def _kmeans_plusplus(key, points, k: int):
    n = points.shape[0]
    keys = jax.random.split(key, k)

    def closest(centre):  # (N,) exact: a chosen point (and any duplicate) is at distance 0, so never drawn again
        return jnp.sum((points - centre) ** 2, 1)

    def add_centre(i, state):
        indices, d2 = state
        logits = jnp.where(d2 > 0, jnp.log(d2), -jnp.inf)
        logits = jnp.where(jnp.any(d2 > 0), logits, 0.0)  # fewer than k distinct points: draw uniformly
        index = jax.random.categorical(keys[i], logits)
        return indices.at[i].set(index), jnp.minimum(d2, closest(points[index]))

    first = jax.random.randint(keys[0], (), 0, n)
    indices = jnp.zeros(k, jnp.int32).at[0].set(first)
    indices, _ = lax.fori_loop(1, k, add_centre, (indices, closest(points[first])))
    return points[indices], indices


def kmeans_plusplus(key: jax.Array, points, k: int) -> tuple[jax.Array, jax.Array]:
    """k-means++ seeding (Arthur & Vassilvitskii 2007), one centre at a time by D^2 sampling.

    Args:
      key: a `jax.random` key; the same key gives the same centres.
      points: (N, D) the data.
      k: the number of centres, 1 <= k <= N.

    Returns:
      (K, D) float32 centres, data points distinct as long as the data has k distinct points, and their (K,) indices.
    """
    points = _as_points(points)
    _check_count("k", k, 1, points.shape[0])
    return _kmeans_plusplus(key, points, int(k))


@functools.partial(jax.jit, static_argnames=("max_iter", "chunk"))
def _lloyd(points, centres, tol, max_iter: int, chunk: int) -> KMeansFit:
    k, dim = centres.shape
    tol = tol * jnp.mean(jnp.var(points, 0))  # scikit-learn's scale: relative to the data's spread

    chunked = _chunked((points,), chunk)  # padded once, not in every pass of the loop

    def assign(centres, final: bool = False):
        """One pass: the (K, D) sums and (K,) counts of each centre's points, and with `final` the inertia and the
        (N,) labels too (the updates need neither)."""
        centre_norms = jnp.sum(centres * centres, 1)

        def body(carry, arrays, index, valid):
            (x,) = arrays
            # The nearest centre by |c|^2 - 2 x.c: |x - c|^2 less |x|^2, the same for every centre.
            labels = jnp.argmin(centre_norms[None, :] - 2 * jnp.matmul(x, centres.T, precision=HIGHEST), 1)
            members = jax.nn.one_hot(labels, k, dtype=jnp.float32) * valid[:, None]  # (chunk, K)
            sums, counts, inertia = carry
            sums = sums + jnp.matmul(members.T, x, precision=HIGHEST)
            if not final:
                return (sums, counts + members.sum(0), inertia), None
            residuals = jnp.sum((x - centres[labels]) ** 2, 1) * valid  # exact, not by the expansion
            return (sums, counts + members.sum(0), inertia + residuals.sum()), labels.astype(jnp.int32)

        return _scan_chunks(body, (jnp.zeros((k, dim)), jnp.zeros(k), jnp.zeros(())), (points,), chunk, chunked)

    def update(state):
        centres, _, iteration = state
        (sums, counts, _), _ = assign(centres)
        new = jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], centres)
        return new, jnp.sum((new - centres) ** 2), iteration + 1

    state = (centres, jnp.array(jnp.inf, jnp.float32), jnp.array(0, jnp.int32))
    centres, _, iterations = lax.while_loop(lambda s: (s[2] < max_iter) & (s[1] > tol), update, state)
    (_, _, inertia), labels = assign(centres, final=True)  # the labels and inertia of the final centres
    return KMeansFit(centres, labels, inertia, iterations)


def kmeans_chunk(n: int, k: int) -> int:
    """K-means' default chunk for n points and k centres: n cut into the fewest equal chunks of at most
    max(`CHUNK_SIZE`, `KMEANS_DISTANCES` // k) points, ceil(n / ceil(n / limit)), so the padding is under one point per
    chunk."""
    limit = max(CHUNK_SIZE, KMEANS_DISTANCES // k)
    return -(-n // -(-n // limit))


def kmeans(
    points,
    k: int,
    key: jax.Array | None = None,
    *,
    init=None,
    max_iter: int = 300,
    tol: float = 1e-4,
    chunk_size: int | None = None,
) -> KMeansFit:
    """K-means by Lloyd's algorithm from k-means++ centres (seeded by `key`) or from the given `init`.

    Args:
      points: (N, D) the data (cast to float32).
      k: the number of clusters, 1 <= k <= N.
      key: the k-means++ key (needed unless `init` is given).
      init: (K, D) initial centres.
      max_iter: the most Lloyd updates.
      tol: stop once the centres' total squared shift is at most tol times the mean per-feature variance.
      chunk_size: points per chunk of the assignment pass (None: `kmeans_chunk`'s, the fewest equal chunks).

    Returns:
      A `KMeansFit`: centres (K, D), labels (N,), inertia, iterations.
    """
    points = _as_points(points)
    _check_count("k", k, 1, points.shape[0])
    _check_count("max_iter", max_iter, 1)
    _check(tol >= 0, f"tol must be >= 0, got {tol}")
    if init is None:
        _check(key is not None, "kmeans needs a key (for k-means++) or init centres")
        init, _ = _kmeans_plusplus(key, points, int(k))
    init = jnp.asarray(init, jnp.float32)
    _check(init.shape == (k, points.shape[1]), f"init must have shape {(k, points.shape[1])}, got {init.shape}")
    chunk_size = kmeans_chunk(points.shape[0], k) if chunk_size is None else chunk_size
    return _lloyd(points, init, jnp.float32(tol), int(max_iter), _chunk(chunk_size, points.shape[0]))


# ---- Gaussian mixture -------------------------------------------------------------------------------------------


def _precision_cholesky(covariances, full: bool):
    """(K, D, D) upper factors U with U U^T = covariance^-1 (full), or (K, D) precision square roots (diag)."""
    if not full:
        return lax.rsqrt(covariances)
    eye = jnp.eye(covariances.shape[-1], dtype=covariances.dtype)
    lower = jnp.linalg.cholesky(covariances)  # covariance = L L^T, precision = L^-T L^-1
    inverse = jax.vmap(lambda factor: jax.scipy.linalg.solve_triangular(factor, eye, lower=True))(lower)
    return jnp.swapaxes(inverse, 1, 2)


def _log_weighted(x, weights, means, precision_chol, full: bool):
    """(chunk, K) log w_k + log N(x | mean_k, covariance_k) from the precisions' factors."""
    if full:
        projected = jnp.einsum("cd,kde->cke", x, precision_chol, precision=HIGHEST)  # (chunk, K, D)
        y = projected - jnp.einsum("kd,kde->ke", means, precision_chol, precision=HIGHEST)
        log_det = jnp.sum(jnp.log(jnp.diagonal(precision_chol, axis1=1, axis2=2)), 1)
    else:
        y = (x[:, None, :] - means) * precision_chol  # (chunk, K, D)
        log_det = jnp.sum(jnp.log(precision_chol), 1)
    return -0.5 * (x.shape[1] * jnp.log(2 * jnp.pi) + jnp.sum(y * y, -1)) + log_det + jnp.log(weights)


def _statistics(points, extra: tuple, responsibilities, reference, full: bool, chunk: int):
    """One pass over the points: the responsibilities' sums (K,), their first (K, D) and second (K, D, D) or (K, D)
    moments about `reference` (K, D), and the sum of the per-point log-likelihoods; and the (N,) argmax labels.

    Moments about a reference close to the new means (the current means) keep float32 from cancelling.
    `responsibilities(x, *extra) -> ((chunk, K), (chunk,))` gives the responsibilities and log-likelihoods.
    """
    k, dim = reference.shape

    def body(carry, arrays, index, valid):
        resp, log_norm = responsibilities(*arrays)
        resp = resp * valid[:, None]  # (chunk, K)
        diff = arrays[0][:, None, :] - reference  # (chunk, K, D)
        weighted = resp[..., None] * diff
        if full:
            second = jnp.einsum("ckd,cke->kde", weighted, diff, precision=HIGHEST)
        else:
            second = jnp.sum(weighted * diff, 0)
        total, first, second_sum, log_sum = carry
        carry = (total + resp.sum(0), first + weighted.sum(0), second_sum + second, log_sum + (log_norm * valid).sum())
        return carry, jnp.argmax(resp, 1).astype(jnp.int32)

    init = (jnp.zeros(k), jnp.zeros((k, dim)), jnp.zeros((k, dim, dim) if full else (k, dim)), jnp.zeros(()))
    return _scan_chunks(body, init, (points, *extra), chunk)


def _m_step(statistics, reference, reg_covar, full: bool):
    """(weights (K,), means (K, D), covariances) from `_statistics` about `reference`."""
    total, first, second, _ = statistics
    total = total + 10 * jnp.finfo(jnp.float32).eps  # scikit-learn's guard against an empty component
    shift = first / total[:, None]  # (K, D) new mean - reference
    if full:
        covariances = second / total[:, None, None] - shift[:, :, None] * shift[:, None, :]
        covariances = 0.5 * (covariances + jnp.swapaxes(covariances, 1, 2)) + reg_covar * jnp.eye(first.shape[1])
    else:
        covariances = second / total[:, None] - shift**2 + reg_covar
    return total / total.sum(), reference + shift, covariances


@functools.partial(jax.jit, static_argnames=("k", "full", "chunk"))
def _from_labels(points, labels, reg_covar, k: int, full: bool, chunk: int):
    def hard(x, label):
        return jax.nn.one_hot(label, k, dtype=jnp.float32), jnp.zeros(x.shape[0])

    origin = jnp.zeros((k, points.shape[1]))
    _, means, _ = _m_step(_statistics(points, (labels,), hard, origin, full, chunk)[0], origin, reg_covar, full)
    statistics, _ = _statistics(points, (labels,), hard, means, full, chunk)  # centred on the means
    return _m_step(statistics, means, reg_covar, full)


@functools.partial(jax.jit, static_argnames=("max_iter", "full", "chunk"))
def _em(points, weights, means, precision_chol, covariances, tol, reg_covar, max_iter: int, full: bool, chunk: int):
    n = points.shape[0]

    def statistics(weights, means, precision_chol):
        def soft(x):
            log_weighted = _log_weighted(x, weights, means, precision_chol, full)  # (chunk, K)
            log_norm = jax.nn.logsumexp(log_weighted, 1)
            return jnp.exp(log_weighted - log_norm[:, None]), log_norm

        return _statistics(points, (), soft, means, full, chunk)

    def step(state):
        weights, means, precision_chol, _, lower_bound, iteration, _ = state
        stats, _ = statistics(weights, means, precision_chol)
        new_bound = stats[3] / n  # the mean log-likelihood before this M-step, as scikit-learn's lower bound
        weights, means, covariances = _m_step(stats, means, reg_covar, full)
        converged = jnp.abs(new_bound - lower_bound) < tol
        return weights, means, _precision_cholesky(covariances, full), covariances, new_bound, iteration + 1, converged

    state = (weights, means, precision_chol, covariances, jnp.float32(-jnp.inf), jnp.int32(0), jnp.bool_(False))
    weights, means, precision_chol, covariances, _, iterations, converged = lax.while_loop(
        lambda s: (s[5] < max_iter) & ~s[6], step, state
    )
    stats, labels = statistics(weights, means, precision_chol)
    return Mixture(weights, means, covariances, stats[3] / n, labels, iterations, converged)


def gaussian_mixture(
    points,
    k: int,
    key: jax.Array | None = None,
    *,
    covariance_type: str = "full",
    weights_init=None,
    means_init=None,
    precisions_init=None,
    reg_covar: float = 1e-6,
    tol: float = 1e-3,
    max_iter: int = 100,
    chunk_size: int = CHUNK_SIZE,
) -> Mixture:
    """A Gaussian mixture fitted by EM (Dempster et al. 1977), as scikit-learn's `GaussianMixture(n_init=1)`.

    Args:
      points: (N, D) the data (cast to float32).
      k: the number of components, 1 <= k <= N.
      key: seeds the k-means fit whose labels initialise the parameters (needed unless the inits are given).
      covariance_type: "full" or "diag".
      weights_init, means_init, precisions_init: (K,), (K, D) and (K, D, D) ("full") or (K, D) ("diag") initial
        parameters, all three or none (scikit-learn's names and meaning).
      reg_covar: added to the diagonal of every covariance.
      tol: stop when the mean log-likelihood changes by less than this between steps.
      max_iter: the most EM steps.
      chunk_size: points per chunk of the E-step.

    Returns:
      A `Mixture`: weights, means, covariances, the mean log-likelihood (scikit-learn's `score`), labels (N,),
      iterations, converged.
    """
    points = _as_points(points)
    n, dim = points.shape
    _check_count("k", k, 1, n)
    _check(covariance_type in COVARIANCE_TYPES, f"unknown covariance_type {covariance_type!r}; valid: full, diag")
    _check_count("max_iter", max_iter, 1)
    _check(reg_covar >= 0 and tol >= 0, f"reg_covar and tol must be >= 0, got {reg_covar} and {tol}")
    full, chunk = covariance_type == "full", _chunk(chunk_size, n)
    given = [x is not None for x in (weights_init, means_init, precisions_init)]
    _check(all(given) or not any(given), "give all of weights_init, means_init and precisions_init, or none")
    if any(given):
        weights, means = jnp.asarray(weights_init, jnp.float32), jnp.asarray(means_init, jnp.float32)
        precisions = jnp.asarray(precisions_init, jnp.float32)
        shapes = {"weights_init": (k,), "means_init": (k, dim), "precisions_init": (k, dim, dim) if full else (k, dim)}
        for (name, shape), value in zip(shapes.items(), (weights, means, precisions)):
            _check(value.shape == shape, f"{name} must have shape {shape}, got {value.shape}")
        precision_chol = jnp.linalg.cholesky(precisions) if full else jnp.sqrt(precisions)
        covariances = jnp.linalg.inv(precisions) if full else 1.0 / precisions
    else:
        _check(key is not None, "gaussian_mixture needs a key (for its k-means init) or the three inits")
        labels = kmeans(points, k, key, chunk_size=chunk).labels
        weights, means, covariances = _from_labels(points, labels, jnp.float32(reg_covar), int(k), full, chunk)
        precision_chol = _precision_cholesky(covariances, full)
    mixture = _em(points, weights, means, precision_chol, covariances, tol, reg_covar, int(max_iter), full, chunk)
    _check(
        bool(jnp.isfinite(mixture.log_likelihood)),
        "gaussian_mixture: a covariance is not positive definite; raise reg_covar or check the inits",
    )
    return mixture


# ---- DBSCAN -----------------------------------------------------------------------------------------------------


def _over_neighbours(points, values, eps2, chunk: int, count: bool):
    """(N,) for each point, the number of points within eps (count) or the smallest of `values` (N,) over them
    (N where none), itself included; chunk x chunk tiles of pairs."""
    n = points.shape[0]
    chunked = _chunked((points, values), chunk)  # padded once for every query chunk

    def query(carry, arrays, index, valid):
        (x,) = arrays

        def reference(result, arrays, index, valid):
            y, value = arrays
            near = (_squared_distances(x, y) <= eps2) & valid[None, :]  # (chunk, chunk)
            if count:
                return result + jnp.sum(near, 1, dtype=jnp.int32), None
            return jnp.minimum(result, jnp.min(jnp.where(near, value[None, :], n), 1)), None

        start = jnp.full(x.shape[0], 0 if count else n, jnp.int32)
        return carry, _scan_chunks(reference, start, (points, values), chunk, chunked)[0]

    return _scan_chunks(query, None, (points,), chunk)[1]


@functools.partial(jax.jit, static_argnames=("min_samples", "chunk"))
def _dbscan(points, eps, min_samples: int, chunk: int) -> DBSCANFit:
    n = points.shape[0]
    eps2, index = eps * eps, jnp.arange(n, dtype=jnp.int32)
    core = _over_neighbours(points, index, eps2, chunk, count=True) >= min_samples

    def jump(state):  # a core point's label is a core point's index: take that point's label
        labels, _ = state
        jumped = jnp.where(labels < n, labels[jnp.minimum(labels, n - 1)], n)
        return jumped, jnp.any(jumped != labels)

    def sweep(state):  # labels: (N,) the smallest core index known in the point's component, N off the core
        labels, _ = state
        smallest = _over_neighbours(points, labels, eps2, chunk, count=False)
        new = lax.while_loop(lambda s: s[1], jump, (jnp.where(core, jnp.minimum(labels, smallest), n), True))[0]
        return new, jnp.any(new != labels)

    labels = lax.while_loop(lambda s: s[1], sweep, (jnp.where(core, index, n), jnp.bool_(True)))[0]
    labels = jnp.where(core, labels, _over_neighbours(points, labels, eps2, chunk, count=False))  # borders
    number = jnp.cumsum(core & (labels == index)) - 1  # clusters numbered by their first core point
    return DBSCANFit(jnp.where(labels < n, number[jnp.minimum(labels, n - 1)], -1).astype(jnp.int32), core)


def dbscan(points, eps: float, min_samples: int = 5, *, chunk_size: int = CHUNK_SIZE) -> DBSCANFit:
    """DBSCAN (Ester et al. 1996) with Euclidean distances, as scikit-learn's `DBSCAN(eps, min_samples)`.

    Args:
      points: (N, D) the data (cast to float32).
      eps: the neighbourhood radius (> 0); a point at distance exactly eps is a neighbour.
      min_samples: the neighbours (the point itself included) that make a core point.
      chunk_size: points per side of a chunk x chunk tile of distances.

    Returns:
      A `DBSCANFit`: labels (N,) (clusters 0, 1, ... in the order of their first core point, -1 for noise) and
      core (N,) bool.
    """
    points = _as_points(points)
    _check(eps > 0, f"eps must be > 0, got {eps}")
    _check_count("min_samples", min_samples, 1)
    return _dbscan(points, jnp.float32(eps), int(min_samples), _chunk(chunk_size, points.shape[0]))


# ---- Nearest neighbours -----------------------------------------------------------------------------------------


GROUP = 32  # KNN: a tile's candidates are the k groups of this many neighbouring columns with the best maxima


def _tile_candidates(scores, index, k: int):
    """(scores, indices) (Q, C') of the columns of a (Q, C) tile of `scores` (their training indices: `index` (C,))
    that can hold the tile's k best of each row: C' = k * GROUP of them when GROUP divides C and C > k * GROUP,
    else all C.

    Exact, ties included: a column among the row's k best (the lower index first among equals) lies in a group
    whose maximum is at least its score, and fewer than k groups rank above that group (each such group holds a
    better column or an equal one of lower index), so `top_k` of the group maxima picks it. The tile then costs a
    max over its groups and a `top_k` of C / GROUP + k * GROUP values, not a `top_k` of C."""
    rows, columns = scores.shape
    if columns % GROUP or columns <= k * GROUP:
        return scores, jnp.broadcast_to(index, (rows, columns))
    grouped = scores.reshape(rows, columns // GROUP, GROUP)
    _, groups = lax.top_k(jnp.max(grouped, 2), k)  # (Q, k) the best groups (the lower group first among equals)
    picked = jnp.take_along_axis(grouped, groups[:, :, None], 1).reshape(rows, k * GROUP)
    grouped_index = index.reshape(columns // GROUP, GROUP)[groups].reshape(rows, k * GROUP)
    return picked, grouped_index


@functools.partial(jax.jit, static_argnames=("k", "num_classes", "query_chunk", "train_chunk"))
def _knn(train, train_labels, queries, k: int, num_classes: int, query_chunk: int, train_chunk: int) -> Neighbours:
    train_norms = jnp.sum(train * train, 1)
    chunked = _chunked((train, train_norms), train_chunk)  # padded once for every query chunk

    def query(carry, arrays, index, valid):
        (x,) = arrays

        def reference(best, arrays, index, valid):
            y, y_norms = arrays
            # The ranking score 2 x.y - |y|^2 = |x|^2 - |x - y|^2: the nearest has the highest; padding never wins.
            scores = 2 * jnp.matmul(x, y.T, precision=HIGHEST) - y_norms[None, :]  # (chunk, train chunk)
            scores, indices = _tile_candidates(jnp.where(valid[None, :], scores, -jnp.inf), index, k)
            # The best so far first: on equal scores `top_k` keeps the earlier entry, the lower index.
            scores = jnp.concatenate([best[0], scores], 1)
            indices = jnp.concatenate([best[1], indices], 1)
            top, position = lax.top_k(scores, k)
            return (top, jnp.take_along_axis(indices, position, 1)), None

        start = (jnp.full((x.shape[0], k), -jnp.inf), jnp.zeros((x.shape[0], k), jnp.int32))
        (_, indices), _ = _scan_chunks(reference, start, (train, train_norms), train_chunk, chunked)
        # The k distances again as differences: |x|^2 - 2 x.y + |y|^2 cancels where |x| is large and x near y.
        return carry, (indices, jnp.sqrt(jnp.sum((x[:, None, :] - train[indices]) ** 2, -1)))  # (chunk, k)

    _, (indices, distances) = _scan_chunks(query, None, (queries,), query_chunk)
    votes = jax.nn.one_hot(train_labels[indices], num_classes, dtype=jnp.int32).sum(1)  # (Q, classes)
    return Neighbours(jnp.argmax(votes, 1).astype(jnp.int32), indices, distances)  # argmax: the smallest tied label


def knn_classify(
    train_points, train_labels, queries, k: int = 5, *, num_classes: int | None = None, chunk_size: int = CHUNK_SIZE
) -> Neighbours:
    """k-nearest-neighbour classification with uniform votes, as scikit-learn's `KNeighborsClassifier`.

    Args:
      train_points: (N, D) the training points (cast to float32).
      train_labels: (N,) their labels, ints in [0, num_classes).
      queries: (Q, D) the points to classify.
      k: the neighbours that vote, 1 <= k <= N.
      num_classes: the number of classes (default: the largest training label + 1).
      chunk_size: points per side of a query chunk x training chunk tile of distances.

    Returns:
      `Neighbours`: predictions (Q,) (a tied vote goes to the smallest label), indices (Q, k) and distances (Q, k)
      of the neighbours, nearest first.
    """
    train_points, queries = _as_points(train_points, "train_points"), _as_points(queries, "queries")
    labels = np.asarray(train_labels)
    n = train_points.shape[0]
    _check(labels.shape == (n,), f"train_labels must have shape {(n,)}, got {labels.shape}")
    _check(queries.shape[1] == train_points.shape[1], "queries and train_points must have the same dimension")
    _check(np.issubdtype(labels.dtype, np.integer) and labels.min() >= 0, "train_labels must be integers >= 0")
    _check_count("k", k, 1, n)
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    _check_count("num_classes", num_classes, int(labels.max()) + 1)
    chunks = _chunk(chunk_size, queries.shape[0]), _chunk(chunk_size, n)
    return _knn(train_points, jnp.asarray(labels, jnp.int32), queries, int(k), int(num_classes), *chunks)


# ---- Scores of a clustering -------------------------------------------------------------------------------------


def _contingency(labels_true, labels_pred) -> np.ndarray:
    """(classes, clusters) float64 counts of the points of each class in each cluster (any label values, e.g. -1)."""
    labels_true, labels_pred = np.asarray(labels_true).ravel(), np.asarray(labels_pred).ravel()
    _check(labels_true.shape == labels_pred.shape and labels_true.size > 0, "label arrays must be non-empty, equal")
    classes, true = np.unique(labels_true, return_inverse=True)
    clusters, predicted = np.unique(labels_pred, return_inverse=True)
    size = max(len(classes), len(clusters))
    table = core_metrics.confusion_matrix(jnp.asarray(true), jnp.asarray(predicted), size)
    return np.asarray(table, np.float64)[: len(classes), : len(clusters)]


def cluster_accuracy(labels_true, labels_pred) -> float:
    """The share of points whose cluster is matched to their class, under the one-to-one matching of clusters to
    classes that maximises it (Hungarian method); a cluster or class left unmatched counts as wrong."""
    table = _contingency(labels_true, labels_pred)
    rows, columns = optimize.linear_sum_assignment(table, maximize=True)
    return float(table[rows, columns].sum() / table.sum())


def normalized_mutual_info(labels_true, labels_pred) -> float:
    """I(true; pred) / mean(H(true), H(pred)), scikit-learn's `normalized_mutual_info_score` (1 when both labellings
    are a single cluster, 0 when either is and the other is not)."""
    joint = _contingency(labels_true, labels_pred)
    if joint.shape == (1, 1):
        return 1.0
    joint /= joint.sum()
    p_true, p_pred = joint.sum(1), joint.sum(0)
    seen = joint > 0
    mutual = max(float(np.sum(joint[seen] * np.log(joint[seen] / np.outer(p_true, p_pred)[seen]))), 0.0)
    if mutual == 0.0:
        return 0.0

    def entropy(p):
        return -float(np.sum(p[p > 0] * np.log(p[p > 0])))

    return mutual / (0.5 * (entropy(p_true) + entropy(p_pred)))
