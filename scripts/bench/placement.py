"""What each `placement` setting costs (`lepton_jax/placement.py`): the replay buffer on the device or in pinned host
memory, the image training set on the device or fed from the host, evaluation where training runs or on the CPU.

    python -m scripts.bench.placement --out=/tmp/bench_placement.json        # from the repo root; about a minute
    python -m scripts.bench.placement --settings=replay --buffer_size=1000000 --dqn_env=Breakout-MinAtar

Each setting is timed against its default on the same workload, in this process, compile apart:

- replay: DQN (`agents/configs/dqn.py` on `--dqn_env`, `--num_seeds` seeds, learning from the first update) in jitted
  chunks of `--chunk_updates` updates, as the RL loop runs it: seconds per chunk and env steps per second, the
  buffer's bytes, and the device memory in use after initialisation where the backend reports it (GPUs, TPUs).
- data: the image classifier (`lepton_jax/vision/configs/classifier.py` on `--dataset`) for `--epochs` epochs:
  seconds per epoch (the first, with its compile, apart) and images per second.
- eval: the classifier's test pass (`make_evaluate`: loss and accuracy of every seed on the test set), the
  parameters copied to the evaluation device first: seconds per pass.

Times are the median of `--repeats` (chunks, later epochs, passes). On a CPU-only machine "device", "pinned_host"
and "cpu" are the same memory and device, so the figures there show only the bookkeeping each setting adds.
"""

import functools
import sys

import jax
import numpy as np
from absl import app, flags

from scripts.bench import common

SETTINGS = ("replay", "data", "eval")
CHOICES = {"replay": ("device", "pinned_host"), "data": ("device", "host"), "eval": ("same", "cpu")}
_SETTINGS = flags.DEFINE_list("settings", list(SETTINGS), "What to time: " + ", ".join(SETTINGS) + ".")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed chunks / later epochs / passes per measurement (the median).")
_DQN_ENV = flags.DEFINE_string("dqn_env", "CartPole-v1", "The DQN's environment.")
_BUFFER_SIZE = flags.DEFINE_integer("buffer_size", 100_000, "The replay buffer's transitions (per seed).")
_NUM_SEEDS = flags.DEFINE_integer("num_seeds", 2, "Seeds trained together (DQN and classifier).")
_CHUNK_UPDATES = flags.DEFINE_integer("chunk_updates", 50, "DQN updates per timed chunk.")
_DATASET = flags.DEFINE_string("dataset", "digits", "The classifier's dataset (digits needs no files).")
_EPOCHS = flags.DEFINE_integer("epochs", 4, "Classifier epochs timed (the first includes compiling).")
_OUT = flags.DEFINE_string("out", None, "If set, writes everything as JSON to this file.")


def _device_bytes_in_use() -> int | None:
    stats = jax.devices()[0].memory_stats()  # None on CPU
    return None if stats is None else int(stats.get("bytes_in_use", 0))


def _median_after_first(times: list[float]) -> float:
    return float(np.median(times[1:] or times))


def replay_row(kind: str) -> dict:
    """DQN chunks with the replay buffer in `kind` memory."""
    from agents import dqn
    from agents.configs import dqn as dqn_config
    from lepton_jax import parallel, placement
    from lepton_jax.rl import envs, loop
    from lepton_jax.rl.agent import run_updates_masked

    config = dqn_config.get_config(_DQN_ENV.value)
    config.buffer_size, config.num_seeds, config.learning_starts = _BUFFER_SIZE.value, _NUM_SEEDS.value, 0
    config.placement.replay = kind
    agent = dqn.make_agent(config, envs.make_env(config.env_name))
    keys = jax.random.split(jax.random.PRNGKey(0), config.num_seeds)
    mesh = parallel.mesh_from_config(config)
    abstract, kinds = placement.memory_kinds(loop.init_runs(agent), keys, {})
    shardings = placement.with_memory_kinds(loop.state_shardings(abstract, mesh), kinds)
    before = _device_bytes_in_use()
    state = jax.block_until_ready(jax.jit(loop.init_runs(agent), out_shardings=shardings)(keys, {}))
    after = _device_bytes_in_use()
    replicated = parallel.replicated(mesh)
    chunk = jax.jit(
        jax.vmap(functools.partial(run_updates_masked, agent, length=_CHUNK_UPDATES.value), in_axes=(0, None)),
        in_shardings=(shardings, replicated),
        out_shardings=(shardings, replicated),
        donate_argnums=0,
    )
    times = []
    for _ in range(_REPEATS.value + 1):
        (state, _), seconds = common.timed(
            lambda s=state: jax.block_until_ready(chunk(s, np.int32(_CHUNK_UPDATES.value)))
        )
        times.append(seconds)
    chunk_s = _median_after_first(times)
    return {
        "setting": "replay",
        "value": kind,
        "first_s": times[0],
        "seconds": chunk_s,
        "env_steps_per_second": config.num_seeds * _CHUNK_UPDATES.value * agent.steps_per_update / chunk_s,
        "buffer_mib": sum(x.nbytes for x in jax.tree.leaves(state.replay.data)) / 2**20,
        "buffer_memory": {x.sharding.memory_kind for x in jax.tree.leaves(state.replay.data)}.pop(),
        "device_mib_after_init": None if after is None else (after - before) / 2**20,
    }


