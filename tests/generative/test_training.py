"""Generative models learning on the embedded 8x8 digits: the GAN in process, the VAE through the launcher; the
feature classifier's cache; resume == uninterrupted."""

import hashlib
import json
import os
import shutil

import chex
import jax
import numpy as np
import pytest

from generative import common, dcgan, vae
from generative.configs import dcgan as dcgan_config
from generative.configs import vae as vae_config
from lepton_jax import epochs, parallel
from lepton_jax import run as run_lib
from lepton_jax.errors import UserError
from lepton_jax.interrupt import Interrupted
from lepton_jax.vision import classifier
from lepton_jax.vision import data as image_data
from lepton_jax.vision.configs import classifier as classifier_config
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
    assert len(results["params_sha256"]) == 64
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


def test_vae_resumed_equals_uninterrupted(tmp_path, interrupt_first_step):
    """params_sha256 (of both seeds' stacked parameters) after an interrupted and resumed run is the uninterrupted
    run's."""
    config = vae_config.get_config("digits,smoke")
    config.num_epochs, config.report_epochs, config.fid_samples, config.is_samples = 2, (1,), 0, 0
    state, full = vae.run(config, str(tmp_path / "full"))
    assert jax.tree.leaves(state.params)[0].shape[0] == 2 and full["params_sha256"] == run_lib.params_sha256(
        state.params
    )
    with interrupt_first_step(), pytest.raises(Interrupted, match="epoch 1/2"):
        vae.run(config, str(tmp_path / "split"))
    _, resumed = vae.run(config, str(tmp_path / "split"))
    assert resumed["resumed_from_epoch"] == 1 and resumed["params_sha256"] == full["params_sha256"]


def test_vae_early_stopping_keeps_the_best_validation_parameters(tmp_path):
    """With a validation split the run watches the validation negative ELBO; the parameters it reports (hash, test
    ELBO) are each seed's best, not the last."""
    config = vae_config.get_config("digits,smoke")
    config.num_epochs, config.report_epochs, config.fid_samples, config.is_samples = 4, (1,), 0, 0
    config.val_fraction, config.patience = 0.2, 1
    state, results = vae.run(config, str(tmp_path))
    best = state.early.best_params
    assert results["params_sha256"] == run_lib.params_sha256(best)
    assert results["per_seed/best_epoch"] == (np.asarray(state.early.best_epoch) + 1).tolist()
    assert 1 <= results["perf/epochs"] <= 4
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    val = np.array([[r["val/neg_elbo"] for r in rows]])  # the seeds' mean per epoch
    assert "val/loss" in rows[0] and np.isfinite(val).all()


def _classifier_of(vae_run) -> str:
    return os.path.join(os.path.dirname(vae_run[0]), "classifier")  # the smoke classifier the launcher run trained


def _refusal(config) -> str:
    """The one-line refusal of `check_classifier_workdir(config)`."""
    with pytest.raises(UserError) as error:
        common.check_classifier_workdir(config)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"--config.classifier_workdir={config.classifier_workdir} ")
    return message


def test_classifier_cache_is_keyed_by_the_classifier_config(vae_run):
    """A smoke classifier never stands in for a full one, nor the other way round."""
    smoke, full = vae_config.get_config("digits,smoke"), vae_config.get_config("digits")
    # By default each classifier config has its own directory: the launcher's default workdir of that config.
    for config, arg in ((smoke, "digits,smoke"), (full, "digits")):
        launcher_hash = classifier_config.get_config(arg).to_json_best_effort(sort_keys=True)
        digest = hashlib.sha256(launcher_hash.encode()).hexdigest()[:8]
        assert common.classifier_workdir(config) == os.path.join("runs", f"classifier-digits-{digest}")
    assert common.classifier_workdir(smoke) != common.classifier_workdir(full)
    smoke.data_dir = "/elsewhere"  # where the data lives is not another classifier
    assert common.classifier_workdir(smoke) == common.classifier_workdir(vae_config.get_config("digits,smoke"))
    # A given directory is used only for the classifier config it was trained with.
    smoke.classifier_workdir = full.classifier_workdir = _classifier_of(vae_run)
    assert common.check_classifier_workdir(smoke) == "finished"
    assert _refusal(full).endswith(
        "holds the classifier of --config.smoke_classifier=True (changed: num_epochs); pass "
        "--config.smoke_classifier=True to use it, or point --config.classifier_workdir elsewhere (unset, it is "
        f"{common.classifier_workdir(vae_config.get_config('digits'))})"
    )
    with open(os.path.join(_classifier_of(vae_run), "results.json")) as f:
        assert len(json.load(f)["params_sha256"]) == 64


