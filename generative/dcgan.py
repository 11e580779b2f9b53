"""DCGAN (Radford, Metz & Chintala 2016) for small grayscale images (MNIST 28x28, the 8x8 digits).

    python -m scripts.train --config=generative/configs/dcgan.py:mnist --workdir=runs/dcgan_mnist

The recipe: a generator of transposed convolutions (z -> [Dense(hidden) ->] projection to (H/4, W/4, 2F) ->
ConvT(F) -> ConvT(C), BatchNorm and ReLU between, tanh out; ConvT is `UpConv`), a discriminator of strided
convolutions (Conv(F) -> Conv(2F), each a `DownConv`; LeakyReLU 0.2, BatchNorm on all but the first layer
[-> Dense(hidden)] -> logit), no pooling, weights from N(0, 0.02) (BatchNorm scales from N(1, 0.02)), Adam with
lr 2e-4 and beta_1 0.5 for both, and the non-saturating generator loss -log D(G(z)). The fully connected hidden
layers are InfoGAN's MNIST DCGAN (Chen et al. 2016; config `gen_hidden` / `disc_hidden`, 1024 by default, 0 = the
all-convolutional nets): on MNIST they made the classes of the samples balanced, where the all-convolutional nets
kept producing too many 0s and 9s and too few 4s (RESULTS.md).

One step is the PyTorch DCGAN example's: the fake batch is generated once; the discriminator is updated on the real
and the (detached) fake batch, each a separate BatchNorm batch; then the generator is updated through the updated
discriminator, with the same fake batch (its gradient pulled back through the stored generator VJP).

Generator and discriminator (params, BatchNorm statistics, optimiser states) and the rng live in one `GANState`;
all seeds train at once (`vmap`, seed axis first). A grid of samples from fixed noise is saved every
`sample_every_epochs` epochs and at the end, so progress is visible; with the `augment_*` keys on, the discriminator
sees augmented real images (`lepton_jax/techniques/augment.py`), and `plots/augment.png` shows some.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import struct
from flax.training.train_state import TrainState

from generative import common
from lepton_jax import epochs, parallel, plotting, registry, supervised
from lepton_jax import run as run_lib
from lepton_jax.techniques import augment, optim, precision
from lepton_jax.vision import data as image_data

_INIT = nn.initializers.normal(0.02)
_BN_SCALE_INIT = lambda key, shape, dtype=jnp.float32: 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def _batch_norm(train: bool) -> nn.BatchNorm:
    # momentum 0.9 = PyTorch's BatchNorm momentum 0.1 (flax counts the other way).
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, scale_init=_BN_SCALE_INIT)


_NHWC = ("NHWC", "HWIO", "NHWC")


def _conv(x, kernel, strides=(1, 1), padding="VALID"):
    return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_NHWC)


def _pad_hw(x):
    """Zero-pads axes 1 and 2 (height, width) by one on each side."""
    return jnp.pad(x, ((0, 0), (1, 1), (1, 1)) + ((0, 0),) * (x.ndim - 3))


def _interleave(phases):
    """[[y00, y01], [y10, y11]], each (B, h, w, F) -> (B, 2h, 2w, F) with y_{py px}[a, b] at (2a + py, 2b + px)."""
    y = jnp.stack([jnp.stack(row, axis=3) for row in phases], axis=2)  # (B, h, py, w, px, F)
    batch, h, _, w, _, features = y.shape
    return y.reshape(batch, 2 * h, 2 * w, features)


class UpConv(nn.Module):
    """`nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding="SAME")` without a dilated convolution.

    The same parameters (`kernel` (4, 4, in, out), `bias`) and outputs as the flax layer (a test checks values and
    gradients). Output phase (py, px) (even/odd row and column) at (a, b) is the sum over dy, dx in {0, 1} of
    x[a + py + dy - 1, b + px + dx - 1] @ kernel[py + 2 dy, px + 2 dx]. A wide output computes each phase as one
    stride-1 2x2 convolution of x padded by one; a thin one (16 x features <= in channels: the image layer) applies
    all 16 taps in one matmul and sums shifted slices. On XLA CPU (batch 128, forward + backward) the kernel gradient
    of `ConvTranspose`'s dilated convolution made the 64 -> 32 layer ~4x slower than the phase convolutions, and the
    phase convolutions made the 32 -> 1 layer ~4.5x slower than the matmul.
    """

    features: int
    kernel_init: Any = _INIT

    @nn.compact
    def __call__(self, x):
        batch, h, w, channels = x.shape
        kernel = self.param("kernel", self.kernel_init, (4, 4, channels, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        if 16 * self.features <= channels:
            taps = x.reshape(-1, channels) @ kernel.transpose(2, 0, 1, 3).reshape(channels, 16 * self.features)
            taps = _pad_hw(taps.reshape(batch, h, w, 4, 4, self.features))
            phases = [
                [
                    sum(
                        taps[:, py + dy : py + dy + h, px + dx : px + dx + w, py + 2 * dy, px + 2 * dx]
                        for dy in (0, 1)
                        for dx in (0, 1)
                    )
                    for px in (0, 1)
                ]
                for py in (0, 1)
            ]
        else:
            padded = _pad_hw(x)
            phases = [
                [_conv(padded[:, py : py + h + 1, px : px + w + 1], kernel[py::2, px::2]) for px in (0, 1)]
                for py in (0, 1)
            ]
        return _interleave(phases) + bias


class DownConv(nn.Module):
    """`nn.Conv(features, (4, 4), strides=(2, 2))` ("SAME" padding; even height and width) with the same parameters
    and outputs (a test checks values and gradients). A thin input (16 x in channels <= features: the image layer)
    runs as its 16 strided taps stacked and one matmul (im2col: ~2x faster than XLA CPU's convolution, forward +
    backward, batch 128); a wide one is XLA's convolution (im2col was no faster there)."""

    features: int
    kernel_init: Any = _INIT

    @nn.compact
    def __call__(self, x):
        batch, h, w, channels = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"DownConv needs even height and width, got {(h, w)}")
        kernel = self.param("kernel", self.kernel_init, (4, 4, channels, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        if 16 * channels <= self.features:
            padded = _pad_hw(x)
            patches = jnp.stack([padded[:, i : i + h : 2, j : j + w : 2] for i in range(4) for j in range(4)], axis=3)
            y = patches.reshape(-1, 16 * channels) @ kernel.reshape(16 * channels, self.features)
            return y.reshape(batch, h // 2, w // 2, self.features) + bias
        return _conv(x, kernel, (2, 2), ((1, 1), (1, 1))) + bias


class Generator(nn.Module):
    """z (B, latent) -> images (B, H, W, C) in [-1, 1]; H and W divisible by 4."""

    image_shape: tuple[int, int, int]
    features: int = 64
    hidden: int = 0  # > 0: a Dense(hidden) + BatchNorm + ReLU layer before the projection

    @nn.compact
    def __call__(self, z, train: bool = True):
        h, w, c = self.image_shape
        x = z
        if self.hidden:
            x = nn.relu(_batch_norm(train)(nn.Dense(self.hidden, kernel_init=_INIT)(x)))
        x = nn.Dense((h // 4) * (w // 4) * 2 * self.features, kernel_init=_INIT)(x)
        x = x.reshape(-1, h // 4, w // 4, 2 * self.features)
        x = nn.relu(_batch_norm(train)(x))
        x = UpConv(self.features)(x)  # (B, H/2, W/2, F)
        x = nn.relu(_batch_norm(train)(x))
        x = UpConv(c)(x)  # (B, H, W, C)
        return jnp.tanh(x)


class Discriminator(nn.Module):
    """images (B, H, W, C) in [-1, 1] -> logits (B,)."""

    features: int = 64
    hidden: int = 0  # > 0: a Dense(hidden) + BatchNorm + LeakyReLU layer before the logit

    @nn.compact
    def __call__(self, x, train: bool = True):
        # DownConv = nn.Conv(F, (4, 4), strides=(2, 2)), named as flax names those (checkpoints stay compatible).
        x = nn.leaky_relu(DownConv(self.features, name="Conv_0")(x), 0.2)
        x = DownConv(2 * self.features, name="Conv_1")(x)
        x = nn.leaky_relu(_batch_norm(train)(x), 0.2).reshape(x.shape[0], -1)
        if self.hidden:
            x = nn.leaky_relu(_batch_norm(train)(nn.Dense(self.hidden, kernel_init=_INIT)(x)), 0.2)
        return nn.Dense(1, kernel_init=_INIT)(x)[:, 0]


class ModelState(TrainState):
    batch_stats: Any


@struct.dataclass
class GANState:
    generator: ModelState
    discriminator: ModelState
    rng: jax.Array


def make_models(config, image_shape) -> tuple[Generator, Discriminator]:
    """The two networks, computing in `config.precision`'s type (`lepton_jax/techniques/precision.py`)."""
    # A config saved before `gen_hidden` / `disc_hidden` existed means the all-convolutional nets.
    return (
        precision.module(Generator(tuple(image_shape), config.gen_features, config.get("gen_hidden", 0)), config),
        precision.module(Discriminator(config.disc_features, config.get("disc_hidden", 0)), config),
    )


def make_init(config, generator: Generator, discriminator: Discriminator, image_shape, steps_per_epoch: int = 1):
    """`key -> GANState` for one seed; each network gets the factory's optimiser (`lepton_jax/techniques/optim.py`;
    the DCGAN's default: Adam with beta1 0.5)."""

    def tx():
        return optim.make(config, config.num_epochs * steps_per_epoch, steps_per_epoch)

    def init(key):
        g_key, d_key, rng = jax.random.split(key, 3)
        g_vars = generator.init(g_key, jnp.zeros((2, config.latent_dim)))
        d_vars = discriminator.init(d_key, jnp.zeros((2, *image_shape)))
        g = ModelState.create(
            apply_fn=generator.apply, params=g_vars["params"], tx=tx(), batch_stats=g_vars["batch_stats"]
        )
        d = ModelState.create(
            apply_fn=discriminator.apply, params=d_vars["params"], tx=tx(), batch_stats=d_vars["batch_stats"]
        )
        return GANState(g, d, rng)

    return init


def discriminator_loss(real_logits, fake_logits):
    """-log D(x) - log(1 - D(G(z))), batch means, from logits: softplus(-l_real) + softplus(l_fake)."""
    return jax.nn.softplus(-real_logits).mean() + jax.nn.softplus(fake_logits).mean()


def generator_loss(fake_logits):
    """The non-saturating loss -log D(G(z)) = softplus(-l_fake), batch mean."""
    return jax.nn.softplus(-fake_logits).mean()


def make_train_step(config):
    """`train_step(state, images in [0, 1], key) -> (state, metrics)`: one discriminator and one generator step.

    With `augment_*` keys on (`lepton_jax/techniques/augment.py`), the discriminator sees augmented real images."""
    augment_fn = augment.make(config)

    def train_step(state: GANState, images, key):
        g, d = state.generator, state.discriminator
        if augment_fn is not None:  # a stream of the key apart from the noise's, so z is the same with or without
            images = augment_fn(jax.random.fold_in(key, 1), images)
        real = images * 2.0 - 1.0
        z = jax.random.normal(key, (images.shape[0], config.latent_dim))

        def generate(params):
            fake, updates = g.apply_fn(
                {"params": params, "batch_stats": g.batch_stats}, z, train=True, mutable=["batch_stats"]
            )
            return fake, updates["batch_stats"]

        fake, generator_vjp, g_stats = jax.vjp(generate, g.params, has_aux=True)

        def d_loss_fn(params):
            real_logits, updates = d.apply_fn(
                {"params": params, "batch_stats": d.batch_stats}, real, train=True, mutable=["batch_stats"]
            )
            fake_logits, updates = d.apply_fn(
                {"params": params, "batch_stats": updates["batch_stats"]},
                jax.lax.stop_gradient(fake),
                train=True,
                mutable=["batch_stats"],
            )
            return discriminator_loss(real_logits, fake_logits), (updates["batch_stats"], real_logits, fake_logits)

        (d_loss, (d_stats, real_logits, fake_logits)), d_grads = precision.value_and_grad(
            d_loss_fn, d.opt_state, has_aux=True
        )(d.params)
        d = d.apply_gradients(grads=d_grads).replace(batch_stats=d_stats)

        def g_loss_fn(fake):  # through the updated discriminator; its statistics from this pass are not kept
            logits, _ = d.apply_fn(
                {"params": d.params, "batch_stats": d.batch_stats}, fake, train=True, mutable=["batch_stats"]
            )
            return generator_loss(logits), logits

        # With f16, the generator's loss scale: its gradients reach the generator through the vjp below.
        (g_loss, logits_after), fake_grads = precision.value_and_grad(g_loss_fn, g.opt_state, has_aux=True)(fake)
        (g_grads,) = generator_vjp(fake_grads)
        g = g.apply_gradients(grads=g_grads).replace(batch_stats=g_stats)
        metrics = {
            "train/d_loss": d_loss,
            "train/g_loss": g_loss,
            "train/d_real": jax.nn.sigmoid(real_logits).mean(),  # D(x)
            "train/d_fake": jax.nn.sigmoid(fake_logits).mean(),  # D(G(z)) before the discriminator step
            "train/d_fake_after": jax.nn.sigmoid(logits_after).mean(),  # ... and after it
        }
        return GANState(g, d, state.rng), metrics

    return train_step


def make_sample(generator: Generator):
    """Jitted `(generator state with a seed axis, z (N, latent)) -> (seeds, N, H, W, C)` images in [0, 1]."""

    @jax.jit
    def sample(g: ModelState, z):
        def one_seed(g):
            images = generator.apply({"params": g.params, "batch_stats": g.batch_stats}, z, train=False)
            return (images + 1.0) / 2.0

        return jax.vmap(one_seed)(g)

    return sample


def sample_many(sample, g: ModelState, key, num: int, latent_dim: int, chunk: int = 1000) -> np.ndarray:
    """`num` samples per seed (seeds, num, H, W, C), drawn `chunk` at a time (one compiled shape)."""
    out = []
    chunks = -(-num // chunk)
    bar = run_lib.phase(chunks, f"sampling {num} images per seed", unit="chunk") if chunks > 1 else None
    for i in range(chunks):
        z = jax.random.normal(jax.random.fold_in(key, i), (chunk, latent_dim))
        out.append(np.asarray(sample(g, z)))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return np.concatenate(out, axis=1)[:, :num]


def run(config, workdir: str):
    """Trains per `config` into `workdir`; returns (final state with a seed axis, results).

    The feature classifier of the FID is checked, and trained or resumed if needed, before the GAN trains."""
    common.check_classifier_workdir(config)
    data = image_data.load(config.dataset, config.data_dir)
    generator, discriminator = make_models(config, data.image_shape)
    mesh = parallel.mesh_from_config(config)
    train_images = epochs.to_device(data.train_images, mesh)
    epoch_fn = epochs.make_epoch(make_train_step(config), config.batch_size, mesh, seed_loop=config.seed_loop)
    sample = make_sample(generator)
    fixed_noise = jax.random.normal(jax.random.PRNGKey(config.seed + 99), (100, config.latent_dim))
    eval_key = jax.random.PRNGKey(config.seed + 1_000_003)
    evaluator, extra = common.make_evaluator(config, data) if config.fid_samples else (None, {})
    plots = common.plots_dir(workdir)
    if plots and augment.make(config) is not None:
        augment.sample_grid(config, data.train_images[:8], jax.random.PRNGKey(config.seed), f"{plots}/augment.png")

    def train_epoch(state, epoch):
        state, metrics = epoch_fn(state, train_images)
        if plots and (epoch + 1) % config.sample_every_epochs == 0:
            grid = sample(state.generator, fixed_noise)[0]
            title = f"DCGAN on {config.dataset}: fixed noise after epoch {epoch + 1} (seed 0)"
            plotting.image_grid(grid, f"{plots}/samples_epoch{epoch + 1:03d}.png", 10, title)
        return state, metrics

    def evaluate(state):
        if evaluator is None or not config.eval_samples:
            return {}
        samples = sample_many(sample, state.generator, eval_key, config.eval_samples, config.latent_dim)
        per_seed = [evaluator(s) for s in samples]
        keys = ("eval/fid", "eval/kid", "eval/classes_covered", "eval/max_class_deviation")
        return {f"{k}_{config.eval_samples}": np.array([m[k] for m in per_seed]) for k in keys}

    def final(state, last_eval):
        results = run_lib.seed_summary(last_eval) | {"num_seeds": int(config.num_seeds)}
        if evaluator is not None:
            results.update(extra)
            samples = sample_many(
                sample, state.generator, jax.random.PRNGKey(config.seed + 7), config.fid_samples, config.latent_dim
            )
            results.update(common.evaluate_seeds(evaluator, samples))
        if plots:
            title = f"DCGAN on {config.dataset}: 100 samples of the final generator (seed 0)"
            plotting.image_grid(sample(state.generator, fixed_noise)[0], f"{plots}/samples.png", 10, title)
        return results

    task = supervised.Task(
        init=epochs.init_seeds(
            make_init(config, generator, discriminator, data.image_shape, len(data.train_images) // config.batch_size),
            config.num_seeds,
            mesh,
        ),
        train_epoch=train_epoch,
        evaluate=evaluate,
        num_epochs=config.num_epochs,
        final=final,
        params=lambda state: (state.generator.params, state.discriminator.params),
        plot_keys=("train/d_loss", "train/g_loss"),
        title=f"DCGAN on {data.name}",
        examples_per_epoch=config.num_seeds * (len(data.train_images) // config.batch_size) * config.batch_size,
    )
    return supervised.fit(config, workdir, task, desc=f"dcgan {data.name}")


@registry.register("dcgan")
def train_and_evaluate(config, workdir: str) -> dict:
    """The launcher's entry point."""
    return run(config, workdir)[1]