def _classifier(setting: str, value: str):
    from lepton_jax.vision import data as image_data
    from lepton_jax.vision.configs import classifier as classifier_config

    config = classifier_config.get_config(_DATASET.value)
    config.num_seeds = _NUM_SEEDS.value
    config.placement[setting] = value
    return config, image_data.load(config.dataset, config.data_dir)


def data_row(kind: str) -> dict:
    """Classifier epochs with the training set placed as `kind` says."""
    from lepton_jax import parallel, placement
    from lepton_jax.vision import classifier

    config, data = _classifier("data", kind)
    model = classifier.make_model(config, data.num_classes)
    mesh = parallel.mesh_from_config(config)
    init = classifier.make_init(config, model, data.image_shape, len(data.train_images) // config.batch_size)
    step, sampler = classifier.make_step(config, data.train_labels, data.num_classes, data.image_shape)
    epoch = placement.make_epoch(config, step, config.batch_size, mesh, config.seed_loop, sampler)
    train = placement.put_data(config, (data.train_images, data.train_labels), mesh)
    state = jax.jit(jax.vmap(init))(jax.random.split(jax.random.PRNGKey(0), config.num_seeds))
    times = []
    for _ in range(max(_EPOCHS.value, 2)):
        (state, _), seconds = common.timed(lambda s=state: jax.block_until_ready(epoch(s, train)))
        times.append(seconds)
    epoch_s = _median_after_first(times)
    images = (len(data.train_images) // config.batch_size) * config.batch_size * config.num_seeds
    return {
        "setting": "data",
        "value": kind,
        "first_s": times[0],
        "seconds": epoch_s,
        "images_per_second": images / epoch_s,
    }


def eval_row(kind: str) -> dict:
    """The classifier's test pass where `kind` says, the parameters copied there first."""
    from lepton_jax import parallel, placement
    from lepton_jax.vision import classifier

    config, data = _classifier("eval", kind)
    model = classifier.make_model(config, data.num_classes)
    mesh = parallel.mesh_from_config(config)
    init = classifier.make_init(config, model, data.image_shape)
    variables = jax.jit(jax.vmap(init))(jax.random.split(jax.random.PRNGKey(0), config.num_seeds)).variables()
    test = placement.eval_arrays(config, (data.test_images, data.test_labels), mesh)
    evaluate = placement.on_eval_device(config, classifier.make_evaluate(model, seed_loop=config.seed_loop))
    times = [
        common.timed(lambda: jax.block_until_ready(evaluate(variables, *test)))[1] for _ in range(_REPEATS.value + 1)
    ]
    return {"setting": "eval", "value": kind, "first_s": times[0], "seconds": _median_after_first(times)}


ROWS = {"replay": replay_row, "data": data_row, "eval": eval_row}


def print_table(rows: list[dict]) -> None:
    print(
        f"\nplacement costs on {jax.devices()[0].platform} ({jax.devices()[0].device_kind}), median of {_REPEATS.value}"
    )
    header = f"{'setting':>8} {'value':>12} {'first s':>9} {'s':>9} {'vs default':>10}  throughput"
    print(header + "\n" + "-" * len(header))
    defaults = {row["setting"]: row["seconds"] for row in rows if row["value"] == CHOICES[row["setting"]][0]}
    for row in rows:
        ratio = row["seconds"] / defaults[row["setting"]] if row["setting"] in defaults else float("nan")
        if row["setting"] == "replay":
            extra = f"{row['env_steps_per_second']:,.0f} env steps/s, buffer {row['buffer_mib']:.1f} MiB"
            extra += f" in {row['buffer_memory']}"
            if row["device_mib_after_init"] is not None:
                extra += f", device +{row['device_mib_after_init']:.1f} MiB at init"
        elif row["setting"] == "data":
            extra = f"{row['images_per_second']:,.0f} images/s"
        else:
            extra = "one test pass"
        print(
            f"{row['setting']:>8} {row['value']:>12} {row['first_s']:9.3f} {row['seconds']:9.4f} {ratio:10.2f}  {extra}"
        )
    print("first s: the first chunk / epoch / pass, with its compile; s: the median of the later ones (DQN: a chunk).")


def main(argv):
    del argv
    unknown = set(_SETTINGS.value) - set(SETTINGS)
    if unknown:
        raise app.UsageError(f"unknown --settings {sorted(unknown)}; valid: {', '.join(SETTINGS)}")
    load_before = common.warn_if_busy()
    rows = []
    for setting in _SETTINGS.value:
        for value in CHOICES[setting]:
            print(f"{setting}={value}...", flush=True)
            rows.append(ROWS[setting](value))
    print_table(rows)
    if _OUT.value:
        flag_values = {f.name: f.value for f in flags.FLAGS.get_key_flags_for_module(sys.modules[__name__])}
        report = {
            "command": sys.argv,
            "flags": flag_values,
            "versions": {"jax": jax.__version__},
            "rows": rows,
            "machine": common.machine(load_before),
        }
        common.write_report(_OUT.value, report)


if __name__ == "__main__":
    app.run(main)
