"""The VAE and DCGAN of `generative/` and the CNN classifier of `lepton_jax/vision/` in plain PyTorch (CPU):
`python -I torch_generative.py PROBLEM_JSON OUT_PATH`.

Runs in the torch venv (see `scripts/bench/generative.py`), never in the project's. The same layers,
initialisation, optimiser, loss and step order as ours, trained on random 28x28 images (and random labels for the
classifier) with a plain in-memory loop (random permutation, index, step; no DataLoader): a warm-up of up to 10
steps, then the fastest of `repeats` timed epochs of `steps` steps. Writes JSON to OUT_PATH, with the parameter
count and the process's peak resident memory (before training, after imports and data; and at the end).
"""

import json
import math
import resource
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn


def init_dcgan(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def init_lecun(module: nn.Module) -> None:
    """Flax's default for `nn.Conv` / `nn.Dense`: weights from a normal truncated at 2 standard deviations with
    variance 1 / fan_in (the scale corrected for the truncation, as `jax.nn.initializers.lecun_normal`), biases 0.
    (BatchNorm's defaults, scale 1 and offset 0, are the same in both.)"""
    if isinstance(module, nn.Conv2d | nn.Linear):
        fan_in = module.weight[0].numel()  # in_channels * kh * kw, or in_features
        std = math.sqrt(1.0 / fan_in) / 0.87962566103423978  # the std of a unit normal truncated to [-2, 2]
        nn.init.trunc_normal_(module.weight, 0.0, std, -2 * std, 2 * std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class CNN(nn.Module):
    """Blocks of `convs_per_block` 3x3 "SAME" convolutions (each Conv-[BatchNorm]-ReLU) then a 2x2 pool, one block
    per entry of `conv_features`; then [dropout] Linear(hidden)-ReLU [dropout] Linear(classes). Inputs NCHW."""

    def __init__(self, p: dict):
        super().__init__()
        layers, channels = [], 1
        for features in p["conv_features"]:
            for _ in range(p["convs_per_block"]):
                # With BatchNorm the convolution has no bias (the norm's offset replaces it), as in ours.
                layers.append(nn.Conv2d(channels, features, 3, padding=1, bias=not p["batch_norm"]))
                if p["batch_norm"]:
                    layers.append(nn.BatchNorm2d(features, momentum=0.1))  # flax's momentum 0.9 = torch's 0.1
                layers.append(nn.ReLU())
                channels = features
            layers.append(nn.AvgPool2d(2) if p["pool"] == "avg" else nn.MaxPool2d(2))
        side = 28 // 2 ** len(p["conv_features"])
        drop = nn.Dropout(p["dropout"]) if p["dropout"] else nn.Identity()  # ours skips dropout at rate 0
        self.net = nn.Sequential(
            *layers,
            nn.Flatten(),  # (B, C * side * side)
            drop,
            nn.Linear(channels * side * side, p["hidden"]),
            nn.ReLU(),
            drop,
            nn.Linear(p["hidden"], p["num_classes"]),
        )

    def forward(self, x):
        return self.net(x)  # (B, classes) logits


class VAE(nn.Module):
    def __init__(self, hidden: int, latent: int):
        super().__init__()
        self.enc, self.mean, self.logvar = nn.Linear(784, hidden), nn.Linear(hidden, latent), nn.Linear(hidden, latent)
        self.dec1, self.dec2 = nn.Linear(latent, hidden), nn.Linear(hidden, 784)

    def forward(self, x):
        h = F.relu(self.enc(x))
        mean, logvar = self.mean(h), self.logvar(h)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        return self.dec2(F.relu(self.dec1(z))), mean, logvar


class Generator(nn.Module):
    def __init__(self, latent: int, features: int, hidden: int):
        super().__init__()
        self.features = features
        self.fc = (
            nn.Sequential(nn.Linear(latent, hidden), nn.BatchNorm1d(hidden), nn.ReLU()) if hidden else nn.Identity()
        )
        self.proj = nn.Linear(hidden or latent, 7 * 7 * 2 * features)
        self.bn0, self.up1 = nn.BatchNorm2d(2 * features), nn.ConvTranspose2d(2 * features, features, 4, 2, 1)
        self.bn1, self.up2 = nn.BatchNorm2d(features), nn.ConvTranspose2d(features, 1, 4, 2, 1)

    def forward(self, z):
        x = F.relu(self.bn0(self.proj(self.fc(z)).view(-1, 2 * self.features, 7, 7)))  # (B, 2F, 7, 7)
        return torch.tanh(self.up2(F.relu(self.bn1(self.up1(x)))))  # (B, 1, 28, 28)


class Discriminator(nn.Module):
    def __init__(self, features: int, hidden: int):
        super().__init__()
        flat = 2 * features * 7 * 7
        self.c1, self.c2 = nn.Conv2d(1, features, 4, 2, 1), nn.Conv2d(features, 2 * features, 4, 2, 1)
        self.bn = nn.BatchNorm2d(2 * features)
        self.fc = (
            nn.Sequential(nn.Linear(flat, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2))
            if hidden
            else nn.Identity()
        )
        self.out = nn.Linear(hidden or flat, 1)

    def forward(self, x):
        x = F.leaky_relu(self.c1(x), 0.2)
        x = F.leaky_relu(self.bn(self.c2(x)), 0.2)
        return self.out(self.fc(x.flatten(1))).squeeze(1)  # (B,) logits


def vae_step(p: dict):
    model = VAE(p["hidden"], p["latent_dim"])
    opt = torch.optim.Adam(model.parameters(), lr=p["lr"])

    def step(batch):  # (B, 784) in [0, 1]
        x = torch.bernoulli(batch)
        logits, mean, logvar = model(x)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
        kl = 0.5 * (logvar.exp() + mean**2 - 1 - logvar).sum(1)
        loss = (recon + kl).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step, [model]


def dcgan_step(p: dict):
    g = Generator(p["latent_dim"], p["gen_features"], p["gen_hidden"])
    d = Discriminator(p["disc_features"], p["disc_hidden"])
    g.apply(init_dcgan)
    d.apply(init_dcgan)
    for module in (*g.modules(), *d.modules()):
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            module.momentum = 0.1
    opt_g = torch.optim.Adam(g.parameters(), lr=p["lr"], betas=(p["beta1"], p["beta2"]))
    opt_d = torch.optim.Adam(d.parameters(), lr=p["lr"], betas=(p["beta1"], p["beta2"]))

    def step(batch):  # (B, 1, 28, 28) in [0, 1]
        real = batch * 2 - 1
        fake = g(torch.randn(batch.shape[0], p["latent_dim"]))
        d_loss = F.softplus(-d(real)).mean() + F.softplus(d(fake.detach())).mean()
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = F.softplus(-d(fake)).mean()
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()

    return step, [g, d]


def classifier_step(p: dict):
    model = CNN(p)
    model.apply(init_lecun)
    model.train()  # BatchNorm on the batch's statistics, dropout on, as ours in training
    opt = torch.optim.Adam(model.parameters(), lr=p["lr"])
    # Ours: optax.cosine_decay_schedule(lr, schedule_steps), stepped per batch; the same rates.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=p["schedule_steps"])

    def step(images, labels):  # (B, 1, 28, 28), (B,) int64
        loss = F.cross_entropy(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()

    return step, [model]


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(p: dict) -> dict:
    if p["threads"]:
        torch.set_num_threads(p["threads"])
    torch.manual_seed(0)
    n, batch_size = p["batch_size"] * p["steps"], p["batch_size"]
    images = torch.rand(n, 1, 28, 28)
    if p["model"] == "vae":
        (step, models), data = vae_step(p), (images.view(n, -1),)
    elif p["model"] == "dcgan":
        (step, models), data = dcgan_step(p), (images,)
    else:
        (step, models), data = classifier_step(p), (images, torch.randint(p["num_classes"], (n,)))

    def epoch(steps):
        perm = torch.randperm(n)
        for i in range(steps):
            index = perm[i * batch_size : (i + 1) * batch_size]
            step(*(x[index] for x in data))

    rss_before = rss_mib()
    start = time.perf_counter()
    epoch(min(10, p["steps"]))
    warmup_s = time.perf_counter() - start
    best = float("inf")
    for _ in range(p["repeats"]):
        start = time.perf_counter()
        epoch(p["steps"])
        best = min(best, time.perf_counter() - start)
    return {
        "train_s": best,
        "warmup_s": warmup_s,
        "images": n,
        "images_per_second": n / best,
        "params": sum(x.numel() for model in models for x in model.parameters()),
        "rss_before_mib": rss_before,
        "peak_rss_mib": rss_mib(),
        "torch_threads": torch.get_num_threads(),
        "version": f"torch {torch.__version__}",
    }


if __name__ == "__main__":
    problem, out_path = json.loads(sys.argv[1]), sys.argv[2]
    result = run(problem)
    with open(out_path, "w") as f:
        json.dump(result, f)
