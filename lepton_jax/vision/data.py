"""Image datasets: MNIST and anything else in its idx format (Fashion-MNIST, KMNIST, ...) read from the data
directory, and scikit-learn's bundled 8x8 digits, which need no files (tests, and runs without data). Images are
float32 in [0, 1], shape (N, H, W, 1); labels int32.

The idx files are the four standard `*-idx?-ubyte.gz` files (gzipped or not) in `<data_dir>/<dataset>/` or in
`<data_dir>` itself. Every header is checked (magic number, element type, rank, sizes), the payload length, and the
labels' values (in [0, classes)), so a truncated, foreign or corrupt file is one `UserError` line naming it.
"""

import gzip
import os
import struct
from typing import NamedTuple

import numpy as np

from lepton_jax import datasets
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
IDX_CLASSES = 10  # every idx dataset here has 10 classes, labelled 0..9
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
        path = _find_idx(directory, stem)
        arrays[key] = read_idx(path, what, rank, _SIZES[split] if full else None)
        if rank == 1:
            check_labels(arrays[key], IDX_CLASSES, path, what)
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
        IDX_CLASSES,
    )


def check_labels(labels: np.ndarray, num_classes: int, path: str, what: str) -> None:
    """A `UserError` naming `path` when a label is outside [0, num_classes) (a corrupt file would otherwise train
    on out-of-range classes and surface as a non-finite loss)."""
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        first = int(np.argmax(bad))
        raise datasets.corrupt(
            path,
            what,
            f"{int(bad.sum())} labels outside [0, {num_classes}) (the first, item {first}, is {int(labels[first])})",
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


def parse_classes(spec: str) -> tuple[int, ...] | None:
    """`"5-9"` -> (5, 6, 7, 8, 9), `"0,2,4"` -> (0, 2, 4), `""` -> () (all); None when malformed or repeated."""
    chosen = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        low, dash, high = part.partition("-")
        if not low.isdecimal() or (dash and not high.isdecimal()):
            return None
        chosen.extend(range(int(low), int(high) + 1) if dash else [int(low)])
    return tuple(chosen) if len(set(chosen)) == len(chosen) else None


def select_classes(data: ImageData, spec: str) -> ImageData:
    """Only the classes `spec` names (`parse_classes`), relabelled 0.. in the order given (`"5-9"`: 5 -> 0, ...);
    the dataset itself when `spec` is empty."""
    classes = parse_classes(spec)
    if classes is None or any(c >= data.num_classes for c in classes):
        raise UserError(
            f"config.classes='{spec}' must list classes of {data.name} (0..{data.num_classes - 1}) as ranges or "
            "numbers, e.g. '0-4' or '1,3,5', each once"
        )
    if not classes:
        return data
    relabel = np.full(data.num_classes, -1, np.int32)
    relabel[list(classes)] = np.arange(len(classes), dtype=np.int32)
    keep_train, keep_test = relabel[data.train_labels] >= 0, relabel[data.test_labels] >= 0
    return ImageData(
        f"{data.name} classes {spec}",
        data.train_images[keep_train],
        relabel[data.train_labels[keep_train]],
        data.test_images[keep_test],
        relabel[data.test_labels[keep_test]],
        len(classes),
    )


# ---- MultiMNIST: two digits overlaid, one task per digit --------------------------------------------------------

MULTI_TASKS = ("left", "right")  # the top-left digit's class, the bottom-right digit's class
_COMPOSE_CHUNK = 4096  # images composed at once (bounds the canvases' memory: 4096 x 36 x 36 float32 is 21 MB)


class MultiImageData(NamedTuple):
    """A multi-task image dataset in memory: one label per task for each image."""

    name: str
    train_images: np.ndarray  # (N, H, W, 1) float32 in [0, 1]
    train_labels: np.ndarray  # (N, T) int32: column t is task `tasks[t]`'s class
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int = 10  # of every task
    tasks: tuple[str, ...] = MULTI_TASKS
    # With `multi_mnist(..., components=True)`: (N, T, H, W, 1) each image's digits alone, digit t (task t's) on its
    # own blank canvas, so that an image is the pixelwise maximum of its digits; else None.
    train_components: np.ndarray | None = None
    test_components: np.ndarray | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])


