"""Draws the evaluation curves of finished or running RL workdirs side by side, each with its published baseline.

    python -m scripts.plot_curves --workdirs=runs/ppo_breakout,runs/ppo_asterix --plot=plots/minatar.png
    python -m scripts.plot_curves --workdirs=runs/ppo_breakout --baselines=28 --plot=runs/ppo_breakout/plots/vs.png
    python -m scripts.plot_curves --table=minatar_1e7 --plot=minatar.png   # from the results registry

A PPO run on a MinAtar game gets the gymnax baselines' published return at 10^7 steps by default
(`agents/configs/ppo.py` `GYMNAX_BASELINES`); `--baselines` gives one number per workdir (empty: none).
`--table` draws a results-registry table instead of workdirs: one panel per env (read from each row's command),
one line per row from its recorded `eval curve` (means only: the registry keeps no per-point std).
"""

import os
import sys

from absl import flags

from scripts import cli

_WORKDIRS = flags.DEFINE_list("workdirs", None, "RL workdirs (each holds config.json and metrics.jsonl).")
_BASELINES = flags.DEFINE_list("baselines", None, "One baseline return per workdir (default: the published one).")
_TABLE = flags.DEFINE_string("table", None, "A results-registry table to draw instead of --workdirs.")
_OUT = flags.DEFINE_string("plot", "curves.png", "The PNG to write.")


def plot(argv: list[str]) -> None:
    from agents.configs import ppo
    from lepton_jax.config import read_json
    from lepton_jax.errors import UserError
    from lepton_jax.metrics import read_jsonl
    from lepton_jax.rl import plots

    cli.parse_flags(argv)
    workdirs = _WORKDIRS.value or []
    if _TABLE.value:
        if workdirs:
            raise UserError("give --workdirs or --table, not both")
        panels = registry_panels(_TABLE.value, ppo.GYMNAX_BASELINES)
        plots.against_baselines(panels, _OUT.value, title=f"evaluation return ({_TABLE.value}) against the baselines")
        print(f"plot: {_OUT.value}")
        return
    if not workdirs:
        raise UserError("--workdirs: give at least one RL workdir (or --table)")
    baselines = _BASELINES.value
    if baselines is not None and len(baselines) != len(workdirs):
        raise UserError(f"--baselines: give one per workdir ({len(workdirs)}), got {len(baselines)}")
    panels = []
    for i, workdir in enumerate(workdirs):
        config = read_json(os.path.join(workdir, "config.json"), "the run's config")
        metrics = os.path.join(workdir, "metrics.jsonl")
        if not os.path.isfile(metrics):
            raise UserError(f"{workdir} has no metrics.jsonl; pass the directory of an RL run")
        env, trainer = config.get("env_name", "?"), config.get("trainer", "?")
        if baselines is None:
            baseline = ppo.GYMNAX_BASELINES.get(env) if trainer == "ppo" else None
        else:
            try:
                baseline = float(baselines[i]) if baselines[i] else None
            except ValueError:
                raise UserError(f"--baselines: '{baselines[i]}' is not a number") from None
        records = [r for r in read_jsonl(metrics) if r.get("eval/return_mean") is not None]
        series = [
            (
                "ours (eval, mean ± std)",
                [r["step"] for r in records],
                [r["eval/return_mean"] for r in records],
                [r.get("eval/return_std") or 0.0 for r in records],
            )
        ]
        panels.append((f"{trainer} on {env} ({config.get('num_seeds')} seeds)", series, baseline))
    plots.against_baselines(panels, _OUT.value, title="evaluation return against the published baselines")
    print(f"plot: {_OUT.value}")


def registry_panels(table: str, baselines: dict) -> list:
    """One panel per env of the registry table `table`: each row's recorded eval curve, and the env's baseline."""
    from lepton_jax.errors import UserError
    from scripts import results

    rows = [r for r in results.load(results.REGISTRY)["rows"] if r.get("table") == table]
    if not rows:
        raise UserError(f"--table: the results registry has no table '{table}'")
    panels: dict[str, list] = {}
    for row in rows:
        curve = (row.get("extra") or {}).get("eval curve")
        if not curve:
            raise UserError(f"--table: row {row['id']} records no eval curve")
        points = [point.split(":") for point in curve.split(",")]
        steps = [float(step) * 1e6 for step, _ in points]  # the curve's steps are in millions
        env = row["command"].rsplit(":", 1)[-1].split()[0]  # --config=<file>:<preset>
        label = f"{row['label']} ({row['seeds']} seeds, eval mean)"
        panels.setdefault(env, []).append((label, steps, [float(value) for _, value in points], None))
    return [(env, series, baselines.get(env)) for env, series in panels.items()]


if __name__ == "__main__":
    sys.exit(cli.run(plot, sys.argv))
