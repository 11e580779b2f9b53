"""Capsule networks with dynamic routing (Sabour, Frosst & Hinton 2017), trainable through the launcher.

    python -m scripts.train --config=lepton_jax/vision/configs/capsnet.py:mnist --config.seed_loop=unroll
    python -m scripts.train --config=lepton_jax/vision/configs/capsnet.py:digits  # no files needed

A capsule is a vector whose length is the probability that the entity it stands for is present and whose direction
is that entity's pose. The network: a convolutional stem (Conv-[BatchNorm]-ReLU, VALID padding), primary capsules
(one more convolution, its channels cut into `primary_dim`-vectors and squashed), then one class capsule per class,
each child capsule i predicting every class capsule j through its own matrix W_ij (`u_hat_j|i = W_ij u_i`), the
predictions combined by routing by agreement (`dynamic_routing`, 3 iterations). The class is the longest class
capsule; the loss is the margin loss on the lengths plus 0.0005 times the sum of squared errors of a reconstruction
of the image decoded from the class capsules, all but one masked to zero: the true class's in training, the
longest at test. `CapsNet()` with its defaults is the paper's MNIST network (conv 256 9x9, 32x6x6 primary capsules
of 8 dimensions, 10 class capsules of 16, decoder 512-1024-784: 8.2M parameters); the configs shrink the stem to
what trains on two CPU cores (`lepton_jax/vision/configs/capsnet.py`).

The trainer is the image classifier's (`lepton_jax/vision/classifier.py`): its state, initialisation, data split,
optimiser keys, early stopping (on the validation loss: margin plus reconstruction), augmentation (the paper's
shifts: `augment_crop=2`), seeds vmapped in one program, class selection, per-class report and plots. Beside them
`plots/reconstructions.png` (test images and their reconstructions) and `plots/capsule_dimensions.png` (the
paper's Fig. 4: each dimension of a test image's predicted class capsule moved from -0.25 to 0.25, decoded).
`results.json` has `test/accuracy` and `test/error` (the classifier's report besides: `test/macro_f1`, ...), each
per seed (`_mean`/`_std`/`per_seed/`).
"""

import functools
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from lepton_jax import epochs, parallel, plotting, registry, seeds
from lepton_jax import run as run_lib
from lepton_jax.config import require
from lepton_jax.techniques import augment, precision
from lepton_jax.vision import classifier
from lepton_jax.vision import data as image_data

EPS = 1e-7  # inside the square roots of lengths: their gradient stays finite at a zero vector
M_POSITIVE, M_NEGATIVE, DOWN_WEIGHT = 0.9, 0.1, 0.5  # the margin loss's constants (Sabour et al., eq. 4)
RECONSTRUCTION_WEIGHT = 0.0005  # x the sum of squared errors over the pixels: 0.0005 * 784 x the MSE on MNIST
PERTURBATIONS = np.linspace(-0.25, 0.25, 11)  # the paper's Fig. 4: steps of 0.05


# ---- the layers --------------------------------------------------------------------------------------------------


def squash(s: jax.Array, axis: int = -1) -> jax.Array:
    """Sabour et al.'s non-linearity, eq. 1: `s` scaled to length `|s|^2 / (1 + |s|^2)`, its direction kept.

    Args:
      s: vectors along `axis`, any leading shape.

    Returns:
      The squashed vectors, the shape of `s`: short ones shrink to almost 0, long ones to just below 1.
    """
    squared = jnp.sum(jnp.square(s), axis=axis, keepdims=True)
    return s * (squared / (1.0 + squared)) / jnp.sqrt(squared + EPS)


def lengths(capsules: jax.Array) -> jax.Array:
    """(..., K, D) capsules -> (..., K) their Euclidean lengths."""
    return jnp.sqrt(jnp.sum(jnp.square(capsules), axis=-1) + EPS)


