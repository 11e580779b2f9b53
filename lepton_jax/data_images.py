"""Image datasets held whole on the device, and shuffled batches drawn from them inside jitted code.

Datasets: MNIST and anything else in its idx format (Fashion-MNIST, KMNIST, ...) read from the data directory, and
scikit-learn's bundled 8x8 digits, which need no files (tests, and runs without data). Images are float32 in
[0, 1], shape (N, H, W, 1); labels int32.

The idx files are the four standard `*-idx?-ubyte.gz` files (gzipped or not) in `<data_dir>/<dataset>/` or in
`<data_dir>` itself. Every header is checked (magic number, element type, rank, sizes) and so is the payload length,
so a truncated or foreign file is one `UserError` line naming it.

Batching: the whole set lives on the device; `make_epoch` shuffles it per seed with the state's rng in a jitted
function, then dispatches one jitted step per batch that gathers its batch on the device. No Python touches a
batch, and the batch axis is constrained to the mesh's `data` axis, so the same program runs data-parallel on N
devices.
"""

import gzip
import os
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lepton_jax import datasets, parallel
from lepton_jax.errors import UserError

IDX_DATASETS = ("mnist", "fashion_mnist", "kmnist")
DATASETS = IDX_DATASETS + ("digits",)
# idx magic: two zero bytes, the element type (0x08 = uint8), then the rank.
_UINT8 = 0x08
_FILES = {
    "train_images": ("train-images-idx3-ubyte", 3),
    "train_labels": ("train-labels-idx1-ubyte", 1),
    "test_images": ("t10k-images-idx3-ubyte", 3),
    "test_labels": ("t10k-labels-idx1-ubyte", 1),
}
_SIZES = {"train": 60_000, "test": 10_000}
DIGITS_TRAIN = 1500  # the first 1500 of scikit-learn's 1797 digits train, the other 297 test


class ImageData(NamedTuple):
    """A dataset in memory (host numpy arrays)."""

    name: str
    train_images: np.ndarray  # (N, H, W, 1) float32 in [0, 1]
    train_labels: np.ndarray  # (N,) int32
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int = 10

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])


