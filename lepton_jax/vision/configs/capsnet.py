"""Capsule networks with dynamic routing (`lepton_jax/vision/capsnet.py`).

    python -m scripts.train --config=lepton_jax/vision/configs/capsnet.py:mnist --config.seed_loop=unroll
    python -m scripts.train --config=lepton_jax/vision/configs/capsnet.py:digits       # no files needed
    python -m scripts.train --config=lepton_jax/vision/configs/capsnet.py:digits,smoke
    python -m scripts.train --config=lepton_jax/vision/configs/capsnet.py:multi_mnist  # two overlapping digits
    python -m scripts.train --config=lepton_jax/vision/configs/capsnet.py:multi_digits,smoke

Arg: the dataset (`mnist` default, `fashion_mnist`, `kmnist`, or `digits` = scikit-learn's embedded 8x8 digits, no
files needed; `multi_<dataset>`: MultiMNIST built from it, below), then optionally `smoke` (a seconds-long run) or
`sabour` (the paper's network: conv 256 9x9, 32x6x6 primary capsules; 8.2M parameters, far too slow for a CPU).

The MNIST network is Sabour et al.'s shrunk to two CPU cores, its stem after Efficient-CapsNet's (Mazzia et al.
2021: small BatchNorm convolutions before the primary capsules): Conv 32 5x5, Conv 64 3x3 stride 2, Conv 64 3x3,
Conv 128 3x3 (each BatchNorm-ReLU, VALID) to 7x7x128; primary capsules Conv 3x3 stride 2 into 8 types of 8
dimensions on 3x3 positions (72 capsules); 10 class capsules of 16 dimensions, 3 routing iterations; the paper's
decoder (512-1024-784); 1.7M parameters, 1.4M of them the decoder's. Adam 3e-3 with a cosine decay to 0, batch
128, 12 epochs, shifts of up to 2 pixels (the paper's augmentation: `augment_crop=2`), 3 seeds vmapped
(`seed_loop=unroll` runs them ~1.5x faster on a CPU: XLA:CPU batches vmapped convolutions as grouped ones).

Measured on MNIST, one seed, one epoch (2 CPU cores shared with ~6 other busy processes): 98.85 % test accuracy,
231 s for the epoch with its compilation. Interleaved with the classifier's CNN in one process, a step took 2.8x
the CNN's, so ~55 s an epoch per seed on idle cores: 12 epochs of 3 seeds ~33 min unrolled (~48 min vmapped).
Expected: about 0.5 % test error (not yet run to the end). Published: Sabour et al. 0.25 % (8.2M parameters, many
epochs on a GPU), Efficient-CapsNet 0.26 % (161k parameters, self-attention routing). Digits (3 seeds, 30 epochs):
96.0 +- 0.7 % test accuracy (the classifier's CNN: 91.1 +- 0.3 %), 214 s on cores shared with ~8 busy processes.

MultiMNIST (`multi_mnist`; Sabour et al. section 6): two MNIST digits of different classes, each shifted 1 to 4
pixels (the first up and left, the second down and right) on Sabour et al.'s 36x36 canvas (`image_size=36`; 0
resizes to 28x28, the multi-task CNN's images), one pair per MNIST image (60k/10k; `train_examples`,
`test_examples`), built as `lepton_jax/vision/configs/multitask.py` builds them (Sabour et al. shift each digit up
to 4 pixels in any direction, so theirs overlap more). The network above on 36x36 images (36 -> 32 -> 15 -> 13 ->
11, primary capsules on 5x5 positions: 200), its decoder drawing 36x36 digits; both digits' capsules trained
present, each digit reconstructed from its own capsule (`lepton_jax/vision/capsnet.py`). `multi_digits`: pairs of
the 8x8 digits, shifted 1 to 2 pixels on a 12x12 canvas (no files needed).

Measured on 2 CPU cores shared with other busy processes: `multi_digits` (3 seeds, 30 epochs, 134 s): 76.9 +- 3.2 %
of the test pairs right (both digits among the two longest capsules), left 87.3 +- 2.2 %, right 87.9 +- 1.8 %
(without the 1-pixel shifts, `augment_crop=0`: 72.8 +- 1.3 %; the multi-task CNN on the same images: left 78.5 %,
right 84.2 %). `multi_mnist` with `num_seeds=1 train_examples=10000 test_examples=2000 num_epochs=4` (187 s, 40 s
an epoch): 49.0 % of the test pairs right, left 74.6 %, right 59.9 %, still rising; 98 % of the pairs right as a
set were also right at both positions. `multi_mnist,smoke` (3 seeds, 2 epochs of 2000 pairs, 99 s): 5.1 % right,
left 14.0 %, right 13.4 % (chance: 2.2 %, 10 %). A full run (60k pairs, 12 epochs, 3 seeds) would take ~2.5 h on
such a CPU: not yet run. Published: Sabour et al. 5.2 % error (the 8.2M-parameter network, 60M training pairs on a GPU).

Keys beyond the shared ones: the stem (`conv_features`, `conv_kernels`, `conv_strides`: one entry per convolution,
VALID padding; `batch_norm`), the primary capsules (`primary_types`, `primary_dim`, `primary_kernel`,
`primary_stride`), the class capsules (`capsule_dim`, `routing_iterations`), the decoder (`decoder_sizes`) and the
reconstruction loss's weight (`reconstruction_weight`, x the sum of squared pixel errors; 0: the margin loss alone);
with MultiMNIST, the multi-task CNN's `max_shift`, `image_size` and `test_examples`.
"""

import ml_collections

from lepton_jax import config as config_lib
from lepton_jax.config import NON_NEGATIVE, count, require, sizes
from lepton_jax.vision.configs import classifier as classifier_config