def dynamic_routing(u_hat: jax.Array, iterations: int = 3, stop_gradient: bool = True) -> tuple[jax.Array, jax.Array]:
    """Routing by agreement (Sabour et al., Procedure 1) from child capsules i to parent capsules j.

    The logits b_ij start at 0; each iteration couples every child to the parents by c_i = softmax(b_i) over the
    parents, forms each parent's input s_j = sum_i c_ij u_hat_j|i, its output v_j = squash(s_j), and (except after
    the last) raises b_ij by the agreement u_hat_j|i . v_j.

    With `stop_gradient` (the public implementations' convention: naturomics' TensorFlow and XifengGuo's Keras
    CapsNet) the iterations before the last see the predictions without their gradient, so the coupling
    coefficients are constants to backpropagation and only the last weighted sum carries gradient to `u_hat`;
    without it, gradients also flow through the couplings (the official TensorFlow code).

    Args:
      u_hat: (..., children, parents, dim) predictions u_hat_j|i.
      iterations: routing iterations r (>= 1); 1 gives uniform couplings 1/parents.

    Returns:
      (v, c): the parents' outputs (..., parents, dim) and the couplings of the last iteration (..., children,
      parents), each child's summing to 1 over the parents.
    """
    routed = jax.lax.stop_gradient(u_hat) if stop_gradient else u_hat
    # softmax(0) over the parents, written as a constant: XLA would otherwise fold the softmax of zeros at compile
    # time, slowly.
    coupling = jnp.full(u_hat.shape[:-1], 1.0 / u_hat.shape[-2], u_hat.dtype)  # (..., children, parents)
    logits = jnp.zeros(u_hat.shape[:-1], u_hat.dtype)
    for i in range(iterations):
        if i:
            coupling = jax.nn.softmax(logits, axis=-1)
        last = i == iterations - 1
        inputs = jnp.einsum("...ij,...ijd->...jd", coupling, u_hat if last else routed)  # (..., parents, dim)
        v = squash(inputs)
        if not last:
            logits = logits + jnp.einsum("...ijd,...jd->...ij", routed, v)
    return v, coupling


def margin_loss(
    lengths: jax.Array, targets: jax.Array, m_plus=M_POSITIVE, m_minus=M_NEGATIVE, down_weight=DOWN_WEIGHT
) -> jax.Array:
    """Sabour et al.'s eq. 4, per example: sum_k T_k max(0, m+ - |v_k|)^2 + lambda (1 - T_k) max(0, |v_k| - m-)^2.

    Args:
      lengths: (B, K) class capsule lengths.
      targets: (B, K) T_k: 1 for a class present, else 0 (one-hot; several ones for several digits).

    Returns:
      (B,) the loss of each example.
    """
    present = targets * jnp.square(jax.nn.relu(m_plus - lengths))
    absent = down_weight * (1.0 - targets) * jnp.square(jax.nn.relu(lengths - m_minus))
    return jnp.sum(present + absent, axis=-1)


def reconstruction_mask(capsule_lengths: jax.Array, labels: jax.Array | None = None) -> jax.Array:
    """(B, K) one-hot float mask of the class capsule the decoder sees: the true class's (`labels` (B,), in
    training), or with no labels the longest capsule's (at test)."""
    chosen = jnp.argmax(capsule_lengths, axis=-1) if labels is None else labels
    return jax.nn.one_hot(chosen, capsule_lengths.shape[-1], dtype=capsule_lengths.dtype)


def squared_error(reconstructions: jax.Array, images: jax.Array) -> jax.Array:
    """(B,) the sum over pixels of the squared differences (the loss is `RECONSTRUCTION_WEIGHT` times it)."""
    return jnp.sum(jnp.square(reconstructions - images).reshape(images.shape[0], -1), axis=-1)


