"""Generative models learning on the embedded 8x8 digits: the GAN in process, the VAE through the launcher."""

import json
import os

import chex
import jax
import numpy as np
import pytest

from generative import dcgan
from generative.configs import dcgan as dcgan_config
from lepton_jax import epochs, parallel
from lepton_jax.vision import data as image_data
from tests.conftest import run_python


def _digits_gan():
    """The smoke DCGAN on the 8x8 digits, 2 seeds: (config, data, mesh, generator, jitted init of the seeds)."""
    config = dcgan_config.get_config("digits,smoke")
    data = image_data.load("digits")
    mesh = parallel.make_mesh()
    generator, discriminator = dcgan.make_models(config, data.image_shape)
    init = epochs.init_seeds(dcgan.make_init(config, generator, discriminator, data.image_shape), 2, mesh)
    return config, data, mesh, generator, init


def test_gan_losses_stay_finite_and_both_nets_learn():
    config, data, mesh, generator, init = _digits_gan()
    state = init(jax.random.PRNGKey(0))
    before = jax.device_get(state)
    step = chex.assert_max_traces(dcgan.make_train_step(config), n=1)  # one compile for every step
    epoch = epochs.make_epoch(step, config.batch_size, mesh)
    images = epochs.to_device(data.train_images, mesh)
    history = []
    for _ in range(2):
        state, metrics = epoch(state, images)
        history.append({k: np.asarray(v) for k, v in metrics.items()})
    for metrics in history:
        for name, value in metrics.items():
            assert value.shape == (2,) and np.isfinite(value).all(), name
        assert ((0 < metrics["train/d_real"]) & (metrics["train/d_real"] < 1)).all()
    # The discriminator learns to tell real from fake at first: its loss falls below log 4 (chance).
    assert history[0]["train/d_loss"].mean() < np.log(4)
    after = jax.device_get(state)
    for part in ("generator", "discriminator"):
        moved = [
            np.abs(a - b).max()
            for a, b in zip(jax.tree.leaves(getattr(after, part).params), jax.tree.leaves(getattr(before, part).params))
        ]
        assert min(moved) > 0, part
        assert int(getattr(after, part).step[0]) == 2 * (1500 // config.batch_size)
    # Seeds are independent: different initialisations and shuffles give different losses.
    assert not np.allclose(history[-1]["train/g_loss"][0], history[-1]["train/g_loss"][1])
    samples = dcgan.make_sample(generator)(state.generator, jax.random.normal(jax.random.PRNGKey(1), (6, 100)))
    assert samples.shape == (2, 6, 8, 8, 1) and 0 <= samples.min() and samples.max() <= 1


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    """One launcher run: MLP VAE on the digits, 2 seeds, FID with a quick classifier.

    One device: the data-parallel path is the shared one that tests/core/test_parallel.py checks against a single
    device; this run with 2 faked CPU devices aborted inside XLA once in a full test session (not reproduced alone)."""
    tmp = tmp_path_factory.mktemp("vae")
    workdir = str(tmp / "run")
    args = [
        "-m",
        "scripts.train",
        "--config=generative/configs/vae.py:digits,smoke",
        f"--workdir={workdir}",
        "--config.num_epochs=12",
        "--config.report_epochs=(1,)",
        f"--config.classifier_workdir={tmp}/classifier",
    ]
    result = run_python(args, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(workdir, "results.json")) as f:
        return workdir, json.load(f)


def test_vae_loss_falls_by_a_margin(vae_run):
    _, results = vae_run
    # Digits (64 pixels): coding them at p = 0.5 costs 64 log 2 = 44.4 nats; after one epoch the test negative
    # ELBO is ~33, after 12 epochs ~25 (measured): it must fall by more than 5 nats, to below 28.
    assert results["test/neg_elbo_epoch1_mean"] - results["test/neg_elbo_mean"] > 5
    assert results["test/neg_elbo_mean"] < 28
    # Importance sampling tightens the bound: NLL_IS <= negative ELBO (on average over the test images).
    assert results["test/nll_is_mean"] < results["test/neg_elbo_mean"]
    assert results["num_devices"] == 1 and results["num_seeds"] == 2 and results["test/neg_elbo_std"] > 0


def test_vae_run_reports_sample_metrics_and_pictures(vae_run):
    workdir, results = vae_run
    for key in (
        "test/neg_elbo_mean",
        "test/nll_is_mean",
        "eval/fid_mean",
        "eval/kid_mean",
        "eval/fid_floor",
        "eval/classes_covered_mean",
        "eval/mean_confidence_mean",
        "eval/classifier_test_accuracy",
        "perf/wall_seconds",
    ):
        assert key in results and np.isfinite(results[key]), key
    assert results["eval/fid_mean"] > results["eval/fid_floor"] > 0
    assert 0 < results["eval/mean_confidence_mean"] <= 1
    for picture in ("samples.png", "reconstructions.png", "learning_curve.png"):
        assert os.path.getsize(os.path.join(workdir, "plots", picture)) > 2000, picture
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        epochs = [json.loads(line)["step"] for line in f]
    assert epochs == list(range(1, 13))


def test_unrolled_seeds_equal_vmapped_seeds():
    """The DCGAN's CPU default steps each seed with its own copy of the step; the result is the vmapped one's."""
    config, data, mesh, _, init = _digits_gan()
    images = epochs.to_device(data.train_images[:200], mesh)
    results = {}
    for loop in ("vmap", "unroll"):
        epoch = epochs.make_epoch(dcgan.make_train_step(config), config.batch_size, mesh, seed_loop=loop)
        results[loop] = jax.device_get(epoch(init(jax.random.PRNGKey(0)), images))

    # Biases that feed a BatchNorm get a zero gradient up to rounding, which Adam scales up to random lr-sized
    # steps: they are left out; every kernel, BatchNorm scale and the epoch's metrics are compared.
    def weights(state):
        return [
            leaf
            for net in (state.generator, state.discriminator)
            for path, leaf in jax.tree_util.tree_leaves_with_path(net.params)
            if "bias" not in jax.tree_util.keystr(path)
        ]

    (unrolled, unrolled_metrics), (vmapped, vmapped_metrics) = results["unroll"], results["vmap"]
    chex.assert_trees_all_close(unrolled_metrics, vmapped_metrics, atol=1e-4)
    chex.assert_trees_all_close(weights(unrolled), weights(vmapped), atol=1e-4)
    params = unrolled.generator.params
    assert not np.allclose(jax.tree.leaves(params)[0][0], jax.tree.leaves(params)[0][1])  # the seeds differ
