"""PNG plots of a run, drawn from its `metrics.jsonl` (so a resumed run's plot shows the whole run), and the two
helpers every plotting function uses: `pyplot()` (matplotlib with the file-only Agg backend, imported lazily so that
training never pulls in a GUI toolkit) and `save(fig, path)`."""

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
