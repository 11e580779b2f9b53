"""Int8 quantisation of a Flax linen model with qwix: post-training (PTQ), quantisation-aware training (QAT), an
int8 export and the serving function that runs from it.

    model = quantize.qat_model(make_cnn(config), config)          # a trainer's model: fake-quantised when qat
    int8 = quantize.ptq(model, variables, calibration_images)      # a trained float model -> int8 (Int8Model)
    int8 = quantize.from_qat(model, variables, image_shape)        # a QAT-trained model -> int8, no calibration
    logits = quantize.logits(int8, images); quantize.accuracy(int8.module, int8.variables, images, labels)
    size = quantize.export(int8, "model.npz"); serve = quantize.serve("model.npz", model)  # images -> logits
    results |= quantize.report(model, variables, calibration_images, test_images, test_labels, workdir)

**What is int8.** One qwix rule (`RULE`) covers every matrix product and convolution of the model (`dot_general`,
`conv_general_dilated`, `einsum`): kernels become int8 with one float32 scale per output channel (symmetric absmax:
scale = max |w| / 127.5 over the other axes, so a weight is off by at most scale / 2), and each product's input
activations int8 with one static float32 scale per tensor, calibrated beforehand and stored in the parameters next
to the kernel (`<layer>/<op>_lhs_scale`). The products run as int8 x int8 with int32 accumulation, then times the
two scales; biases, pooling, normalisation and the softmax stay float32.

**Calibration** (qwix's static-range recipe): the model with fake quantisation runs over a few training batches
and keeps, per quantised input, the running mean over examples of each example's largest |activation|; the
activation scale is that mean / 127.5 (values beyond it saturate). QAT collects the same statistics while it trains
(a `quant_stats` collection, beside BatchNorm's `batch_stats` in a trainer's model state), so a QAT-trained model
converts to int8 without a calibration pass. (`QtProvider` is qwix's, mended so that `init` can be jitted.)

**QAT** trains through the int8 forward pass (qwix's `QtProvider`), differentiating with the straight-through
estimator: rounding passes the gradient unchanged. The int8 model made from it (`from_qat`) and the one served from
its export compute the same numbers: run op by op, their logits equal the QAT model's bit for bit (tested). Jitted,
the QAT program computes its scales in-graph and XLA simplifies that arithmetic (a division by a computed scale
becomes a product with its reciprocal), which can move a value across a rounding boundary: seen, logits 1e-7 to
2e-2 apart with the same predictions; `report` gives both differences.

**The export** is one `.npz`: every kernel as int8 with its float32 scales, the activation scales, the float32
biases and normalisation statistics, and the input shape; about 4x smaller than the float32 parameters saved the
same way. `serve` rebuilds the int8 model from it alone (and the float model's definition).

**Speed on a CPU**, measured here (2 cores, jaxlib 0.10, the MNIST CNN, batch 256): int8 is *slower* than float32.
This project gives CPU convolutions to XLA's Eigen (`lepton_jax/xla_cpu.py`), which has no int8 kernel, so XLA
widens int8 convolutions to int32 loops (0.7-1.5 s vs 0.03-0.06 s, by load); with YNNPACK's convolutions
(`XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=+individual_convolution`) int8 took ~0.11 s, still twice float32
(quantising the activations costs more than the narrow products save). QAT training steps slow alike (~5x; ~1.2x
with YNNPACK). int8's gain here is the 4x smaller model; its speed is for hardware with int8 units.

**Config keys** (the `quantize` group of `lepton_jax.config.TECHNIQUES`): `quantize` (none | ptq | qat) and
`quantize_calibration_batches` (PTQ's calibration set: that many training batches of `batch_size` images).
Unsupported, each refused in one `UserError` line: weights that feed anything but a product or a convolution (an
embedding lookup), weights on the root module itself, QAT in bf16/f16 (its statistics accumulate in float32).
"""

import dataclasses
import inspect
import os
import statistics
import time
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import qwix
from flax import linen as nn
from flax.traverse_util import flatten_dict
from qwix._src.core import conv_general as qwix_conv
from qwix._src.core import conv_general_qt
from qwix._src.core import qarray as qwix_qarray

from lepton_jax import epochs
from lepton_jax.config import require, technique_settings
from lepton_jax.errors import UserError
from lepton_jax.techniques import precision
from lepton_jax.techniques.prune import path_name

