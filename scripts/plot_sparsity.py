"""Draws accuracy against sparsity from finished pruning runs (and their dense baselines): one line per network.

    python -m scripts.plot_sparsity --workdirs=runs/lenet,runs/lenet_p50,runs/lenet_p90,runs/lenet_p98 \
        --plot=plots/sparsity.png

Each workdir is a finished run whose `results.json` holds the metric (`--metric`, default `test/accuracy`; RL runs:
`eval/return`) as `_mean`/`_std`; its measured `test/sparsity` (or `sparsity`) is the x value, 0 for a dense run.
Runs of the same network (trainer, model and layer sizes) share a line.
"""

import os
import sys

from absl import flags

from scripts import cli

_WORKDIRS = flags.DEFINE_list("workdirs", None, "Finished runs, pruned or dense.")
_METRIC = flags.DEFINE_string("metric", "test/accuracy", "The results.json metric on the y axis (its _mean/_std).")
_OUT = flags.DEFINE_string("plot", "sparsity.png", "The PNG to write.")


def point(workdir: str, metric: str) -> tuple[str, float, float, float]:
    """(network label, sparsity %, metric mean, metric std) of one finished run."""
    from lepton_jax.config import read_json
    from lepton_jax.errors import UserError

    path = os.path.join(workdir, "results.json")
    if not os.path.isfile(path):
        raise UserError(f"{workdir} holds no results.json; pass finished runs")
    results = read_json(path, "the run's results")
    config = read_json(os.path.join(workdir, "config.json"), "the run's config")
    if f"{metric}_mean" not in results:
        raise UserError(f"{path} has no {metric}_mean; choose --metric from its entries")
    sparsity = results.get("test/sparsity_mean", results.get("sparsity_mean", 0.0))
    shape = config.get("hidden_sizes") if config.get("model", "cnn") == "mlp" else config.get("conv_features")
    label = " ".join(str(part) for part in (config.get("trainer"), config.get("model", ""), shape) if part)
    return label, 100 * sparsity, results[f"{metric}_mean"], results[f"{metric}_std"]


def plot(argv: list[str]) -> None:
    from lepton_jax import plotting
    from lepton_jax.errors import UserError

    cli.parse_flags(argv)
    if not _WORKDIRS.value:
        raise UserError("--workdirs: give at least one finished run")
    points = sorted(point(w, _METRIC.value) for w in _WORKDIRS.value)
    labels = sorted({p[0] for p in points})
    # One record per run, keyed by its network: `plotting.curves` draws each key as a line, shaded ± std.
    records = [{"step": x, label: mean, f"{label}_std": std} for label, x, mean, std in points]
    plotting.curves(
        records,
        labels,
        _OUT.value,
        "sparsity (% of kernel weights zero)",
        f"{_METRIC.value} (mean ± std)",
        title=f"{_METRIC.value} against sparsity",
    )
    print(f"plot: {_OUT.value}")


if __name__ == "__main__":
    sys.exit(cli.run(plot, sys.argv))