class PrimaryCapsules(nn.Module):
    """A convolution whose `num_types * dim` channels are cut into `dim`-vectors and squashed: (B, H, W, C) ->
    (B, H' W' num_types, dim), one capsule of each type at each of the H' x W' positions (VALID padding)."""

    num_types: int = 32
    dim: int = 8
    kernel: int = 9
    stride: int = 2

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(self.num_types * self.dim, (self.kernel,) * 2, (self.stride,) * 2, padding="VALID")(x)
        return squash(x.reshape(x.shape[0], -1, self.dim))  # (B, H' W' types, dim), position-major


class ClassCapsules(nn.Module):
    """Capsules routed from all child capsules: (B, N, d) -> (B, num_capsules, dim). Each child-parent pair has its
    own transform W_ij (N, num_capsules, dim, d); the predictions u_hat_j|i = W_ij u_i are routed by agreement."""

    num_capsules: int = 10
    dim: int = 16
    iterations: int = 3
    stop_gradient: bool = True

    @nn.compact
    def __call__(self, u):
        # Fan-in d per output row: prediction vectors about as long as their child (|u_hat|^2 ~ dim/d |u|^2).
        init = nn.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=-1, out_axis=-2, batch_axis=(0, 1))
        w = self.param("W", init, (u.shape[1], self.num_capsules, self.dim, u.shape[2]))
        u_hat = jnp.einsum("njed,bnd->bnje", w, u)  # (B, N, num_capsules, dim)
        return dynamic_routing(u_hat, self.iterations, self.stop_gradient)[0]


class Decoder(nn.Module):
    """(B, K, D) class capsules and a (B, K) mask -> (B, *image_shape) pixels in [0, 1]: the masked capsules,
    flattened, through ReLU layers of `hidden_sizes` and a sigmoid layer of one unit per pixel."""

    image_shape: tuple[int, ...] = (28, 28, 1)
    hidden_sizes: tuple[int, ...] = (512, 1024)

    @nn.compact
    def __call__(self, capsules, mask):
        x = (capsules * mask[..., None]).reshape(capsules.shape[0], -1)  # (B, K D): one capsule left non-zero
        for size in self.hidden_sizes:
            x = nn.relu(nn.Dense(size)(x))
        x = nn.sigmoid(nn.Dense(int(np.prod(self.image_shape)))(x))
        return x.reshape(capsules.shape[0], *self.image_shape)


class CapsOutput(NamedTuple):
    capsules: jax.Array  # (B, K, D) the class capsules
    lengths: jax.Array  # (B, K) their lengths: the classes' probabilities
    reconstructions: jax.Array  # (B, H, W, C) decoded from the longest capsule


class CapsNet(nn.Module):
    """Stem, primary capsules, class capsules and decoder (the defaults: Sabour et al.'s MNIST network).

    `capsules(x)` gives the class capsules, `decode(capsules, mask)` an image from them; calling the network gives
    both, the image decoded from the longest capsule (`CapsOutput`). `train=True` normalises with the batch's own
    statistics when the stem has BatchNorm.
    """

    num_classes: int = 10
    image_shape: tuple[int, ...] = (28, 28, 1)
    conv_features: tuple[int, ...] = (256,)
    conv_kernels: tuple[int, ...] = (9,)
    conv_strides: tuple[int, ...] = (1,)
    batch_norm: bool = False
    primary_types: int = 32
    primary_dim: int = 8
    primary_kernel: int = 9
    primary_stride: int = 2
    capsule_dim: int = 16
    routing_iterations: int = 3
    decoder_sizes: tuple[int, ...] = (512, 1024)

    def setup(self):
        layers = zip(self.conv_features, self.conv_kernels, self.conv_strides)
        # With BatchNorm the convolution's bias is redundant (the norm's offset replaces it).
        self.convs = [
            nn.Conv(f, (k, k), (s, s), padding="VALID", use_bias=not self.batch_norm, name=f"conv{i}")
            for i, (f, k, s) in enumerate(layers)
        ]
        if self.batch_norm:
            self.norms = [nn.BatchNorm(momentum=0.9, name=f"bn_conv{i}") for i in range(len(self.convs))]
        self.primary = PrimaryCapsules(self.primary_types, self.primary_dim, self.primary_kernel, self.primary_stride)
        self.classes = ClassCapsules(self.num_classes, self.capsule_dim, self.routing_iterations)
        self.decoder = Decoder(tuple(self.image_shape), tuple(self.decoder_sizes))

    def capsules(self, x, train: bool = False):
        """(B, H, W, C) images -> (B, num_classes, capsule_dim) class capsules."""
        for k, conv in enumerate(self.convs):
            x = conv(x)
            if self.batch_norm:
                x = self.norms[k](x, use_running_average=not train)
            x = nn.relu(x)
        return self.classes(self.primary(x))

    def decode(self, capsules, mask):
        """(B, K, D) class capsules, (B, K) mask -> (B, *image_shape) reconstructions."""
        return self.decoder(capsules, mask)

    def __call__(self, x, train: bool = False) -> CapsOutput:
        capsules = self.capsules(x, train)
        capsule_lengths = lengths(capsules)
        return CapsOutput(capsules, capsule_lengths, self.decode(capsules, reconstruction_mask(capsule_lengths)))