# Every product and convolution: int8 kernels per output channel, int8 activations with static per-tensor scales.
RULE = qwix.QtRule(module_path=".*", weight_qtype=jnp.int8, act_qtype=jnp.int8, act_static_scale=True)
CHUNK = 1000  # images per forward pass when evaluating (bounds the activations' memory)
LATENCY_BATCH = 256  # images per timed forward pass
LATENCY_REPEATS = 10
EXACT_CHECK = 64  # test images served op by op (not jitted) to check the export bit for bit
INPUT_SHAPE = "meta/input_shape"  # the export's entry holding the model's input shape (without the batch axis)
_QAT_TYPES = weakref.WeakSet()  # the module classes `qat_model` made: how `is_qat` knows a QAT model
# Read at import: inside a quantised model's call, qwix has replaced `jax.lax.conv_general_dilated`.
_CONV_SIGNATURE = inspect.signature(jax.lax.conv_general_dilated)


class Int8Model(NamedTuple):
    """An int8 model: `module.apply(variables, images)` gives its logits."""

    module: nn.Module  # the float model under qwix's PTQ provider
    variables: dict  # {"params": int8 kernels (qwix `WithAux` of `QArray`), activation scales, biases; the rest}
    input_shape: tuple[int, ...]  # one example's shape (H, W, C)


class QtProvider(qwix.QtProvider):
    """qwix's QAT provider, a convolution's activation statistic collected outside its custom_vjp as qwix does for
    products: qwix 0.1.8 collects it inside, which leaks a tracer when the convolution is traced but not
    differentiated (a jitted or `eval_shape`d `init`, as trainers initialise seeds; a calibration pass)."""

    def conv_general_dilated(self, lhs, rhs, *args, **kwargs):
        rule, op_id = self._get_current_rule_and_op_id("conv_general_dilated")
        if rule is None or rule.weight_qtype is None:
            return jax.lax.conv_general_dilated(lhs, rhs, *args, **kwargs)
        call = _CONV_SIGNATURE.bind(lhs, rhs, *args, **kwargs)
        call.apply_defaults()
        given = call.arguments
        config = self._create_conv_general_qt_config(rule, op_id, lhs, rhs)
        if config.lhs_collect_quant_stat is not None:
            numbers = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, given["dimension_numbers"])
            how = qwix_conv.get_how_to_quantize(
                dimension_numbers=numbers,
                for_lhs=True,
                qtype=config.lhs_qtype,
                calibration_method=config.lhs_calibration_method,
            )
            # The running mean of the batches' mean per-example absmax, this batch included.
            stat = config.lhs_collect_quant_stat(qwix_qarray.calibrate(jax.lax.stop_gradient(lhs), how))
            config = dataclasses.replace(config, lhs_collect_quant_stat=lambda _: stat)
        names = ("window_strides", "padding", "lhs_dilation", "rhs_dilation", "dimension_numbers")
        names += ("feature_group_count", "batch_group_count", "out_sharding")
        return conv_general_qt.conv_general_qt(lhs, rhs, config, *(given[name] for name in names))


def mode(config) -> str:
    """`config.quantize` (none when the config has no such key), checked against its declaration."""
    return technique_settings(config, "quantize")["quantize"]


def calibration_images(config, train_images):
    """PTQ's calibration set: the first `quantize_calibration_batches` batches of `batch_size` training images."""
    count = technique_settings(config, "quantize")["quantize_calibration_batches"] * config.batch_size
    return train_images[:count]


def qat_model(model: nn.Module, config, input_shape=None) -> nn.Module:
    """`model` (float32, not yet under `precision.module`) training with int8 fake quantisation when
    `config.quantize` is qat, else `model` itself; with `input_shape` (one example's) its layers are checked now.

    Raises:
      UserError: a bad `quantize` value, QAT with a low precision, or a layer that cannot be quantised.
    """
    if mode(config) != "qat":
        return model
    low = config.get("precision", "f32")
    require(low == "f32", f"config.quantize='qat' needs config.precision='f32', got '{low}' (it computes in int8)")
    if input_shape is not None:
        check_supported(model, input_shape)
    wrapped = qwix.quantize_model(model, QtProvider([RULE]))
    _QAT_TYPES.add(type(wrapped))
    return wrapped


def is_qat(model) -> bool:
    """Whether `model` (possibly under `precision.module`) is a `qat_model`."""
    return type(_unwrap(model)) in _QAT_TYPES