def overlay(first: np.ndarray, second: np.ndarray, first_corner: np.ndarray, second_corner: np.ndarray, canvas):
    """Each pair of images pasted on a blank canvas at its corners, the pixelwise maximum where they overlap.

    Args:
      first, second: (n, h, w, 1) images in [0, 1].
      first_corner, second_corner: (n, 2) int, the (row, column) of each image's top-left pixel on the canvas.
      canvas: (rows, columns) of the canvas; every image must lie inside it.

    Returns:
      (n, rows, columns, 1) float32 in [0, 1].
    """
    return np.clip(np.maximum(paste(first, first_corner, canvas), paste(second, second_corner, canvas)), 0.0, 1.0)


def paste(images: np.ndarray, corner: np.ndarray, canvas) -> np.ndarray:
    """(n, h, w, 1) images each pasted on a blank (n, *canvas, 1) canvas with its top-left pixel at `corner` (n, 2)."""
    n, h, w = images.shape[:3]
    pasted = np.zeros((n, *canvas), np.float32)
    rows = (corner[:, 0, None] + np.arange(h))[:, :, None]  # (n, h, 1)
    cols = (corner[:, 1, None] + np.arange(w))[:, None, :]  # (n, 1, w)
    pasted[np.arange(n)[:, None, None], rows, cols] = images[..., 0]
    return pasted[..., None]


