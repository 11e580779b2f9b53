"""K-means clustering of images, scored against their classes (`lepton_jax/vision/clustering.py`).

    python -m scripts.train --config=lepton_jax/vision/configs/kmeans.py:mnist --config.num_seeds=3
    python -m scripts.train --config=lepton_jax/vision/configs/kmeans.py:mnist --config.features_from=<simclr workdir>
    python -m scripts.train --config=lepton_jax/vision/configs/kmeans.py:digits       # no files needed, seconds

Arg: the dataset (`mnist` default, `fashion_mnist`, `kmnist`, `digits`); `smoke` clusters only the test images.
Keys: `cluster_images` (`all`: training and test images together, as DEC clusters MNIST's 70k; `train`; `test`),
`features_from` (a finished SimCLR run's workdir: cluster its seed-0 encoder's features; unset: raw pixels) and
`num_clusters` (0: as many as classes).

Expected (raw MNIST pixels, all 70k images, 3 seeds; 57 s on 2 CPU cores shared with other runs): accuracy
56.4 +- 3.1 % (58.8, 58.4, 52.1), NMI 0.503 +- 0.004; the DEC paper reports 53.49 % and 0.50. Digits (all 1797
images, 3 seeds, 12 s): 73.0 +- 4.2 %, NMI 0.733 +- 0.008.
"""

import ml_collections

from lepton_jax.config import PATH, count, one_of
from lepton_jax.vision.configs import classifier as classifier_config

# This trainer's keys beyond the vision pillar's (`lepton_jax/vision/configs/__init__.py` `KEYS` spreads them in).
KEYS = {
    "cluster_images": one_of("all", "train", "test"),  # which images are clustered (all: train then test)
    "features_from": PATH,  # a finished SimCLR run whose encoder gives the points (None: raw pixels)
    "num_clusters": count(0),  # 0: as many as the dataset has classes
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    parts = [p for p in (arg or "mnist").split(",") if p]
    names = [p for p in parts if p != "smoke"]

    c = classifier_config.base("kmeans", names[0] if names else "mnist", num_seeds=3)
    c.cluster_images = "all"
    c.features_from = ml_collections.config_dict.placeholder(str)  # None: raw pixels
    c.num_clusters = 0
    c.keep_checkpoints = 2
    if "smoke" in parts:
        c.cluster_images = "test"
        c.num_seeds = 2
    return c