def feature_sides(config, image_shape) -> list[int]:
    """The side of the feature map after each stem convolution and after the primary capsules' one, for square
    `image_shape` (VALID padding: `(side - kernel) // stride + 1`); a `UserError` naming the layer whose kernel is
    larger than its input."""
    side = image_shape[0]
    sides = []
    layers = list(zip(config.conv_kernels, config.conv_strides)) + [(config.primary_kernel, config.primary_stride)]
    for i, (kernel, stride) in enumerate(layers):
        what = f"conv_kernels[{i}]={kernel}" if i < len(config.conv_kernels) else f"primary_kernel={kernel}"
        require(
            kernel <= side,
            f"config.{what} is larger than the {side}x{side} map it convolves ({image_shape[0]}x{image_shape[1]} "
            "images); use smaller kernels or strides, or fewer convolutions",
        )
        side = (side - kernel) // stride + 1
        sides.append(side)
    return sides


def make_model(config, num_classes: int, image_shape) -> CapsNet:
    """The network `config` describes, for images of `image_shape`, computing in `config.precision`'s type."""
    feature_sides(config, image_shape)  # a stem too deep for the images is one line here, not an XLA error
    model = CapsNet(
        num_classes,
        tuple(image_shape),
        tuple(config.conv_features),
        tuple(config.conv_kernels),
        tuple(config.conv_strides),
        config.batch_norm,
        config.primary_types,
        config.primary_dim,
        config.primary_kernel,
        config.primary_stride,
        config.capsule_dim,
        config.routing_iterations,
        tuple(config.decoder_sizes),
    )
    return precision.module(model, config)


# ---- the trainer -------------------------------------------------------------------------------------------------


def train_step(state: classifier.ClassifierState, batch, key, augment_fn=None, weight=RECONSTRUCTION_WEIGHT):
    """One optimiser step on the margin loss plus `weight` x the squared error of the reconstruction from the true
    class's capsule; `batch` = (images (B,H,W,C), labels (B,)). With `augment_fn` (`lepton_jax/techniques/
    augment.py`, drawn from its own stream of `key`) the network sees, and reconstructs, the augmented images."""
    images, labels = batch
    if augment_fn is not None:
        images = augment_fn(jax.random.fold_in(key, 1), images)

    def loss_fn(params):
        # The network's own reconstruction (from the longest capsule) is unused here: jit drops its computation.
        out, model_state = state.train_forward(params, images, key)
        mask = reconstruction_mask(out.lengths, labels)
        reconstructions = state.apply_fn(params, out.capsules, mask, method="decode")
        margin = jnp.mean(margin_loss(out.lengths, jax.nn.one_hot(labels, out.lengths.shape[-1])))
        error = jnp.mean(squared_error(reconstructions, images))
        return margin + weight * error, (margin, error, out.lengths, model_state)

    (loss, (margin, error, capsule_lengths, model_state)), grads = precision.value_and_grad(
        loss_fn, state.opt_state, has_aux=True
    )(state.params)
    state = state.apply_gradients(grads=grads).replace(model_state=model_state)
    return state, {
        "train/loss": loss,
        "train/margin_loss": margin,
        "train/reconstruction_loss": weight * error,
        "train/accuracy": jnp.mean(jnp.argmax(capsule_lengths, -1) == labels),
    }


