"""MultiMNIST for the capsule network (Sabour et al. 2017 §6): the data with each digit's own image, the two digits
decoded one by one, put in position order, and moved together by augmentation. `lepton_jax/vision/capsnet.py` uses
these when `config.dataset = "multi_<source>"`.
"""

import jax
import jax.numpy as jnp

from lepton_jax.config import require
from lepton_jax.errors import UserError
from lepton_jax.vision import data as image_data
from lepton_jax.vision import multitask

EPS = 1e-7  # keeps the centre of mass of an empty reconstruction finite
MULTI = "multi_"  # `config.dataset = "multi_<source>"`: MultiMNIST built from <source>
MULTI_KEYS = ("max_shift", "image_size", "test_examples")  # how MultiMNIST is built (the multi-task CNN's keys)


def decode_each(decode, capsules: jax.Array, classes: jax.Array) -> jax.Array:
    """(B, K, D) capsules, (B, T) classes -> (B, T, H, W, C): digit t decoded from capsule `classes[:, t]` alone, by
    `decode(capsules, mask)` (the network's, one call on the B T pairs)."""
    batch, digits = classes.shape
    repeated = jnp.repeat(capsules, digits, axis=0)  # (B T, K, D): image b's capsules once per digit
    mask = jax.nn.one_hot(classes.reshape(-1), capsules.shape[1], dtype=capsules.dtype)
    decoded = decode(repeated, mask)
    return decoded.reshape(batch, digits, *decoded.shape[1:])


def position_order(reconstructions: jax.Array) -> jax.Array:
    """(B, T, H, W, C) one image's digits -> (B, T) their order from top-left to bottom-right: by the row plus the
    column of each one's centre of mass (MultiMNIST moves the first digit up and left, the second down and right)."""
    height, width = reconstructions.shape[2:4]
    rows, cols = jnp.mgrid[:height, :width]
    ink = jnp.sum(reconstructions, axis=-1)  # (B, T, H, W)
    diagonal = jnp.sum(ink * (rows + cols), axis=(-2, -1)) / (jnp.sum(ink, axis=(-2, -1)) + EPS)
    return jnp.argsort(diagonal, axis=-1)


def augment_digits(augment_fn, key, digits: jax.Array) -> jax.Array:
    """(B, T, H, W, C) digits -> the same, each image's digits moved by one draw of `augment_fn` (its channels)."""
    batch, count, height, width, channels = digits.shape
    stacked = jnp.moveaxis(digits, 1, 3).reshape(batch, height, width, count * channels)
    moved = augment_fn(key, stacked).reshape(batch, height, width, count, channels)
    return jnp.moveaxis(moved, 3, 1)


def load_data(config, source: image_data.ImageData | None = None):
    """The run's dataset: `config.dataset` (or `source`, its images) with the classes `config.classes` keeps; for
    `multi_<name>`, MultiMNIST built from <name> as the MultiMNIST keys (`MULTI_KEYS`) say, with each digit's own
    image (the multi-task CNN's images for the same keys: the same `multitask.DATA_SEED`).

    Returns:
      An `ImageData`, or for `multi_` a `MultiImageData` with its `train_components` and `test_components`.
    """
    name = config.dataset
    if not name.startswith(MULTI):
        return image_data.select_classes(source or image_data.load(name, config.data_dir), config.get("classes", ""))
    name = name[len(MULTI) :]
    missing = [key for key in MULTI_KEYS if key not in config]
    require(
        not missing,
        f"config.dataset='{config.dataset}' needs MultiMNIST's keys, but the config has no {', '.join(missing)}: "
        "start from lepton_jax/vision/configs/capsnet.py:multi_mnist (or multi_digits)",
    )
    if source is None and name not in image_data.DATASETS:
        valid = image_data.DATASETS + tuple(MULTI + n for n in image_data.DATASETS)
        raise UserError(f"unknown dataset '{config.dataset}'; valid datasets: {', '.join(valid)}")
    source = image_data.select_classes(source or image_data.load(name, config.data_dir), config.get("classes", ""))
    return image_data.multi_mnist(
        source,
        multitask.DATA_SEED,
        config.train_examples,
        config.test_examples,
        config.max_shift,
        config.image_size,
        components=True,
    )
