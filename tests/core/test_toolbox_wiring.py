"""Pruning and distillation as every trainer reaches them: `--config.prune_sparsity` through the optimiser factory
(every pillar's optimiser state carries the masks; a trained classifier's kernels are exactly that sparse and its
results say so), and `--config.teacher` through the classifier's step (the teacher's logits on the same augmented
batch the student sees, the teacher frozen)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lepton_jax import config as config_lib
from lepton_jax.errors import UserError
from lepton_jax.techniques import augment, distill, prune
from lepton_jax.vision import classifier
from lepton_jax.vision.configs import classifier as classifier_config
from tests.conftest import blank_figures


def holds_pruning(state) -> bool:
    leaves = jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, prune.PruneState))
    return any(isinstance(x, prune.PruneState) for x in leaves)


def test_every_pillar_prunes_through_the_factory():
    """`--config.prune_sparsity=0.9` reaches PPO, DQN, the GCN, the VAE, the DCGAN and the classifier: their initial
    states (shapes only, nothing compiled) hold the pruning masks; at 0 none does."""
    from agents import dqn, ppo
    from agents.configs import dqn as dqn_config
    from agents.configs import ppo as ppo_config
    from generative import dcgan, vae
    from generative.configs import dcgan as dcgan_config
    from generative.configs import vae as vae_config
    from graphs import common, data, models, node_classification
    from graphs.configs import gcn as gcn_config
    from lepton_jax.rl import envs

    spec, full = envs.make_env("CartPole-v1"), common.full_graph(data.karate_club(), False, sparse=True)

    def inits(sparsity):
        out = {}
        for name, module, get in (("ppo", ppo, ppo_config.get_config), ("dqn", dqn, dqn_config.get_config)):
            c = get("CartPole-v1,smoke")
            c.prune_sparsity = sparsity
            out[name] = module.make_agent(c, spec).init
        c = gcn_config.get_config("karate,smoke")
        c.prune_sparsity = sparsity
        gcn_init, *_ = node_classification.make_steps(c, models.make_node_model(c, 2))
        out["gcn"] = lambda k: gcn_init(k, full)
        c = vae_config.get_config("digits,smoke")
        c.prune_sparsity = sparsity
        out["vae"] = vae.make_init(c, vae.make_model(c, (8, 8, 1)), (8, 8, 1))
        c = dcgan_config.get_config("digits,smoke")
        c.prune_sparsity = sparsity
        out["dcgan"] = dcgan.make_init(c, *dcgan.make_models(c, (8, 8, 1)), (8, 8, 1))
        c = classifier_config.get_config("digits,smoke")
        c.prune_sparsity = sparsity
        out["classifier"] = classifier.make_init(c, classifier.make_model(c), (8, 8, 1))
        return out

    key = jax.random.key(0)
    for name, init in inits(0.9).items():
        assert holds_pruning(jax.eval_shape(init, key)), name
    for name, init in inits(0.0).items():
        assert not holds_pruning(jax.eval_shape(init, key)), name


def _mlp(**overrides):
    c = classifier_config.get_config("digits,mlp,smoke")
    c.hidden_sizes, c.num_seeds, c.num_epochs, c.batch_size, c.lr = (32,), 2, 6, 100, 0.01
    c.update(overrides)
    return c


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, digits):
    workdir = str(tmp_path_factory.mktemp("teacher"))
    with pytest.MonkeyPatch.context() as patch:
        blank_figures(patch)  # no test looks at its pictures
        classifier.run(_mlp(hidden_sizes=(48, 48)), workdir, digits)
    return workdir


def test_a_pruned_classifier_is_exactly_that_sparse_and_says_so(tmp_path, digits, without_figures):
    config = _mlp(prune_sparsity=0.75, prune_begin=0.0, prune_end=0.5, prune_every=5)
    state, results = classifier.run(config, str(tmp_path), digits)
    for seed in range(2):
        kernels = [state.params["params"][name]["kernel"][seed] for name in ("dense0", "head")]
        zeros = sum(int(np.sum(np.asarray(k) == 0)) for k in kernels)
        total = sum(k.size for k in kernels)
        assert zeros == int(0.75 * kernels[0].size) + int(0.75 * kernels[1].size), seed  # layer by layer, exact
        assert results["per_seed/test/sparsity"][seed] == pytest.approx(zeros / total)
    assert results["test/accuracy_mean"] > 0.5  # it still learned
    with open(tmp_path / "results.json") as f:
        assert json.load(f)["test/sparsity_mean"] == pytest.approx(0.75, abs=1e-3)


def test_the_teacher_sees_the_students_augmented_batch_and_stays_frozen(teacher_run, digits):
    config = _mlp(teacher=teacher_run, distill_temperature=3.0, distill_alpha=0.7, augment_rotate=20.0)
    teacher = distill.load_teacher(teacher_run, classifier.make_model, (8, 8, 1), 10, "classifier")
    model = classifier.make_model(config)
    state = jax.jit(classifier.make_init(config, model, (8, 8, 1)))(jax.random.key(1))
    step, _ = classifier.make_step(config, digits.train_labels, 10, (8, 8, 1))
    images, labels = jnp.asarray(digits.train_images[:16]), jnp.asarray(digits.train_labels[:16])
    key = jax.random.key(2)
    new_state, logged = jax.jit(step)(state, (images, labels), key)

    # Jitted, as the step is (eagerly, each operation of the networks and the augmentation compiles on its own).
    augmented = jax.jit(augment.make(config))

    @jax.jit
    def distill_loss(batch):
        return distill.loss(model.apply(state.params, batch), teacher.apply(teacher.variables, batch), labels, 3.0, 0.7)

    seen = augmented(jax.random.fold_in(key, 1), images)  # the batch after augmentation
    expected = distill_loss(seen)
    np.testing.assert_allclose(logged["train/loss"], expected.mean(), rtol=1e-5)
    unaugmented = distill_loss(images)
    assert abs(float(unaugmented.mean()) - float(logged["train/loss"])) > 1e-3  # the check above can tell them apart
    again = distill.load_teacher(teacher_run, classifier.make_model, (8, 8, 1), 10, "classifier")
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, teacher.variables, again.variables)))
    assert not np.array_equal(new_state.params["params"]["head"]["kernel"], state.params["params"]["head"]["kernel"])


def test_distillation_through_the_launcher_and_its_errors(teacher_run, tmp_path, digits, without_figures):
    _, results = classifier.run(_mlp(teacher=teacher_run, distill_temperature=4.0), str(tmp_path / "s"), digits)
    assert results["test/accuracy_mean"] > 0.5
    from lepton_jax.vision import configs

    bad = _mlp(teacher=str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match=r"^config.teacher=.*nowhere does not exist"):
        config_lib.validate(bad, configs.KEYS, configs.CHECKS)
    with pytest.raises(UserError, match="config.distill_alpha=1.5 is not allowed"):
        config_lib.validate(_mlp(distill_alpha=1.5), configs.KEYS, configs.CHECKS)
    with pytest.raises(UserError, match="config.prune_sparsity=1.0 is not allowed"):
        config_lib.validate(_mlp(prune_sparsity=1.0), configs.KEYS, configs.CHECKS)
    wider = _mlp(teacher=teacher_run, hidden_sizes=(16,))  # a student of another width distils from it
    classifier.make_step(wider, digits.train_labels, 10, (8, 8, 1))
    assert os.path.isdir(teacher_run)
