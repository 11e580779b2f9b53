"""PNG plots of a run, drawn from its `metrics.jsonl` (so a resumed run's plot shows the whole run)."""

import os

import numpy as np


def learning_curve(records: list[dict], path: str, key: str = "train/episode_return", title: str = "") -> None:
    """Mean ± std across seeds of `key` (and of `eval/return` where present) against env steps.

    Each record is expected to carry `<key>_mean` / `<key>_std`-style fields named `<key>` and `<key>_std`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, label, style in ((key, "train (last episodes)", "-"), ("eval/return_mean", "eval (deterministic)", "o-")):
        std_name = key + "_std" if name == key else "eval/return_std"
        rows = [r for r in records if r.get(name) is not None]
        if not rows:
            continue
        x = np.array([r["step"] for r in rows], float)
        y = np.array([r[name] for r in rows], float)
        s = np.array([r.get(std_name) or 0.0 for r in rows], float)
        (line,) = ax.plot(x, y, style, label=label, markersize=3)
        ax.fill_between(x, y - s, y + s, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("env steps (per seed)")
    ax.set_ylabel("episode return (mean ± std over seeds)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
