"""Capsule networks with dynamic routing (Sabour, Frosst & Hinton 2017), trainable through the launcher.

    python -m scripts.train --config=lepton_jax/vision/configs/capsnet.py:mnist --config.seed_loop=unroll
    python -m scripts.train --config=lepton_jax/vision/configs/capsnet.py:digits  # no files needed
    python -m scripts.train --config=lepton_jax/vision/configs/capsnet.py:multi_mnist  # two overlapping digits

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

MultiMNIST (Sabour et al. section 6; `config.dataset = "multi_<source>"`, e.g. `multi_mnist`): each image overlays
two digits of different classes (`lepton_jax.vision.data.multi_mnist`, built as the multi-task CNN's, with each
digit's own image kept). Both digits' classes are present in the margin loss's targets (a class shared by both
would count once); in training each digit is decoded from its own class capsule, the others masked, and compared
with its own image, the reconstruction loss the sum over the two. At test the two longest capsules are the
network's reading: an image is right when both its digits' classes are among them (`test/accuracy`; the paper's
5.2 % error is `test/error`). The capsules form a set, so which of them is the top-left (`left`) digit and which the
bottom-right (`right`) is read from their poses: each of the two is decoded alone and the reconstructions are put
in order of their centre of mass along the diagonal (the construction shifts the first digit up and left, the
second down and right; the true digits' own images are always in that order). Per position, `test/left/accuracy`,
`test/right/accuracy` and the rest of the classifier's report, as the multi-task CNN reports them; the
reconstruction loss at test is that of the ordered reconstructions against the digits at their positions.
`plots/reconstructions.png` draws test images, their two digits and the two reconstructions, overlaid in red (left)
and green (right) as the paper's Fig. 5.
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
from lepton_jax.vision import capsnet_multi, classifier
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


def present(labels: jax.Array, num_classes: int) -> jax.Array:
    """The margin loss's targets T_k (B, K): one-hot of labels (B,); for labels (B, T) of T digits an image's
    classes, each once (a class two digits share is present once)."""
    targets = jax.nn.one_hot(labels, num_classes)
    return targets if labels.ndim == 1 else jnp.max(targets, axis=-2)


def recognised(capsule_lengths: jax.Array, labels: jax.Array) -> jax.Array:
    """(..., B) whether an image is read right from its capsule lengths (..., B, K): labels (B,), the longest
    capsule is the label's; labels (B, T) of T digits, every digit's class is among the T longest capsules."""
    if labels.ndim == 1:
        return jnp.argmax(capsule_lengths, -1) == labels
    longest = jax.lax.top_k(capsule_lengths, labels.shape[-1])[1]  # (..., B, T), ties to the lower class
    return jnp.all(jnp.any(labels[..., :, None] == longest[..., None, :], axis=-1), axis=-1)


def reconstruction_mask(capsule_lengths: jax.Array, labels: jax.Array | None = None) -> jax.Array:
    """(B, K) one-hot float mask of the class capsule the decoder sees: the true class's (`labels` (B,), in
    training), or with no labels the longest capsule's (at test)."""
    chosen = jnp.argmax(capsule_lengths, axis=-1) if labels is None else labels
    return jax.nn.one_hot(chosen, capsule_lengths.shape[-1], dtype=capsule_lengths.dtype)


