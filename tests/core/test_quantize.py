"""Int8 quantisation (`lepton_jax/techniques/quantize.py`) on the classifier's CNN and the 8x8 digits: per-channel
kernels within half a step of the float ones, activation scales against a hand computation, PTQ accuracy close to
float32, an export of int8 kernels about 4x smaller whose served logits equal the QAT forward pass bit for bit,
straight-through gradients against a hand formula, the hook into the classifier's state, and the one-line errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from lepton_jax import config as config_lib
from lepton_jax.errors import UserError
from lepton_jax.techniques import quantize
from lepton_jax.vision import classifier
from lepton_jax.vision.configs import classifier as classifier_config

BATCH = 50
CALIBRATION = 8  # batches
LAYERS = ("conv0", "conv1", "dense", "head")
QAT_STEPS = 4  # a QAT step is slow on XLA:CPU (its int8 convolutions: ~0.2 s a step)


def _config(**overrides):
    c = classifier_config.get_config("digits")
    config_lib.technique_keys(c, "quantize")
    c.num_epochs, c.lr = 1, 3e-3
    for name, value in overrides.items():
        c[name] = value
    return c


def _batches(digits, steps):
    """The training batches, in order: (images (BATCH, 8, 8, 1), labels (BATCH,))."""
    order = np.random.default_rng(0).permutation(len(digits.train_images))
    for i in range(steps):
        idx = order[(i * BATCH) % 1500 : (i * BATCH) % 1500 + BATCH]
        yield jnp.asarray(digits.train_images[idx]), jnp.asarray(digits.train_labels[idx])


def _train(config, digits, steps):
    model = quantize.qat_model(classifier.make_cnn(config), config, digits.image_shape)
    state = classifier.make_init(config, model, digits.image_shape, steps)(jax.random.PRNGKey(0))
    step = jax.jit(classifier.train_step)
    for i, batch in enumerate(_batches(digits, steps)):
        state, _ = step(state, batch, jax.random.PRNGKey(i))
    return model, state


@pytest.fixture(scope="module")
def reported(digits, tmp_path_factory):
    """The float CNN (the classifier's default network) after 200 steps, and its `quantize.report` (PTQ calibrated
    on the first `CALIBRATION` batches): (model, variables, results, workdir)."""
    model, state = _train(_config(), digits, 200)
    variables = state.variables()
    workdir = tmp_path_factory.mktemp("quantize_report")
    images = digits.train_images[: CALIBRATION * BATCH]
    with pytest.MonkeyPatch.context() as patch:
        # One timed pass each (the default, 10, is ~1 s a pass for int8 on XLA:CPU); the timing itself is not checked.
        patch.setattr(quantize, "latency", functools.partial(quantize.latency, repeats=1))
        results = quantize.report(model, variables, images, digits.test_images, digits.test_labels, str(workdir), BATCH)
    return model, variables, results, workdir


@pytest.fixture(scope="module")
def trained(reported):
    """The float CNN, its variables, and its PTQ int8 model: the report's export, read back (calibrating again
    would give the same model: `quantize.ptq` is what the report ran)."""
    model, variables, _, workdir = reported
    return model, variables, quantize.load(str(workdir / "quantize" / "int8.npz"), model)


@pytest.fixture(scope="module")
def qat_trained(digits):
    """The CNN trained `QAT_STEPS` steps with QAT."""
    return _train(_config(quantize="qat"), digits, QAT_STEPS)


def test_kernels_are_int8_per_output_channel_within_half_a_step(trained):
    _, variables, int8 = trained
    for layer in LAYERS:
        w = np.asarray(variables["params"][layer]["kernel"])
        q = int8.variables["params"][layer]["kernel"].array
        qvalue, scale = np.asarray(q.qvalue), np.asarray(q.scale)
        assert qvalue.dtype == np.int8 and qvalue.shape == w.shape
        assert scale.shape == (1,) * (w.ndim - 1) + (w.shape[-1],)  # one scale per output channel
        absmax = np.abs(w).reshape(-1, w.shape[-1]).max(0)
        np.testing.assert_allclose(scale.ravel(), absmax / 127.5, rtol=1e-6)
        # Half a step, plus float32's rounding of q * scale (|w| <= 127.5 scale: a few ulps of 128 scale).
        error = np.abs(qvalue * scale - w)
        assert np.all(error <= scale * (0.5 + 128 * np.finfo(np.float32).eps)), layer
        # Each channel's largest weight lands on the edge of the range: +-127.5 rounds to 127 (saturated) or -128.
        assert set(np.abs(qvalue.astype(np.int32)).reshape(-1, w.shape[-1]).max(0)) <= {127, 128}


def test_activation_scale_is_the_calibration_images_mean_maximum(trained, digits):
    _, _, int8 = trained
    images = digits.train_images[: CALIBRATION * BATCH]
    # The first layer's input is the image: its scale is the mean over images of each one's largest pixel / 127.5.
    scale = int8.variables["params"]["conv0"]["conv_general_dilated0_lhs_scale"].array
    assert scale.shape == (1, 1, 1, 1)
    np.testing.assert_allclose(float(scale.ravel()[0]), images.max(axis=(1, 2, 3)).mean() / 127.5, rtol=1e-6)
    for layer in LAYERS[1:]:  # every product's input has one static scale, stored with the model
        (name,) = [k for k in int8.variables["params"][layer] if k.endswith("_lhs_scale")]
        assert int8.variables["params"][layer][name].array.size == 1


def test_ptq_computes_in_int8_and_keeps_the_float_accuracy(trained, digits):
    model, variables, int8 = trained
    f32 = quantize.accuracy(model, variables, digits.test_images, digits.test_labels)
    # One int8 pass gives both the accuracy and the logits (int8 products are slow on XLA:CPU: ~1 s a pass).
    logits = quantize.logits(int8, digits.test_images)
    int8_accuracy = float(jnp.mean(jnp.argmax(logits, -1) == jnp.asarray(digits.test_labels)))
    assert f32 > 0.75
    assert abs(f32 - int8_accuracy) <= 0.015  # 297 test images: at most 4 answers change
    reference = quantize.make_logits(model)(variables, jnp.asarray(digits.test_images))  # the program `accuracy` ran
    # Close but not equal: mean deviation a few percent of the mean logit, nearly every prediction the same.
    assert 0 < float(jnp.mean(jnp.abs(logits - reference))) < 0.06 * float(jnp.mean(jnp.abs(reference)))
    assert float(jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(reference, -1))) >= 0.98
    jaxpr = jax.make_jaxpr(lambda v, x: int8.module.apply(v, x))(int8.variables, digits.test_images[:2])
    products = [e for e in jaxpr.eqns if e.primitive.name in ("conv_general_dilated", "dot_general")]
    assert len(products) == 4
    for eqn in products:
        assert [v.aval.dtype for v in eqn.invars] == [jnp.int8, jnp.int8]
        assert eqn.params["preferred_element_type"] == jnp.int32


def test_export_holds_int8_kernels_and_is_about_four_times_smaller(trained, tmp_path):
    _, variables, int8 = trained
    int8_bytes = quantize.export(int8, str(tmp_path / "int8.npz"))
    f32_bytes = quantize.export_float(variables, str(tmp_path / "f32.npz"))
    stored = np.load(tmp_path / "int8.npz")
    kernels = {name: stored[name] for name in stored.files if name.endswith("kernel/array/qvalue")}
    assert sorted(kernels) == [f"params/{layer}/kernel/array/qvalue" for layer in sorted(LAYERS)]
    assert all(k.dtype == np.int8 for k in kernels.values())
    floats = [stored[n] for n in stored.files if n not in kernels and n != quantize.INPUT_SHAPE]
    assert all(a.dtype == np.float32 for a in floats)
    # On disk: one byte a kernel weight, four a float, and a small header per array.
    payload = sum(k.size for k in kernels.values()) + 4 * sum(a.size for a in floats)
    assert payload <= int8_bytes <= payload + 300 * len(stored.files)
    assert f32_bytes >= 4 * sum(np.asarray(leaf).size for leaf in jax.tree.leaves(variables))
    assert 3.5 < f32_bytes / int8_bytes < 4.0


def test_served_logits_equal_the_qat_forward_pass(qat_trained, digits, tmp_path):
    model, state = qat_trained
    variables = state.variables()
    path = str(tmp_path / "int8.npz")
    quantize.export(quantize.from_qat(model, variables, digits.image_shape), path)
    loaded = quantize.load(path, model)
    images = jnp.asarray(digits.test_images[:64])
    # Op by op, the export's int8 program and the QAT model's forward pass are the same numbers, bit for bit.
    np.testing.assert_array_equal(loaded.module.apply(loaded.variables, images), model.apply(variables, images))
    served = quantize.serve(path, model)(digits.test_images)  # jitted
    qat_logits = quantize.make_logits(model)(variables, jnp.asarray(digits.test_images))
    np.testing.assert_array_equal(jnp.argmax(served, -1), jnp.argmax(qat_logits, -1))
    np.testing.assert_allclose(served, qat_logits, atol=0.05)
    # ... and not the float model's: the QAT forward pass is quantised.
    floats = {k: v for k, v in variables.items() if k != "quant_stats"}
    float_logits = quantize.make_logits(quantize.float_model(model))(floats, jnp.asarray(digits.test_images))
    assert float(jnp.max(jnp.abs(qat_logits - float_logits))) > 1e-4


def test_qat_statistics_live_in_the_classifier_state(qat_trained, digits):
    model, state = qat_trained
    assert quantize.is_qat(model) and not quantize.is_qat(quantize.float_model(model))
    stats = state.model_state["quant_stats"]  # beside the parameters, out of the optimiser's reach
    assert set(stats) == set(LAYERS) and "quant_stats" not in state.params
    first = stats["conv0"]["conv_general_dilated0_lhs"]
    assert int(first["count"]) == QAT_STEPS  # one update per training step
    # The first layer's input is the image: the statistic is the sum over steps of the batch's mean image maximum.
    hand = sum(float(images.max(axis=(1, 2, 3)).mean()) for images, _ in _batches(digits, QAT_STEPS))
    np.testing.assert_allclose(float(first["sum_of_absmax"].ravel()[0]), hand, rtol=1e-5)
    # Initialised jitted or abstractly, as trainers initialise their seeds (qwix's own provider leaks a tracer there).
    key, example = jax.random.PRNGKey(3), jnp.zeros((1, *digits.image_shape))
    jax.tree.map(np.testing.assert_array_equal, jax.jit(model.init)(key, example), model.init(key, example))
    assert jax.eval_shape(model.init, key, example)["quant_stats"]["conv1"] is not None
    plain = classifier.make_cnn(_config())
    assert quantize.qat_model(plain, _config()) is plain and quantize.qat_model(plain, _config(quantize="ptq")) is plain


def test_qat_gradients_pass_straight_through_the_rounding(qat_trained, digits):
    model, state = qat_trained
    variables = state.variables()
    images, labels = jnp.asarray(digits.train_images[:32]), jnp.asarray(digits.train_labels[:32])

    def loss(params):
        logits = model.apply({**variables, **params}, images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    grads = jax.jit(jax.grad(loss))(state.params)["params"]
    capture = jax.jit(lambda v, x: model.apply(v, x, capture_intermediates=True, mutable=["intermediates"]))
    logits, captured = jax.device_get(capture(variables, images))
    hidden = np.maximum(captured["intermediates"]["dense"]["__call__"][0], 0)  # the head's float input (32, 256)
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    delta = (probabilities - np.eye(10)[np.asarray(labels)]) / len(labels)  # dL/dlogits (32, 10)
    # Straight through: d(round(w / s) s)/dw taken as 1, so the head's gradient is the float formula h^T delta
    # (rounding's own derivative, zero almost everywhere, would leave the kernels untrained).
    np.testing.assert_allclose(grads["head"]["kernel"], hidden.T @ delta, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(grads["head"]["bias"], delta.sum(0), rtol=1e-4, atol=1e-7)
    for layer in LAYERS:
        assert np.all(np.isfinite(grads[layer]["kernel"])) and np.any(grads[layer]["kernel"] != 0), layer


def test_report_writes_the_exports_and_compares_int8_with_float(reported):
    _, _, results, tmp_path = reported
    assert (tmp_path / "quantize" / "int8.npz").is_file() and (tmp_path / "quantize" / "f32.npz").is_file()
    assert results["quantize/qat"] == 0
    assert results["quantize/int8_bytes"] == (tmp_path / "quantize" / "int8.npz").stat().st_size
    assert 3.5 < results["quantize/size_ratio"] < 4.0
    drop = 100 * (results["quantize/f32_accuracy"] - results["quantize/int8_accuracy"])
    assert results["quantize/accuracy_drop_pp"] == pytest.approx(drop) and abs(drop) <= 1.5
    assert results["quantize/serving_max_abs_diff"] == 0.0 and results["quantize/serving_agreement"] == 1.0
    assert results["quantize/f32_latency_ms"] > 0 and results["quantize/int8_latency_ms"] > 0


class Embedded(nn.Module):
    @nn.compact
    def __call__(self, x):
        token = jnp.argmax(x.reshape(x.shape[0], -1), -1) % 10
        return nn.Dense(10)(nn.Embed(10, 4)(token))


class RootWeight(nn.Module):
    @nn.compact
    def __call__(self, x):
        return x.reshape(x.shape[0], -1) @ self.param("w", nn.initializers.lecun_normal(), (64, 10))


def _one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_bad_values_and_unsupported_models_are_one_line_errors(trained, qat_trained, digits, tmp_path):
    with pytest.raises(UserError) as error:
        quantize.mode(_config(quantize="int4"))
    assert _one_line(error) == "config.quantize='int4' is not allowed: it must be one of none, ptq, qat"
    with pytest.raises(UserError, match=r"config.quantize_calibration_batches=0 is not allowed: it must be an integer"):
        quantize.calibration_images(_config(quantize_calibration_batches=0), digits.train_images)
    with pytest.raises(UserError, match="needs config.precision='f32', got 'bf16'") as error:
        quantize.qat_model(classifier.make_cnn(_config()), _config(quantize="qat", precision="bf16"))
    _one_line(error)
    with pytest.raises(UserError, match=r"'Embed_0/embedding' \(10, 4\) in Embedded cannot be quantised") as error:
        quantize.qat_model(Embedded(), _config(quantize="qat"), digits.image_shape)
    _one_line(error)
    with pytest.raises(UserError, match="holds the weight 'w' .* on its root module") as error:
        quantize.ptq(RootWeight(), {"params": {"w": jnp.zeros((64, 10))}}, digits.train_images[:BATCH], BATCH)
    _one_line(error)

    model, variables, int8 = trained
    with pytest.raises(UserError, match="calibration needs at least one batch of 50 images, got 10"):
        quantize.ptq(model, variables, digits.train_images[:10], BATCH)
    qat_model, state = qat_trained
    fresh = classifier.make_init(_config(quantize="qat"), qat_model, digits.image_shape)(jax.random.PRNGKey(1))
    with pytest.raises(UserError, match="no activation statistics yet"):
        quantize.from_qat(qat_model, fresh.variables(), digits.image_shape)
    path = str(tmp_path / "int8.npz")
    quantize.export(int8, path)
    with pytest.raises(UserError, match=r"does not fit CNN: 'params/dense/bias' should be float32\[32\], is float"):
        quantize.load(path, classifier.CNN(hidden=32))
    (tmp_path / "junk.npz").write_bytes(b"not an npz")
    with pytest.raises(UserError, match="cannot read the export") as error:
        quantize.load(str(tmp_path / "junk.npz"), model)
    _one_line(error)
