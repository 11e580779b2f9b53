"""Draws the learned joint values of finished VDN / QMIX runs on one matrix game side by side with the exact ones.

    python -m scripts.plot_decomposition --workdirs=runs/vdn_two_step,runs/qmix_two_step --plot=decomposition.png

One row per decision point of the game (`lepton_jax/rl/matrix_games.py`), one column for the exact Q* and one per
workdir: its learned Q_tot, averaged over its seeds (its results.json's `matrix/<point>/q_tot_mean`), the greedy
joint action boxed. Each run also draws its own column beside Q* in `<workdir>/plots/decomposition.png`.
"""

import os
import sys

from absl import flags

from scripts import cli

_WORKDIRS = flags.DEFINE_list("workdirs", None, "Finished VDN / QMIX workdirs on the same matrix game.")
_OUT = flags.DEFINE_string("plot", "decomposition.png", "The PNG to write.")


def plot(argv: list[str]) -> None:
    from lepton_jax.config import read_json
    from lepton_jax.errors import UserError
    from lepton_jax.rl import matrix_games

    cli.parse_flags(argv)
    if not _WORKDIRS.value:
        raise UserError("--workdirs: give the finished runs to compare, e.g. --workdirs=runs/vdn,runs/qmix")
    runs = []
    for workdir in _WORKDIRS.value:
        path = os.path.join(workdir, "results.json")
        if not os.path.isfile(path):
            raise UserError(f"{workdir} has no results.json; pass finished VDN / QMIX runs on a matrix game")
        config = read_json(os.path.join(workdir, "config.json"), "the run's config")
        results = read_json(path, "the run's results")
        if config.get("env_name") not in matrix_games.NAMES or not any(k.startswith("matrix/") for k in results):
            raise UserError(f"{workdir} is not a VDN / QMIX run on a matrix game ({', '.join(matrix_games.NAMES)})")
        runs.append((config.get("trainer", os.path.basename(workdir)), config, results))
    matrix_games.plot_runs(runs, _OUT.value)
    print(f"plot: {_OUT.value}")


if __name__ == "__main__":
    sys.exit(cli.run(plot, sys.argv))
