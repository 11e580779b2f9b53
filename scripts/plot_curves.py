"""Draws the evaluation curves of finished or running RL workdirs side by side, each with its published baseline.

    python -m scripts.plot_curves --workdirs=runs/ppo_breakout,runs/ppo_asterix --out=plots/minatar.png
    python -m scripts.plot_curves --workdirs=runs/ppo_breakout --baselines=28 --out=runs/ppo_breakout/plots/vs.png

A PPO run on a MinAtar game gets the gymnax baselines' published return at 10^7 steps by default
(`agents/configs/ppo.py` `GYMNAX_BASELINES`); `--baselines` gives one number per workdir (empty: none).
"""

import os
import sys

from absl import flags

from scripts import cli

_WORKDIRS = flags.DEFINE_list("workdirs", None, "RL workdirs (each holds config.json and metrics.jsonl).")
_BASELINES = flags.DEFINE_list("baselines", None, "One baseline return per workdir (default: the published one).")
_OUT = flags.DEFINE_string("plot", "curves.png", "The PNG to write.")


def plot(argv: list[str]) -> None:
    from agents.configs import ppo
    from lepton_jax.config import read_json
    from lepton_jax.errors import UserError
    from lepton_jax.metrics import read_jsonl
    from lepton_jax.rl import plots

    cli.parse_flags(argv)
    workdirs = _WORKDIRS.value or []
    if not workdirs:
        raise UserError("--workdirs: give at least one RL workdir")
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
        panels.append((f"{trainer} on {env} ({config.get('num_seeds')} seeds)", read_jsonl(metrics), baseline))
    plots.against_baselines(panels, _OUT.value, title="evaluation return against the published baselines")
    print(f"plot: {_OUT.value}")


if __name__ == "__main__":
    sys.exit(cli.run(plot, sys.argv))
