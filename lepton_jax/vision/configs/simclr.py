"""SimCLR pretraining of the classifier's CNN trunk without labels (`lepton_jax/vision/simclr.py`).

    python -m scripts.train --config=lepton_jax/vision/configs/simclr.py:mnist --config.num_seeds=3
    python -m scripts.train --config=lepton_jax/vision/configs/simclr.py:digits        # no files needed
    python -m scripts.train --config=lepton_jax/vision/configs/simclr.py:mnist,smoke   # seconds

Arg: the dataset (`mnist` default, `fashion_mnist`, `kmnist`, or `digits` = scikit-learn's embedded 8x8 digits),
then optionally `strong` (the classifier's stronger trunk) and `smoke` (a seconds-long run).

Measured on 2 CPU cores (the results are the frozen trunk's test scores, then in brackets those of the same seed's
random initial encoder):
- MNIST, 3 seeds, the defaults (10 epochs of 234 steps, Adam at 3e-3; 52 min beside one or two other trainings, ~80 s
  an epoch per seed alone): linear probe 98.93 +- 0.07 % (97.06 %), kNN 98.37 % (97.14 %), k-means 69.6 % and NMI
  0.68 (58.9 %, 0.54). One epoch at 1e-3: linear probe 98.23 %; 3 epochs at 3e-3 (1 seed): 98.49 %.
- digits, 3 seeds, 30 epochs (3.3 min): linear probe 94.2 +- 0.6 % (92.9 +- 1.3 %), kNN 92.3 +- 1.7 %
  (89.1 +- 0.2 %), k-means 72.4 +- 8.8 % and NMI 0.76 (51.9 %, 0.59).
The final evaluation (per seed and encoder: 70k images embedded, the probe, kNN, k-means) takes about a minute
per seed and encoder on busy cores, so ~6 min for 3 seeds.

Keys beyond the classifier's network: `temperature` (NT-Xent's), `projection_hidden` and `projection_dim` (the
projection MLP), the views (the shared `augment_*` keys, then `erase_prob`: random erasing with this probability,
and `noise_std`: Gaussian pixel noise), and the evaluation (`probe_steps` L-BFGS iterations and `probe_l2` of the
linear probe, `knn_k` neighbours).
"""

import ml_collections

from lepton_jax import config as config_lib
from lepton_jax.config import NON_NEGATIVE, POSITIVE, UNIT, count
from lepton_jax.vision.configs import classifier as classifier_config

# This trainer's keys beyond the vision pillar's (`lepton_jax/vision/configs/__init__.py` `KEYS` spreads them in).
KEYS = {
    "temperature": POSITIVE,  # NT-Xent's: cosine similarities are divided by it
    "projection_hidden": count(1),  # the projection MLP: Dense(projection_hidden)-ReLU-Dense(projection_dim)
    "projection_dim": count(1),
    "erase_prob": UNIT,  # the probability of random erasing in each view
    "noise_std": NON_NEGATIVE,  # Gaussian noise added to each view's pixels (then clipped to [0, 1])
    "probe_steps": count(1),  # L-BFGS iterations of the linear probe
    "probe_l2": NON_NEGATIVE,  # the probe's L2 penalty, l2 / 2 |W|^2 on top of the mean cross-entropy
    "knn_k": count(1),  # neighbours voting in the kNN accuracy
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    dataset, strong, smoke = classifier_config.parse_arg(arg)

    c = classifier_config.base("simclr", dataset)
    classifier_config.cnn_keys(c, strong)  # the trunk: the classifier's CNN (its features)
    c.train_examples = 0  # > 0: only the first this many training images (for training and for the probe)
    c.projection_hidden = 256
    c.projection_dim = 64
    c.temperature = 0.5
    # The views: an affine map (`lepton_jax/techniques/augment.py`), random erasing, noise.
    config_lib.technique_keys(c, "mesh", "augment")
    c.augment_rotate = 20.0
    c.augment_scale = 0.3
    c.augment_shift = 4.0
    c.erase_prob = 0.5
    c.noise_std = 0.1
    config_lib.training_keys(c, lr=3e-3, schedule="cosine", warmup=0.05)  # Adam, warm-up then cosine to 0
    # How the seeds share each step (`lepton_jax.seeds`): "auto" compiles one copy per seed on CPU (faster than
    # XLA:CPU's batched, grouped convolutions) and batches them elsewhere.
    c.seed_loop = "auto"
    c.batch_size = 256
    c.num_epochs = 10
    c.eval_every_epochs = 1
    c.checkpoint_every_epochs = 1
    c.keep_checkpoints = 2
    c.probe_steps = 200  # converged: 100, 300 and 1000 give the same accuracy to 0.01 % on MNIST
    c.probe_l2 = 1e-4
    c.knn_k = 10

    if dataset == "digits":  # 1500 8x8 training images: shifts and erasing scaled down, more epochs at 1e-3
        c.augment_shift = 1.0
        c.batch_size = 100
        c.num_epochs = 30
        c.lr = 1e-3
    if smoke:
        c.num_epochs = 2
        c.probe_steps = 50
        if dataset != "digits":
            c.train_examples = 2000
    return c
