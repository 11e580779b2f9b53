"""Benchmarks the VAE and DCGAN training steps against the same architectures in PyTorch (CPU), in one run.

    python -m scripts.bench.generative --out=/tmp/bench_generative.json   # from the repo root

Both sides train on the same in-memory 28x28 images (random pixels: the speed of these nets does not depend on the
content) with the configs' batch size and optimiser, one seed, for `--steps` / `--dcgan_steps` steps after a
warm-up epoch, and report training images/s (the fastest of `--repeats` timed runs):

- ours: `epochs.make_epoch` over the trainer's own `train_step` with the config's `seed_loop` (exactly what a
  training run executes: a jitted on-device shuffle, then one jitted step per batch that gathers its batch on the
  device). The first epoch (compiling included) is timed apart. `--vae_seeds=N` adds a row for the VAE vmapped
  over N seeds (images/s summed over seeds).
- PyTorch: the same layers, initialisation, optimiser, loss and step order written for the benchmark
  (`peers/torch_generative.py`), in its own venv (`<--peer_venv_dir>/torch-venv`, torch 2.13.0 CPU wheel, created
  on first use) in a subprocess; a plain in-memory loop (random permutation, index, step), no DataLoader. torch
  runs once per `--torch_threads` setting (default: its own default of one thread per core, and one thread: on a
  busy machine torch's threads can wait on each other); every ratio is against the fastest torch row.

On a 2-core CPU the whole run takes a few minutes (plus about a minute to install the torch venv, once).
"""

import json
import os
import sys
import time

import jax
import numpy as np
from absl import app, flags

from generative import dcgan, vae
from generative.configs import dcgan as dcgan_config
from generative.configs import vae as vae_config
from lepton_jax import epochs, parallel
from scripts.bench import common

_MODELS = flags.DEFINE_list("models", ["vae", "dcgan"], "Which models to benchmark: vae, dcgan.")
_PEERS = flags.DEFINE_list("peers", ["ours", "torch"], "Implementations: ours, torch.")
_STEPS = flags.DEFINE_integer("steps", 100, "Timed VAE training steps per run.")
_DCGAN_STEPS = flags.DEFINE_integer("dcgan_steps", 60, "Timed DCGAN training steps per run.")
_DCGAN_FEATURES = flags.DEFINE_integer("dcgan_features", 32, "DCGAN gen_features = disc_features (config: 64).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs; the fastest counts.")
_VAE_SEEDS = flags.DEFINE_integer("vae_seeds", 3, "If > 1, also time our VAE vmapped over this many seeds.")
_PEER_VENV_DIR = flags.DEFINE_string("peer_venv_dir", common.PEER_VENV_DIR, "Where torch-venv is created.")
_TORCH_THREADS = flags.DEFINE_list(
    "torch_threads", ["0", "1"], "torch intra-op thread counts to time (0: torch's default); the fastest is the peer."
)
_OUT = flags.DEFINE_string("out", None, "If set, writes everything as JSON to this file.")

TORCH_PINS = "torch==2.13.0\nnumpy==2.4.6\n"


def steps_of(model: str) -> int:
    return _STEPS.value if model == "vae" else _DCGAN_STEPS.value


def problem_of(model: str) -> dict:
    """The sizes handed to the peer, read from our configs so both sides train the same nets."""
    if model == "vae":
        c = vae_config.get_config("mnist")
        fields = ("batch_size", "lr", "hidden", "latent_dim")
    else:
        c = dcgan_config.get_config("mnist")
        fields = (
            "batch_size",
            "lr",
            "beta1",
            "beta2",
            "latent_dim",
            "gen_features",
            "disc_features",
            "gen_hidden",
            "disc_hidden",
        )
    problem = {k: c[k] for k in fields}
    if model == "dcgan":
        problem.update(gen_features=_DCGAN_FEATURES.value, disc_features=_DCGAN_FEATURES.value)
    problem.update(model=model, steps=steps_of(model), repeats=_REPEATS.value)
    return problem


