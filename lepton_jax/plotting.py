"""PNG plots of a run, drawn from its `metrics.jsonl` (so a resumed run's plot shows the whole run), grids of images
(`image_grid`), and the two helpers every plotting function uses: `pyplot()` (matplotlib with the file-only Agg
backend, imported lazily so that training never pulls in a GUI toolkit) and `save(fig, path)`."""

import os

import numpy as np


def pyplot():
    """`matplotlib.pyplot` on the Agg backend (PNG files, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str, dpi=None, tight: bool = True) -> None:
    """Writes `fig` to `path` (its directory created) and closes it."""
    if tight:
        fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)


def std_name(key: str) -> str:
    # `eval/return_mean` pairs with `eval/return_std`; any other `name` with `name_std`.
    return key[: -len("_mean")] + "_std" if key.endswith("_mean") else key + "_std"


_FRACTIONS = ("accuracy", "auc", "/ap")  # metrics in [0, 1]


def curves(
    records: list[dict],
    keys,
    path: str,
    xlabel: str = "step",
    ylabel: str = "mean ± std over seeds",
    title: str = "",
    labels=None,
) -> None:
    """One line per metric in `keys` against `step`, shaded ± its std where the records carry one.

    Args:
      records: `metrics.jsonl` rows, each with `step` and some of `keys`.
      keys: metric names; a metric `m` is shaded with `m_std` (`m_mean` with `m_std`).
      path: the PNG to write (its directory is created).
      labels: legend entries, one per key (default: the keys).
    """
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for key, label in zip(keys, labels or keys):
        rows = [r for r in records if r.get(key) is not None]
        if not rows:
            continue
        x = np.array([r["step"] for r in rows], float)
        y = np.array([r[key] for r in rows], float)
        s = np.array([r.get(std_name(key)) or 0.0 for r in rows], float)
        (line,) = ax.plot(x, y, "-" if len(rows) > 30 else "o-", label=label, markersize=3)
        low, high = y - s, y + s
        if any(word in key for word in _FRACTIONS):  # a band of a fraction stays within [0, 1]
            low, high = np.clip(low, 0, 1), np.clip(high, 0, 1)
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    save(fig, path)


def image_grid(
    images, path: str, nrow: int | None = None, title: str = "", row_labels=(), xlabel: str = "", ylabel: str = ""
) -> None:
    """Writes (N, H, W, C) images in [0, 1] (C 1: grayscale, 3: RGB) as a grid (`nrow` per row, default square) in
    a labelled figure.

    Args:
      title: the figure's title; `row_labels`: one label per row of images (e.g. "original", "reconstruction");
      xlabel, ylabel: what the grid's axes mean (e.g. the latent coordinates of a manifold).
    """
    plt = pyplot()
    images = np.clip(np.asarray(images, np.float32), 0, 1)
    n, h, w, channels = images.shape
    nrow = nrow or int(np.ceil(np.sqrt(n)))
    rows = -(-n // nrow)
    canvas = np.ones((rows * (h + 1) + 1, nrow * (w + 1) + 1, channels), np.float32)  # 1-pixel white borders
    for i, image in enumerate(images):
        r, c = divmod(i, nrow)
        canvas[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = image
    width = max(6.0, 0.45 * nrow)  # inches: at least 6, and about 0.45 per image
    fig, ax = plt.subplots(figsize=(width, width * canvas.shape[0] / canvas.shape[1] + 0.8), dpi=110)
    gray = channels == 1
    ax.imshow(
        canvas[..., 0] if gray else canvas, cmap="gray" if gray else None, vmin=0, vmax=1, interpolation="nearest"
    )
    ax.set_xticks([])
    ax.set_yticks([1 + r * (h + 1) + h / 2 for r in range(len(row_labels))], list(row_labels))
    ax.tick_params(length=0)
    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=10)
    save(fig, path)


def confusion_matrix(matrix, path: str, title: str = "", class_names=None) -> None:
    """A (C, C) confusion matrix (rows: true class, columns: predicted) as a heatmap, each row normalised to the
    share of that class's examples, with the raw counts written in the cells."""
    plt = pyplot()
    matrix = np.asarray(matrix)
    num = matrix.shape[0]
    names = list(class_names) if class_names is not None else [str(c) for c in range(num)]
    shares = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    size = max(4.5, 0.5 * num + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9), dpi=120)
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    if num <= 20:
        for i in range(num):
            for j in range(num):
                if matrix[i, j]:
                    dark = shares[i, j] > 0.5
                    ax.text(
                        j,
                        i,
                        str(matrix[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if dark else "black",
                    )
    ax.set_xticks(range(num), names)
    ax.set_yticks(range(num), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    save(fig, path)


def labelled_images(images, captions, path: str, title: str = "", per_row: int = 8) -> None:
    """(N, H, W, 1) images in [0, 1], each with its caption below, `per_row` to a row."""
    plt = pyplot()
    images = np.clip(np.asarray(images, np.float32), 0, 1)
    n = len(images)
    rows = max(1, -(-n // per_row))
    fig, axes = plt.subplots(rows, per_row, figsize=(1.2 * per_row, 1.35 * rows + 0.5), dpi=110, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            ax.imshow(images[k][..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(captions[k], fontsize=8)
    if not n:
        axes[0, 0].text(0, 0.5, "none", fontsize=10)
    fig.suptitle(title, fontsize=9)
    save(fig, path)
