"""Configs of the image classifier.

`KEYS` declares its keys beyond the shared ones (`lepton_jax.config.KEYS`), checked at launch.
"""

from lepton_jax import placement
from lepton_jax.config import FLAG, Key, count, one_of, require, sizes
from lepton_jax.techniques import distill, transfer
from lepton_jax.vision.configs.capsnet import KEYS as CAPSNET_KEYS
from lepton_jax.vision.configs.capsnet import check_stem
from lepton_jax.vision.configs.kmeans import KEYS as KMEANS_KEYS
from lepton_jax.vision.configs.multitask import KEYS as MULTITASK_KEYS
from lepton_jax.vision.configs.multitask import check_tasks
from lepton_jax.vision.configs.semi_supervised import KEYS as SEMI_SUPERVISED_KEYS
from lepton_jax.vision.configs.simclr import KEYS as SIMCLR_KEYS
from lepton_jax.vision.data import parse_classes

KEYS = {
    "model": one_of("cnn", "mlp"),  # the network: the CNN (conv_features, ...) or the MLP (hidden_sizes)
    "conv_features": sizes(1),  # filters of each block's convolutions
    "convs_per_block": count(1),
    "batch_norm": FLAG,
    "pool": one_of("avg", "max"),
    "train_examples": count(0),  # train on the first this many training images (0: all)
    # only these classes, relabelled 0.. in this order: "5-9", "0,2,4" ("": all)
    "classes": Key(
        "str", "classes as ranges or numbers, e.g. '0-4' or '1,3,5', each once", lambda v: parse_classes(v) is not None
    ),
    **MULTITASK_KEYS,  # the multi-task classifier's: MultiMNIST's and the multi-task technique's
    **SIMCLR_KEYS,  # SimCLR's: the loss, the projection, the views, the frozen-feature evaluation
    **KMEANS_KEYS,  # the kmeans trainer's: which images, raw pixels or a SimCLR encoder's features
    **SEMI_SUPERVISED_KEYS,  # the semi-supervised trainer's: the labelled subset, the method, its augmentation
    **CAPSNET_KEYS,  # the capsule network's: stem kernels and strides, primary and class capsules, decoder
}


def check_early_stopping(config) -> None:
    """Patience watches a validation split: the classifier holds one out only when `val_fraction` > 0."""
    patience = config.get("patience", 0)  # absent in a trainer without early stopping
    require(
        not patience or config.get("val_fraction", 0.0) > 0,
        f"config.patience={patience} needs a validation split to watch: set config.val_fraction > 0 "
        "(e.g. 0.1), or patience 0",
    )


CHECKS = (check_early_stopping, check_tasks, check_stem, transfer.check_source, distill.check_config, placement.check)
