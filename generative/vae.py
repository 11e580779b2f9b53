"""Variational autoencoder (Kingma & Welling 2014) on binarised images, MLP or convolutional.

    python -m scripts.train --config=generative/configs/vae.py:mnist --workdir=runs/vae_mnist

The likelihood is Bernoulli on dynamically binarised pixels (each batch is re-sampled as `x ~ Bernoulli(pixel)`);
the test set is binarised once with a fixed key, so every evaluation sees the same bits. The posterior is a diagonal
Gaussian sampled by reparameterisation, the prior N(0, I). Reported: the test negative ELBO in nats (one posterior
sample per image, every epoch) and, at the end, the importance-sampled negative log-likelihood with `k` posterior
samples (Burda et al. 2016), which is a tighter bound and approaches -log p(x) as k grows.

All seeds train at once (`vmap`; every state leaf has the seed axis first) in one compiled program per epoch.
"""

import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax.training.train_state import TrainState

from generative import common
from lepton_jax import epochs, metrics, parallel, plotting, registry, seeds, supervised
from lepton_jax import run as run_lib
from lepton_jax.config import require
from lepton_jax.techniques import early_stopping, optim, precision
from lepton_jax.vision import data as image_data

ARCHITECTURES = ("mlp", "conv")


class Encoder(nn.Module):
    """x (B, H, W, 1) -> posterior mean and log-variance (B, latent)."""

    architecture: str
    hidden: int
    latent_dim: int

    @nn.compact
    def __call__(self, x):
        if self.architecture == "conv":
            x = nn.relu(nn.Conv(32, (4, 4), strides=(2, 2))(x))
            x = nn.relu(nn.Conv(64, (4, 4), strides=(2, 2))(x))
        x = nn.relu(nn.Dense(self.hidden)(x.reshape(x.shape[0], -1)))
        return nn.Dense(self.latent_dim, name="mean")(x), nn.Dense(self.latent_dim, name="logvar")(x)


