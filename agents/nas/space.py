"""The CNN search space: an architecture as a fixed-length vector of choices (static shape, so that any batch of
architectures is one array and every search method, the controller included, works on the same encoding).

A network has `depth` (1..`max_layers`) convolutional layers, each Conv(kernel x kernel, filters, stride 1, SAME)
followed by a ReLU; the last layer's output is averaged over the image and a dense layer gives the class logits.
Layer 0 reads the image. Layer i >= 1 reads the concatenation (along channels) of layer i-1's output and of the
inputs its skip connections choose among its `i` anchors (Zoph & Le 2017's anchor points): the image, then layers
0 .. i-2.

The decisions, in the order the controller makes them:

    depth                                   one of 1 .. max_layers
    for each layer i < max_layers:
        filters[i]                          one of `filters`   (e.g. 8, 16, 32, 64)
        kernel[i]                           one of `kernels`   (odd sizes, e.g. 1, 3, 5)
        skip[i][a] for a < i                0 or 1: anchor a (0: the image, a >= 1: layer a-1) feeds layer i

so for `max_layers` L there are 1 + 2L + L(L-1)/2 decisions (15 for L = 4). The decisions of layers at or past the
depth do not change the network: they are the sequence's suffix (every layer's decisions follow those of the layers
before it), and the *canonical* vector sets them to 0, so that each network has one vector. An autoregressive
policy's probability of a network is that of its active decisions (the suffix sums out).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lepton_jax.errors import UserError

KINDS = ("depth", "filters", "kernel", "skip")  # the decision types; one softmax head each in the controller


class Decision(NamedTuple):
    """One position of the architecture vector."""

    kind: str  # one of KINDS
    layer: int  # the layer it belongs to (-1: depth)
    anchor: int = -1  # skip decisions: 0 the image, a >= 1 layer a - 1


class Architecture(NamedTuple):
    """A decoded network: the chosen values, one entry per layer up to its depth."""

    filters: tuple[int, ...]
    kernels: tuple[int, ...]
    skips: tuple[tuple[int, ...], ...]  # per layer, its chosen anchors (0: the image, a >= 1: layer a - 1)

    @property
    def depth(self) -> int:
        return len(self.filters)


class SearchSpace(NamedTuple):
    """The space's sizes (hashable: it is a static argument of every jitted function that uses it)."""

    max_layers: int = 4
    filters: tuple[int, ...] = (8, 16, 32, 64)
    kernels: tuple[int, ...] = (1, 3, 5)

    @property
    def decisions(self) -> tuple[Decision, ...]:
        out = [Decision("depth", -1)]
        for layer in range(self.max_layers):
            out += [Decision("filters", layer), Decision("kernel", layer)]
            out += [Decision("skip", layer, anchor) for anchor in range(layer)]
        return tuple(out)

    @property
    def length(self) -> int:
        return len(self.decisions)

    def choices(self, kind: str) -> int:
        """How many values a decision of `kind` has."""
        return {"depth": self.max_layers, "filters": len(self.filters), "kernel": len(self.kernels), "skip": 2}[kind]

    @property
    def num_choices(self) -> np.ndarray:
        """(D,) int32: the number of values of each position."""
        return np.array([self.choices(d.kind) for d in self.decisions], np.int32)

    @property
    def max_filters(self) -> int:
        return max(self.filters)

    @property
    def max_kernel(self) -> int:
        return max(self.kernels)

    def input_channels(self, layer: int) -> int:
        """The channels of the super-network's input to `layer`: the image (1) for layer 0; else layer-1's output,
        the image and layers 0 .. layer-2, each at the largest width."""
        return 1 if layer == 0 else self.max_filters * layer + 1

    def num_architectures(self) -> int:
        """The number of distinct networks (canonical vectors) in the space."""
        per_layer = len(self.filters) * len(self.kernels)
        return sum(int(np.prod([per_layer * 2**i for i in range(depth)])) for depth in range(1, self.max_layers + 1))


