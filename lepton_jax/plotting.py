"""PNG plots of a run, drawn from its `metrics.jsonl` (so a resumed run's plot shows the whole run)."""

import os

import numpy as np


def _std_name(key: str) -> str:
    # `eval/return_mean` pairs with `eval/return_std`; any other `name` with `name_std`.
    return key[: -len("_mean")] + "_std" if key.endswith("_mean") else key + "_std"


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for key, label in zip(keys, labels or keys):
        rows = [r for r in records if r.get(key) is not None]
        if not rows:
            continue
        x = np.array([r["step"] for r in rows], float)
        y = np.array([r[key] for r in rows], float)
        s = np.array([r.get(_std_name(key)) or 0.0 for r in rows], float)
        (line,) = ax.plot(x, y, "-" if len(rows) > 30 else "o-", label=label, markersize=3)
        ax.fill_between(x, y - s, y + s, color=line.get_color(), alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def learning_curve(records: list[dict], path: str, key: str = "train/episode_return", title: str = "") -> None:
    """RL: mean ± std across seeds of `key` and of the deterministic evaluation return against env steps."""
    curves(
        records,
        (key, "eval/return_mean"),
        path,
        xlabel="env steps (per seed)",
        ylabel="episode return (mean ± std over seeds)",
        title=title,
        labels=("train (last episodes)", "eval (deterministic)"),
    )