class Decoder(nn.Module):
    """z (B, latent) -> Bernoulli logits (B, H, W, 1)."""

    architecture: str
    hidden: int
    image_shape: tuple[int, int, int]

    @nn.compact
    def __call__(self, z):
        h, w, c = self.image_shape
        x = nn.relu(nn.Dense(self.hidden)(z))
        if self.architecture == "conv":
            x = nn.relu(nn.Dense((h // 4) * (w // 4) * 64)(x)).reshape(-1, h // 4, w // 4, 64)
            x = nn.relu(nn.ConvTranspose(32, (4, 4), strides=(2, 2))(x))
            return nn.ConvTranspose(c, (4, 4), strides=(2, 2))(x)
        return nn.Dense(h * w * c)(x).reshape(-1, h, w, c)


class VAE(nn.Module):
    architecture: str
    hidden: int
    latent_dim: int
    image_shape: tuple[int, int, int]

    def setup(self):
        self.encoder = Encoder(self.architecture, self.hidden, self.latent_dim)
        self.decoder = Decoder(self.architecture, self.hidden, self.image_shape)

    def __call__(self, x, key):
        """(logits (B, H, W, C), mean, logvar) with one reparameterised posterior sample per image."""
        mean, logvar = self.encoder(x)
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)
        return self.decoder(z), mean, logvar

    def encode(self, x):
        return self.encoder(x)

    def decode(self, z):
        return self.decoder(z)


def kl_divergence(mean, logvar):
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over the last axis: 0.5 * sum(var + mean^2 - 1 - logvar)."""
    return 0.5 * jnp.sum(jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar, axis=-1)


def binary_cross_entropy(logits, x):
    """-log Bernoulli(x | sigmoid(logits)) summed over all but the first axis, from logits (stable)."""
    per_pixel = jax.nn.softplus(logits) - x * logits  # = -[x log s + (1 - x) log(1 - s)], s = sigmoid(logits)
    return jnp.sum(per_pixel.reshape(per_pixel.shape[0], -1), axis=-1)


def gaussian_log_prob(z, mean, logvar):
    """log N(z; mean, diag(exp(logvar))) summed over the last axis."""
    return -0.5 * jnp.sum(jnp.log(2 * jnp.pi) + logvar + jnp.square(z - mean) / jnp.exp(logvar), axis=-1)


def neg_elbo(model: VAE, params, x, key):
    """Per-image negative ELBO (B,) and its two terms: reconstruction BCE and KL, in nats."""
    logits, mean, logvar = model.apply(params, x, key)
    recon, kl = binary_cross_entropy(logits, x), kl_divergence(mean, logvar)
    return recon + kl, recon, kl


def importance_sampled_nll(model: VAE, params, x, key, num_samples: int, chunk: int):
    """-log p(x) estimated with `num_samples` importance samples from q(z|x) (B,), in chunks of `chunk` samples.

    log p(x) ~= logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K; the running logsumexp over chunks
    keeps memory at (chunk, B, H, W, C) whatever K is.
    """
    require(num_samples % chunk == 0, f"is_samples ({num_samples}) must be a multiple of is_chunk ({chunk})")
    mean, logvar = model.apply(params, x, method=VAE.encode)
    batch = x.shape[0]

    def body(running, key):
        eps = jax.random.normal(key, (chunk, *mean.shape))
        z = mean + jnp.exp(0.5 * logvar) * eps  # (chunk, B, latent)
        logits = model.apply(params, z.reshape(chunk * batch, -1), method=VAE.decode)
        x_rep = jnp.broadcast_to(x, (chunk, *x.shape)).reshape(chunk * batch, *x.shape[1:])
        log_px_z = -binary_cross_entropy(logits, x_rep).reshape(chunk, batch)
        log_pz = gaussian_log_prob(z, 0.0, jnp.zeros_like(z))
        log_qz = gaussian_log_prob(z, mean, logvar)
        log_w = log_px_z + log_pz - log_qz  # (chunk, B)
        return jnp.logaddexp(running, jax.nn.logsumexp(log_w, axis=0)), None

    total, _ = jax.lax.scan(body, jnp.full((batch,), -jnp.inf), jax.random.split(key, num_samples // chunk))
    return -(total - math.log(num_samples))


class VAEState(TrainState):
    """`early`: the early-stopping bookkeeping when a validation split is held out (`val_fraction` > 0)."""

    rng: jax.Array
    early: early_stopping.EarlyStopping | None = None

    def variables(self):
        return self.params


def make_model(config, image_shape) -> VAE:
    require(
        config.architecture in ARCHITECTURES,
        f"unknown architecture '{config.architecture}'; valid: {', '.join(ARCHITECTURES)}",
    )
    model = VAE(config.architecture, config.hidden, config.latent_dim, tuple(image_shape))
    return precision.module(model, config)  # computing in `config.precision`'s type


def make_train_step(model: VAE):
    """`train_step(state, images, key) -> (state, metrics)`: binarise, one Adam step on the mean negative ELBO."""

    def train_step(state: VAEState, images, key):
        bits_key, z_key = jax.random.split(key)
        x = jax.random.bernoulli(bits_key, images).astype(jnp.float32)  # dynamic binarisation

        def loss_fn(params):
            loss, recon, kl = neg_elbo(model, params, x, z_key)
            return loss.mean(), (recon.mean(), kl.mean())

        (loss, (recon, kl)), grads = precision.value_and_grad(loss_fn, state.opt_state, has_aux=True)(state.params)
        metrics = {"train/loss": loss, "train/recon": recon, "train/kl": kl}
        return state.apply_gradients(grads=grads), metrics

    return train_step


def make_init(config, model: VAE, image_shape, steps_per_epoch: int = 1):
    """`key -> VAEState` for one seed; the factory's optimiser (`lepton_jax/techniques/optim.py`; default Adam)."""
    tx = optim.make(config, config.num_epochs * steps_per_epoch, steps_per_epoch)
    early = config.get("val_fraction", 0.0) > 0

    def init(key):
        init_key, z_key, rng = jax.random.split(key, 3)
        params = model.init(init_key, jnp.zeros((1, *image_shape)), z_key)
        state = VAEState.create(apply_fn=model.apply, params=params, tx=tx, rng=rng)
        return state.replace(early=early_stopping.EarlyStopping.create(params)) if early else state

    return init


def run(config, workdir: str):
    """Trains per `config` into `workdir`; returns (final state with a seed axis, results).

    The feature classifier of the FID is checked, and trained or resumed if needed, before the VAE trains, so that
    a problem with it is reported before the run, not after it."""
    common.check_classifier_workdir(config)
    data = image_data.load(config.dataset, config.data_dir)
    model = make_model(config, data.image_shape)
    mesh = parallel.mesh_from_config(config)
    eval_key = jax.random.PRNGKey(config.seed + 1_000_003)  # evaluation's own stream, never the training rng
    test_bits = jax.random.bernoulli(jax.random.PRNGKey(12345), data.test_images).astype(jnp.float32)  # fixed
    # The last `val_fraction` of the training images validate early stopping (binarised once, as the test set).
    cut = len(data.train_images) - early_stopping.holdout(len(data.train_images), config.get("val_fraction", 0.0))
    train_images = epochs.to_device(data.train_images[:cut], mesh)
    val_bits = jax.random.bernoulli(jax.random.PRNGKey(54321), data.train_images[cut:]).astype(jnp.float32)
    test_bits = epochs.to_device(test_bits, mesh)
    epoch_fn = epochs.make_epoch(make_train_step(model), config.batch_size, mesh)
    evaluator, extra = common.make_evaluator(config, data) if config.fid_samples else (None, {})

    def scores(bits, prefix):
        @jax.jit
        def evaluate(params):  # params with a seed axis -> {name: (seeds,)}
            def one_seed(params):
                terms = epochs.map_in_chunks(lambda x: neg_elbo(model, params, x, eval_key), bits, 1000)
                return {f"{prefix}/{name}": t.mean() for name, t in zip(("neg_elbo", "recon", "kl"), terms)}

            return jax.vmap(one_seed)(params)

        return evaluate

    evaluate = scores(test_bits, "test")
    validate = None
    if len(val_bits):
        evaluate_val = scores(epochs.to_device(val_bits, mesh), "val")

        def validate(params):  # early stopping watches the validation negative ELBO
            val = evaluate_val(params)
            return val | {"val/loss": val["val/neg_elbo"]}

    train_epoch, kept = early_stopping.watch(
        lambda state, epoch: epoch_fn(state, train_images), validate, config.get("patience", 0)
    )

    desc = f"vae-{config.architecture} {data.name}"

    def final(state, last_eval):
        params = kept(state)  # the best by validation when early stopping, else the last
        if state.early is not None:
            last_eval = jax.device_get(evaluate(params))
        results = run_lib.seed_summary(last_eval) | {"num_seeds": int(config.num_seeds)}
        if state.early is not None:
            results |= run_lib.seed_summary({"best_epoch": np.asarray(state.early.best_epoch) + 1})
        results.update(_at_epochs(workdir, config.report_epochs, ("test/neg_elbo",)))
        if config.is_samples:
            results.update(_nll(config, model, params, test_bits))
        if evaluator is not None:
            results.update(extra)
            samples = _samples(model, params, jax.random.PRNGKey(config.seed + 7), config.fid_samples)
            results.update(common.evaluate_seeds(evaluator, samples))
        _pictures(config, model, seeds.tree_slice(params, 0), data, test_bits, workdir)
        return results

    task = supervised.Task(
        init=epochs.init_seeds(
            make_init(config, model, data.image_shape, cut // config.batch_size),
            config.num_seeds,
            mesh,
        ),
        train_epoch=train_epoch,
        evaluate=lambda state: evaluate(state.params),
        num_epochs=config.num_epochs,
        done=(lambda state: early_stopping.all_stopped(state.early)) if validate is not None else None,
        final=final,
        params=kept,
        plot_keys=("train/loss", "test/neg_elbo"),
        title=f"{desc}, latent {config.latent_dim}",
    )
    return supervised.fit(config, workdir, task, desc=desc)


@registry.register("vae")
def train_and_evaluate(config, workdir: str) -> dict:
    """The launcher's entry point."""
    return run(config, workdir)[1]


def _at_epochs(workdir: str, report_epochs, keys) -> dict:
    """`<key>_epoch<E>_mean` and `_std` over seeds, read back from metrics.jsonl, for the epochs reached."""
    path = os.path.join(workdir, "metrics.jsonl")
    records = {r["step"]: r for r in metrics.read_jsonl(path)} if os.path.exists(path) else {}
    out = {}
    for epoch in report_epochs:
        for key in keys:
            for name, suffix in ((key, "_mean"), (key + "_std", "_std")):
                if records.get(epoch, {}).get(name) is not None:
                    out[f"{key}_epoch{epoch}{suffix}"] = records[epoch][name]
    return out


def _nll(config, model: VAE, params, test_bits) -> dict:
    """Importance-sampled test NLL per seed on the first `is_examples` test images, `is_batch` images per jitted
    call (a progress bar with an ETA over the calls: k = 5000 samples per image take minutes on a CPU)."""
    require(int(config.is_examples) >= 1, f"config.is_examples must be >= 1, got {config.is_examples}")
    x = np.asarray(test_bits[: config.is_examples])
    key = jax.random.PRNGKey(config.seed + 2_000_003)
    batch = min(int(config.is_batch), len(x))

    @jax.jit
    def nll(params, xb):  # -> (seeds, batch): every batch uses the same key, as one scan over batches would
        return jax.vmap(lambda p: importance_sampled_nll(model, p, xb, key, config.is_samples, config.is_chunk))(params)

    start = time.perf_counter()
    parts = []
    bar = run_lib.phase(-(-len(x) // batch), f"IS NLL (k={config.is_samples}, {len(x)} images)", unit="batch")
    for first in range(0, len(x), batch):
        xb = x[first : first + batch]
        pad = batch - len(xb)  # the last batch is padded to the same shape (one compile), then cut
        xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), xb.dtype)]) if pad else xb
        parts.append(np.asarray(nll(params, xb))[:, : batch - pad])
        bar.update(1)
    bar.close()
    per_seed = np.concatenate(parts, axis=1).mean(axis=1)
    seconds = time.perf_counter() - start
    out = run_lib.seed_summary({"test/nll_is": per_seed})
    out.update({"test/nll_is_k": config.is_samples, "test/nll_is_examples": int(x.shape[0])})
    out["perf/nll_is_seconds"] = seconds
    return out


def _samples(model: VAE, params, key, num: int):
    """(seeds, num, H, W, C) samples from the prior, as Bernoulli means (the usual picture of a VAE sample)."""

    @jax.jit
    def sample(params):
        z = jax.random.normal(key, (num, model.latent_dim))
        return jax.vmap(lambda p: jax.nn.sigmoid(model.apply(p, z, method=VAE.decode)))(params)

    return np.asarray(sample(params))


def _pictures(config, model: VAE, params, data, test_bits, workdir: str) -> None:
    """Reconstructions, samples and, for a 2-D latent, the manifold and the test set by class (seed 0)."""
    out = common.plots_dir(workdir)
    if out is None:
        return
    x = test_bits[:16]
    logits, mean, _ = model.apply(params, x, jax.random.PRNGKey(0))
    pairs = np.concatenate([data.test_images[:16], jax.nn.sigmoid(logits)])
    title = f"VAE on {data.name}: 16 test images and their reconstructions (seed 0)"
    plotting.image_grid(pairs, f"{out}/reconstructions.png", 16, title, row_labels=("original", "reconstruction"))
    z = jax.random.normal(jax.random.PRNGKey(config.seed + 11), (100, model.latent_dim))
    title = f"VAE on {data.name}: 100 samples, z ~ N(0, I) (seed 0)"
    plotting.image_grid(jax.nn.sigmoid(model.apply(params, z, method=VAE.decode)), f"{out}/samples.png", 10, title)
    if model.latent_dim != 2:
        return
    from scipy.stats import norm

    grid = norm.ppf(np.linspace(0.05, 0.95, 20))
    z = np.stack(np.meshgrid(grid, grid[::-1]), -1).reshape(-1, 2)  # row by row, top = large z_2
    decoded = jax.nn.sigmoid(model.apply(params, jnp.asarray(z), method=VAE.decode))
    axes = "at the N(0, 1) quantiles 0.05 ... 0.95"
    plotting.image_grid(
        decoded,
        f"{out}/manifold.png",
        20,
        f"VAE on {data.name}: the decoded 2-D latent space (seed 0)",
        xlabel=f"z_1 {axes}, left to right",
        ylabel=f"z_2 {axes}, bottom to top",
    )
    means = np.asarray(epochs.map_in_chunks(lambda b: model.apply(params, b, method=VAE.encode)[0], test_bits, 1000))
    fig, ax = plotting.pyplot().subplots(figsize=(6, 5), dpi=120)
    points = ax.scatter(means[:, 0], means[:, 1], c=data.test_labels, cmap="tab10", s=2)
    fig.colorbar(points, ax=ax, ticks=range(10), label="class")
    ax.set_xlabel("z_1 (posterior mean)")
    ax.set_ylabel("z_2")
    ax.set_title(f"test set in the latent space ({data.name})")
    plotting.save(fig, f"{out}/latent_by_class.png")