def float_model(model) -> nn.Module:
    """The float32 model under a QAT model or a precision wrapper (the model itself when it is neither)."""
    model = _unwrap(model)
    base = getattr(type(model), "_unquantized_type", None)
    if base is None:
        return model
    plain = model.copy()
    plain.__class__ = base  # the reverse of qwix's `quantize_model`, which sets a subclass of `base`
    return plain


def _unwrap(model):  # a model under `precision.module`
    return model.module if isinstance(model, precision.LowPrecisionModule) else model


def _dummy(input_shape) -> jax.Array:
    return jnp.zeros((1, *input_shape), jnp.float32)


def check_supported(model, input_shape) -> tuple[nn.Module, dict]:
    """The int8 (PTQ) module of `model` and its abstract variables (shapes, no arrays), after checking that every
    weight of two or more axes becomes int8.

    Raises:
      UserError: weights on the root module (qwix quantises a submodule's), weights of a layer that is not a
        product or a convolution (they would stay float32), or an operation qwix refuses; one line naming it.
    """
    base = float_model(model)
    shapes = nn.unbox(jax.eval_shape(base.init, jax.random.PRNGKey(0), _dummy(input_shape)))
    weights = {p: s for p, s in flatten_dict(shapes.get("params", {})).items() if len(s.shape) >= 2}
    for path, leaf in weights.items():
        if len(path) == 1:
            raise UserError(
                f"quantize: {type(base).__name__} holds the weight '{path[0]}' {tuple(leaf.shape)} on its root "
                "module; int8 quantisation needs every weight inside a layer (a submodule)"
            )
    module = qwix.quantize_model(base, qwix.PtqProvider([RULE]))
    try:
        abstract = nn.unbox(jax.eval_shape(module.init, jax.random.PRNGKey(0), _dummy(input_shape)))
    except (ValueError, NotImplementedError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"quantize: {type(base).__name__} cannot be quantised to int8: {first}") from None
    quantised = flatten_dict(abstract.get("params", {}))  # a kernel made int8 is a qwix `WithAux` of a `QArray`
    for path, leaf in weights.items():
        if not isinstance(getattr(quantised.get(path), "array", None), qwix.QArray):
            raise UserError(
                f"quantize: the layer of '{'/'.join(path)}' {tuple(leaf.shape)} in {type(base).__name__} cannot be "
                "quantised to int8: only the kernels of products and convolutions (Dense, Conv, Einsum) can; its "
                "weights would stay float32"
            )
    return module, abstract


def calibrate(model, variables, images, batch_size: int = 128) -> dict:
    """Activation statistics of the float model `variables` over `images`, in whole batches of `batch_size`:
    qwix's `quant_stats` (per quantised input, the count of batches and the sum of their mean per-example absmax)."""
    count = len(images) // batch_size
    require(count >= 1, f"quantize: calibration needs at least one batch of {batch_size} images, got {len(images)}")
    fake = qwix.quantize_model(float_model(model), QtProvider([RULE]))
    shapes = jax.eval_shape(fake.init, jax.random.PRNGKey(0), _dummy(images.shape[1:]))["quant_stats"]
    floats = {k: v for k, v in variables.items() if k != "quant_stats"}

    @jax.jit  # the variables an argument: as constants, XLA would fold the kernels' absmax at compile time
    def update(floats, stats, batch):
        return fake.apply({**floats, "quant_stats": stats}, batch, mutable=["quant_stats"])[1]["quant_stats"]

    stats = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    for i in range(count):
        stats = update(floats, stats, jnp.asarray(images[i * batch_size : (i + 1) * batch_size]))
    return stats


def convert(model, variables, quant_stats, input_shape) -> Int8Model:
    """The int8 model of float `variables` with activation statistics `quant_stats` (from `calibrate`, or a QAT
    model's own)."""
    module, abstract = check_supported(model, input_shape)
    params = jax.tree.map(jnp.asarray, nn.unbox(variables["params"]))
    int8_params = qwix.quantize_params(params, abstract["params"], quant_stats)  # eagerly, as QAT rounds op by op
    others = {k: v for k, v in variables.items() if k not in ("params", "quant_stats")}  # e.g. batch_stats
    return Int8Model(module, {"params": int8_params, **others}, tuple(input_shape))


def ptq(model, variables, images, batch_size: int = 128) -> Int8Model:
    """Post-training quantisation of a trained float model, its activation ranges calibrated on `images`."""
    check_supported(model, images.shape[1:])  # before calibrating: an unsupported model fails at once
    return convert(model, variables, calibrate(model, variables, images, batch_size), images.shape[1:])


