"""The optimiser factory (`lepton_jax/techniques/optim.py`): the hand-written SGD against optax's, the schedules
against hand computations, the trainers' defaults against the optimisers they had before the factory, accumulation
against one large batch, and the keys' launch checks."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from lepton_jax import config as config_lib
from lepton_jax.errors import UserError
from lepton_jax.techniques import optim


def params_and_grads(steps: int = 5):
    key = jax.random.key(0)
    params = {"w": jax.random.normal(key, (3, 4)), "b": jnp.arange(4.0)}
    grads = [
        jax.tree.map(lambda p, i=i: jax.random.normal(jax.random.fold_in(key, i), p.shape), params)
        for i in range(1, steps + 1)
    ]
    return params, grads


def run(tx, params, grads):
    """The parameters after each step of `tx` on the fixed gradient sequence."""
    state, out = tx.init(params), []
    for g in grads:
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
        out.append(params)
    return out


def assert_same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def config(**values):
    return config_lib.training_keys(ml_collections.ConfigDict(), **values)


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
@pytest.mark.parametrize("scheduled", [False, True])
def test_hand_written_sgd_equals_optax_sgd_step_for_step(momentum, nesterov, scheduled):
    rate = optax.linear_schedule(0.1, 0.0, 5) if scheduled else 0.1
    params, grads = params_and_grads()
    ours = run(optim.sgd(rate, momentum, nesterov), params, grads)
    theirs = run(optax.sgd(rate, momentum or None, nesterov), params, grads)
    assert_same(ours, theirs)
    assert not np.allclose(ours[0]["w"], ours[-1]["w"])  # it moved


def test_sgd_momentum_by_hand():
    params = {"w": jnp.array([1.0])}
    grads = [{"w": jnp.array([1.0])}, {"w": jnp.array([2.0])}]
    out = run(optim.sgd(0.5, momentum=0.5), params, grads)
    # v1 = 1, w = 1 - 0.5; v2 = 2 + 0.5 * 1 = 2.5, w = 0.5 - 1.25
    np.testing.assert_allclose([float(p["w"][0]) for p in out], [0.5, -0.75])


def test_schedules_by_hand():
    total = 100
    assert optim.learning_rate(config(lr=0.1), total) == 0.1  # constant: the number itself
    linear = optim.learning_rate(config(lr=0.1, schedule="linear"), total)
    np.testing.assert_allclose([linear(0), linear(50), linear(100)], [0.1, 0.05, 0.0], atol=1e-8)
    cosine = optim.learning_rate(config(lr=0.1, schedule="cosine", warmup=0.1), total)
    # 10 warm-up steps from 0, then a cosine over the remaining 90
    np.testing.assert_allclose(
        [cosine(0), cosine(5), cosine(10), cosine(55), cosine(100)], [0.0, 0.05, 0.1, 0.05, 0.0], atol=1e-7
    )
    step = optim.learning_rate(config(lr=0.1, schedule="step", lr_decay_every=3, lr_decay_factor=0.5), total, 10)
    np.testing.assert_allclose([step(0), step(29), step(30), step(65)], [0.1, 0.1, 0.05, 0.025], rtol=1e-6)


def test_the_trainers_defaults_build_their_former_optimisers():
    """Each trainer's default optimiser keys give, update for update, the optimiser it built by hand before."""
    from agents.configs import dqn, ppo
    from graphs.configs import gcn
    from lepton_jax.vision.configs import classifier

    params, grads = params_and_grads()
    c = ppo.get_config("CartPole-v1")
    former = optax.flatten(
        optax.chain(optax.clip_by_global_norm(0.5), optax.adam(optax.linear_schedule(2.5e-4, 0.0, 40), eps=1e-5))
    )
    assert_same(run(optim.make(c, 40, 16, flatten=True), params, grads), run(former, params, grads))
    c = dqn.get_config("CartPole-v1")
    former = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(2.5e-4))
    assert_same(run(optim.make(c, 40), params, grads), run(former, params, grads))
    c = classifier.get_config("digits")
    former = optax.adam(optax.cosine_decay_schedule(1e-3, 60))
    assert_same(run(optim.make(c, 60, 30), params, grads), run(former, params, grads))
    c = gcn.get_config("cora")
    only_w = {"w": True, "b": False}
    former = optax.chain(optax.masked(optax.add_decayed_weights(5e-4), only_w), optax.adam(0.01))
    assert_same(run(optim.make(c, 200, decay_mask=only_w), params, grads), run(former, params, grads))


@pytest.mark.parametrize("name", config_lib.OPTIMIZERS)
@pytest.mark.parametrize("schedule", config_lib.SCHEDULES)
def test_every_optimizer_and_schedule_descends_a_quadratic(name, schedule):
    lr = {"adagrad": 0.5, "adam": 0.1, "adamw": 0.1, "rmsprop": 0.1}.get(name, 0.05)  # adagrad's steps shrink fast
    c = config(optimizer=name, lr=lr, schedule=schedule, lr_decay_every=20, warmup=0.05, max_grad_norm=10.0)
    tx = optim.make(c, 100)
    target = jnp.array([1.0, -2.0, 3.0])

    def loss(w):
        return jnp.sum(jnp.square(w - target))

    @jax.jit
    def step(w, state):
        updates, state = tx.update(jax.grad(loss)(w), state, w)
        return optax.apply_updates(w, updates), state

    w, state = jnp.zeros(3), tx.init(jnp.zeros(3))
    for _ in range(100):
        w, state = step(w, state)
    assert loss(w) < 0.5 * loss(jnp.zeros(3)), (name, schedule, float(loss(w)))