def bench_ours(model: str, num_seeds: int = 1) -> dict:
    """Compiles our jitted epoch of `--steps` steps and times it (fastest of `--repeats`)."""
    mesh = parallel.make_mesh()
    shape = (28, 28, 1)
    if model == "vae":
        config = vae_config.get_config("mnist")
        net = vae.make_model(config, shape)
        init_one, step = vae.make_init(config, net, shape), vae.make_train_step(net)
    else:
        config = dcgan_config.get_config("mnist")
        config.gen_features = config.disc_features = _DCGAN_FEATURES.value
        generator, discriminator = dcgan.make_models(config, shape)
        init_one, step = dcgan.make_init(config, generator, discriminator, shape), dcgan.make_train_step(config)
    n = config.batch_size * steps_of(model)
    images = epochs.to_device(np.random.default_rng(0).random((n, *shape), np.float32), mesh)
    state = epochs.init_seeds(init_one, num_seeds, mesh)(jax.random.PRNGKey(0))
    epoch = epochs.make_epoch(step, config.batch_size, mesh, seed_loop=config.get("seed_loop", "vmap"))
    (state, _), first_s = common.timed(lambda: jax.block_until_ready(epoch(state, images)))  # + compiling
    best = float("inf")
    for _ in range(_REPEATS.value):
        start = time.perf_counter()
        state, _ = jax.block_until_ready(epoch(state, images))  # the state is donated: carry it on
        best = min(best, time.perf_counter() - start)
    return {
        "first_epoch_s": first_s,
        "train_s": best,
        "images": n * num_seeds,
        "num_seeds": num_seeds,
        "images_per_second": n * num_seeds / best,
        "version": f"lepton-jax, jax {jax.__version__}",
    }


def _fastest_torch(rows: dict) -> str | None:
    """The fastest torch row (the peer every ratio divides by), or None."""
    torch_rows = [name for name in rows if name.startswith("torch")]
    return max(torch_rows, key=lambda name: rows[name]["images_per_second"], default=None)


def main(argv):
    del argv
    load = common.warn_if_busy()
    report = {"vae_steps": _STEPS.value, "dcgan_steps": _DCGAN_STEPS.value, "repeats": _REPEATS.value, "results": {}}
    python = None
    if "torch" in _PEERS.value:
        python = common.ensure_venv(os.path.join(_PEER_VENV_DIR.value, "torch-venv"), TORCH_PINS)
    for model in _MODELS.value:
        rows = report["results"][model] = {}
        if "ours" in _PEERS.value:
            rows["ours"] = bench_ours(model)
            print(f"{model} ours: {rows['ours']['images_per_second']:,.0f} images/s", flush=True)
            if model == "vae" and _VAE_SEEDS.value > 1:
                rows[f"ours_{_VAE_SEEDS.value}_seeds"] = bench_ours(model, _VAE_SEEDS.value)
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
    report["machine"] = common.machine(load)

    print("\n| model | implementation | images/s | train s | first epoch s | vs torch |")
    print("|---|---|---:|---:|---:|---:|")
    for model, rows in report["results"].items():
        peer = _fastest_torch(rows)
        torch_ips = rows[peer]["images_per_second"] if peer else None
        for name, row in rows.items():
            if name.startswith("speedup"):
                continue
            ratio = f"{row['images_per_second'] / torch_ips:.2f}x" if torch_ips else "-"
            first = row.get("first_epoch_s", row.get("warmup_s"))
            print(
                f"| {model} | {name} | {row['images_per_second']:,.0f} | {row['train_s']:.2f} | {first:.1f} | {ratio} |"
            )
    print(f"load average before/after: {load:.2f} / {report['machine']['load_average_after']:.2f}")
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            json.dump(report, f, indent=2)
        print(f"Wrote {_OUT.value}", file=sys.stderr)


if __name__ == "__main__":
    app.run(main)
