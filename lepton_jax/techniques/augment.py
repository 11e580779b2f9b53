"""Data augmentation on the device: each example of a batch transformed with its own key, inside the jitted step.

    augment_fn = augment.make(config)            # None when every augmentation is off: the trainer adds no work
    ...
    images = augment_fn(jax.random.fold_in(key, 1), images)   # in the step; (B, H, W, C) in [0, 1]

The keys (declared once, with the shared ones, in `lepton_jax.config.KEYS`; `lepton_jax.config.technique_keys(c,
"augment")` puts them, all off, in the config of a trainer that honours them):

  augment_crop      zero-pad this many pixels on each side, then crop back to H x W at a random offset: the image
                    moves by a whole number of pixels in [-crop, crop] on each axis (the CIFAR and MNIST recipes)
  augment_flip      mirror left-right with probability 1/2 (off for digits and letters, which flipping changes)
  augment_rotate    rotate by a uniform angle in [-rotate, rotate] degrees about the image's centre
  augment_scale     zoom about the centre by a uniform factor in [1 - scale, 1 + scale] (> 1 enlarges the content)
  augment_shift     move the content by a uniform sub-pixel offset in [-shift, shift] on each axis

Every transform is a map of pixel coordinates, so they are composed into one 3x3 matrix per example (`matrix`) and
the image is resampled once (`warp`: bilinear, zero outside the image), never once per transform. With only the
crop and the flip on, the matrix holds whole numbers and the resampling is exact. Because the crop is part of the
same map, the content it moves out of the frame can be rotated back in, where a crop done first would have cut it.

Each example draws its parameters from its own key (split from the step's key), each transform from its own part
of that key, so the same key gives the same batch, and switching one transform on does not change the others' draws.
A GAN that augments only its real images teaches the generator the augmented images (Zhao et al. 2020; Karras et
al. 2020): keep the ranges small there.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from lepton_jax import config as config_lib
from lepton_jax import plotting


def settings(config) -> dict:
    """The augmentation keys of `config`, checked (`lepton_jax.config.technique_settings`)."""
    return config_lib.technique_settings(config, "augment")


def matrix(
    height: int,
    width: int,
    angle=0.0,
    zoom=1.0,
    shift=(0.0, 0.0),
    flip=False,
    crop=(0, 0),
) -> jax.Array:
    """The (3, 3) float32 map from an output pixel's `(row, col, 1)` to the input point it is read from.

    The transforms, as the content sees them, in order: moved by `crop` whole pixels (rows, cols), mirrored
    left-right if `flip`, then rotated by `angle` degrees (counter-clockwise on the screen, as `np.rot90`) and zoomed
    by `zoom` about the centre ((H - 1) / 2, (W - 1) / 2), then moved by `shift` pixels. Any argument may be traced.
    """
    center = jnp.array([(height - 1) / 2, (width - 1) / 2], jnp.float32)
    radians = jnp.deg2rad(jnp.asarray(angle, jnp.float32))
    cos, sin = jnp.cos(radians), jnp.sin(radians)
    # Undoing the rotation and zoom: point - centre -> R(-angle) (point - centre) / zoom, in (row, col) with rows
    # pointing down (so a counter-clockwise turn on the screen has this sign pattern).
    undo_turn = jnp.array([[cos, sin], [-sin, cos]]) / zoom
    shift = jnp.asarray(shift, jnp.float32)
    undo_affine = jnp.eye(3).at[:2, :2].set(undo_turn).at[:2, 2].set(center - undo_turn @ (center + shift))
    sign = jnp.where(flip, -1.0, 1.0)
    undo_flip = jnp.array([[1.0, 0.0, 0.0], [0.0, sign, jnp.where(flip, width - 1.0, 0.0)], [0.0, 0.0, 1.0]])
    undo_crop = jnp.eye(3).at[:2, 2].set(-jnp.asarray(crop, jnp.float32))
    return undo_crop @ undo_flip @ undo_affine


def warp(image: jax.Array, transform: jax.Array) -> jax.Array:
    """`image` (H, W, C) resampled through `transform` (a `matrix`): bilinear, zero outside the image, float32."""
    height, width = image.shape[:2]
    rows, cols = jnp.mgrid[:height, :width].astype(jnp.float32)  # (H, W) each: every output pixel
    grid = jnp.stack([rows.ravel(), cols.ravel(), jnp.ones(height * width, jnp.float32)])  # (3, H W)
    source = (transform @ grid)[:2].reshape(2, height, width)  # (2, H, W): where each output pixel reads

    def one_channel(channel):  # (H, W)
        return jax.scipy.ndimage.map_coordinates(channel, list(source), order=1, mode="constant", cval=0.0)

    return jax.vmap(one_channel, in_axes=2, out_axes=2)(image.astype(jnp.float32))


def draw(key: jax.Array, values: dict, height: int, width: int) -> jax.Array:
    """One example's random `matrix` under the augmentation `values` (`settings`); off transforms are identities."""
    crop_key, flip_key, angle_key, zoom_key, shift_key = jax.random.split(key, 5)
    pad = values["augment_crop"]
    degrees, scale, most = values["augment_rotate"], values["augment_scale"], values["augment_shift"]
    return matrix(
        height,
        width,
        angle=jax.random.uniform(angle_key, (), minval=-degrees, maxval=degrees) if degrees else 0.0,
        zoom=jax.random.uniform(zoom_key, (), minval=1 - scale, maxval=1 + scale) if scale else 1.0,
        shift=jax.random.uniform(shift_key, (2,), minval=-most, maxval=most) if most else (0.0, 0.0),
        flip=jax.random.bernoulli(flip_key) if values["augment_flip"] else False,
        crop=jax.random.randint(crop_key, (2,), -pad, pad + 1) if pad else (0, 0),
    )