def test_unfinished_classifier_run_is_resumed_never_used(vae_run, tmp_path, interrupt_first_step):
    """A classifier run without results.json (cut short after its first epoch) is resumed before its features are
    used, to exactly the parameters of an uninterrupted run; an unreadable one is one line naming the flag."""
    with open(os.path.join(_classifier_of(vae_run), "results.json")) as f:
        uninterrupted = json.load(f)
    config = vae_config.get_config("digits,smoke")
    config.classifier_workdir = str(tmp_path / "classifier")
    config.data_dir = str(tmp_path)  # another data path: the same classifier (resumed with the path it began with)
    data = image_data.load("digits")
    with interrupt_first_step(), pytest.raises(Interrupted, match="epoch 1/2"):
        classifier.run(common.feature_classifier_config(config), config.classifier_workdir, data)
    assert common.check_classifier_workdir(config) == "partial"
    _, extra = common.make_evaluator(config, data)
    with open(tmp_path / "classifier" / "results.json") as f:
        resumed = json.load(f)
    assert resumed["resumed_from_epoch"] == 1 and resumed["params_sha256"] == uninterrupted["params_sha256"]
    assert extra["eval/classifier_test_accuracy"] == uninterrupted["test/accuracy_mean"]

    # Unfinished, and its checkpoints unreadable: the error from resuming names the classifier's flag.
    os.remove(tmp_path / "classifier" / "results.json")
    for directory, _, files in os.walk(tmp_path / "classifier" / "checkpoints"):
        for name in files:
            with open(os.path.join(directory, name), "wb") as f:
                f.write(b"garbage")
    with pytest.raises(UserError) as error:
        common.make_evaluator(config, data)
    message = str(error.value)
    assert message.startswith(f"feature classifier in --config.classifier_workdir={tmp_path}/classifier: no intact")
    assert "\n" not in message


def test_unusable_classifier_workdirs_are_refused_in_one_line(vae_run, tmp_path):
    config = vae_config.get_config("digits,smoke")
    (tmp_path / "file").write_text("not a run")
    config.classifier_workdir = str(tmp_path / "file")
    assert "is a file, not a directory" in _refusal(config)
    config.classifier_workdir = str(tmp_path / "file" / "classifier")
    assert f"cannot be created: {tmp_path}/file is not a directory" in _refusal(config)
    config.classifier_workdir = "/proc/lepton-classifier"  # not writable, whoever runs the tests (root included)
    assert "cannot be created in /proc" in _refusal(config)
    config.classifier_workdir = vae_run[0]  # a VAE run, not a classifier's
    assert "holds a classifier of another config (changed: architecture, " in _refusal(config)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    config.classifier_workdir = str(tmp_path / "other")
    assert "holds no config.json, so no classifier run" in _refusal(config)
    copy = tmp_path / "copy"
    shutil.copytree(_classifier_of(vae_run), copy)
    shutil.rmtree(copy / "checkpoints")
    config.classifier_workdir = str(copy)
    assert "has results.json but no checkpoint to restore" in _refusal(config)
    config.fid_samples = 0  # no FID: no classifier, nothing to check
    assert common.check_classifier_workdir(config) is None


@pytest.mark.parametrize("trainer", [vae, dcgan])
def test_classifier_workdir_is_checked_before_training(tmp_path, trainer):
    config = (vae_config if trainer is vae else dcgan_config).get_config("digits,smoke")
    (tmp_path / "file").write_text("not a run")
    config.classifier_workdir = str(tmp_path / "file")
    with pytest.raises(UserError, match="^--config.classifier_workdir=.* is a file, not a directory"):
        trainer.run(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()  # nothing was trained
