"""Clustering and nearest neighbours (`lepton_jax/techniques/cluster.py`) against scikit-learn and hand computations:
k-means from the same centres (labels, inertia, iterations), chunked = unchunked, k-means++'s D^2 sampling
frequencies, Gaussian mixtures (full, diag) from the same initial parameters, DBSCAN's core points and labels on data
with border points that two clusters reach, KNN's neighbours and votes (a tied vote included), the clustering scores
on a worked example, and the one-line errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import cluster as sk_cluster
from sklearn import metrics as sk_metrics
from sklearn.datasets import load_digits, make_blobs
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import KNeighborsClassifier

from lepton_jax.errors import UserError
from lepton_jax.techniques import cluster

# 300 points in 3-D around 4 overlapping blobs: the clusters touch, so assignments near the boundaries are tested.
BLOBS, BLOB_CLASSES = make_blobs(300, n_features=3, centers=4, cluster_std=1.5, random_state=0)
BLOBS = BLOBS.astype(np.float32)
CENTRES = BLOBS[:4]  # initial centres (and means) given to both implementations


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    return data.data.astype(np.float32), data.target


@pytest.fixture(scope="module")
def blobs_fit():
    return cluster.kmeans(BLOBS, 4, init=CENTRES)


def test_kmeans_matches_sklearn_from_the_same_centres(blobs_fit):
    reference = sk_cluster.KMeans(4, init=CENTRES, n_init=1, algorithm="lloyd").fit(BLOBS)
    # The same initial centres keep the cluster ids: equal labels, not only up to a permutation.
    np.testing.assert_array_equal(np.asarray(blobs_fit.labels), reference.labels_)
    assert float(blobs_fit.inertia) == pytest.approx(reference.inertia_, rel=1e-3)
    assert int(blobs_fit.iterations) == reference.n_iter_
    np.testing.assert_allclose(blobs_fit.centres, reference.cluster_centers_, atol=1e-4)
    # The inertia is the sum of squared distances to the assigned centres, by hand.
    by_hand = np.sum((BLOBS - np.asarray(blobs_fit.centres)[np.asarray(blobs_fit.labels)]) ** 2)
    assert float(blobs_fit.inertia) == pytest.approx(by_hand, rel=1e-5)


def test_kmeans_chunked_equals_unchunked(blobs_fit):
    chunked = cluster.kmeans(BLOBS, 4, init=CENTRES, chunk_size=7)  # 300 = 42 x 7 + 6: a padded last chunk
    np.testing.assert_array_equal(np.asarray(chunked.labels), np.asarray(blobs_fit.labels))
    np.testing.assert_allclose(chunked.centres, blobs_fit.centres, atol=1e-5)
    assert float(chunked.inertia) == pytest.approx(float(blobs_fit.inertia), rel=1e-5)
    assert int(chunked.iterations) == int(blobs_fit.iterations)


@pytest.mark.parametrize("n, k", [(300, 4), (10**6, 10), (3 * 2**20 // 10 + 1, 10), (5 * 2**20 + 3, 2**9)])
def test_kmeans_default_chunk_is_the_fewest_equal_chunks(n, k):
    limit = max(cluster.CHUNK_SIZE, cluster.KMEANS_DISTANCES // k)
    chunk = cluster.kmeans_chunk(n, k)
    num = -(-n // chunk)
    assert chunk <= limit and num == -(-n // limit)  # no chunk over the limit, and no more chunks than needed
    assert num * chunk - n < num  # padding under one point per chunk


def test_kmeans_on_digits_matches_sklearn(digits):
    points, classes = digits
    centres, _ = cluster.kmeans_plusplus(jax.random.PRNGKey(0), points, 10)
    ours = cluster.kmeans(points, 10, init=centres, chunk_size=500)
    reference = sk_cluster.KMeans(10, init=np.asarray(centres), n_init=1, algorithm="lloyd").fit(points)
    assert cluster.cluster_accuracy(reference.labels_, np.asarray(ours.labels)) == 1.0  # equal up to a permutation
    assert float(ours.inertia) == pytest.approx(reference.inertia_, rel=1e-3)
    assert cluster.normalized_mutual_info(classes, np.asarray(ours.labels)) > 0.6  # k-means finds the digits


def test_kmeans_plusplus_draws_distinct_points_deterministically():
    centres, indices = cluster.kmeans_plusplus(jax.random.PRNGKey(3), BLOBS, 10)
    assert len(set(np.asarray(indices).tolist())) == 10
    np.testing.assert_array_equal(centres, BLOBS[np.asarray(indices)])
    again, same = cluster.kmeans_plusplus(jax.random.PRNGKey(3), BLOBS, 10)
    np.testing.assert_array_equal(np.asarray(same), np.asarray(indices))
    other = cluster.kmeans_plusplus(jax.random.PRNGKey(4), BLOBS, 10)[1]
    assert not np.array_equal(np.asarray(other), np.asarray(indices))


def test_kmeans_plusplus_samples_by_squared_distance():
    # Points 0, 1, 3 on a line, 2 centres: the first uniform, the second with probability d^2 / sum d^2.
    points = np.array([[0.0], [1.0], [3.0]], np.float32)
    d2 = (points - points.T) ** 2  # (3, 3) squared distances
    expected = d2 / d2.sum(1, keepdims=True) / 3  # P(first = i, second = j)
    draws = 6000
    keys = jax.random.split(jax.random.PRNGKey(0), draws)
    pairs = np.asarray(jax.vmap(lambda key: cluster.kmeans_plusplus(key, points, 2)[1])(keys))
    counts = np.zeros((3, 3))
    np.add.at(counts, (pairs[:, 0], pairs[:, 1]), 1)
    spread = np.sqrt(expected * (1 - expected) / draws)
    assert np.all(np.abs(counts / draws - expected) <= 4 * spread + 1e-9), counts / draws


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_gaussian_mixture_matches_sklearn_from_the_same_parameters(covariance_type):
    weights = np.array([0.1, 0.2, 0.3, 0.4])
    precisions = np.stack([np.eye(3) * (k + 1) for k in range(4)])  # (4, 3, 3): different starting widths
    if covariance_type == "diag":
        precisions = np.stack([np.diagonal(p) for p in precisions])
    inits = {"weights_init": weights, "means_init": CENTRES.astype(np.float64), "precisions_init": precisions}
    ours = cluster.gaussian_mixture(BLOBS, 4, covariance_type=covariance_type, **inits)
    reference = GaussianMixture(4, covariance_type=covariance_type, **inits).fit(BLOBS.astype(np.float64))
    assert float(ours.log_likelihood) == pytest.approx(reference.score(BLOBS.astype(np.float64)), rel=1e-3)
    np.testing.assert_array_equal(np.asarray(ours.labels), reference.predict(BLOBS.astype(np.float64)))
    assert abs(int(ours.iterations) - reference.n_iter_) <= 1 and bool(ours.converged)
    np.testing.assert_allclose(ours.weights, reference.weights_, atol=1e-4)
    np.testing.assert_allclose(ours.means, reference.means_, atol=1e-3)
    np.testing.assert_allclose(ours.covariances, reference.covariances_, atol=1e-3)
    chunked = cluster.gaussian_mixture(BLOBS, 4, covariance_type=covariance_type, chunk_size=7, **inits)
    assert float(chunked.log_likelihood) == pytest.approx(float(ours.log_likelihood), rel=1e-5)
    np.testing.assert_array_equal(np.asarray(chunked.labels), np.asarray(ours.labels))


def test_gaussian_mixture_from_kmeans_reaches_sklearns_fit():
    points, _ = make_blobs(300, n_features=2, centers=3, cluster_std=0.7, random_state=1)
    ours = cluster.gaussian_mixture(points, 3, jax.random.PRNGKey(0), covariance_type="diag")
    reference = GaussianMixture(3, covariance_type="diag", random_state=0).fit(points)
    assert float(ours.log_likelihood) == pytest.approx(reference.score(points), rel=1e-3)
    assert cluster.cluster_accuracy(reference.predict(points), np.asarray(ours.labels)) == 1.0


def border_points_two_clusters_reach(points, eps, min_samples, labels) -> int:
    """The non-core points with core neighbours in more than one cluster, by brute force."""
    near = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1)) <= eps
    core = near.sum(1) >= min_samples
    return sum(len(set(labels[near[i] & core])) > 1 for i in np.flatnonzero(~core))


def test_dbscan_matches_sklearn():
    points, _ = make_blobs(400, n_features=2, centers=6, cluster_std=0.8, random_state=0)
    reference = sk_cluster.DBSCAN(eps=0.3, min_samples=5).fit(points)
    ours = cluster.dbscan(points, 0.3, 5, chunk_size=97)  # 400 = 4 x 97 + 12
    core = np.zeros(len(points), bool)
    core[reference.core_sample_indices_] = True
    np.testing.assert_array_equal(np.asarray(ours.core), core)
    # scikit-learn gives a border point that two clusters reach to the cluster expanded first, the one of the smaller
    # id; so does `dbscan`, so the labels are compared as they are, on data that has such points.
    assert border_points_two_clusters_reach(points, 0.3, 5, reference.labels_) > 0
    np.testing.assert_array_equal(np.asarray(ours.labels), reference.labels_)
    assert reference.labels_.max() >= 5 and (reference.labels_ == -1).sum() > 10  # several clusters and noise


def test_dbscan_worked_example():
    # eps 0.26, min_samples 4 on a line: cores 0.8, 0.9, 1.0 (cluster 0, its first core point comes first) and 0.1,
    # 0.2, 0.3 (cluster 1); 0.55 is a border point of both (0.25 from 0.3 and 0.8), it joins cluster 0; 1.1 and 0.0
    # are borders of one cluster each; 5.0 is noise.
    line = np.array([0.8, 0.9, 1.0, 1.1, 0.55, 0.0, 0.1, 0.2, 0.3, 5.0])[:, None]
    ours = cluster.dbscan(line, 0.26, 4, chunk_size=3)
    np.testing.assert_array_equal(np.asarray(ours.labels), [0, 0, 0, 0, 0, 1, 1, 1, 1, -1])
    np.testing.assert_array_equal(np.asarray(ours.core), [1, 1, 1, 0, 0, 0, 1, 1, 1, 0])
    np.testing.assert_array_equal(np.asarray(ours.labels), sk_cluster.DBSCAN(eps=0.26, min_samples=4).fit(line).labels_)


@pytest.mark.parametrize("k", [1, 5])
def test_knn_matches_sklearn(k):
    train, queries = BLOBS[:200], BLOBS[200:]
    ours = cluster.knn_classify(train, BLOB_CLASSES[:200], queries, k, chunk_size=37)
    reference = KNeighborsClassifier(k).fit(train, BLOB_CLASSES[:200])
    distances, indices = reference.kneighbors(queries)
    np.testing.assert_array_equal(np.asarray(ours.predictions), reference.predict(queries))
    np.testing.assert_array_equal(np.asarray(ours.indices), indices)
    np.testing.assert_allclose(ours.distances, distances, atol=1e-4)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_knn_tile_candidates_hold_the_exact_top_k_ties_included(k):
    # Small integer scores: many ties, which `top_k` must break to the lower index as it does over the whole row.
    scores = jnp.asarray(np.random.default_rng(k).integers(0, 6, (50, 8 * cluster.GROUP)), jnp.float32)
    index = jnp.arange(1000, 1000 + scores.shape[1], dtype=jnp.int32)
    picked, picked_index = cluster._tile_candidates(scores, index, k)
    assert picked.shape == (50, k * cluster.GROUP)  # the grouped path, not the whole tile
    top, position = jax.lax.top_k(scores, k)
    top_picked, position_picked = jax.lax.top_k(picked, k)
    np.testing.assert_array_equal(top_picked, top)
    np.testing.assert_array_equal(
        np.take_along_axis(np.asarray(picked_index), np.asarray(position_picked), 1),
        np.asarray(index)[np.asarray(position)],
    )


def test_knn_tied_vote_goes_to_the_smallest_label():
    train = np.array([[0.0], [1.0], [5.0], [6.0]])
    labels = np.array([3, 1, 2, 2])
    queries = np.array([[0.4], [0.6], [5.2]])  # 0.4: nearest is label 3, but the 2-vote ties 3 and 1: 1 wins
    ours = cluster.knn_classify(train, labels, queries, 2)
    np.testing.assert_array_equal(np.asarray(ours.predictions), [1, 1, 2])
    np.testing.assert_array_equal(
        np.asarray(ours.predictions), KNeighborsClassifier(2).fit(train, labels).predict(queries)
    )
    np.testing.assert_allclose(ours.distances, [[0.4, 0.6], [0.4, 0.6], [0.2, 0.8]], atol=1e-6)


def test_knn_on_digits_matches_sklearn(digits):
    points, classes = digits
    ours = cluster.knn_classify(points[:1500], classes[:1500], points[1500:], 5, chunk_size=512)
    reference = KNeighborsClassifier(5).fit(points[:1500], classes[:1500]).predict(points[1500:])
    np.testing.assert_array_equal(np.asarray(ours.predictions), reference)
    assert np.mean(reference == classes[1500:]) > 0.95


def test_cluster_scores_worked_example():
    classes = [0, 0, 0, 1, 1, 2]
    clusters = [7, 7, 4, 4, 4, -1]  # any cluster ids, noise included
    # Classes 0, 1, 2 matched to clusters 7, 4, -1: 2 + 2 + 1 of the 6 points.
    assert cluster.cluster_accuracy(classes, clusters) == pytest.approx(5 / 6)
    mutual = (2 / 6) * math.log(2) + (1 / 6) * math.log(2 / 3) + (2 / 6) * math.log(2) + (1 / 6) * math.log(6)
    entropy = -(0.5 * math.log(0.5) + (1 / 3) * math.log(1 / 3) + (1 / 6) * math.log(1 / 6))  # both labellings
    assert cluster.normalized_mutual_info(classes, clusters) == pytest.approx(mutual / entropy)
    assert cluster.normalized_mutual_info(classes, clusters) == pytest.approx(
        sk_metrics.normalized_mutual_info_score(classes, clusters)
    )
    assert cluster.cluster_accuracy([0, 0, 1, 1], [0, 1, 2, 3]) == 0.5  # more clusters than classes
    assert cluster.normalized_mutual_info([0, 0, 1], [5, 5, 5]) == 0.0
    assert cluster.normalized_mutual_info([1, 1], [2, 2]) == 1.0


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: cluster.kmeans(BLOBS, 0, jax.random.PRNGKey(0)), "k must be an integer [1, 300], got 0"),
        (lambda: cluster.knn_classify(BLOBS[:3], [0, 1, 0], BLOBS, 4), "k must be an integer [1, 3], got 4"),
        (lambda: cluster.dbscan(BLOBS, 0.0), "eps must be > 0, got 0.0"),
        (lambda: cluster.gaussian_mixture(BLOBS, 2, covariance_type="spherical"), "valid: full, diag"),
    ],
)
def test_bad_arguments_are_one_line_user_errors(call, words):
    with pytest.raises(UserError) as error:
        call()
    assert words in str(error.value) and "\n" not in str(error.value)