# This trainer's keys beyond the vision pillar's (`lepton_jax/vision/configs/__init__.py` `KEYS` spreads them in).
KEYS = {
    "conv_kernels": sizes(1),  # the side of each stem convolution's kernel (as many as conv_features)
    "conv_strides": sizes(1),  # each stem convolution's stride (as many as conv_features)
    "primary_types": count(1),  # primary capsule types: a capsule of each at every position of their map
    "primary_dim": count(1),  # the dimension of a primary capsule
    "primary_kernel": count(1),  # the side of the primary capsules' convolution kernel
    "primary_stride": count(1),
    "capsule_dim": count(1),  # the dimension of a class capsule
    "routing_iterations": count(1),  # dynamic routing's iterations (the paper: 3)
    "decoder_sizes": sizes(),  # the decoder's hidden layers
    "reconstruction_weight": NON_NEGATIVE,  # x the sum of squared pixel errors (the paper: 0.0005)
}


def check_stem(config) -> None:
    """At launch: one kernel size and one stride per stem convolution."""
    if config.trainer == "capsnet":
        counts = {name: len(config[name]) for name in ("conv_features", "conv_kernels", "conv_strides")}
        require(
            len(set(counts.values())) == 1,
            "config.conv_features, conv_kernels and conv_strides need one entry per stem convolution, got "
            + ", ".join(f"{n} {c}" for n, c in counts.items()),
        )


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    parts = [p for p in (arg or "mnist").split(",") if p]
    names = [p for p in parts if p not in ("smoke", "sabour")]
    dataset = names[0] if names else "mnist"
    multi = dataset.startswith("multi_")  # MultiMNIST built from the dataset after the prefix
    source = dataset.removeprefix("multi_")

    c = classifier_config.base("capsnet", dataset, num_seeds=3)
    c.classes = ""  # e.g. "5-9": only those classes, relabelled 0..4
    c.train_examples = 0  # > 0: only the first this many training images
    # The stem: Conv-BatchNorm-ReLU, VALID padding, one entry per convolution; 28 -> 24 -> 11 -> 9 -> 7
    c.conv_features = (32, 64, 64, 128)
    c.conv_kernels = (5, 3, 3, 3)
    c.conv_strides = (1, 2, 1, 1)
    c.batch_norm = True
    # Primary capsules: 7 -> 3, 8 types x 3 x 3 positions = 72 capsules of 8 dimensions. (Measured on MNIST, 200
    # steps at lr 3e-3: 97.2 % test accuracy, against 95.7 % for the stem without its fourth convolution at ~0.85x
    # the step time; doubling the primary capsule types there ran 1.4x slower and learned no faster.)
    c.primary_types = 8
    c.primary_dim = 8
    c.primary_kernel = 3
    c.primary_stride = 2
    # Class capsules, routing and the decoder: the paper's
    c.capsule_dim = 16
    c.routing_iterations = 3
    c.decoder_sizes = (512, 1024)
    c.reconstruction_weight = 0.0005
    config_lib.training_keys(c, lr=3e-3, schedule="cosine")  # Adam, cosine-decayed to 0 (200 steps: 3e-3 > 5e-3, 1e-3)
    config_lib.technique_keys(c, "mesh", "early_stopping", "validation", "augment")
    c.augment_crop = 2  # the paper's: shifted by up to 2 pixels in each direction, zero-padded
    # How the seeds share each step (`lepton_jax.seeds`): "vmap" batches them; "unroll" (or "auto" on CPU) compiles
    # one copy per seed, which XLA:CPU runs faster than batched (grouped) convolutions.
    c.seed_loop = "vmap"
    c.batch_size = 128
    c.num_epochs = 12
    c.eval_every_epochs = 1
    c.checkpoint_every_epochs = 1
    c.keep_checkpoints = 2

    if "sabour" in parts:  # the paper's network: conv 256 9x9, 32 x 6 x 6 primary capsules, no BatchNorm
        c.conv_features, c.conv_kernels, c.conv_strides, c.batch_norm = (256,), (9,), (1,), False
        c.primary_types, c.primary_kernel, c.primary_stride = 32, 9, 2
    if multi:  # MultiMNIST (`lepton_jax/vision/data.py` `multi_mnist`): the multi-task CNN's keys
        c.max_shift = 4  # each digit moves 1..4 pixels (the first up-left, the second down-right)
        c.image_size = 36  # Sabour et al.'s canvas (0: resized to the source's 28x28)
        c.test_examples = 0  # 0: one pair per source test image (10k); train_examples likewise (60k)
    if source == "digits":  # 8x8 images: 8 -> 6 (stem), 6 -> 4 (primary: 8 types x 16 = 128 capsules)
        c.conv_features, c.conv_kernels, c.conv_strides = (32,), (3,), (1,)
        c.primary_types, c.primary_kernel, c.primary_stride = 8, 3, 1
        c.decoder_sizes = (128, 256)
        # The paper's weight per pixel (0.0005 x 784 = 0.39 x the mean squared error) over 64 pixels
        c.reconstruction_weight = 0.006
        c.augment_crop = 1
        c.batch_size = 50
        c.num_epochs = 30
    if source == "digits" and multi:  # 12x12 pairs: 12 -> 10 (stem), 10 -> 4 (primary: 8 types x 16 = 128 capsules)
        c.max_shift, c.image_size = 2, 12
        c.primary_stride = 2
        c.reconstruction_weight = 0.0027  # the paper's weight per pixel over 144 pixels
    if "smoke" in parts:
        c.num_epochs = 2
        if source != "digits":
            c.train_examples = 2000
            if multi:
                c.test_examples = 500
    return c
