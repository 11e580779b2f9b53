"""Data augmentation (`lepton_jax/techniques/augment.py`): each transform against a hand-made image or NumPy, one
resampling per example, its own draw per example, one compile, and the DCGAN's discriminator seeing it."""

import itertools
import os

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from generative import dcgan
from generative.configs import dcgan as dcgan_config
from lepton_jax import config as config_lib
from lepton_jax.errors import UserError
from lepton_jax.techniques import augment

IMAGE = np.random.RandomState(0).rand(6, 6, 2).astype(np.float32)  # square, two channels, nothing symmetric


def make_config(**values) -> ml_collections.ConfigDict:
    return config_lib.technique_keys(config_lib.training_keys(ml_collections.ConfigDict(values)), "augment")


@jax.jit
def _warp(image, angle, zoom, shift, flip, crop):
    # Every transform argument traced (as `draw` passes them): one program per image shape, not each of the
    # matrix's and the sampling's operations compiled one by one.
    height, width = image.shape[:2]
    return augment.warp(image, augment.matrix(height, width, angle, zoom, shift, flip, crop))


def warp(image, angle=0.0, zoom=1.0, shift=(0.0, 0.0), flip=False, crop=(0, 0)) -> np.ndarray:
    return np.asarray(_warp(jnp.asarray(image), angle, zoom, jnp.asarray(shift), flip, jnp.asarray(crop)))


def shifted(image, rows: int, cols: int) -> np.ndarray:
    """`image` zero-padded, then cropped back so that its content moves by (rows, cols) pixels: the hand-made crop."""
    pad = max(abs(rows), abs(cols))
    height, width = image.shape[:2]
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    return padded[pad - rows : pad - rows + height, pad - cols : pad - cols + width]


def test_all_off_adds_nothing():
    assert augment.make(make_config()) is None
    assert augment.make(ml_collections.ConfigDict({"lr": 1.0})) is None  # a config saved before the keys existed
    assert augment.make(make_config(augment_rotate=10.0)) is not None


@pytest.mark.parametrize(
    "name,value,allowed",
    [("augment_crop", -1, ">= 0"), ("augment_scale", 1.0, "in [0, 1)"), ("augment_rotate", 200.0, "in [0, 180]")],
)
def test_a_bad_value_is_one_line_naming_the_key(name, value, allowed):
    config = make_config(**{name: value})
    for refuse in (lambda: config_lib.validate(config, {}), lambda: augment.make(config)):
        with pytest.raises(UserError) as error:
            refuse()
        message = str(error.value)
        assert "\n" not in message and f"config.{name}={value!r}" in message and allowed in message, message


def test_identity_transform_gives_the_image_back():
    np.testing.assert_allclose(warp(IMAGE, angle=0.0, zoom=1.0), IMAGE, atol=1e-6)


def test_rotation_by_90_degrees_is_rot90_and_flip_is_a_mirror():
    np.testing.assert_allclose(warp(IMAGE, angle=90.0), np.rot90(IMAGE), atol=1e-5)  # counter-clockwise
    np.testing.assert_allclose(warp(IMAGE, angle=-90.0), np.rot90(IMAGE, -1), atol=1e-5)
    np.testing.assert_array_equal(warp(IMAGE, flip=True), IMAGE[:, ::-1])


def test_crop_and_whole_pixel_shift_move_the_content_with_zeros_behind():
    np.testing.assert_array_equal(warp(IMAGE, crop=(1, -2)), shifted(IMAGE, 1, -2))
    np.testing.assert_array_equal(warp(IMAGE, shift=(-1.0, 2.0)), shifted(IMAGE, -1, 2))