def squared_error(reconstructions: jax.Array, images: jax.Array) -> jax.Array:
    """(B,) the sum over pixels (and over the digits of (B, T, H, W, C) images) of the squared differences (the
    loss is `RECONSTRUCTION_WEIGHT` times it)."""
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
    augment.py`, drawn from its own stream of `key`) the network sees, and reconstructs, the augmented images.

    Images of several digits (MultiMNIST) come as each digit alone, `batch` = (digits (B,T,H,W,C), labels (B,T)):
    the network sees their pixelwise maximum (moved as a whole by `augment_fn`), every digit's class is a target of
    the margin loss (`present`), and each digit is decoded from its own class capsule and compared with its own
    image, the squared errors summed over the digits. `train/accuracy` is `recognised`'s."""
    images, labels = batch
    multi = labels.ndim == 2
    if augment_fn is not None:
        augment_key = jax.random.fold_in(key, 1)
        images = (
            capsnet_multi.augment_digits(augment_fn, augment_key, images) if multi else augment_fn(augment_key, images)
        )
    inputs = jnp.max(images, axis=1) if multi else images  # (B, H, W, C)

    def loss_fn(params):
        # The network's own reconstruction (from the longest capsule) is unused here: jit drops its computation.
        out, model_state = state.train_forward(params, inputs, key)
        decode = functools.partial(state.apply_fn, params, method="decode")
        if multi:
            reconstructions = capsnet_multi.decode_each(decode, out.capsules, labels)  # (B, T, H, W, C)
        else:
            reconstructions = decode(out.capsules, reconstruction_mask(out.lengths, labels))
        margin = jnp.mean(margin_loss(out.lengths, present(labels, out.lengths.shape[-1])))
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
        "train/accuracy": jnp.mean(recognised(capsule_lengths, labels)),
    }


def read_digits(model: CapsNet, variables, digits: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The network on images of T digits, given as each digit alone (B, T, H, W, C): on their pixelwise maximum, its
    T longest capsules decoded one by one and put in position order (`position_order`).

    Returns:
      (lengths (B, K), the class read at each position (B, T), the reconstructions in that order (B, T, H, W, C)).
    """
    capsules = model.apply(variables, jnp.max(digits, axis=1), method="capsules")
    capsule_lengths = lengths(capsules)
    longest = jax.lax.top_k(capsule_lengths, digits.shape[1])[1]  # (B, T)
    reconstructions = capsnet_multi.decode_each(
        functools.partial(model.apply, variables, method="decode"), capsules, longest
    )
    order = capsnet_multi.position_order(reconstructions)
    reconstructions = jnp.take_along_axis(reconstructions, order[:, :, None, None, None], axis=1)
    return capsule_lengths, jnp.take_along_axis(longest, order, axis=1), reconstructions


def make_outputs(model: CapsNet, seed_loop: str = "vmap"):
    """Jitted `(variables with a seed axis, images (N,H,W,C)) -> (lengths (seeds, N, K), squared errors of the
    reconstructions from the longest capsules (seeds, N))`, in chunks of the classifier's `EVAL_CHUNK` images.

    Images of T digits, given as each digit alone (N, T, H, W, C), give `read_digits`'s lengths, the squared errors
    of its reconstructions against the digits at their positions (summed over the digits), and the classes read
    at the positions (seeds, N, T)."""

    def one_seed(variables, images):
        def chunk(x):
            if x.ndim == 5:
                capsule_lengths, classes, reconstructions = read_digits(model, variables, x)
                return capsule_lengths, squared_error(reconstructions, x), classes
            out = model.apply(variables, x)
            return out.lengths, squared_error(out.reconstructions, x)

        return epochs.map_in_chunks(chunk, images, classifier.EVAL_CHUNK)

    return jax.jit(seeds.over_seeds(one_seed, (0, None), seed_loop))


def make_evaluate(outputs, prefix: str = "test", weight=RECONSTRUCTION_WEIGHT, tasks: tuple[str, ...] = ()):
    """`(variables with a seed axis, images, labels) -> {<prefix>/loss, margin_loss, reconstruction_loss, accuracy,
    error}`, each (seeds,), from `outputs` (`make_outputs`: the reconstructions, as at test, from the longest
    capsule). `outputs` stays its own program, so the final report's predictions reuse its compilation.

    With images of several digits (labels (N, T)) the accuracy is `recognised`'s (every digit among the T longest
    capsules), and `tasks` names the positions: `<prefix>/<task>/accuracy` is the share of images whose class read
    at that position (`read_digits`) is the digit's there."""

    @jax.jit
    def scores(capsule_lengths, errors, labels, positions=None):
        targets = present(labels, capsule_lengths.shape[-1])
        margin = jnp.mean(jax.vmap(margin_loss, in_axes=(0, None))(capsule_lengths, targets), axis=-1)
        accuracy = jnp.mean(recognised(capsule_lengths, labels), axis=-1)
        reconstruction = weight * jnp.mean(errors, axis=-1)
        out = {
            f"{prefix}/loss": margin + reconstruction,
            f"{prefix}/margin_loss": margin,
            f"{prefix}/reconstruction_loss": reconstruction,
            f"{prefix}/accuracy": accuracy,
            f"{prefix}/error": 1.0 - accuracy,
        }
        for t, task in enumerate(tasks if positions is not None else ()):
            out[f"{prefix}/{task}/accuracy"] = jnp.mean(positions[..., t] == labels[:, t], axis=-1)
        return out

    def evaluate(variables, images, labels):
        capsule_lengths, errors, *positions = outputs(variables, images)
        return scores(capsule_lengths, errors, labels, *positions)

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


def digit_pictures(model: CapsNet, variables, digits, labels, title: str, plots: str, count: int = 8) -> None:
    """`reconstructions.png` for images of two digits (the paper's Fig. 5), from one seed's `variables`: the first
    `count` of `digits` (N, 2, H, W, C), each digit alone, as the input image, as its two digits overlaid in red (the
    left) and green (the right), and as `read_digits`'s two reconstructions in the same colours; `labels` (N, 2)
    and the classes read at each position under the columns."""
    digits = np.asarray(digits[:count])
    _, classes, reconstructions = jax.jit(functools.partial(read_digits, model))(variables, digits)

    def coloured(pair):  # (n, 2, H, W, 1) -> (n, H, W, 3): the first digit red, the second green
        return np.concatenate([pair[:, 0], pair[:, 1], np.zeros_like(pair[:, 0])], axis=-1)

    inputs = np.repeat(digits.max(axis=1), 3, axis=-1)  # grey as RGB
    rows = np.concatenate([inputs, coloured(digits), coloured(np.asarray(reconstructions))])
    read = "  ".join(f"{a}{b}→{c}{d}" for (a, b), (c, d) in zip(labels[:count], np.asarray(classes)))
    plotting.image_grid(
        rows,
        os.path.join(plots, "reconstructions.png"),
        len(digits),
        f"{title}, seed 0: test images, their two digits and the\nreconstructions from the two longest capsules "
        "(red: left, green: right)",
        row_labels=("input", "digits", "reconstructions"),
        xlabel=f"true → read (left, right digit)\n{read}",
    )


def run(config, workdir: str, data: image_data.ImageData | None = None):
    """Trains per `config` into `workdir`; returns (final state with a seed axis, results). `data`: the images
    `config.dataset` names (None: read from `config.data_dir`), for a `multi_` dataset those MultiMNIST is built
    from (`load_data`)."""
    data = capsnet_multi.load_data(config, data)
    multi = isinstance(data, image_data.MultiImageData)
    tasks = data.tasks if multi else ()
    # MultiMNIST's examples are each image's digits alone, (N, T, H, W, C) with labels (N, T): the network's input
    # is their pixelwise maximum, the image itself (`train_step`, `read_digits`).
    examples = data._replace(train_images=data.train_components, test_images=data.test_components) if multi else data
    model = make_model(config, data.num_classes, data.image_shape)
    mesh = parallel.mesh_from_config(config)
    train_host, val_host = classifier.split_training(examples, config)
    train = epochs.to_device(train_host, mesh)
    test_images, test_labels = epochs.to_device((examples.test_images, examples.test_labels), mesh)
    weight = config.reconstruction_weight
    step = functools.partial(train_step, augment_fn=augment.make(config), weight=weight)
    seed_loop = config.get("seed_loop", "vmap")
    epoch_fn = epochs.make_epoch(step, config.batch_size, mesh, seed_loop=seed_loop)
    outputs = make_outputs(model, seed_loop)
    evaluate = make_evaluate(outputs, weight=weight, tasks=tasks)
    init_one = classifier.make_init(config, model, data.image_shape, len(train_host[0]) // config.batch_size)

    validate = None
    if val_host is not None:
        val_images, val_labels = epochs.to_device(val_host, mesh)
        evaluate_val = make_evaluate(outputs, "val", weight, tasks)
        validate = lambda variables: evaluate_val(variables, val_images, val_labels)  # noqa: E731

    def final(variables):
        capsule_lengths, errors, *positions = outputs(variables, test_images)
        plots = classifier.plots_dir(workdir)
        # The classifier's report on the class read: the longest capsule's, or per position the class read there.
        if multi:
            reports = {f"{task}/": (data.test_labels[:, t], positions[0][..., t]) for t, task in enumerate(tasks)}
        else:
            reports = {"": (data.test_labels, jnp.argmax(capsule_lengths, -1))}
        per_seed = {}
        for prefix, (labels, predicted) in reports.items():
            predictions = np.asarray(predicted)
            report = classifier.class_report(labels, predictions, data.num_classes)
            per_seed |= {f"test/{prefix}{k}": v for k, v in report.items() if k != "confusion"}
            if parallel.is_main_process():
                named = data._replace(name=f"{data.name} {prefix[:-1]} digit") if prefix else data
                confusion, where = report["confusion"], os.path.join(plots, prefix)
                classifier.report_plots(named, data.test_images, labels, predictions, confusion, where)
        evaluation = evaluate.scores(capsule_lengths, errors, test_labels, *positions)
        per_seed |= {name: np.asarray(value) for name, value in evaluation.items() if name not in per_seed}
        if parallel.is_main_process():
            first, title = seeds.tree_slice(variables, 0), f"CapsNet on {data.name}"
            if multi:
                digit_pictures(model, first, data.test_components, data.test_labels, title, plots)
            else:
                pictures(model, first, data.test_images, title, plots)
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
        plot_keys=("train/accuracy", "test/accuracy") + tuple(f"test/{task}/accuracy" for task in tasks),
        title=f"CapsNet on {data.name}",
        desc=f"capsnet {data.name}",
        augment_images=data.train_images[:8],
    )


@registry.register("capsnet")
def train_and_evaluate(config, workdir: str) -> dict:
    """The launcher's entry point."""
    return run(config, workdir)[1]
