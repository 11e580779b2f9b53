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