def from_qat(model, variables, input_shape) -> Int8Model:
    """The int8 model of a QAT-trained `model` (`qat_model`): its own activation statistics, no calibration."""
    stats = variables.get("quant_stats")
    counts = [int(np.min(v)) for p, v in flatten_dict(stats or {}).items() if p[-1] == "count"]
    require(
        min(counts, default=0) > 0,
        "quantize: the QAT model has no activation statistics yet (quant_stats never updated): train it first",
    )
    return convert(model, variables, stats, input_shape)


def make_logits(module) -> Callable:
    """Jitted `(variables, images (N, H, W, C)) -> logits (N, classes)`, in chunks of `CHUNK` images."""
    return jax.jit(lambda variables, images: epochs.map_in_chunks(lambda x: module.apply(variables, x), images, CHUNK))


def logits(int8: Int8Model, images) -> jax.Array:
    """The int8 model's logits (N, classes) for `images`."""
    return make_logits(int8.module)(int8.variables, jnp.asarray(images))


def accuracy(module, variables, images, labels) -> float:
    """Top-1 accuracy of `module.apply(variables, .)` (a float or an int8 model) on `images`."""
    predicted = jnp.argmax(make_logits(module)(variables, jnp.asarray(images)), -1)
    return float(jnp.mean(predicted == jnp.asarray(labels)))


def _save(tree, path: str, extra: dict | None = None) -> int:
    """`tree`'s leaves in an uncompressed `.npz` named by their paths; returns its size in bytes."""
    require(path.endswith(".npz"), f"quantize: an export is an .npz file, got '{path}'")
    arrays = {path_name(p): np.asarray(leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}
    tmp = path[: -len(".npz")] + ".tmp.npz"
    np.savez(tmp, **arrays, **(extra or {}))
    os.replace(tmp, path)  # a reader never sees half a file
    return os.path.getsize(path)


def export(int8: Int8Model, path: str) -> int:
    """Writes the int8 model to `path` (.npz: kernels int8 `<kernel>/array/qvalue` with float32 `.../scale`, the
    activation scales, biases and statistics float32, and `INPUT_SHAPE`); returns its size in bytes."""
    return _save(int8.variables, path, {INPUT_SHAPE: np.asarray(int8.input_shape, np.int64)})


def export_float(variables, path: str) -> int:
    """Writes the float32 variables to `path` as `export` writes an int8 model (the size to compare it with)."""
    return _save({k: v for k, v in nn.unbox(variables).items() if k != "quant_stats"}, path)


def load(path: str, model) -> Int8Model:
    """The int8 model in the export at `path`, for `model` (the float or QAT model it was made from). Raises a
    `UserError` for a missing or unreadable file, or one that does not fit `model` (an entry missing or unlike)."""
    try:
        with np.load(path) as stored:
            arrays = dict(stored)
    except (OSError, ValueError) as error:
        raise UserError(f"quantize: cannot read the export {path}: {error}") from None
    require(INPUT_SHAPE in arrays, f"quantize: {path} is not an int8 export (no {INPUT_SHAPE})")
    input_shape = tuple(int(n) for n in arrays[INPUT_SHAPE])
    module, abstract = check_supported(model, input_shape)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract)
    values = []
    for p, leaf in leaves:
        name, stored = path_name(p), arrays.get(path_name(p))
        require(
            stored is not None and stored.shape == leaf.shape and stored.dtype == leaf.dtype,
            f"quantize: {path} does not fit {type(float_model(model)).__name__}: '{name}' should be "
            f"{leaf.dtype}{list(leaf.shape)}, "
            + ("is missing" if stored is None else f"is {stored.dtype}{list(stored.shape)}"),
        )
        values.append(jnp.asarray(stored))
    return Int8Model(module, jax.tree_util.tree_unflatten(treedef, values), input_shape)


def serve(path: str, model) -> Callable[[Any], jax.Array]:
    """`images -> logits` computed in int8 from the export at `path` alone (and `model`'s definition)."""
    int8 = load(path, model)
    forward = make_logits(int8.module)
    return lambda images: forward(int8.variables, jnp.asarray(images))


