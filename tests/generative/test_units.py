"""Generative models' pieces against hand computations: ELBO terms, FID/KID, coverage, the idx loader, shapes."""

import gzip
import math
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from scipy import linalg, stats

from generative import dcgan, evaluation, vae
from generative.configs import dcgan as dcgan_config
from lepton_jax.errors import UserError
from lepton_jax.vision import data as image_data


def test_kl_matches_closed_form_and_monte_carlo():
    mean = jnp.array([1.0, 0.0, -0.5])
    logvar = jnp.log(jnp.array([1.0, 4.0, 0.25]))
    # By hand: 0.5 * sum(var + mean^2 - 1 - log var) = 0.5 * [(1+1-1-0) + (4+0-1-log 4) + (0.25+0.25-1-log 0.25)]
    by_hand = 0.5 * ((1 + 1 - 1 - 0) + (4 + 0 - 1 - math.log(4)) + (0.25 + 0.25 - 1 - math.log(0.25)))
    assert float(vae.kl_divergence(mean, logvar)) == pytest.approx(by_hand, rel=1e-6)
    # Monte Carlo: E_q[log q(z) - log p(z)] with 100k samples; standard error here is about 0.006.
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(jax.random.PRNGKey(0), (100_000, 3))
    log_q = vae.gaussian_log_prob(z, mean, logvar)
    log_p = vae.gaussian_log_prob(z, 0.0, jnp.zeros(3))
    assert float(jnp.mean(log_q - log_p)) == pytest.approx(by_hand, abs=0.03)


def test_gaussian_log_prob_matches_scipy():
    z, mean, logvar = np.array([0.3, -1.2]), np.array([0.1, 0.5]), np.log([2.0, 0.3])
    expected = stats.norm.logpdf(z, mean, np.sqrt(np.exp(logvar))).sum()
    assert float(vae.gaussian_log_prob(jnp.array(z), jnp.array(mean), jnp.array(logvar))) == pytest.approx(expected)


def test_bce_matches_direct_computation():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (3, 4, 4, 1))
    x = np.concatenate([rng.integers(0, 2, (2, 4, 4, 1)), rng.uniform(0, 1, (1, 4, 4, 1))]).astype(np.float64)
    p = 1 / (1 + np.exp(-logits))
    direct = -(x * np.log(p) + (1 - x) * np.log(1 - p)).reshape(3, -1).sum(1)
    got = vae.binary_cross_entropy(jnp.array(logits, jnp.float32), jnp.array(x, jnp.float32))
    np.testing.assert_allclose(np.asarray(got), direct, rtol=1e-4)
    # Stable where sigmoid saturates: logit 100 for a 0 pixel costs 100 nats, not inf.
    assert float(vae.binary_cross_entropy(jnp.full((1, 1), 100.0), jnp.zeros((1, 1)))[0]) == pytest.approx(100.0)


def test_fid_of_a_set_with_itself_is_zero_and_shift_is_detected():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 16)) @ rng.normal(size=(16, 16))
    assert abs(evaluation.fid(a, a)) < 1e-6
    shifted = a + 0.5
    assert evaluation.fid(a, shifted) == pytest.approx(16 * 0.25, rel=1e-6)  # same covariance: ||mu shift||^2
    b = rng.normal(size=(2000, 16)) * 2.0
    # Against the textbook formula with scipy's sqrtm.
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a + cov_b - 2 * linalg.sqrtm(cov_a @ cov_b).real)
    assert evaluation.fid(a, b) == pytest.approx(ref, rel=1e-6)


def test_kid_is_near_zero_for_same_distribution_and_positive_for_shift():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(600, 8)), rng.normal(size=(600, 8))
    same, _ = evaluation.kid(a, b, num_subsets=10, subset_size=300)
    shifted, _ = evaluation.kid(a, b + 1.0, num_subsets=10, subset_size=300)
    assert abs(same) < 0.01 and shifted > 0.1


def test_coverage_counts_classes_within_tolerance():
    probs = np.zeros((100, 4))
    labels = [0] * 25 + [1] * 25 + [2] * 40 + [3] * 10  # fractions x4: 1.0, 1.0, 1.6, 0.4
    probs[np.arange(100), labels] = 0.9
    probs[np.arange(100), (np.array(labels) + 1) % 4] = 0.1
    out = evaluation.coverage(probs)
    assert out["classes_covered"] == 2
    assert out["max_relative_deviation"] == pytest.approx(0.6)
    assert out["mean_confidence"] == pytest.approx(0.9)


