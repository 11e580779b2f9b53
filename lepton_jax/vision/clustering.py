"""K-means clustering of images, scored against their classes: raw pixels, or a finished SimCLR run's features.

    python -m scripts.train --config=lepton_jax/vision/configs/kmeans.py:mnist --config.num_seeds=3
    python -m scripts.train --config=lepton_jax/vision/configs/kmeans.py:mnist --config.features_from=<simclr workdir>

Each seed runs K-means (`lepton_jax/techniques/cluster.py` `kmeans`: k-means++ seeding, then Lloyd iterations to
scikit-learn's tolerance) with its own k-means++ key on the images `cluster_images` picks: `all` (the training and
test images together, 70k for MNIST, as DEC (Xie et al. 2016) clusters MNIST), `train` or `test`. The points are the
raw pixels in [0, 1] (H x W x C values per image), or with `features_from` the trunk features of the SimCLR run's
seed-0 encoder (`lepton_jax/vision/simclr.py`), L2-normalised as SimCLR's own k-means scores them. The clusters
are `num_clusters` (0: as many as classes). `results.json` has per seed (`_mean`, `_std`, `per_seed/`) the Hungarian
accuracy `accuracy` (the best one-to-one matching of clusters to classes) and the normalised mutual information
`nmi`, the `inertia` (sum of squared distances to the centres) and the Lloyd `iterations`; `plots/clusters.png`
shows seed 0's clusters, ten of their images each. The DEC paper reports K-means on raw MNIST pixels at 53.49 %
accuracy and NMI 0.50.

A SimCLR run's k-means keys are this trainer's (`simclr.cluster_key`): with `cluster_images=test`, the same `seed`
and the encoder of that run's seed 0, seed 0 here reproduces its `per_seed/test/kmeans_accuracy` first entry.
"""

import os
import time

import jax
import numpy as np

from lepton_jax import parallel, plotting, registry
from lepton_jax import run as run_lib
from lepton_jax.techniques import cluster
from lepton_jax.vision import data as image_data
from lepton_jax.vision import simclr


def select_images(data: image_data.ImageData, which: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, H, W, C), labels (N,)) of the split `which` names: "all" (training then test), "train", "test"."""
    if which == "train":
        return data.train_images, data.train_labels
    if which == "test":
        return data.test_images, data.test_labels
    return np.concatenate([data.train_images, data.test_images]), np.concatenate([data.train_labels, data.test_labels])


def points_of(config, images: np.ndarray) -> np.ndarray:
    """(N, D) float32: the flattened pixels, or with `config.features_from` the SimCLR encoder's L2-normalised
    features of seed 0 (a bad path is one `UserError` line, before any work)."""
    if not config.features_from:
        return images.reshape(len(images), -1).astype(np.float32)
    model, variables, _ = simclr.load_encoder(config.features_from, images.shape[1:])
    first = jax.tree.map(lambda x: x[:1], variables)  # seed 0, the seed axis kept
    return np.asarray(simclr.unit_rows(simclr.make_embed(model)(first, images)[0]))


def cluster_grid(images: np.ndarray, labels: np.ndarray, assigned: np.ndarray, path: str, title: str) -> None:
    """A PNG with one row per cluster, ten of its images; rows in the order of the classes they are matched to."""
    clusters, classes = np.unique(assigned), np.unique(labels)
    counts = np.array([[np.sum((assigned == c) & (labels == k)) for k in classes] for c in clusters])
    majority = classes[np.argmax(counts, 1)]  # (clusters,) the class most of each cluster's images have
    order = np.argsort(majority, kind="stable")
    rows = []
    for c in clusters[order]:
        members = images[assigned == c][:10]
        blank = np.ones((10 - len(members), *images.shape[1:]), images.dtype)  # a cluster of fewer than ten
        rows.append(np.concatenate([members, blank]))
    names = [f"cluster {clusters[i]}: mostly {majority[i]}" for i in order]
    plotting.image_grid(np.concatenate(rows), path, nrow=10, title=title, row_labels=names)


def run(config, workdir: str, data: image_data.ImageData | None = None) -> dict:
    """Clusters per `config` into `workdir`; returns the results."""
    data = data or image_data.load(config.dataset, config.data_dir)
    images, labels = select_images(data, config.cluster_images)
    points = points_of(config, images)
    num_clusters = config.num_clusters or data.num_classes
    seeds = int(config.num_seeds)
    names = ("accuracy", "nmi", "inertia", "iterations")
    zeros = {name: np.zeros(seeds, np.float32) for name in names}

    scaffold = run_lib.Run(config, workdir, unit="seed")
    restored = scaffold.restore(jax.eval_shape(lambda: zeros))
    scores = zeros if restored is None else {k: np.array(v) for k, v in restored[1].items()}
    first_labels = None
    with scaffold.steps(seeds, desc=f"kmeans {data.name}"):
        for index in range(scaffold.start_step, seeds):
            tick = time.perf_counter()
            fit = cluster.kmeans(points, num_clusters, simclr.cluster_key(config.seed, index))
            assigned = np.asarray(fit.labels)
            first_labels = assigned if index == 0 else first_labels
            row = {
                "accuracy": cluster.cluster_accuracy(labels, assigned),
                "nmi": cluster.normalized_mutual_info(labels, assigned),
                "inertia": float(fit.inertia),
                "iterations": float(fit.iterations),
            }
            for name, value in row.items():
                scores[name][index] = value
            scaffold.log(index + 1, row)
            seconds = time.perf_counter() - tick
            postfix = {"accuracy": row["accuracy"], "nmi": row["nmi"]}
            scaffold.end_step(index + 1, scores, 1, seconds, save=True, last=index + 1 == seeds, postfix=postfix)
    if first_labels is None:  # seed 0 ran before a resume: its clusters again (the same key, the same fit)
        first_labels = np.asarray(cluster.kmeans(points, num_clusters, simclr.cluster_key(config.seed, 0)).labels)

    def plot(records, plots):
        space = f"features of {config.features_from}" if config.features_from else "raw pixels"
        title = f"K-means of {data.name} ({config.cluster_images}) {space}: seed 0's clusters"
        cluster_grid(images, labels, first_labels, os.path.join(plots, "clusters.png"), title)

    results = run_lib.seed_summary(scores) | {
        "num_seeds": seeds,
        "num_points": len(points),
        "num_clusters": num_clusters,
        "perf/seconds_per_seed": float(np.median(scaffold.step_seconds)) if scaffold.step_seconds else float("nan"),
    }
    return scaffold.finish(results, plot=plot if parallel.is_main_process() else None)


@registry.register("kmeans")
def train_and_evaluate(config, workdir: str) -> dict:
    """The launcher's entry point."""
    return run(config, workdir)