def make_outputs(model: CapsNet, seed_loop: str = "vmap"):
    """Jitted `(variables with a seed axis, images (N,H,W,C)) -> (lengths (seeds, N, K), squared errors of the
    reconstructions from the longest capsules (seeds, N))`, in chunks of the classifier's `EVAL_CHUNK` images."""

    def one_seed(variables, images):
        def chunk(x):
            out = model.apply(variables, x)
            return out.lengths, squared_error(out.reconstructions, x)

        return epochs.map_in_chunks(chunk, images, classifier.EVAL_CHUNK)

    return jax.jit(seeds.over_seeds(one_seed, (0, None), seed_loop))


def make_evaluate(outputs, prefix: str = "test", weight=RECONSTRUCTION_WEIGHT):
    """`(variables with a seed axis, images, labels) -> {<prefix>/loss, margin_loss, reconstruction_loss, accuracy,
    error}`, each (seeds,), from `outputs` (`make_outputs`: the reconstructions, as at test, from the longest
    capsule). `outputs` stays its own program, so the final report's predictions reuse its compilation."""

    @jax.jit
    def scores(capsule_lengths, errors, labels):
        targets = jax.nn.one_hot(labels, capsule_lengths.shape[-1])
        margin = jnp.mean(jax.vmap(margin_loss, in_axes=(0, None))(capsule_lengths, targets), axis=-1)
        accuracy = jnp.mean(jnp.argmax(capsule_lengths, -1) == labels, axis=-1)
        reconstruction = weight * jnp.mean(errors, axis=-1)
        return {
            f"{prefix}/loss": margin + reconstruction,
            f"{prefix}/margin_loss": margin,
            f"{prefix}/reconstruction_loss": reconstruction,
            f"{prefix}/accuracy": accuracy,
            f"{prefix}/error": 1.0 - accuracy,
        }

    def evaluate(variables, images, labels):
        return scores(*outputs(variables, images), labels)

    evaluate.scores = scores  # the metrics of outputs already computed
    return evaluate


def perturb_dimensions(capsule: jax.Array, deltas) -> jax.Array:
    """(D,) capsule -> (D, S, D): row d, column s is the capsule with `deltas[s]` added to its dimension d."""
    dim = capsule.shape[-1]
    return capsule + jnp.eye(dim)[:, None, :] * jnp.asarray(deltas, capsule.dtype)[None, :, None]


