"""Trains any registered trainer from a config file.

    python -m scripts.train                                   # PPO on CartPole-v1 into runs/...
    python -m scripts.train --config=agents/configs/ppo.py:Pendulum-v1 --workdir=runs/pendulum \
        --config.num_seeds=8 --config.lr=3e-4
    python -m scripts.train --config.sweep.lr=1e-3,3e-3,1e-2   # 3 learning rates x 4 seeds in one program

Before anything is built, the whole config is validated (every key against its declaration) and the workdir is
made. Re-running the same command on the same workdir resumes from the newest intact checkpoint, or, when the run
has finished, says so and leaves it as it is. Ctrl-C (or SIGTERM) saves a checkpoint first. Mistakes in flags or
inputs end with one line on stderr and exit code 2 (the exit codes: `scripts/cli.py`).
"""

import dataclasses
import hashlib
import os
import sys

from absl import flags, logging

from scripts import cli

_DEFAULT_CONFIG = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "agents", "configs", "ppo.py"
)

# Read by `scripts.cli` (with its `--config.KEY=VALUE` overrides), defined here for `--help`.
flags.DEFINE_string("config", _DEFAULT_CONFIG, "Config file[:arg]; override keys with --config.KEY=VALUE.")
_RESTART = flags.DEFINE_bool(
    "restart", False, "Start the run in --workdir afresh, its old checkpoints and logs moved aside (kept)."
)
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize (multi-host runs).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (auto-detected if unset).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (auto-detected if unset).", 1)
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (auto-detected if unset).", 0)


def default_workdir(config) -> str:
    digest = hashlib.sha256(config.to_json_best_effort(sort_keys=True).encode()).hexdigest()[:8]
    name = config.get("env_name") or config.get("dataset") or config.get("task") or "run"
    return os.path.join("runs", f"{config.trainer}-{name}-{digest}")


@dataclasses.dataclass
class Launch:
    config: object
    workdir: str


def prepare(argv: list[str]) -> Launch:
    """Everything checked at launch, before anything is built: the flags, the config file and its overrides, every
    config value, and the workdir (created). A mistake is a one-line `UserError`."""
    from scripts import trainers

    value, overrides, rest = cli.split_config_args(argv[1:])
    cli.parse_flags([argv[0], *rest])
    config = cli.load_config(value or _DEFAULT_CONFIG)
    cli.apply_overrides(config, overrides)
    config.lock()
    trainers.load()
    trainers.validate(config)
    workdir = cli.WORKDIR.value if flags.FLAGS["workdir"].present else default_workdir(config)
    cli.check_workdir(workdir)
    return Launch(config, workdir)


def train(argv: list[str]) -> None:
    launch = prepare(argv)
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO
    from lepton_jax import parallel, registry
    from lepton_jax import run as run_lib

    config, workdir = launch.config, launch.workdir
    if _DISTRIBUTED.value:
        parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    train_and_evaluate = registry.get(config.trainer)
    if _RESTART.value and parallel.is_main_process():
        run_lib.restart_workdir(workdir)
    if parallel.is_main_process():
        print(f"workdir: {workdir}", file=sys.stderr)
    try:
        results = train_and_evaluate(config, workdir)
    except run_lib.AlreadyComplete as done:
        print(f"already complete: results in {done.path} (a new run needs a new --workdir or --restart)")
        return
    if parallel.is_main_process():
        headline = ("eval/", "test/", "perf/wall", "perf/steps")
        summary = {
            k: v
            for k, v in results.items()
            if (k.startswith(headline) and not k.endswith("_std") and "/recall/" not in k)  # per class: results.json
            or k.endswith("/eval/return_mean")
        }
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))
        print(f"results: {os.path.join(workdir, 'results.json')}")


if __name__ == "__main__":
    sys.exit(cli.run(train, sys.argv))
