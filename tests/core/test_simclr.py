"""SimCLR (`lepton_jax/vision/simclr.py`) and the kmeans trainer (`lepton_jax/vision/clustering.py`) on the 8x8
digits: NT-Xent against a hand computation, the views (deterministic for a key, the two of a pair different, random
erasing a rectangle), the linear probe against scikit-learn, a smoke run that lowers the loss and whose probe beats
chance and whose trunk the classifier can start from, the kmeans trainer against `cluster.kmeans` (raw pixels and a
SimCLR run's features), and the one-line errors of a bad `features_from`."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from lepton_jax.errors import UserError
from lepton_jax.interrupt import Interrupted
from lepton_jax.techniques import cluster, transfer
from lepton_jax.vision import classifier, clustering, simclr
from lepton_jax.vision import data as image_data
from lepton_jax.vision import semi_supervised as semi
from lepton_jax.vision.configs import classifier as classifier_config
from lepton_jax.vision.configs import kmeans as kmeans_config
from lepton_jax.vision.configs import semi_supervised as semi_config
from lepton_jax.vision.configs import simclr as simclr_config
from tests.conftest import run_python


def test_ntxent_matches_a_hand_computation():
    projections = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)  # 3 images, rows i and i + 3
    temperature = 0.3
    loss, accuracy = jax.jit(simclr.contrastive_loss, static_argnums=1)(jnp.asarray(projections), temperature)
    unit = projections / np.linalg.norm(projections, axis=1, keepdims=True)
    similarity = unit @ unit.T / temperature
    terms, hits = [], []
    for i in range(6):
        pair = (i + 3) % 6
        others = [k for k in range(6) if k != i]
        terms.append(-np.log(np.exp(similarity[i, pair]) / np.sum(np.exp(similarity[i, others]))))
        hits.append(others[int(np.argmax(similarity[i, others]))] == pair)
    np.testing.assert_allclose(float(loss), np.mean(terms), rtol=1e-5)
    assert float(accuracy) == pytest.approx(np.mean(hits))
    grads = jax.jit(jax.grad(lambda p: simclr.contrastive_loss(p, temperature)[0]))(jnp.asarray(projections))
    assert bool(jnp.all(jnp.isfinite(grads)))


def test_views_are_deterministic_for_a_key_and_the_two_differ(digits):
    # The programs and shapes of the smoke run's own views (`views.png`: 8 images x 8 views; the fixed evaluation
    # views of the test images), so that each compiles once in this file.
    view_fn = simclr.make_views(simclr_config.get_config("digits"))
    images = jnp.asarray(digits.train_images[:64])
    key = jax.random.PRNGKey(3)
    one_view = jax.jit(view_fn)
    first = np.asarray(one_view(key, images))
    np.testing.assert_array_equal(first, np.asarray(one_view(key, images)))
    assert first.shape == images.shape and first.min() >= 0 and first.max() <= 1
    test_images = jnp.asarray(digits.test_images[: simclr.EVAL_VIEWS])
    count = len(test_images)
    pair = np.asarray(jax.jit(functools.partial(simclr.two_views, view_fn))(key, test_images))
    assert pair.shape == (2 * count, 8, 8, 1)
    assert all(np.abs(pair[i] - pair[i + count]).max() > 0.05 for i in range(count))  # every image's two views differ
    assert all(np.abs(pair[i] - np.asarray(test_images[i])).max() > 0.05 for i in range(count))


def test_random_erasing_zeroes_one_rectangle():
    image = jnp.ones((28, 28, 1))
    erase = jax.jit(simclr.erase)  # one program for the 20 keys
    for seed in range(20):
        erased = np.asarray(erase(jax.random.PRNGKey(seed), image))[..., 0]
        rows, cols = np.nonzero(erased == 0)
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert len(rows) == height * width  # the zeros fill their bounding box: one rectangle
        assert 1 <= len(rows) <= 0.5 * 28 * 28 and set(np.unique(erased)) <= {0.0, 1.0}


def test_linear_probe_matches_scikit_learn(digits):
    train = digits.train_images.reshape(len(digits.train_images), -1)
    test = digits.test_images.reshape(len(digits.test_images), -1)
    l2 = 1e-2
    ours = simclr.linear_probe(train, digits.train_labels, test, 10, steps=300, l2=l2)
    scaler = StandardScaler().fit(train)
    # Theirs: C * sum of cross-entropies + |W|^2 / 2; ours: their objective divided by C * N.
    reference = LogisticRegression(C=1 / (l2 * len(train)), max_iter=5000, tol=1e-8).fit(
        scaler.transform(train), digits.train_labels
    )
    theirs = reference.predict(scaler.transform(test))
    assert np.mean(ours == theirs) >= 0.99
    assert np.mean(ours == digits.test_labels) == pytest.approx(np.mean(theirs == digits.test_labels), abs=0.01)


def _simclr_config(**overrides):
    c = simclr_config.get_config("digits,smoke")
    c.conv_features, c.hidden, c.projection_hidden, c.projection_dim = (8, 16), 32, 32, 16
    c.num_seeds, c.num_epochs, c.knn_k, c.seed_loop = 2, 2, 5, "vmap"
    c.update(overrides)
    return c


@pytest.fixture(scope="module")
def finished(tmp_path_factory, digits):
    workdir = str(tmp_path_factory.mktemp("simclr"))
    _, results = simclr.run(_simclr_config(), workdir, digits)
    return workdir, results


def test_smoke_run_lowers_the_loss_and_its_probe_beats_chance(finished):
    workdir, results = finished
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert records[-1]["train/loss"] < records[0]["train/loss"] - 0.05
    for prefix in ("test", "random"):
        for name in ("linear_probe_accuracy", "knn_accuracy", "kmeans_accuracy", "kmeans_nmi"):
            values = results[f"per_seed/{prefix}/{name}"]
            assert len(values) == 2 and all(0.0 <= v <= 1.0 for v in values), (prefix, name, values)
    assert results["test/linear_probe_accuracy_mean"] > 0.5  # chance: 0.1
    assert results["test/knn_accuracy_mean"] > 0.5
    for name in ("embedding.png", "views.png", "learning_curve.png"):
        assert os.path.getsize(os.path.join(workdir, "plots", name)) > 0


def test_resume_equals_uninterrupted(tmp_path, finished, digits, interrupt_first_step, without_figures):
    _, uninterrupted = finished
    with interrupt_first_step(), pytest.raises(Interrupted):
        simclr.run(_simclr_config(), str(tmp_path), digits)
    _, resumed = simclr.run(_simclr_config(), str(tmp_path), digits)
    assert resumed["resumed_from_epoch"] == 1
    assert resumed["params_sha256"] == uninterrupted["params_sha256"]
    assert resumed["per_seed/test/linear_probe_accuracy"] == uninterrupted["per_seed/test/linear_probe_accuracy"]


def test_the_classifier_can_start_from_the_simclr_trunk(finished, digits):
    workdir, _ = finished
    config = classifier_config.get_config("digits")
    config.conv_features, config.hidden = (8, 16), 32
    model = classifier.make_model(config)
    shapes = nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, *digits.image_shape))))
    source = transfer.read_variables(workdir)
    copied = transfer.transfer(jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), dict(shapes)), source, ("head",))
    np.testing.assert_array_equal(copied["params"]["conv1"]["kernel"], source["params"]["conv1"]["kernel"])
    assert "projection_hidden" in source["params"] and "projection_hidden" not in copied["params"]


def test_the_semi_supervised_trainer_starts_from_the_simclr_trunk(finished, digits):
    workdir, _ = finished
    config = semi_config.get_config("digits,smoke")
    config.conv_features, config.hidden, config.init_from = (8, 16), 32, workdir
    model = classifier.make_model(config)
    state = jax.jit(semi.make_init(config, model, digits.image_shape, 10, 10))(jax.random.PRNGKey(3))
    source = transfer.read_variables(workdir)  # seed 0's
    for layer in ("conv0", "conv1", "dense"):
        np.testing.assert_array_equal(state.params["params"][layer]["kernel"], source["params"][layer]["kernel"])
    assert "projection_hidden" not in state.params["params"]  # the head is the trainer's own, freshly drawn
    assert state.params["params"]["head"]["kernel"].shape == (32, 10)


def _kmeans_config(**overrides):
    c = kmeans_config.get_config("digits")
    c.num_seeds = 2
    c.update(overrides)
    return c


def test_kmeans_trainer_equals_cluster_kmeans_on_raw_pixels(tmp_path, digits, without_figures):
    results = clustering.run(_kmeans_config(), str(tmp_path), digits)
    images, labels = clustering.select_images(digits, "all")
    assert len(images) == 1797 and results["num_points"] == 1797
    points = images.reshape(len(images), -1)
    for index in range(2):
        fit = cluster.kmeans(points, 10, simclr.cluster_key(0, index))
        assert results["per_seed/accuracy"][index] == pytest.approx(cluster.cluster_accuracy(labels, fit.labels))
        assert results["per_seed/nmi"][index] == pytest.approx(cluster.normalized_mutual_info(labels, fit.labels))
    assert 0.6 <= results["accuracy_mean"] <= 0.95  # K-means on the 8x8 digits: about 0.8
    assert 0.6 <= results["nmi_mean"] <= 0.9


def test_kmeans_on_simclr_features_reproduces_the_runs_own_score(tmp_path, finished, digits, without_figures):
    workdir, simclr_results = finished
    config = _kmeans_config(features_from=workdir, cluster_images="test", num_seeds=1)
    results = clustering.run(config, str(tmp_path), digits)
    assert results["per_seed/accuracy"][0] == pytest.approx(simclr_results["per_seed/test/kmeans_accuracy"][0])
    assert results["per_seed/nmi"][0] == pytest.approx(simclr_results["per_seed/test/kmeans_nmi"][0])


def test_bad_features_from_is_one_line(tmp_path, finished, digits):
    def problem(path, data=digits):
        with pytest.raises(UserError) as error:
            clustering.run(_kmeans_config(features_from=str(path)), str(tmp_path / "out"), data)
        assert "\n" not in str(error.value)
        return str(error.value)

    assert "does not exist" in problem(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    assert "holds no config.json" in problem(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"trainer": "classifier"}))
    assert "holds a 'classifier' run, not a simclr one" in problem(tmp_path / "other")
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "config.json").write_text(json.dumps({"trainer": "simclr"}))
    assert "unfinished SimCLR run" in problem(tmp_path / "unfinished")
    workdir, _ = finished
    bigger = image_data.ImageData("big", *(np.zeros((20, 16, 16, 1), np.float32), np.zeros(20, np.int32)) * 2)
    assert "does not fit (16, 16, 1) images" in problem(workdir, bigger)
    assert not os.path.exists(tmp_path / "out" / "results.json")


def test_the_launcher_refuses_a_missing_features_from_in_one_line(tmp_path):
    config = "lepton_jax/vision/configs/kmeans.py:digits"
    missing = tmp_path / "nowhere"
    result = run_python(
        ["-m", "scripts.train", f"--config={config}", f"--config.features_from={missing}", f"--workdir={tmp_path}/w"]
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: config.features_from={missing} does not exist; point it at a finished SimCLR run (train one with "
        "python -m scripts.train --config=lepton_jax/vision/configs/simclr.py:mnist)"
    )
