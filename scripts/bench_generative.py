"""Benchmarks the VAE and DCGAN training steps against the same architectures in PyTorch (CPU), in one run.

    PYTHONPATH=. python scripts/bench_generative.py --out=/tmp/bench_generative.json

Both sides train on the same in-memory 28x28 images (random pixels: the speed of these nets does not depend on the
content) with the configs' batch size and optimiser, one seed, for `--steps` / `--dcgan_steps` steps after a
warm-up epoch, and report
training images/s (the fastest of `--repeats` timed runs):

- ours: `data_images.make_epoch` over the trainer's own `train_step` with the config's `seed_loop` (exactly what a
  training run executes: a jitted on-device shuffle, then one jitted step per batch that gathers its batch on the
  device). The first epoch (compiling included) is timed apart. `--vae_seeds=N` adds a row for the VAE vmapped
  over N seeds (images/s summed over seeds).
- PyTorch: the same layers, initialisation, optimiser, loss and step order written here for the benchmark
  (`_WORKER`), in its own venv (`<--peer_venv_dir>/torch-venv`, torch 2.13.0 CPU wheel, created on first use) in a
  subprocess; a plain in-memory loop (random permutation, index, step), no DataLoader. torch runs once per
  `--torch_threads` setting (default: its own default of one thread per core, and one thread: on a busy machine
  torch's threads can wait on each other); every ratio is against the fastest torch row.

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
from lepton_jax import benchmarking, data_images, parallel

_MODELS = flags.DEFINE_list("models", ["vae", "dcgan"], "Which models to benchmark: vae, dcgan.")
_PEERS = flags.DEFINE_list("peers", ["ours", "torch"], "Implementations: ours, torch.")
_STEPS = flags.DEFINE_integer("steps", 100, "Timed VAE training steps per run.")
_DCGAN_STEPS = flags.DEFINE_integer("dcgan_steps", 60, "Timed DCGAN training steps per run.")
_DCGAN_FEATURES = flags.DEFINE_integer("dcgan_features", 32, "DCGAN gen_features = disc_features (config: 64).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs; the fastest counts.")
_VAE_SEEDS = flags.DEFINE_integer("vae_seeds", 3, "If > 1, also time our VAE vmapped over this many seeds.")
_PEER_VENV_DIR = flags.DEFINE_string("peer_venv_dir", benchmarking.PEER_VENV_DIR, "Where torch-venv is created.")
_TORCH_THREADS = flags.DEFINE_list(
    "torch_threads", ["0", "1"], "torch intra-op thread counts to time (0: torch's default); the fastest is the peer."
)
_OUT = flags.DEFINE_string("out", None, "If set, writes everything as JSON to this file.")

TORCH_PINS = "torch==2.13.0\nnumpy==2.4.6\n"

_WORKER = r"""
import json, sys, time
import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

def init_dcgan(module):
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)

class VAE(nn.Module):
    def __init__(self, hidden, latent):
        super().__init__()
        self.enc, self.mean, self.logvar = nn.Linear(784, hidden), nn.Linear(hidden, latent), nn.Linear(hidden, latent)
        self.dec1, self.dec2 = nn.Linear(latent, hidden), nn.Linear(hidden, 784)
    def forward(self, x):
        h = F.relu(self.enc(x))
        mean, logvar = self.mean(h), self.logvar(h)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        return self.dec2(F.relu(self.dec1(z))), mean, logvar

class Generator(nn.Module):
    def __init__(self, latent, f, hidden):
        super().__init__()
        self.f = f
        self.fc = nn.Sequential(
            nn.Linear(latent, hidden), nn.BatchNorm1d(hidden), nn.ReLU()
        ) if hidden else nn.Identity()
        self.proj = nn.Linear(hidden or latent, 7 * 7 * 2 * f)
        self.bn0, self.up1 = nn.BatchNorm2d(2 * f), nn.ConvTranspose2d(2 * f, f, 4, 2, 1)
        self.bn1, self.up2 = nn.BatchNorm2d(f), nn.ConvTranspose2d(f, 1, 4, 2, 1)
    def forward(self, z):
        x = F.relu(self.bn0(self.proj(self.fc(z)).view(-1, 2 * self.f, 7, 7)))
        return torch.tanh(self.up2(F.relu(self.bn1(self.up1(x)))))

