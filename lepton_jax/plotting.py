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


def sweep_learning_curves(records: list[dict], labels, path: str, title: str = "") -> None:
    """RL sweeps: one learning curve per swept value (mean ± std over its seeds), training and evaluation side by side.

    Args:
      records: `metrics.jsonl` rows with `train/episode_return/<label>` and `eval/return_mean/<label>` (and stds).
      labels: the swept values' labels, e.g. `lr=0.001`.
      path: the PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=120, sharey=True)
    panels = (("train/episode_return", "train (last episodes)"), ("eval/return_mean", "eval (deterministic)"))
    for ax, (name, panel_title) in zip(axes, panels):
        for label in labels:
            key = f"{name}/{label}"
            rows = [r for r in records if r.get(key) is not None]
            if not rows:
                continue
            x = np.array([r["step"] for r in rows], float)
            y = np.array([r[key] for r in rows], float)
            s = np.array([r.get(f"{_std_name(name)}/{label}") or 0.0 for r in rows], float)
            (line,) = ax.plot(x, y, "-" if len(rows) > 30 else "o-", label=label, markersize=3)
            ax.fill_between(x, y - s, y + s, color=line.get_color(), alpha=0.15)
        ax.set_title(panel_title)
        ax.set_xlabel("env steps (per seed)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("episode return (mean ± std over seeds)")
    axes[1].legend(loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def sweep_summary(results: dict, labels, path: str, title: str = "") -> None:
    """RL sweeps: the final evaluation return (mean ± std over seeds) of every swept value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means = np.array([results[f"sweep/{label}/eval/return_mean"] for label in labels], float)
    stds = np.array([results[f"sweep/{label}/eval/return_std"] for label in labels], float)
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(labels) + 2), 4), dpi=120)
    ax.errorbar(np.arange(len(labels)), means, yerr=stds, fmt="o", capsize=4)
    ax.set_xticks(
        np.arange(len(labels)),
        labels,
        rotation=30 if len(labels) > 4 else 0,
        ha="right" if len(labels) > 4 else "center",
    )
    ax.set_ylabel("final eval return (mean ± std over seeds)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