def make(config) -> Callable[[jax.Array, jax.Array], jax.Array] | None:
    """The augmentation `config` asks for: `augment_fn(key, images (B, H, W, C)) -> images`, same shape and type,
    each example transformed with its own key split from `key`; None when every augmentation is off.

    `key` must be the augmentation's own (e.g. `jax.random.fold_in(step_key, 1)`), not a key the step also draws
    other numbers from. The function is pure and traceable: call it inside the jitted step.

    Raises:
      UserError: an augmentation key with a value its declaration does not allow.
    """
    values = settings(config)
    if values == config_lib.TECHNIQUES["augment"]:
        return None

    def augment_fn(key, images):
        _, height, width, _ = images.shape
        keys = jax.random.split(key, images.shape[0])
        one = lambda example_key, image: warp(image, draw(example_key, values, height, width))
        return jax.vmap(one)(keys, images).astype(images.dtype)

    return augment_fn


def sample_grid(config, images, key: jax.Array, path: str, versions: int = 8) -> None:
    """A PNG of what the augmentation does: each of `images` (N, H, W, C in [0, 1]; C 1 or 3) in a row, followed by
    `versions` augmented copies of it (each drawn with its own key from `key`).

    Raises:
      UserError: every augmentation is off, or a key has a bad value.
    """
    augment_fn = make(config)
    config_lib.require(augment_fn is not None, f"no augmentation to show in {path}: every augment_* key is off")
    images = jnp.asarray(images, jnp.float32)
    copies = jnp.repeat(images, versions, axis=0)  # (N versions, H, W, C): example i's copies are rows i
    augmented = np.asarray(jax.jit(augment_fn)(key, copies)).reshape(len(images), versions, *images.shape[1:])
    rows = np.concatenate([np.asarray(images)[:, None], augmented], axis=1)  # (N, 1 + versions, H, W, C)
    on = ", ".join(f"{name[len('augment_') :]}={value}" for name, value in settings(config).items() if value)
    plotting.image_grid(
        rows.reshape(-1, *images.shape[1:]),
        path,
        nrow=1 + versions,
        title=f"augmentation: {on}\nin each row the original, then {versions} augmented copies",
    )