def _write_idx(path, array, rank_magic=None):
    array = np.asarray(array, np.uint8)
    header = bytes([0, 0, 0x08, rank_magic or array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def _write_dataset(directory, n_train=6, n_test=4):
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(directory / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(directory / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))


def test_idx_loader_reads_a_fixture(tmp_path):
    _write_dataset(tmp_path / "mnist")
    data = image_data.load_idx_dataset("mnist", str(tmp_path), full=False)
    assert data.train_images.shape == (6, 28, 28, 1) and data.test_labels.shape == (4,)
    assert data.train_images.dtype == np.float32 and 0 <= data.train_images.min() <= data.train_images.max() <= 1
    with pytest.raises(UserError, match="6 items, expected 60000"):  # the real set must be complete
        image_data.load("mnist", str(tmp_path))


def test_idx_loader_rejects_truncated_and_foreign_files(tmp_path):
    _write_dataset(tmp_path / "mnist")
    path = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    with gzip.open(path, "wb") as f:
        f.write(raw[:-100])  # a valid gzip of a cut idx file
    with pytest.raises(UserError, match=r"corrupt file .*train-images.*expected 4720 for shape \(6, 28, 28\)"):
        image_data.load_idx_dataset("mnist", str(tmp_path), full=False)
    path.write_bytes(path.read_bytes()[:50])  # a cut gzip stream
    with pytest.raises(UserError, match="corrupt file .*cannot decompress"):
        image_data.load_idx_dataset("mnist", str(tmp_path), full=False)
    _write_idx(path, np.zeros((6, 28, 28)), rank_magic=1)  # a labels header on an images file
    with pytest.raises(UserError, match="idx magic 0x0801, expected 0x0803"):
        image_data.load_idx_dataset("mnist", str(tmp_path), full=False)
    path.unlink()
    with pytest.raises(UserError, match="missing file .*train-images-idx3-ubyte.gz"):
        image_data.load_idx_dataset("mnist", str(tmp_path), full=False)
    with pytest.raises(UserError, match="unknown dataset 'cifar'; valid datasets: mnist"):
        image_data.load("cifar", str(tmp_path))


def test_idx_loader_rejects_labels_out_of_range(tmp_path):
    _write_dataset(tmp_path / "mnist")
    labels = np.array([3, 0, 12, 9], np.uint8)  # 10 classes: 12 is no label
    _write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz", labels)
    with pytest.raises(UserError) as error:
        image_data.load_idx_dataset("mnist", str(tmp_path), full=False)
    assert str(error.value) == (
        f"corrupt file {tmp_path}/mnist/t10k-labels-idx1-ubyte.gz: 1 labels outside [0, 10) (the first, item 2, "
        "is 12) (expected mnist test labels in idx format)"
    )


def test_digits_are_embedded():
    data = image_data.load("digits")
    assert data.train_images.shape == (1500, 8, 8, 1) and data.test_images.shape == (297, 8, 8, 1)
    assert data.train_images.max() == 1.0 and set(np.unique(data.train_labels)) == set(range(10))


@pytest.mark.parametrize("hidden", [0, 1024])
@pytest.mark.parametrize("image_shape", [(28, 28, 1), (8, 8, 1)])
def test_generator_and_discriminator_shapes(image_shape, hidden):
    config = dcgan_config.get_config("mnist")
    config.gen_hidden = config.disc_hidden = hidden
    generator, discriminator = dcgan.make_models(config, image_shape)
    state = jax.eval_shape(dcgan.make_init(config, generator, discriminator, image_shape), jax.random.PRNGKey(0))
    z = jax.ShapeDtypeStruct((5, config.latent_dim), jnp.float32)
    g_vars = {"params": state.generator.params, "batch_stats": state.generator.batch_stats}
    images = jax.eval_shape(lambda v, z: generator.apply(v, z, train=False), g_vars, z)
    assert images.shape == (5, *image_shape)
    d_vars = {"params": state.discriminator.params, "batch_stats": state.discriminator.batch_stats}
    logits = jax.eval_shape(lambda v, x: discriminator.apply(v, x, train=False), d_vars, images)
    assert logits.shape == (5,)
    # Radford et al.: BatchNorm in both nets (2 in G, 1 in D here, one more in each with the hidden layers).
    assert len(state.generator.batch_stats) == 2 + bool(hidden)
    assert len(state.discriminator.batch_stats) == 1 + bool(hidden)
    projection = (hidden or config.latent_dim, image_shape[0] * image_shape[1] // 16 * 2 * config.gen_features)
    dense = [(config.latent_dim, hidden), projection] if hidden else [projection]
    assert {k: v["kernel"].shape for k, v in state.generator.params.items() if k.startswith("Dense")} == {
        f"Dense_{i}": shape for i, shape in enumerate(dense)
    }


def _assert_same_layer(layer, reference, x, out_shape):
    """`layer` takes `reference`'s parameters and gives its outputs and gradients (a non-zero bias too)."""
    params = jax.tree.map(lambda p: p + 0.1, reference.init(jax.random.PRNGKey(1), x))
    assert jax.tree.map(jnp.shape, layer.init(jax.random.PRNGKey(1), x)) == jax.tree.map(jnp.shape, params)
    out, expected = layer.apply(params, x), reference.apply(params, x)
    assert out.shape == out_shape
    np.testing.assert_allclose(out, expected, atol=1e-5)

    def loss(module):
        return lambda p, x: jnp.sum(jnp.sin(module.apply(p, x)))

    grads, expected_grads = jax.grad(loss(layer), (0, 1))(params, x), jax.grad(loss(reference), (0, 1))(params, x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4), grads, expected_grads)


# Wide layers (phase convolutions) and thin ones (16 x out <= in channels: one matmul of all taps).
@pytest.mark.parametrize(
    "shape,features", [((3, 2, 2, 5), 3), ((2, 7, 7, 4), 3), ((2, 5, 6, 32), 1), ((1, 3, 3, 16), 1)]
)
def test_upconv_equals_flax_conv_transpose(shape, features):
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    reference = nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding="SAME")
    _assert_same_layer(dcgan.UpConv(features), reference, x, (shape[0], 2 * shape[1], 2 * shape[2], features))


# Wide layers (XLA's convolution) and thin ones (16 x in <= out channels: im2col matmul).
@pytest.mark.parametrize(
    "shape,features", [((3, 4, 6, 5), 3), ((2, 14, 14, 8), 3), ((2, 8, 6, 1), 16), ((1, 4, 4, 2), 40)]
)
def test_downconv_equals_flax_strided_conv(shape, features):
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    reference = nn.Conv(features, (4, 4), strides=(2, 2))
    _assert_same_layer(dcgan.DownConv(features), reference, x, (shape[0], shape[1] // 2, shape[2] // 2, features))
    with pytest.raises(ValueError, match="even"):
        dcgan.DownConv(features).init(jax.random.PRNGKey(1), jnp.zeros((1, 7, 8, 2)))