class Discriminator(nn.Module):
    def __init__(self, f, hidden):
        super().__init__()
        self.c1, self.c2, self.bn = nn.Conv2d(1, f, 4, 2, 1), nn.Conv2d(f, 2 * f, 4, 2, 1), nn.BatchNorm2d(2 * f)
        self.fc = nn.Sequential(
            nn.Linear(2 * f * 7 * 7, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2)
        ) if hidden else nn.Identity()
        self.out = nn.Linear(hidden or 2 * f * 7 * 7, 1)
    def forward(self, x):
        x = F.leaky_relu(self.c1(x), 0.2)
        x = F.leaky_relu(self.bn(self.c2(x)), 0.2)
        return self.out(self.fc(x.flatten(1))).squeeze(1)

def run(p):
    if p["threads"]:
        torch.set_num_threads(p["threads"])
    torch.manual_seed(0)
    n = p["batch_size"] * p["steps"]
    images = torch.rand(n, 1, 28, 28)
    if p["model"] == "vae":
        model = VAE(p["hidden"], p["latent_dim"])
        opt = torch.optim.Adam(model.parameters(), lr=p["lr"])
        flat = images.view(n, -1)
        def step(batch):
            x = torch.bernoulli(batch)
            logits, mean, logvar = model(x)
            recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
            kl = 0.5 * (logvar.exp() + mean ** 2 - 1 - logvar).sum(1)
            loss = (recon + kl).mean()
            opt.zero_grad(); loss.backward(); opt.step()
        data = flat
    else:
        g = Generator(p["latent_dim"], p["gen_features"], p["gen_hidden"])
        d = Discriminator(p["disc_features"], p["disc_hidden"])
        g.apply(init_dcgan); d.apply(init_dcgan)
        for m in (g, d):
            for bn in m.modules():
                if isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)): bn.momentum = 0.1
        opt_g = torch.optim.Adam(g.parameters(), lr=p["lr"], betas=(p["beta1"], p["beta2"]))
        opt_d = torch.optim.Adam(d.parameters(), lr=p["lr"], betas=(p["beta1"], p["beta2"]))
        def step(batch):
            real = batch * 2 - 1
            fake = g(torch.randn(batch.shape[0], p["latent_dim"]))
            d_loss = F.softplus(-d(real)).mean() + F.softplus(d(fake.detach())).mean()
            opt_d.zero_grad(); d_loss.backward(); opt_d.step()
            g_loss = F.softplus(-d(fake)).mean()
            opt_g.zero_grad(); g_loss.backward(); opt_g.step()
        data = images

    def epoch(steps):
        perm = torch.randperm(n)
        for i in range(steps):
            step(data[perm[i * p["batch_size"]:(i + 1) * p["batch_size"]]])

    start = time.perf_counter(); epoch(min(10, p["steps"])); warmup_s = time.perf_counter() - start
    best = float("inf")
    for _ in range(p["repeats"]):
        start = time.perf_counter(); epoch(p["steps"]); best = min(best, time.perf_counter() - start)
    return {"train_s": best, "warmup_s": warmup_s, "images": n, "images_per_second": n / best,
            "torch_threads": torch.get_num_threads(), "version": "torch " + torch.__version__}

if __name__ == "__main__":
    problem, out_path = json.loads(sys.argv[1]), sys.argv[2]
    with open(out_path, "w") as f:
        json.dump(run(problem), f)
"""


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
    images = data_images.to_device(np.random.default_rng(0).random((n, *shape), np.float32), mesh)
    state = data_images.init_seeds(init_one, num_seeds, mesh)(jax.random.PRNGKey(0))
    epoch = data_images.make_epoch(step, config.batch_size, mesh, seed_loop=config.get("seed_loop", "vmap"))
    (state, _), first_s = benchmarking.timed(lambda: jax.block_until_ready(epoch(state, images)))  # + compiling
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
    load = benchmarking.warn_if_busy()
    report = {"vae_steps": _STEPS.value, "dcgan_steps": _DCGAN_STEPS.value, "repeats": _REPEATS.value, "results": {}}
    python = None
    if "torch" in _PEERS.value:
        python = benchmarking.ensure_venv(os.path.join(_PEER_VENV_DIR.value, "torch-venv"), TORCH_PINS)
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
                rows[name] = benchmarking.run_worker(
                    python, _WORKER, [json.dumps(problem_of(model) | {"threads": threads})]
                )
                print(f"{model} {name}: {rows[name]['images_per_second']:,.0f} images/s", flush=True)
        peer = _fastest_torch(rows)
        if "ours" in rows and peer:
            rows["speedup"] = rows["ours"]["images_per_second"] / rows[peer]["images_per_second"]
            rows["speedup_vs"] = peer
    report["machine"] = benchmarking.machine(load)

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
