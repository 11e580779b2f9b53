"""Benchmarks the vision and generative training steps (the CNN classifier, the VAE and the DCGAN) against the same
architectures in PyTorch (CPU), in one run.

    python -m scripts.bench.generative --out=/tmp/bench_generative.json   # from the repo root

Both sides train on the same in-memory 28x28 images (random pixels, and random labels for the classifier: the speed
of these nets does not depend on the content) with the configs' batch size and optimiser, one seed, for `--steps`
(VAE) / `--dcgan_steps` / `--classifier_steps` steps after a warm-up epoch, and report training images/s (the
fastest of `--repeats` timed runs), the parameter count (both sides must agree) and the peak resident memory of the
process that trained the row (each row runs in a fresh process; the figure before training, after imports and
data, is reported beside it):

- ours: `epochs.make_epoch` over the trainer's own `train_step` with the config's `seed_loop` (exactly what a
  training run executes: a jitted on-device shuffle, then one jitted step per batch that gathers its batch on the
  device), in a subprocess of this script (`--measure`). The first epoch (compiling included) is timed apart.
  `--vae_seeds=N` adds a row for the VAE vmapped over N seeds (images/s summed over seeds).
- PyTorch: the same layers, initialisation, optimiser, loss and step order written for the benchmark
  (`peers/torch_generative.py`), in its own venv (`<--peer_venv_dir>/torch-venv`, torch 2.13.0 CPU wheel, created
  on first use) in a subprocess; a plain in-memory loop (random permutation, index, step), no DataLoader, NCHW
  tensors (torch's default layout). torch runs once per `--torch_threads` setting (default: its own default of one
  thread per core, and one thread: on a busy machine torch's threads can wait on each other); every ratio is
  against the fastest torch row.

Models: `vae`, `dcgan`, `classifier` (lepton_jax/vision/configs/classifier.py:mnist, the Flax MNIST example's CNN:
Adam 1e-3 on a cosine schedule spanning the config's MNIST run, batch 128) and `classifier_strong` (its `strong`
net: two Conv-BatchNorm-ReLU per block, max pooling, dropout 0.25; about four times the classifier's arithmetic,
so not in the default `--models`). In torch the CNNs' weights are drawn as flax draws them (truncated normal,
variance 1/fan_in, zero biases), from another random stream.

On a 2-core CPU the whole run takes a few minutes (plus about a minute to install the torch venv, once).
"""

import json
import os
import time

import jax
import numpy as np
from absl import app, flags

from generative import dcgan, vae
from generative.configs import dcgan as dcgan_config
from generative.configs import vae as vae_config
from lepton_jax import epochs, parallel
from lepton_jax.vision import classifier
from lepton_jax.vision.configs import classifier as classifier_config
from scripts.bench import common

MODELS = ("vae", "dcgan", "classifier", "classifier_strong")
CLASSIFIER_ARGS = {"classifier": "mnist", "classifier_strong": "mnist,strong"}  # the config file's arg
MNIST_TRAIN_IMAGES = 60_000  # the classifier's schedule spans the steps of its MNIST run, as in training
IMAGE_SHAPE = (28, 28, 1)

_MODELS = flags.DEFINE_list(
    "models", ["vae", "dcgan", "classifier"], "Which models to benchmark: " + ", ".join(MODELS) + "."
)
_PEERS = flags.DEFINE_list("peers", ["ours", "torch"], "Implementations: ours, torch.")
_STEPS = flags.DEFINE_integer("steps", 100, "Timed VAE training steps per run.")
_DCGAN_STEPS = flags.DEFINE_integer("dcgan_steps", 60, "Timed DCGAN training steps per run.")
_CLASSIFIER_STEPS = flags.DEFINE_integer("classifier_steps", 40, "Timed classifier training steps per run.")
_DCGAN_FEATURES = flags.DEFINE_integer("dcgan_features", 32, "DCGAN gen_features = disc_features (config: 64).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs; the fastest counts.")
_VAE_SEEDS = flags.DEFINE_integer("vae_seeds", 3, "If > 1, also time our VAE vmapped over this many seeds.")
_PEER_VENV_DIR = flags.DEFINE_string("peer_venv_dir", common.PEER_VENV_DIR, "Where torch-venv is created.")
_TORCH_THREADS = flags.DEFINE_list(
    "torch_threads", ["0", "1"], "torch intra-op thread counts to time (0: torch's default); the fastest is the peer."
)
_OUT = flags.DEFINE_string("out", None, "If set, writes everything as JSON to this file.")
_MEASURE = flags.DEFINE_string("measure", None, "Internal: MODEL,NUM_SEEDS,OUT_PATH: time ours in this process.")