def check_space(max_layers: int, filters, kernels) -> SearchSpace:
    """The space of a config's values; one `UserError` line for an unusable one."""
    if not kernels or any(k < 1 or k % 2 == 0 for k in kernels) or len(set(kernels)) != len(kernels):
        raise UserError(f"config.kernel_choices={tuple(kernels)} must be distinct odd sizes, e.g. (1, 3, 5)")
    if not filters or len(set(filters)) != len(filters):
        raise UserError(f"config.filter_choices={tuple(filters)} must be distinct sizes, e.g. (8, 16, 32, 64)")
    return SearchSpace(int(max_layers), tuple(int(f) for f in filters), tuple(int(k) for k in kernels))


def active(space: SearchSpace, arch: jax.Array) -> jax.Array:
    """(..., D) bool: the decisions that shape the network of each (..., D) vector (those of layers < depth)."""
    layers = jnp.array([d.layer for d in space.decisions])
    return layers < arch[..., :1] + 1  # depth = choice + 1; the depth decision (layer -1) is always active


def canonical(space: SearchSpace, arch: jax.Array) -> jax.Array:
    """(..., D) the vectors with every inactive decision set to 0."""
    return jnp.where(active(space, arch), arch, 0).astype(jnp.int32)


def uniform(space: SearchSpace, key: jax.Array, num: int) -> jax.Array:
    """(num, D) canonical vectors, each decision drawn uniformly among its values (random search's distribution:
    the depth uniform, then every active decision uniform)."""
    draws = jax.random.randint(key, (num, space.length), 0, jnp.asarray(space.num_choices))
    return canonical(space, draws)


def encode(space: SearchSpace, arch: Architecture) -> np.ndarray:
    """The canonical (D,) int32 vector of a decoded network."""
    if not 1 <= arch.depth <= space.max_layers:
        raise UserError(f"an architecture has 1 to {space.max_layers} layers, got {arch.depth}")
    for layer, anchors in enumerate(arch.skips):
        if any(not 0 <= a < layer for a in anchors):
            raise UserError(f"layer {layer} reads anchors 0 .. {layer - 1} (0: the image), got {anchors}")
    out = np.zeros(space.length, np.int32)
    for position, decision in enumerate(space.decisions):
        layer = decision.layer
        if decision.kind == "depth":
            out[position] = arch.depth - 1
        elif layer >= arch.depth:
            continue
        elif decision.kind == "filters":
            out[position] = space.filters.index(arch.filters[layer])
        elif decision.kind == "kernel":
            out[position] = space.kernels.index(arch.kernels[layer])
        else:
            out[position] = int(decision.anchor in arch.skips[layer])
    return out


def decode(space: SearchSpace, vector) -> Architecture:
    """The network of a (D,) vector (its inactive decisions ignored)."""
    vector = np.asarray(vector)
    depth = int(vector[0]) + 1
    filters, kernels, skips = [0] * depth, [0] * depth, [[] for _ in range(depth)]
    for position, decision in enumerate(space.decisions):
        layer, value = decision.layer, int(vector[position])
        if decision.kind == "depth" or layer >= depth:
            continue
        if decision.kind == "filters":
            filters[layer] = space.filters[value]
        elif decision.kind == "kernel":
            kernels[layer] = space.kernels[value]
        elif value:
            skips[layer].append(decision.anchor)
    return Architecture(tuple(filters), tuple(kernels), tuple(tuple(s) for s in skips))


def describe(arch: Architecture) -> str:
    """One line: `conv5x5-32 | conv3x3-64 +image | conv1x1-16 +image+L0` (L<j>: layer j's output)."""
    layers = []
    for i in range(arch.depth):
        extra = "".join("+image" if a == 0 else f"+L{a - 1}" for a in arch.skips[i])
        layers.append(f"conv{arch.kernels[i]}x{arch.kernels[i]}-{arch.filters[i]}{' ' + extra if extra else ''}")
    return " | ".join(layers)


def num_params(arch: Architecture, num_classes: int) -> int:
    """The parameters of the network itself (not of the super-network it is trained in)."""
    total, widths = 0, []
    for i in range(arch.depth):
        inputs = 1 if i == 0 else widths[i - 1] + sum(1 if a == 0 else widths[a - 1] for a in arch.skips[i])
        total += arch.kernels[i] ** 2 * inputs * arch.filters[i] + arch.filters[i]
        widths.append(arch.filters[i])
    return total + widths[-1] * num_classes + num_classes