def test_affine_map_samples_a_linear_image_where_the_formula_says():
    """Bilinear sampling of a linear image is exact, so each output pixel is the image's value at the point the
    rotation by `angle` about the centre, the zoom and the shift send it to (worked out here in float64)."""
    height, width, angle, zoom, shift = 7, 9, 30.0, 1.25, np.array([0.5, -0.25])
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    image = (0.3 * rows + 0.7 * cols + 0.1)[..., None].astype(np.float32)
    out = warp(image, angle=angle, zoom=zoom, shift=tuple(shift))[..., 0]
    center = np.array([(height - 1) / 2, (width - 1) / 2])
    t = np.deg2rad(angle)
    unturn = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])  # rows point down: counter-clockwise
    points = np.stack([rows, cols], -1) - center - shift
    source = center + points @ unturn.T / zoom  # (H, W, 2)
    inside = (source >= 0).all(-1) & (source[..., 0] <= height - 1) & (source[..., 1] <= width - 1)
    assert inside.sum() > 30
    np.testing.assert_allclose(out[inside], 0.3 * source[inside, 0] + 0.7 * source[inside, 1] + 0.1, atol=1e-5)
    # zoom > 1 enlarges: the centre pixel's neighbours read points closer to the centre
    plain = warp(image, zoom=2.0)[..., 0]
    np.testing.assert_allclose(plain[3, 4] - plain[3, 3], 0.7 / 2, atol=1e-6)


def test_random_crop_is_pad_then_crop_at_every_offset():
    pad, copies = 2, 400
    images = jnp.broadcast_to(jnp.asarray(IMAGE), (copies, *IMAGE.shape))
    out = np.asarray(jax.jit(augment.make(make_config(augment_crop=pad)))(jax.random.key(3), images))
    offsets = list(itertools.product(range(-pad, pad + 1), repeat=2))
    seen = set()
    for image in out:
        matches = [o for o in offsets if np.array_equal(image, shifted(IMAGE, *o))]
        assert len(matches) == 1, "not a crop of the padded image"
        seen.add(matches[0])
    assert seen == set(offsets)  # every one of the 25 offsets drawn (each missed with probability ~1e-7)


def test_one_key_one_batch_each_example_its_own_transform_one_compile():
    config = make_config(augment_crop=1, augment_flip=True, augment_rotate=20.0, augment_scale=0.1, augment_shift=1.0)
    augment_fn = jax.jit(chex.assert_max_traces(augment.make(config), n=1))
    images = jnp.broadcast_to(jnp.asarray(IMAGE), (8, *IMAGE.shape))
    first = augment_fn(jax.random.key(0), images)
    assert first.shape == images.shape and first.dtype == jnp.float32
    np.testing.assert_array_equal(first, augment_fn(jax.random.key(0), images))  # same key, same batch
    assert not np.array_equal(first, augment_fn(jax.random.key(1), images))
    for a, b in itertools.combinations(np.asarray(first), 2):  # identical inputs, different transforms
        assert np.abs(a - b).max() > 1e-3
    augment_fn(jax.random.key(2), images + 0.5)  # new values, same shapes: no new trace
    low = jax.eval_shape(augment.make(config), jax.random.key(0), images.astype(jnp.bfloat16))  # traced, not run
    assert low.dtype == jnp.bfloat16 and low.shape == images.shape


def test_sample_grid_writes_a_png(tmp_path):
    path = os.path.join(tmp_path, "augment.png")
    augment.sample_grid(make_config(augment_rotate=30.0), IMAGE[None, ..., :1], jax.random.key(0), path, versions=3)
    assert os.path.getsize(path) > 1000
    with pytest.raises(UserError, match="every augment_\\* key is off"):
        augment.sample_grid(make_config(), IMAGE[None, ..., :1], jax.random.key(0), path)


def test_dcgan_discriminator_sees_augmented_real_images():
    config = dcgan_config.get_config("digits,smoke")
    generator, discriminator = dcgan.make_models(config, (8, 8, 1))
    state = jax.jit(dcgan.make_init(config, generator, discriminator, (8, 8, 1)))(jax.random.key(0))
    images = jax.random.uniform(jax.random.key(1), (16, 8, 8, 1))
    metrics = {}
    for rotate in (0.0, 30.0):
        config.augment_rotate = rotate
        _, metrics[rotate] = jax.jit(dcgan.make_train_step(config))(state, images, jax.random.key(2))
    for name, value in metrics[30.0].items():
        assert np.isfinite(value), name
    assert not np.isclose(metrics[30.0]["train/d_real"], metrics[0.0]["train/d_real"], rtol=0, atol=1e-6)
    # the same noise either way: the fakes are scored alike before the discriminator's step
    np.testing.assert_allclose(metrics[30.0]["train/d_fake"], metrics[0.0]["train/d_fake"], rtol=1e-6)