TORCH_PINS = "torch==2.13.0\nnumpy==2.4.6\n"


def steps_of(model: str) -> int:
    return {"vae": _STEPS.value, "dcgan": _DCGAN_STEPS.value}.get(model, _CLASSIFIER_STEPS.value)


def config_of(model: str):
    """The config both sides train: the trainer's MNIST config (the DCGAN's widths set by `--dcgan_features`)."""
    if model == "vae":
        return vae_config.get_config("mnist")
    if model == "dcgan":
        config = dcgan_config.get_config("mnist")
        config.gen_features = config.disc_features = _DCGAN_FEATURES.value
        return config
    return classifier_config.get_config(CLASSIFIER_ARGS[model])


def problem_of(model: str) -> dict:
    """The sizes handed to the peer, read from our configs so both sides train the same nets."""
    c = config_of(model)
    if model == "vae":
        fields = ("batch_size", "lr", "hidden", "latent_dim")
    elif model == "dcgan":
        fields = ("batch_size", "lr", "beta1", "beta2", "latent_dim", "gen_features", "disc_features")
        fields += ("gen_hidden", "disc_hidden")
    else:
        fields = ("batch_size", "lr", "hidden", "convs_per_block", "batch_norm", "dropout", "pool")
    problem = {k: c[k] for k in fields}
    if model in CLASSIFIER_ARGS:
        steps_per_epoch = MNIST_TRAIN_IMAGES // c.batch_size
        problem.update(
            conv_features=list(c.conv_features), num_classes=10, schedule_steps=c.num_epochs * steps_per_epoch
        )
    problem.update(model=model, steps=steps_of(model), repeats=_REPEATS.value)
    return problem


def count_params(state, num_seeds: int) -> int:
    """The trained parameters of one seed: the leaves under the state's `params` fields (not the optimiser's)."""
    total = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        names = {getattr(key, "name", None) for key in path}  # the dataclass fields on the way
        if "params" in names and "opt_state" not in names:
            total += leaf.size
    return total // num_seeds


