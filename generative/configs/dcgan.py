"""DCGAN on MNIST-like images (Radford et al.'s recipe, sized for 28x28).

    LEPTON_DATA_DIR=/path/to/data python -m scripts.train --config=generative/configs/dcgan.py:mnist \
        --workdir=runs/dcgan_mnist

Arg: comma-separated; the dataset (`mnist` default, `fashion_mnist`, `kmnist`, or `digits` = scikit-learn's embedded
8x8 digits, no files needed) and optionally `smoke` (a seconds-long run for tests).

Expected (MNIST, see RESULTS.md for the measured numbers): recognisable digits of all 10 classes after one epoch;
the FID in the classifier's feature space falls well below the VAE's. Runtime on 2 CPU cores is dominated by the
convolutions: see `perf/epoch_seconds` in results.json and size `num_epochs` / `num_seeds` to the time you have.
"""

import ml_collections

from generative.configs import common
from lepton_jax import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c, parts = common.base("dcgan", arg, ("smoke",))
    dataset = c.dataset
    c.num_seeds = 1
    # How the seeds share a step: "auto" = one copy of the step per seed on CPU (XLA:CPU runs the grouped
    # convolutions that vmap makes ~2.5x slower than separate ones), one vmapped program elsewhere; or "vmap"/"unroll".
    c.seed_loop = "auto"
    c.latent_dim = 100
    c.gen_features = 64  # generator: projection to 2F channels at H/4, then F at H/2
    c.disc_features = 64  # discriminator: F at H/2, 2F at H/4
    # Fully connected hidden layers (BatchNorm, ReLU / LeakyReLU 0.2), as in InfoGAN's MNIST DCGAN: z -> Dense(1024)
    # -> projection, and the discriminator's features -> Dense(1024) -> logit. 0 = none (the all-convolutional
    # recipe: on MNIST it over-produced 0s and 9s and under-produced 4s, 1s and 2s; see RESULTS.md).
    c.gen_hidden = 1024
    c.disc_hidden = 1024
    c.lr = 2e-4
    c.beta1 = 0.5
    c.beta2 = 0.999
    c.batch_size = 128
    c.num_epochs = 5
    c.sample_every_epochs = 1  # fixed-noise sample grid plots/samples_epochNNN.png
    c.eval_every_epochs = 1
    c.eval_samples = 2000  # FID/KID with this many samples at every evaluation (0: none until the end)
    c.checkpoint_every_epochs = 1
    c.keep_checkpoints = 2

    config_lib.technique_keys(c, "augment")  # of the real images the discriminator sees (off)
    if dataset == "digits":  # 1500 training images of 8x8
        c.batch_size = 50
        c.num_epochs = 40
        c.sample_every_epochs = 10
        c.eval_every_epochs = 10
        c.eval_samples = 0
    if "smoke" in parts:
        c.num_seeds = 2
        c.num_epochs = 2
        c.gen_features = 16
        c.disc_features = 16
        c.gen_hidden = 64
        c.disc_hidden = 64
        c.eval_every_epochs = 1
        c.eval_samples = 100
        c.sample_every_epochs = 1
        c.fid_samples = 200
        c.smoke_classifier = True
    return c