def latency(module, variables, images, repeats: int = LATENCY_REPEATS) -> float:
    """Median seconds of one jitted forward pass of `images`, compilation excluded."""
    forward = jax.jit(module.apply)
    images = jnp.asarray(images)
    jax.block_until_ready(forward(variables, images))  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(forward(variables, images))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def report(model, variables, calibration_images, test_images, test_labels, workdir: str, batch_size=128) -> dict:
    """Quantises one trained model to int8 and compares it with float32; writes the exports in
    `<workdir>/quantize/` (`int8.npz`, `f32.npz`).

    Args:
      model: the trainer's model: a float model (quantised post-training) or a `qat_model` (converted with its
        own statistics).
      variables: one seed's trained variables (`{"params": ..., and the model state}`).
      calibration_images: PTQ's calibration set (`calibration_images(config, ...)`; unused for a QAT model),
        run in batches of `batch_size`.
      test_images, test_labels: the evaluation set.
      workdir: the run's directory.

    Returns:
      A flat dict: `quantize/qat` (1: a QAT model), `quantize/f32_accuracy` (the float model with these weights; for
      QAT the QAT-trained weights unquantised), `quantize/int8_accuracy` (served from the export),
      `quantize/accuracy_drop_pp` (f32 - int8, percentage points), `quantize/f32_bytes`, `quantize/int8_bytes` and
      `quantize/size_ratio` (the exports on disk), `quantize/f32_latency_ms` and `quantize/int8_latency_ms` (median
      of `LATENCY_REPEATS` jitted passes of `LATENCY_BATCH` test images), and the served logits against the model's
      own (QAT: its forward pass; PTQ: the int8 model in memory): `quantize/serving_max_abs_diff` (op by op on
      `EXACT_CHECK` images; 0 expected), `..._jit` and `quantize/serving_agreement` (jitted, on `LATENCY_BATCH`
      images: the largest difference and the share of equal predictions).
    """
    input_shape = tuple(test_images.shape[1:])
    qat = is_qat(model)
    if qat:
        int8 = from_qat(model, variables, input_shape)
    else:
        int8 = ptq(model, variables, calibration_images, min(batch_size, len(calibration_images)))
    base = float_model(model)
    floats = {k: v for k, v in variables.items() if k != "quant_stats"}
    directory = os.path.join(workdir, "quantize")
    os.makedirs(directory, exist_ok=True)
    int8_path = os.path.join(directory, "int8.npz")
    int8_bytes = export(int8, int8_path)
    f32_bytes = export_float(floats, os.path.join(directory, "f32.npz"))
    loaded = load(int8_path, model)  # the int8 model from the file alone
    served = make_logits(loaded.module)(loaded.variables, jnp.asarray(test_images))
    # Against the model's own forward pass (after PTQ the int8 model in memory), jitted on the first
    # `LATENCY_BATCH` images, and for QAT op by op too (jitted, the programs may round differently: see above).
    few, checked = jnp.asarray(test_images[:EXACT_CHECK]), jnp.asarray(test_images[:LATENCY_BATCH])
    reference, reference_variables = (model, variables) if qat else (int8.module, int8.variables)
    jitted = make_logits(reference)(reference_variables, checked)
    op_by_op = loaded.module.apply(loaded.variables, few) - reference.apply(reference_variables, few)
    f32_accuracy = accuracy(base, floats, test_images, test_labels)
    int8_accuracy = float(jnp.mean(jnp.argmax(served, -1) == jnp.asarray(test_labels)))
    timed = test_images[:LATENCY_BATCH]
    return {
        "quantize/qat": int(qat),
        "quantize/f32_accuracy": f32_accuracy,
        "quantize/int8_accuracy": int8_accuracy,
        "quantize/accuracy_drop_pp": 100.0 * (f32_accuracy - int8_accuracy),
        "quantize/f32_bytes": f32_bytes,
        "quantize/int8_bytes": int8_bytes,
        "quantize/size_ratio": f32_bytes / int8_bytes,
        "quantize/f32_latency_ms": 1e3 * latency(base, floats, timed),
        "quantize/int8_latency_ms": 1e3 * latency(int8.module, int8.variables, timed),
        "quantize/serving_max_abs_diff": float(jnp.max(jnp.abs(op_by_op))),
        "quantize/serving_max_abs_diff_jit": float(jnp.max(jnp.abs(served[: len(checked)] - jitted))),
        "quantize/serving_agreement": float(jnp.mean(jnp.argmax(served[: len(checked)], -1) == jnp.argmax(jitted, -1))),
    }