def test_weight_decay_is_l2_except_adamw_which_decouples_it():
    params = {"w": jnp.array([2.0])}
    zero = [{"w": jnp.array([0.0])}]
    # SGD with L2: the step is -lr * wd * w.
    sgd = run(optim.make(config(optimizer="sgd", lr=0.1, weight_decay=0.5)), params, zero)
    np.testing.assert_allclose(float(sgd[0]["w"][0]), 2.0 - 0.1 * 0.5 * 2.0)
    # Adam normalises the L2 gradient (a step of ~lr); AdamW decays the weight apart from it (lr * wd * w).
    adam = run(optim.make(config(optimizer="adam", lr=0.1, weight_decay=0.5)), params, zero)
    np.testing.assert_allclose(float(adam[0]["w"][0]), 2.0 - 0.1, rtol=1e-5)
    adamw = run(optim.make(config(optimizer="adamw", lr=0.1, weight_decay=0.5)), params, zero)
    np.testing.assert_allclose(float(adamw[0]["w"][0]), 2.0 - 0.1 * 0.5 * 2.0, rtol=1e-6)


def test_accumulated_steps_equal_one_step_on_the_mean_gradient():
    params, grads = params_and_grads(4)
    accumulated = run(optim.make(config(optimizer="momentum", lr=0.1, accumulate=2)), params, grads)
    means = [jax.tree.map(lambda a, b: (a + b) / 2, grads[i], grads[i + 1]) for i in (0, 2)]
    single = run(optim.make(config(optimizer="momentum", lr=0.1)), params, means)
    assert_same(accumulated[0], params)  # nothing applied until the second gradient
    for a, b in zip((accumulated[1], accumulated[3]), single, strict=True):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-6)


def test_bad_optimiser_values_are_one_line_naming_the_choices():
    with pytest.raises(UserError, match="one of sgd, momentum, nesterov, adam, adamw, rmsprop, adagrad"):
        config_lib.validate(config(optimizer="lion"), {})
    with pytest.raises(UserError, match="config.schedule"):
        config_lib.validate(config(schedule="exp"), {})
    with pytest.raises(UserError, match="config.warmup"):
        config_lib.validate(config(warmup=1.0), {})


def uses_hand_written_sgd(state) -> bool:
    leaves = jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, optim.SGDState))
    return any(isinstance(x, optim.SGDState) for x in leaves)


def test_every_trainer_builds_its_optimiser_from_the_keys():
    """`--config.optimizer=nesterov` reaches the RL agents, the GNNs, the VAE/DCGAN and the classifier: their
    initial states (shapes only, nothing compiled) hold the hand-written SGD's state."""
    from agents import dqn, ppo
    from agents.configs import dqn as dqn_config
    from agents.configs import ppo as ppo_config
    from generative import dcgan, vae
    from generative.configs import dcgan as dcgan_config
    from generative.configs import vae as vae_config
    from graphs import common, data, models, node_classification
    from graphs.configs import gcn as gcn_config
    from lepton_jax.rl import envs
    from lepton_jax.vision import classifier
    from lepton_jax.vision.configs import classifier as classifier_config

    key = jax.random.key(0)
    spec = envs.make_env("CartPole-v1")
    inits = {}
    for name, module, get in (("ppo", ppo, ppo_config.get_config), ("dqn", dqn, dqn_config.get_config)):
        c = get("CartPole-v1,smoke")
        c.optimizer = "nesterov"
        inits[name] = module.make_agent(c, spec).init
    c = gcn_config.get_config("karate,smoke")
    c.optimizer = "nesterov"
    full = common.full_graph(data.karate_club(), False, sparse=True)
    gcn_init, *_ = node_classification.make_steps(c, models.make_node_model(c, 2))
    inits["gcn"] = lambda k: gcn_init(k, full)
    c = vae_config.get_config("digits,smoke")
    c.optimizer = "nesterov"
    inits["vae"] = vae.make_init(c, vae.make_model(c, (8, 8, 1)), (8, 8, 1))
    c = dcgan_config.get_config("digits,smoke")
    c.optimizer = "nesterov"
    inits["dcgan"] = dcgan.make_init(c, *dcgan.make_models(c, (8, 8, 1)), (8, 8, 1))
    c = classifier_config.get_config("digits,smoke")
    c.optimizer = "nesterov"
    inits["classifier"] = classifier.make_init(c, classifier.make_model(c), (8, 8, 1))
    for name, init in inits.items():
        assert uses_hand_written_sgd(jax.eval_shape(init, key)), name