def bench_ours(model: str, num_seeds: int = 1) -> dict:
    """Compiles our jitted epoch of `steps_of(model)` steps and times it (fastest of `--repeats`)."""
    config = config_of(model)
    mesh = parallel.make_mesh()  # the trainers' mesh for the default `config.mesh` ("": every device on `data`)
    n = config.batch_size * steps_of(model)
    rng = np.random.default_rng(0)
    data = rng.random((n, *IMAGE_SHAPE), np.float32)
    sampler = None
    if model == "vae":
        net = vae.make_model(config, IMAGE_SHAPE)
        init_one, step = vae.make_init(config, net, IMAGE_SHAPE), vae.make_train_step(net)
    elif model == "dcgan":
        generator, discriminator = dcgan.make_models(config, IMAGE_SHAPE)
        init_one = dcgan.make_init(config, generator, discriminator, IMAGE_SHAPE)
        step = dcgan.make_train_step(config)
    else:
        net = classifier.make_model(config)
        init_one = classifier.make_init(config, net, IMAGE_SHAPE, MNIST_TRAIN_IMAGES // config.batch_size)
        data = (data, rng.integers(0, 10, n).astype(np.int32))  # (images, labels) as `classifier.run` holds them
        # The step and sampler `classifier.run` builds from the config (augmentation, loss and batch sampler: all off
        # in these configs, so the plain cross-entropy step on shuffled batches).
        step, sampler = classifier.make_step(config, data[1], 10)
    data = epochs.to_device(data, mesh)
    state = epochs.init_seeds(init_one, num_seeds, mesh)(jax.random.PRNGKey(0))
    epoch = epochs.make_epoch(step, config.batch_size, mesh, seed_loop=config.get("seed_loop", "vmap"), sampler=sampler)
    rss_before = common.rss_mib()
    (state, _), first_s = common.timed(lambda: jax.block_until_ready(epoch(state, data)))  # + compiling
    best = float("inf")
    for _ in range(_REPEATS.value):
        start = time.perf_counter()
        state, _ = jax.block_until_ready(epoch(state, data))  # the state is donated: carry it on
        best = min(best, time.perf_counter() - start)
    return {
        "first_epoch_s": first_s,
        "train_s": best,
        "images": n * num_seeds,
        "num_seeds": num_seeds,
        "images_per_second": n * num_seeds / best,
        "params": count_params(state, num_seeds),
        "rss_before_mib": rss_before,
        "peak_rss_mib": common.rss_mib(),
        "version": f"lepton-jax, jax {jax.__version__}",
    }


def measure_worker(spec: str) -> None:
    """`--measure=MODEL,NUM_SEEDS,OUT`: times ours in this fresh process (so its peak memory is its own)."""
    model, num_seeds, out = spec.split(",")
    result = bench_ours(model, int(num_seeds))
    with open(out, "w") as f:
        json.dump(result, f)


def run_ours(model: str, num_seeds: int = 1) -> dict:
    """`bench_ours` in a fresh process, with this run's sizes."""
    sizes = ("steps", "dcgan_steps", "classifier_steps", "dcgan_features", "repeats")
    args = [f"--{name}={flags.FLAGS[name].value}" for name in sizes]
    return common.run_measure("scripts.bench.generative", f"{model},{num_seeds}", args)


def _fastest_torch(rows: dict) -> str | None:
    """The fastest torch row (the peer every ratio divides by), or None."""
    torch_rows = [name for name in rows if name.startswith("torch")]
    return max(torch_rows, key=lambda name: rows[name]["images_per_second"], default=None)


def main(argv):
    del argv
    if _MEASURE.value:
        measure_worker(_MEASURE.value)
        return
    unknown = sorted(set(_MODELS.value) - set(MODELS))
    if unknown:
        raise app.UsageError(f"--models: unknown {', '.join(unknown)}; valid: {', '.join(MODELS)}")
    load = common.warn_if_busy()
    report = {
        "vae_steps": _STEPS.value,
        "dcgan_steps": _DCGAN_STEPS.value,
        "classifier_steps": _CLASSIFIER_STEPS.value,
        "repeats": _REPEATS.value,
        "results": {},
    }
    python = None
    if "torch" in _PEERS.value:
        python = common.ensure_venv(os.path.join(_PEER_VENV_DIR.value, "torch-venv"), TORCH_PINS)
    for model in _MODELS.value:
        rows = report["results"][model] = {}
        if "ours" in _PEERS.value:
            rows["ours"] = run_ours(model)
            print(f"{model} ours: {rows['ours']['images_per_second']:,.0f} images/s", flush=True)
            if model == "vae" and _VAE_SEEDS.value > 1:
                rows[f"ours_{_VAE_SEEDS.value}_seeds"] = run_ours(model, _VAE_SEEDS.value)
        if python:
            for threads in map(int, _TORCH_THREADS.value):
                name = f"torch_{threads}_threads" if threads else "torch"
                problem = problem_of(model) | {"threads": threads}
                rows[name] = common.run_worker(python, "torch_generative", [json.dumps(problem)])
                print(f"{model} {name}: {rows[name]['images_per_second']:,.0f} images/s", flush=True)
        peer = _fastest_torch(rows)
        if "ours" in rows and peer:
            rows["speedup"] = rows["ours"]["images_per_second"] / rows[peer]["images_per_second"]
            rows["speedup_vs"] = peer
            if rows["ours"]["params"] != rows[peer]["params"]:
                print(
                    f"WARNING: {model}: ours has {rows['ours']['params']:,} parameters, {peer} {rows[peer]['params']:,}"
                )
    report["machine"] = common.machine(load)

    columns = ("model", "implementation", "images/s", "train s", "first epoch s", "vs torch", "params")
    print("\n| " + " | ".join(columns + ("RSS before MiB", "peak MiB")) + " |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for model, rows in report["results"].items():
        peer = _fastest_torch(rows)
        torch_ips = rows[peer]["images_per_second"] if peer else None
        for name, row in rows.items():
            if name.startswith("speedup"):
                continue
            ratio = f"{row['images_per_second'] / torch_ips:.2f}x" if torch_ips else "-"
            first = row.get("first_epoch_s", row.get("warmup_s"))
            print(
                f"| {model} | {name} | {row['images_per_second']:,.0f} | {row['train_s']:.2f} | {first:.1f} | {ratio} "
                f"| {row['params']:,} | {row['rss_before_mib']:,.0f} | {row['peak_rss_mib']:,.0f} |"
            )
    print(f"load average before/after: {load:.2f} / {report['machine']['load_average_after']:.2f}")
    if _OUT.value:
        common.write_report(_OUT.value, report)


if __name__ == "__main__":
    app.run(main)
