"""RL plots: learning curves against env steps, per swept value, and a sweep's final returns."""

import numpy as np

from lepton_jax import plotting
from lepton_jax.plotting import pyplot, save


def learning_curve(records: list[dict], path: str, key: str = "train/episode_return", title: str = "") -> None:
    """RL: mean ± std across seeds of `key` and of the deterministic evaluation return against env steps."""
    plotting.curves(
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
    plt = pyplot()

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
            s = np.array([r.get(f"{plotting.std_name(name)}/{label}") or 0.0 for r in rows], float)
            (line,) = ax.plot(x, y, "-" if len(rows) > 30 else "o-", label=label, markersize=3)
            ax.fill_between(x, y - s, y + s, color=line.get_color(), alpha=0.15)
        ax.set_title(panel_title)
        ax.set_xlabel("env steps (per seed)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("episode return (mean ± std over seeds)")
    axes[1].legend(loc="best")
    fig.suptitle(title)
    save(fig, path)


def sweep_summary(results: dict, labels, path: str, title: str = "") -> None:
    """RL sweeps: the final evaluation return (mean ± std over seeds) of every swept value."""
    plt = pyplot()

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
    save(fig, path)


def against_baselines(panels, path: str, title: str = "") -> None:
    """One panel per game: evaluation curves (mean ± std over seeds, when known) against env steps, and a baseline.

    Args:
      panels: `(panel title, series, baseline return or None)` per panel; `series` is a list of
        `(label, steps, means, stds or None)`.
      path: the PNG to write.
    """
    plt = pyplot()

    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows + 0.5), dpi=120, squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax, (name, series, baseline) in zip(axes.flat, panels):
        for label, x, y, s in series:
            x, y = np.asarray(x, float), np.asarray(y, float)
            (line,) = ax.plot(x, y, "-" if len(x) > 30 else "o-", markersize=3, label=label)
            if s is not None:
                ax.fill_between(
                    x, y - np.asarray(s, float), y + np.asarray(s, float), color=line.get_color(), alpha=0.2
                )
        if baseline is not None:
            ax.axhline(baseline, color="black", linestyle="--", lw=1, label=f"baseline {baseline:g}")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("env steps (per seed)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("episode return")
    fig.suptitle(title, fontsize=10)
    save(fig, path)