def pictures(model: CapsNet, variables, images, title: str, plots: str, count: int = 16) -> None:
    """`reconstructions.png` (the first `count` of `images` and their reconstructions from the longest capsule)
    and `capsule_dimensions.png` (the first image's predicted class capsule, each dimension moved by
    `PERTURBATIONS`, decoded), from one seed's `variables`."""
    out = jax.jit(model.apply)(variables, images[:count])
    pairs = np.concatenate([np.asarray(images[:count]), np.asarray(out.reconstructions)])
    plotting.image_grid(
        pairs,
        os.path.join(plots, "reconstructions.png"),
        count,
        f"{title}, seed 0: test images, reconstructed from the longest capsule",
        row_labels=("input", "reconstruction"),
    )
    predicted = int(jnp.argmax(out.lengths[0]))
    moved = perturb_dimensions(out.capsules[0, predicted], PERTURBATIONS)  # (D, S, D)
    dim, steps = moved.shape[:2]
    # Every class row holds the moved capsule; the mask keeps the predicted class's alone.
    capsules = jnp.broadcast_to(moved.reshape(dim * steps, 1, dim), (dim * steps, out.capsules.shape[1], dim))
    mask = jax.nn.one_hot(jnp.full(dim * steps, predicted), out.capsules.shape[1])
    decoded = jax.jit(functools.partial(model.apply, method="decode"))(variables, capsules, mask)
    plotting.image_grid(
        np.asarray(decoded),
        os.path.join(plots, "capsule_dimensions.png"),
        steps,
        f"{title}, seed 0: test image 0, predicted {predicted};\neach dimension of its capsule moved by "
        f"{PERTURBATIONS[0]:g} to {PERTURBATIONS[-1]:g} in steps of {PERTURBATIONS[1] - PERTURBATIONS[0]:g}",
        row_labels=[f"dim {d}" for d in range(dim)],
    )


def run(config, workdir: str, data: image_data.ImageData | None = None):
    """Trains per `config` into `workdir`; returns (final state with a seed axis, results)."""
    data = image_data.select_classes(
        data or image_data.load(config.dataset, config.data_dir), config.get("classes", "")
    )
    model = make_model(config, data.num_classes, data.image_shape)
    mesh = parallel.mesh_from_config(config)
    train_host, val_host = classifier.split_training(data, config)
    train = epochs.to_device(train_host, mesh)
    test_images, test_labels = epochs.to_device((data.test_images, data.test_labels), mesh)
    weight = config.reconstruction_weight
    step = functools.partial(train_step, augment_fn=augment.make(config), weight=weight)
    seed_loop = config.get("seed_loop", "vmap")
    epoch_fn = epochs.make_epoch(step, config.batch_size, mesh, seed_loop=seed_loop)
    outputs = make_outputs(model, seed_loop)
    evaluate = make_evaluate(outputs, weight=weight)
    init_one = classifier.make_init(config, model, data.image_shape, len(train_host[0]) // config.batch_size)

    validate = None
    if val_host is not None:
        val_images, val_labels = epochs.to_device(val_host, mesh)
        evaluate_val = make_evaluate(outputs, "val", weight)
        validate = lambda variables: evaluate_val(variables, val_images, val_labels)  # noqa: E731

    def final(variables):
        capsule_lengths, errors = outputs(variables, test_images)
        predictions = np.asarray(jnp.argmax(capsule_lengths, -1))
        report = classifier.class_report(data.test_labels, predictions, data.num_classes)
        per_seed = {f"test/{k}": v for k, v in report.items() if k != "confusion"}
        evaluation = evaluate.scores(capsule_lengths, errors, test_labels)
        per_seed |= {name: np.asarray(value) for name, value in evaluation.items() if name != "test/accuracy"}
        if parallel.is_main_process():
            plots = classifier.plots_dir(workdir)
            classifier.report_plots(data, data.test_images, data.test_labels, predictions, report["confusion"], plots)
            pictures(model, seeds.tree_slice(variables, 0), data.test_images, f"CapsNet on {data.name}", plots)
        return run_lib.seed_summary(per_seed)

    return classifier.fit_images(
        config,
        workdir,
        model,
        mesh,
        init_one=init_one,
        image_shape=data.image_shape,
        epoch=lambda state: epoch_fn(state, train),
        num_train=len(train_host[0]),
        validate=validate,
        evaluate=lambda variables: evaluate(variables, test_images, test_labels),
        final=final,
        plot_keys=("train/accuracy", "test/accuracy"),
        title=f"CapsNet on {data.name}",
        desc=f"capsnet {data.name}",
        augment_images=data.train_images[:8],
    )


@registry.register("capsnet")
def train_and_evaluate(config, workdir: str) -> dict:
    """The launcher's entry point."""
    return run(config, workdir)[1]
