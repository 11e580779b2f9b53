"""Children: a batch of networks of different architectures trained together, in one compiled program.

Every child is the same *super-network* (`SuperNet`): each layer has the space's largest filter count and kernel,
and reads every anchor it could read. A child's architecture (a (D,) vector of `agents.nas.space`) becomes masks:

- kernel taps: a k x k child kernel is the centre of the largest kernel, the outer taps zeroed (with SAME padding and
  stride 1 the two convolutions are equal);
- channels: a layer of f filters keeps its first f output channels and zeroes the rest (after the ReLU, so a zeroed
  channel is exactly 0 and every later layer's weights on it are unused);
- skips: an anchor the child does not read is zeroed in the concatenated input;
- depth: layers at or past the depth are identities (their output is their predecessor's).

So a masked child computes exactly the network `ChildNet` builds directly at its own sizes, given the same weights
(`child_params` copies them out; tested). Each child has its own copy of the super-network's parameters, drawn at
its own fan-ins (He normal, as `ChildNet` draws its own), and its own Adam state. `make_child_trainer` trains a
batch of children (any mix of architectures: the shapes are static) for a fixed budget, then measures each one's
accuracy on held-out images: the reward of the search. The children are the run axis of
`lepton_jax.seeds.over_seeds` (`config.seed_loop`: `vmap` batches them; XLA:CPU turns batched convolutions into
grouped ones, many times slower than one per child, so `auto` unrolls them on a CPU).
"""

from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct

from agents.nas.space import Architecture, SearchSpace
from lepton_jax import epochs as epochs_lib
from lepton_jax import parallel, seeds
from lepton_jax.techniques import optim, precision

EVAL_CHUNK = 500  # images per forward pass when measuring accuracy (bounds the activations' memory)