def resize_nearest(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(n, H, W, 1) -> (n, *size, 1) by nearest-neighbour sampling (pixel centres: output pixel i reads input pixel
    floor((i + 0.5) H / size), as PIL's and SciPy's `imresize(..., interp='nearest')`); the images themselves when
    the size is theirs."""
    if tuple(images.shape[1:3]) == tuple(size):
        return images
    rows = np.floor((np.arange(size[0]) + 0.5) * images.shape[1] / size[0]).astype(np.int64)
    cols = np.floor((np.arange(size[1]) + 0.5) * images.shape[2] / size[1]).astype(np.int64)
    return images[:, rows][:, :, cols]


def draw_pairs(labels: np.ndarray, num: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(first, second): (num,) indices of `num` pairs of examples of different classes.

    The first digits run through a random permutation of the examples, repeated as often as `num` needs (each example
    is a first digit once per pass); each second digit is drawn uniformly from the examples of the other classes.
    """
    n = len(labels)
    passes = -(-num // n)
    first = np.concatenate([rng.permutation(n) for _ in range(passes)])[:num]
    order = np.argsort(labels, kind="stable")  # example indices grouped by class
    counts = np.bincount(labels)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    own = labels[first]
    # The r-th example of another class: skip over the first digit's own class in the grouped order.
    r = np.floor(rng.random(num) * (n - counts[own])).astype(np.int64)
    second = order[np.where(r < starts[own], r, r + counts[own])]
    return first, second


def _multi_split(images, labels, num, rng, max_shift, size, components=False):
    first, second = draw_pairs(labels, num, rng)
    h, w = images.shape[1:3]
    # Corners on a canvas with `max_shift` pixels of margin: the first digit moves 1..max_shift pixels up and
    # 1..max_shift left, the second as far down and right (each of the four shifts drawn on its own).
    shifts = rng.integers(1, max_shift + 1, size=(num, 4))
    first_corner, second_corner = max_shift - shifts[:, :2], max_shift + shifts[:, 2:]
    canvas = (h + 2 * max_shift, w + 2 * max_shift)
    out = np.empty((num, *size, 1), np.float32)
    digits = np.empty((num, 2, *size, 1), np.float32) if components else None
    for start in range(0, num, _COMPOSE_CHUNK):
        part = slice(start, start + _COMPOSE_CHUNK)
        pairs = overlay(images[first[part]], images[second[part]], first_corner[part], second_corner[part], canvas)
        out[part] = resize_nearest(pairs, size)
        if components:
            # Clipped as the overlay is: the maximum of the clipped digits is the clipped maximum, so the image is
            # exactly their maximum (nearest resizing picks the same pixel from each).
            for t, (index, corner) in enumerate(((first, first_corner), (second, second_corner))):
                alone = np.clip(paste(images[index[part]], corner[part], canvas), 0.0, 1.0)
                digits[part, t] = resize_nearest(alone, size)
    pair_labels = np.stack([labels[first], labels[second]], axis=1).astype(np.int32)
    return (out, pair_labels, digits) if components else (out, pair_labels)


def multi_mnist(
    data: ImageData,
    seed: int = 0,
    num_train: int = 0,
    num_test: int = 0,
    max_shift: int = 4,
    size: int = 0,
    components: bool = False,
) -> MultiImageData:
    """MultiMNIST (Sabour et al. 2017, as Sener & Koltun 2018 use it for multi-task learning) built from `data`.

    Each image overlays two digits of *different* classes from the same split (Sabour et al.): on a canvas of
    `max_shift` blank pixels around the source size (36x36 for MNIST), the first digit is shifted 1..`max_shift`
    pixels up and 1..`max_shift` left, the second as far down and right (uniform, each axis on its own), and the
    two are combined by their pixelwise maximum, in [0, 1]. The tasks are the classes of the top-left digit
    ("left") and of the bottom-right one ("right"), as Sener & Koltun's task-L and task-R. The shift is at least one
    pixel so that the two roles never coincide (the digits are always 2..2`max_shift` pixels apart on each axis;
    Sener & Koltun's fixed placement, 6 apart, is one of the draws). The canvas is then resized (nearest
    neighbour, as Sener & Koltun's loader) to `size` x `size`, by default the source's size: 28x28 for MNIST, so
    single-task MNIST networks apply unchanged; `size` = the canvas (36) keeps Sabour et al.'s images.

    Deterministic for a seed: the training and test sets each come from their own stream of `seed`, so one does not
    change with the other's size.

    Args:
      data: the source digits (any `ImageData`: MNIST, or the 8x8 digits in tests).
      seed: the construction's seed.
      num_train, num_test: images to build from each split (0: one per source image, as Sener & Koltun's 60k/10k;
        more passes over the source when larger, as Sabour et al.'s many pairs per digit).
      max_shift: the largest shift, in pixels (>= 1).
      size: the side of the output images (0: the source's height and width).
      components: also keep each image's two digits alone (`train_components`, `test_components`: (N, 2, H, W, 1),
        the image their pixelwise maximum), as a network that reconstructs each digit needs; the images, labels
        and the random draws are the same either way.

    Returns:
      The dataset; labels (N, 2) int32, columns `MULTI_TASKS`.
    """
    if max_shift < 1:
        raise UserError(f"MultiMNIST needs a shift of at least one pixel, got max_shift={max_shift}")
    if min(np.unique(data.train_labels).size, np.unique(data.test_labels).size) < 2:
        raise UserError(f"MultiMNIST from {data.name} needs at least two classes in each split")
    shape = tuple(data.image_shape[:2]) if not size else (size, size)
    splits = []
    for stream, (images, labels, num) in enumerate(
        ((data.train_images, data.train_labels, num_train), (data.test_images, data.test_labels, num_test))
    ):
        rng = np.random.default_rng([seed, stream])
        splits.append(_multi_split(images, labels, num or len(images), rng, max_shift, shape, components))
    (train_images, train_labels, *train_digits), (test_images, test_labels, *test_digits) = splits
    return MultiImageData(
        f"multi_{data.name}",
        train_images,
        train_labels,
        test_images,
        test_labels,
        data.num_classes,
        MULTI_TASKS,
        *train_digits,
        *test_digits,
    )
