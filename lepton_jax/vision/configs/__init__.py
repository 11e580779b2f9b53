"""Configs of the image classifier.

`KEYS` declares its keys beyond the shared ones (`lepton_jax.config.KEYS`), checked at launch.
"""

from lepton_jax.config import FLAG, count, one_of, require, sizes

KEYS = {
    "conv_features": sizes(1),  # filters of each block's convolutions
    "convs_per_block": count(1),
    "batch_norm": FLAG,
    "pool": one_of("avg", "max"),
}


def check_early_stopping(config) -> None:
    """Patience watches a validation split: the classifier holds one out only when `val_fraction` > 0."""
    require(
        not config.patience or config.val_fraction > 0,
        f"config.patience={config.patience} needs a validation split to watch: set config.val_fraction > 0 "
        "(e.g. 0.1), or patience 0",
    )


CHECKS = (check_early_stopping,)