def layer_masks(space: SearchSpace, arch: jax.Array) -> dict:
    """The masks of one (D,) architecture vector (traced):

    taps (L, K, K): each layer's kernel taps; channels (L, F): each layer's output channels; skips (L, L): whether
    layer i reads anchor a (a < i); active (L,): whether layer i is below the depth. K, F: the largest kernel and
    filter count.
    """
    num_layers, big = space.max_layers, space.max_kernel
    filters = jnp.asarray(space.filters)
    kernels = jnp.asarray(space.kernels)
    skips = jnp.zeros((num_layers, num_layers), bool)
    width, size = [], []
    for position, decision in enumerate(space.decisions):
        if decision.kind == "filters":
            width.append(filters[arch[position]])
        elif decision.kind == "kernel":
            size.append(kernels[arch[position]])
        elif decision.kind == "skip":
            skips = skips.at[decision.layer, decision.anchor].set(arch[position] == 1)
    width, size = jnp.stack(width), jnp.stack(size)  # (L,)
    offset = jnp.abs(jnp.arange(big) - big // 2)  # (K,) distance of each tap from the centre
    inside = offset[None, :] <= size[:, None] // 2  # (L, K)
    return {
        "taps": inside[:, :, None] & inside[:, None, :],
        "channels": jnp.arange(space.max_filters)[None, :] < width[:, None],
        "skips": skips,
        "active": jnp.arange(num_layers) <= arch[0],
    }


class SuperNet(nn.Module):
    """`(images (B, H, W, 1), arch (D,)) -> logits (B, classes)`: the masked super-network of `space`.

    Parameters: `conv<i>` {kernel (K, K, C_i, F), bias (F,)} with C_i = `space.input_channels(i)`, the input's
    channels ordered [layer i-1 (F; the image for i = 0), image (1), layer 0 (F), ..., layer i-2 (F)]; and
    `head` (Dense F -> classes). Kernels are drawn standard normal: `init_child` scales them to each child's fan-in.
    """

    space: SearchSpace
    num_classes: int = 10

    @nn.compact
    def __call__(self, images, arch):
        space, masks = self.space, layer_masks(self.space, arch)
        big, width = space.max_kernel, space.max_filters
        outputs = []  # each (B, H, W, F)
        for i in range(space.max_layers):
            if i == 0:
                x = images
            else:
                anchors = [images] + outputs[: i - 1]  # anchor a: the image, then layer a - 1
                x = jnp.concatenate([outputs[i - 1]] + [z * masks["skips"][i, a] for a, z in enumerate(anchors)], -1)
            kernel = self.param(f"conv{i}_kernel", nn.initializers.normal(1.0), (big, big, x.shape[-1], width))
            bias = self.param(f"conv{i}_bias", nn.initializers.zeros, (width,))
            kernel = kernel * masks["taps"][i][:, :, None, None]
            y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
            y = nn.relu(y + bias) * masks["channels"][i]
            outputs.append(y if i == 0 else jnp.where(masks["active"][i], y, outputs[i - 1]))
        features = outputs[-1].mean(axis=(1, 2))  # (B, F): global average pooling
        return nn.Dense(self.num_classes, kernel_init=nn.initializers.normal(1.0), name="head")(features)


HE_NORMAL = nn.initializers.variance_scaling(2.0, "fan_in", "normal")  # std sqrt(2 / fan-in), for ReLU layers


class ChildNet(nn.Module):
    """The same network built directly at its own sizes: `conv<i>` (nn.Conv, k x k, f filters, SAME) over the
    concatenation [layer i-1, chosen anchors in order], ReLU, global average pooling, `head`; He normal kernels."""

    arch: Architecture
    num_classes: int = 10

    @nn.compact
    def __call__(self, images):
        outputs = []
        for i in range(self.arch.depth):
            if i == 0:
                x = images
            else:
                chosen = [images if a == 0 else outputs[a - 1] for a in self.arch.skips[i]]
                x = jnp.concatenate([outputs[i - 1], *chosen], -1)
            size = self.arch.kernels[i]
            conv = nn.Conv(self.arch.filters[i], (size, size), padding="SAME", kernel_init=HE_NORMAL, name=f"conv{i}")
            outputs.append(nn.relu(conv(x)))
        return nn.Dense(self.num_classes, kernel_init=HE_NORMAL, name="head")(outputs[-1].mean(axis=(1, 2)))


def fan_ins(space: SearchSpace, arch: jax.Array) -> dict:
    """Each layer's fan-in (kernel taps x input channels read) in the child `arch` (traced), and the head's."""
    masks = layer_masks(space, arch)
    width = masks["channels"].sum(1)  # (L,) filters of each layer
    taps = masks["taps"].sum((1, 2))
    out = {}
    for i in range(space.max_layers):
        reads = 1  # layer 0: the image
        if i > 0:  # layer i-1, the image if chosen, layer a-1 if chosen
            reads = width[i - 1] + masks["skips"][i, 0]
            reads += sum(masks["skips"][i, a] * width[a - 1] for a in range(1, i))
        out[f"conv{i}_kernel"] = taps[i] * reads
    depth = arch[0] + 1
    out["head"] = width[depth - 1]
    return out


def init_child(model: SuperNet, key: jax.Array, arch: jax.Array, image_shape) -> dict:
    """A child's super-network parameters: every kernel normal with std sqrt(2 / fan-in) at the child's own fan-in
    (`HE_NORMAL`, as `ChildNet` draws its own), biases 0. Unused weights are drawn too, and never change."""
    params = model.init(key, jnp.zeros((1, *image_shape)), arch)["params"]
    scale = jax.tree.map(lambda n: jnp.sqrt(2.0 / jnp.maximum(n, 1)), fan_ins(model.space, arch))
    params = {name: (value * scale[name] if name.endswith("kernel") else value) for name, value in params.items()}
    params["head"] = {"kernel": params["head"]["kernel"] * scale["head"], "bias": params["head"]["bias"]}
    return {"params": params}


def child_params(super_params: dict, space: SearchSpace, arch: Architecture) -> dict:
    """The `ChildNet(arch)` parameters that compute what the masked super-network does with `super_params`."""
    params, width, big = super_params["params"], space.max_filters, space.max_kernel
    out = {}
    for i in range(arch.depth):
        size = arch.kernels[i]
        crop = slice(big // 2 - size // 2, big // 2 + size // 2 + 1)
        if i == 0:
            rows = [0]
        else:
            # The super-network's input blocks: layer i-1 at 0, the image at F, layer a-1 at F + 1 + (a-1) F.
            rows = list(range(arch.filters[i - 1]))
            for a in arch.skips[i]:
                start = width + 1 + (a - 1) * width
                rows += [width] if a == 0 else list(range(start, start + arch.filters[a - 1]))
        kernel = params[f"conv{i}_kernel"][crop, crop][:, :, jnp.asarray(rows), : arch.filters[i]]
        out[f"conv{i}"] = {"kernel": kernel, "bias": params[f"conv{i}_bias"][: arch.filters[i]]}
    last = arch.filters[-1]
    out["head"] = {"kernel": params["head"]["kernel"][:last], "bias": params["head"]["bias"]}
    return {"params": out}


@struct.dataclass
class Child:
    """One child's training state (a leading child axis in a batch of them)."""

    params: dict
    opt_state: optax.OptState
    arch: jax.Array  # (D,) int32
    rng: jax.Array


class ChildTrainer(NamedTuple):
    """`train(archs (M, D), keys (M, 2), train_data, eval_data, epochs) -> (accuracy (M,), loss (M,))`: see
    `make_child_trainer`. `init`, `epoch` and `correct` are its jitted parts (exposed for tests)."""

    train: Callable
    init: Callable
    epoch: Callable
    correct: Callable
    place: Callable  # `(images, labels)` host arrays -> on the devices, as `train` takes them


def make_child_trainer(
    space: SearchSpace, num_classes: int, image_shape, batch_size: int, lr: float, mode: str, dtype: str = "f32"
) -> ChildTrainer:
    """Trains batches of children for a fixed budget and measures them: the reward of the search.

    Each of the M children (any architectures) starts from its own parameters (`init_child`, from its own key) and
    takes `epochs` passes of Adam steps at `lr` over the training images in batches of `batch_size`, in its own
    shuffled order (a last partial batch dropped); `train` returns each child's accuracy on the evaluation images
    and its mean training loss over the last epoch. A child's result depends on its architecture and key alone, not
    on the other children of its batch. One jitted step trains all M children on their batches
    (`lepton_jax.epochs.make_epoch`, the children as its run axis: a Python loop over the batches, as XLA:CPU runs
    convolutions many times slower inside a `lax.scan`); `mode` is `config.seed_loop`, how the children share it,
    and `dtype` `config.precision`, the type the children compute in (`lepton_jax.techniques.precision`).
    The data are `(images (N, H, W, 1), labels (N,))` arrays (`place` puts them on the trainer's devices).
    """
    model = SuperNet(space, num_classes)
    settings = ml_collections.ConfigDict({"optimizer": "adam", "lr": lr, "precision": dtype})
    tx = optim.make(settings)
    low = precision.module(model, settings)  # computes in `dtype`; the parameters stay float32
    mesh = parallel.make_mesh()

    def init_one(key, arch):
        init_key, rng = jax.random.split(key)
        params = init_child(model, init_key, arch, image_shape)
        return Child(params, tx.init(params), arch, rng)

    def step(child: Child, batch, key):
        del key  # the children have no stochastic layers
        images, labels = batch

        def loss_fn(params):
            logits = low.apply(params, images, child.arch)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        loss, grads = precision.value_and_grad(loss_fn, child.opt_state)(child.params)
        updates, opt_state = tx.update(grads, child.opt_state, child.params)
        return child.replace(params=optax.apply_updates(child.params, updates), opt_state=opt_state), {"loss": loss}

    def correct_one(child: Child, images, labels):
        return jnp.sum(jnp.argmax(low.apply(child.params, images, child.arch), -1) == labels)

    # Placed where the epoch's step leaves its state (replicated on the mesh), so that the step compiles once.
    init = jax.jit(lambda keys, archs: jax.vmap(init_one)(keys, archs), out_shardings=parallel.replicated(mesh))
    epoch = epochs_lib.make_epoch(step, batch_size, mesh, seed_loop=mode)
    correct = jax.jit(seeds.over_seeds(correct_one, (0, None, None), mode))

    def train(archs, keys, train_data, eval_data, epochs: int):
        children = init(keys, archs)
        for _ in range(epochs):
            children, metrics = epoch(children, train_data)
        images, labels = eval_data
        count = images.shape[0]
        chunk = min(EVAL_CHUNK, count)
        total = 0
        # A Python loop over fixed-size chunks (the last padded, its padding labelled -1: never right), one compile.
        for start in range(0, count, chunk):
            x, y = images[start : start + chunk], labels[start : start + chunk]
            pad = chunk - x.shape[0]
            if pad:
                x = jnp.pad(x, ((0, pad), (0, 0), (0, 0), (0, 0)))
                y = jnp.pad(y, (0, pad), constant_values=-1)
            total = total + correct(children, x, y)
        return total / count, metrics["loss"]

    return ChildTrainer(train, init, epoch, correct, lambda data: epochs_lib.to_device(data, mesh))
