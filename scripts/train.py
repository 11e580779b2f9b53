"""Trains any registered trainer from a config file.

    python -m scripts.train                                   # PPO on CartPole-v1 into runs/...
    python -m scripts.train --config=agents/configs/ppo.py:Pendulum-v1 --workdir=runs/pendulum \
        --config.num_seeds=8 --config.lr=3e-4
    python -m scripts.train --config.sweep.lr=1e-3,3e-3,1e-2   # 3 learning rates x 4 seeds in one program

Re-running the same command on the same workdir resumes from the newest intact checkpoint. Ctrl-C (or SIGTERM)
saves a checkpoint first. Mistakes in flags or inputs end with one line on stderr and exit code 2.
"""

import hashlib
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_DEFAULT_CONFIG = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "agents", "configs", "ppo.py"
)

_CONFIG = config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG, "Config file[:arg].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory; default runs/<trainer>-<env>-<config hash>.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize (multi-host runs).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (auto-detected if unset).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (auto-detected if unset).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (auto-detected if unset).")


def default_workdir(config) -> str:
    digest = hashlib.sha256(config.to_json_best_effort(sort_keys=True).encode()).hexdigest()[:8]
    name = config.get("env_name") or config.get("dataset") or "run"
    return os.path.join("runs", f"{config.trainer}-{name}-{digest}")


def _unknown_key(argv) -> str | None:
    """For a `--config.A.B=V` flag naming a key the config lacks: a line saying which, and the keys there are."""
    config_arg = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), _DEFAULT_CONFIG)
    try:
        config = config_flags.config_flags.ConfigFileFlagParser(name="config").parse(config_arg)
    except Exception:  # the file itself is wrong: the caller shows the original error
        return None
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        node, path = config, []
        for part in arg[len("--config.") :].split("=", 1)[0].split("."):
            if not hasattr(node, "keys") or part not in node.keys():
                where = ".".join(["config", *path])
                keys = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "none (not a group)"
                return f"{arg.split('=', 1)[0]}: {where} has no key '{part}'; its keys: {keys}"
            node, path = node[part], [*path, part]
    return None


def _parse_flags(argv):
    """absl's flag parsing, with a one-line error (exit 2) for a misspelled `--config.KEY` instead of a traceback."""
    try:
        return app.parse_flags_with_usage(argv)
    except (AttributeError, KeyError, TypeError) as error:
        print(f"error: {_unknown_key(argv) or error}", file=sys.stderr)
        sys.exit(2)


def main(argv):
    del argv
    from lepton_jax import parallel, registry
    from lepton_jax.errors import UserError
    from lepton_jax.interrupt import Interrupted
    from lepton_jax.metrics import TrainingDiverged
    from scripts import trainers

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO
    config = _CONFIG.value
    workdir = _WORKDIR.value or default_workdir(config)
    try:
        if _DISTRIBUTED.value:
            parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
        trainers.load()
        train_and_evaluate = registry.get(config.trainer)
        if parallel.is_main_process():
            print(f"workdir: {workdir}", file=sys.stderr)
        results = train_and_evaluate(config, workdir)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except Interrupted as error:
        print(str(error), file=sys.stderr)
        sys.exit(128 + error.signum)
    if parallel.is_main_process():
        headline = ("eval/", "test/", "perf/wall", "perf/steps")
        summary = {
            k: v
            for k, v in results.items()
            if (k.startswith(headline) and not k.endswith("_std")) or k.endswith("/eval/return_mean")
        }
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))
        print(f"results: {os.path.join(workdir, 'results.json')}")


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
