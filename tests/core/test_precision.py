"""Mixed precision (`lepton_jax/techniques/precision.py`): the low type is where the compute is, float32 is where the
parameters, the optimiser and the losses are; f16's dynamic loss scale skips non-finite steps and adapts."""

import jax
import jax.extend
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from lepton_jax import config as config_lib
from lepton_jax.errors import UserError
from lepton_jax.techniques import optim, precision
from lepton_jax.vision import classifier
from lepton_jax.vision.configs import classifier as classifier_config


def compute_dtypes(fn, *args) -> set:
    """The operand types of every matrix product and convolution `fn` traces to (nested jaxprs included)."""
    found = set()

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
                found.update(str(v.aval.dtype) for v in eqn.invars)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                visit(sub)

    visit(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


def classifier_setup(name: str):
    c = classifier_config.get_config("digits,smoke")
    c.precision = name
    model = classifier.make_model(c)
    state = classifier.make_init(c, model, (8, 8, 1), 10)(jax.random.key(0))
    images = jax.random.uniform(jax.random.key(1), (16, 8, 8, 1))
    return model, state, (images, jnp.arange(16) % 10)


@pytest.mark.parametrize("name,low", [("bf16", "bfloat16"), ("f16", "float16")])
def test_low_precision_computes_low_and_keeps_float32_parameters(name, low):
    model, state, batch = classifier_setup(name)
    assert compute_dtypes(lambda p: model.apply(p, batch[0]), state.params) == {low}
    # backward too: the train step's products are all in the low type
    assert compute_dtypes(lambda s: classifier.train_step(s, batch, None), state) == {low}
    assert model.apply(state.params, batch[0]).dtype == jnp.float32  # logits (and the loss) in float32
    new, metrics = jax.jit(classifier.train_step)(state, batch, None)
    dtypes = {x.dtype for x in jax.tree.leaves((new.params, new.opt_state)) if jnp.issubdtype(x.dtype, jnp.floating)}
    assert dtypes == {jnp.dtype("float32")}
    assert np.isfinite(float(metrics["train/loss"]))
    assert not np.array_equal(new.params["params"]["head"]["kernel"], state.params["params"]["head"]["kernel"])


def test_f32_is_the_module_itself():
    model, state, batch = classifier_setup("f32")
    assert isinstance(model, classifier.CNN)
    assert compute_dtypes(lambda p: model.apply(p, batch[0]), state.params) == {"float32"}


def test_bf16_step_is_close_to_f32_step():
    _, f32_state, batch = classifier_setup("f32")
    _, bf16_state, _ = classifier_setup("bf16")
    f32_new, f32_metrics = jax.jit(classifier.train_step)(f32_state, batch, None)
    bf16_new, bf16_metrics = jax.jit(classifier.train_step)(bf16_state, batch, None)
    np.testing.assert_allclose(bf16_metrics["train/loss"], f32_metrics["train/loss"], rtol=2e-2)
    assert not np.array_equal(f32_new.params["params"]["head"]["kernel"], bf16_new.params["params"]["head"]["kernel"])


def test_dynamic_loss_scale_skips_non_finite_steps_and_adapts():
    inner = optax.sgd(0.1)
    tx = precision.dynamic_loss_scale(inner, initial=8.0, period=2)
    params = {"w": jnp.array([1.0, 2.0])}
    state = tx.init(params)
    # a finite step: gradients arrive scaled by 8 and are unscaled exactly (a power of two)
    updates, state = tx.update({"w": jnp.array([8.0, 16.0])}, state, params)
    np.testing.assert_array_equal(updates["w"], np.float32([-0.1, -0.2]))
    assert float(state.scale) == 8.0 and int(state.good_steps) == 1
    updates, state = tx.update({"w": jnp.array([8.0, 8.0])}, state, params)
    assert float(state.scale) == 16.0 and int(state.good_steps) == 0  # period finite steps: doubled
    before = state
    updates, state = tx.update({"w": jnp.array([jnp.inf, 1.0])}, state, params)
    np.testing.assert_array_equal(updates["w"], [0.0, 0.0])  # skipped
    assert float(state.scale) == 8.0 and int(state.good_steps) == 0  # halved
    jax.tree.map(np.testing.assert_array_equal, state.inner, before.inner)


def test_f16_trainer_differentiates_the_scaled_loss():
    """The classifier's f16 optimiser holds the scale and its gradients come scaled: one step equals the f16 step
    computed without scaling, up to f16's rounding, and the state's scale is the initial one."""
    _, state, batch = classifier_setup("f16")
    assert float(precision.loss_scale(state.opt_state)) == 2.0**15
    new, metrics = jax.jit(classifier.train_step)(state, batch, None)
    assert np.isfinite(float(metrics["train/loss"]))
    assert float(precision.loss_scale(new.opt_state)) == 2.0**15  # finite: not halved
    grads_scaled = precision.value_and_grad(lambda p: p["x"] ** 2, state.opt_state)({"x": jnp.float32(3.0)})
    assert float(grads_scaled[0]) == 9.0 and float(grads_scaled[1]["x"]) == 6.0 * 2.0**15


def test_bad_precision_is_one_line():
    c = config_lib.training_keys(ml_collections.ConfigDict(), precision="fp8")
    with pytest.raises(UserError, match="config.precision='fp8' is not allowed: it must be one of f32, bf16, f16"):
        config_lib.validate(c, {})
    with pytest.raises(UserError, match="config.precision must be one of"):
        optim.make(c)


def test_the_rl_agents_and_generative_models_compute_in_bf16():
    """`--config.precision=bf16` reaches PPO's and DQN's networks and the VAE's and DCGAN's: every product of one
    traced update is bf16 (nothing is compiled)."""
    from agents import dqn, ppo
    from agents.configs import dqn as dqn_config
    from agents.configs import ppo as ppo_config
    from generative import dcgan, vae
    from generative.configs import dcgan as dcgan_config
    from generative.configs import vae as vae_config
    from lepton_jax.rl import envs

    key, spec = jax.random.key(0), envs.make_env("CartPole-v1")
    images = jnp.zeros((4, 8, 8, 1))
    for module, get in ((ppo, ppo_config.get_config), (dqn, dqn_config.get_config)):
        c = get("CartPole-v1,smoke")
        c.precision = "bf16"
        agent = module.make_agent(c, spec)
        assert compute_dtypes(agent.update, jax.eval_shape(agent.init, key)) == {"bfloat16"}, c.trainer
    c = vae_config.get_config("digits,smoke")
    c.precision = "bf16"
    model = vae.make_model(c, (8, 8, 1))
    state = jax.eval_shape(vae.make_init(c, model, (8, 8, 1)), key)
    assert compute_dtypes(vae.make_train_step(model), state, images, key) == {"bfloat16"}
    c = dcgan_config.get_config("digits,smoke")
    c.precision = "bf16"
    state = jax.eval_shape(dcgan.make_init(c, *dcgan.make_models(c, (8, 8, 1)), (8, 8, 1)), key)
    assert compute_dtypes(dcgan.make_train_step(c), state, images, key) == {"bfloat16"}


@pytest.mark.parametrize("name", ["gcn", "gat"])
def test_the_gnns_compute_in_bf16(name):
    """Every product of a GCN/GAT training step is bf16 (the normalisation coefficients follow the features' type)."""
    from graphs import common, data, models, node_classification
    from graphs.configs import gcn

    c = gcn.get_config("karate,smoke")
    c.model, c.precision = name, "bf16"
    dataset = data.karate_club()
    graph, labels = common.full_graph(dataset, False, sparse=True), node_classification.labels_of(dataset)
    init, _, _, train_step = node_classification.make_steps(c, precision.module(models.make_node_model(c, 2), c))
    state = jax.eval_shape(init, jax.random.key(0), graph)
    step = lambda s: train_step(s.train_state, graph, labels, jax.random.key(1))  # noqa: E731
    assert compute_dtypes(step, state) == {"bfloat16"}