def read_idx(path: str, what: str, rank: int, num: int | None = None) -> np.ndarray:
    """Reads one idx file (gzipped if its name ends in .gz) of uint8 data, checking header and length.

    Args:
      path: the file.
      what: what it should hold, for the error message.
      rank: the expected rank (3 for images, 1 for labels).
      num: the expected number of items (first dimension), or None to accept any.

    Returns:
      A uint8 array with the shape the header gives.
    """
    datasets.require_file(path, what)
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as error:  # BadGzipFile is an OSError; a cut gzip stream is an EOFError
        raise datasets.corrupt(path, what, f"cannot decompress ({error})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise datasets.corrupt(path, what, "not an idx file (bad magic number)")
    if raw[2] != _UINT8 or raw[3] != rank:
        magic = int.from_bytes(raw[:4], "big")
        raise datasets.corrupt(path, what, f"idx magic {magic:#06x}, expected {(_UINT8 << 8) | rank:#06x}")
    header = 4 + 4 * rank
    if len(raw) < header:
        raise datasets.corrupt(path, what, "truncated header")
    dims = struct.unpack(">" + "I" * rank, raw[4:header])
    if num is not None and dims[0] != num:
        raise datasets.corrupt(path, what, f"{dims[0]} items, expected {num}")
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise datasets.corrupt(path, what, f"{len(raw)} bytes, expected {expected} for shape {dims} (truncated?)")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _find_idx(directory: str, stem: str) -> str:
    for name in (stem + ".gz", stem):
        if os.path.isfile(os.path.join(directory, name)):
            return os.path.join(directory, name)
    return os.path.join(directory, stem + ".gz")


def load_idx_dataset(name: str, data_dir: str | None = None, full: bool = True) -> ImageData:
    """Loads an idx-format dataset (MNIST layout) from `<data_dir>/<name>/` or `<data_dir>/`.

    Args:
      name: the dataset's name (its subdirectory).
      data_dir: the data directory (None: `$LEPTON_DATA_DIR`).
      full: require the standard 60k/10k sizes (False: any consistent sizes, for other idx sets).
    """
    root = datasets.data_dir(data_dir)
    directory = os.path.join(root, name)
    if not os.path.isdir(directory):
        directory = root
    arrays = {}
    for key, (stem, rank) in _FILES.items():
        split = key.split("_")[0]
        what = f"{name} {split} {'images' if rank == 3 else 'labels'} in idx format"
        arrays[key] = read_idx(_find_idx(directory, stem), what, rank, _SIZES[split] if full else None)
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(images) != len(labels):
            raise UserError(f"{name} {split}: {len(images)} images but {len(labels)} labels in {directory}")
    return ImageData(
        name,
        (arrays["train_images"][..., None] / np.float32(255)).astype(np.float32),
        arrays["train_labels"].astype(np.int32),
        (arrays["test_images"][..., None] / np.float32(255)).astype(np.float32),
        arrays["test_labels"].astype(np.int32),
    )


def load_digits() -> ImageData:
    """scikit-learn's bundled 8x8 digits (1797 images, values 0..16) scaled to [0, 1]; a fixed 1500/297 split."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    images = (digits.images[..., None] / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int32)
    return ImageData(
        "digits", images[:DIGITS_TRAIN], labels[:DIGITS_TRAIN], images[DIGITS_TRAIN:], labels[DIGITS_TRAIN:]
    )


def load(name: str, data_dir: str | None = None) -> ImageData:
    """Loads dataset `name` (see `DATASETS`); a `UserError` listing the valid names for an unknown one."""
    if name == "digits":
        return load_digits()
    if name in IDX_DATASETS:
        return load_idx_dataset(name, data_dir)
    raise UserError(f"unknown dataset '{name}'; valid datasets: {', '.join(DATASETS)}")


def to_device(tree, mesh) -> Any:
    """Puts host arrays on the mesh, replicated (the whole set fits on every device)."""
    return jax.device_put(tree, parallel.replicated(mesh))


def epoch_batches(key: jax.Array, num_examples: int, batch_size: int) -> jax.Array:
    """(num_batches, batch_size) int32 indices of a random permutation; the remainder is dropped."""
    num_batches = num_examples // batch_size
    return jax.random.permutation(key, num_examples)[: num_batches * batch_size].reshape(num_batches, batch_size)


def make_epoch(
    step_fn: Callable[[Any, Any, jax.Array], tuple[Any, dict]],
    batch_size: int,
    mesh,
    vmap_seeds: bool = True,
    seed_loop: str = "vmap",
) -> Callable[[Any, Any], tuple[Any, dict]]:
    """One epoch over a device-resident dataset: `epoch(state, data) -> (state, metrics)`.

    A jitted shuffle draws each seed's permutation with its rng; then a Python loop calls one jitted step per batch
    (state donated), which gathers its batch on the device. The loop only dispatches: no batch ever reaches the
    host, and metrics are summed on the device. (Not a `lax.scan` over the batches: XLA:CPU ran the classifier's
    convolutions ~18x slower inside the scan's while loop than as a jitted step.)

    Args:
      step_fn: `step(state, batch, key) -> (state, metrics)` for one seed; `batch` is `data` indexed by a batch
        of example indices (any pytree whose leaves share the example axis).
      batch_size: examples per step (global; split over the mesh's `data` axis).
      mesh: the device mesh.
      vmap_seeds: the state has a leading seed axis (each seed shuffles with its own rng).
      seed_loop: how the seeds share a step: "vmap" (one batched program), "unroll" (one copy of the step per
        seed in the same jitted program: XLA:CPU runs vmapped convolutions, which become grouped ones, ~2.5x
        slower than one per seed), or "auto" (unroll on CPU, vmap elsewhere).

    Returns:
      The epoch function. `state.rng` drives the shuffle and each step's key; metrics are the epoch means, shape
      (seeds,) when `vmap_seeds`.
    """
    parallel.check_divisible(batch_size, mesh, "config.batch_size")
    batch_sharding = parallel.split_axis(mesh, 0)
    if seed_loop == "auto":
        seed_loop = "unroll" if jax.default_backend() == "cpu" else "vmap"
    if seed_loop not in ("vmap", "unroll"):
        raise UserError(f"seed_loop must be 'auto', 'vmap' or 'unroll', not {seed_loop!r}")
    if not vmap_seeds:
        over_seeds = lambda fn, axes: fn  # noqa: E731
    else:
        over_seeds = _unrolled if seed_loop == "unroll" else (lambda fn, axes: jax.vmap(fn, in_axes=axes))

    def shuffle_one(state, num_examples):
        rng, perm_key = jax.random.split(state.rng)
        return state.replace(rng=rng), epoch_batches(perm_key, num_examples, batch_size)

    def step_one(state, data, batches, i):
        rng, key = jax.random.split(state.rng)
        index = jax.lax.dynamic_index_in_dim(batches, i, keepdims=False)  # (B,)
        batch = jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a[index], batch_sharding), data)
        return step_fn(state.replace(rng=rng), batch, key)

    shuffle = jax.jit(over_seeds(shuffle_one, (0, None)), static_argnums=1, donate_argnums=0)
    step = jax.jit(over_seeds(step_one, (0, None, 0, None)), donate_argnums=0)
    add = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b), donate_argnums=0)

    def epoch(state, data):
        num_examples = jax.tree.leaves(data)[0].shape[0]
        if num_examples < batch_size:
            raise UserError(f"config.batch_size ({batch_size}) is larger than the training set ({num_examples})")
        num_batches = num_examples // batch_size
        state, batches = shuffle(state, num_examples)
        sums = None
        for i in range(num_batches):
            state, metrics = step(state, data, batches, np.int32(i))
            sums = metrics if sums is None else add(sums, metrics)
        return state, jax.tree.map(lambda total: total / num_batches, sums)

    epoch.step = step  # exposed for tests (trace counting) and benchmarks
    return epoch


def _unrolled(fn: Callable, axes: tuple) -> Callable:
    """Like `jax.vmap(fn, in_axes=axes)` (axes 0 or None), but calls `fn` once per index and stacks the outputs."""

    def run(*args):
        num = jax.tree.leaves(args[axes.index(0)])[0].shape[0]
        outs = [
            fn(*(jax.tree.map(lambda a, i=i: a[i], arg) if axis == 0 else arg for arg, axis in zip(args, axes)))
            for i in range(num)
        ]
        return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)

    return run


def init_seeds(init_one: Callable[[jax.Array], Any], num_seeds: int, mesh) -> Callable[[jax.Array], Any]:
    """Jitted `key -> state`: `init_one` for `num_seeds` keys split from `key`, stacked on a leading seed axis.

    The state comes out replicated on the mesh, exactly as the epoch returns it, so the epoch compiles once.
    """
    return jax.jit(
        lambda key: jax.vmap(init_one)(jax.random.split(key, num_seeds)), out_shardings=parallel.replicated(mesh)
    )


def seed_slice(tree, seed: int = 0):
    """One seed's slice of a state with a leading seed axis."""
    return jax.tree.map(lambda x: x[seed], tree)


def map_in_chunks(fn: Callable[[jax.Array], Any], x: jax.Array, chunk: int) -> Any:
    """`fn` over `x` in chunks of `chunk` examples (`lax.map`; `x` padded to a multiple of `chunk`, then cut).

    Bounds the memory of evaluating a large set (conv activations of 10k images) inside one jitted program.
    """
    n = x.shape[0]
    chunk = min(chunk, n)
    pad = -n % chunk
    padded = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
    out = jax.lax.map(fn, padded.reshape(-1, chunk, *x.shape[1:]))
    return jax.tree.map(lambda y: y.reshape(-1, *y.shape[2:])[:n], out)
