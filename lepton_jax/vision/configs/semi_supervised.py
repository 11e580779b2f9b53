"""Semi-supervised classification with a few labels per class (`lepton_jax/vision/semi_supervised.py`).

    python -m scripts.train --config=lepton_jax/vision/configs/semi_supervised.py:mnist --config.seed=0
    python -m scripts.train --config=lepton_jax/vision/configs/semi_supervised.py:mnist --config.seed=0 \
        --config.semi_method=supervised                                  # the labelled images alone
    python -m scripts.train --config=lepton_jax/vision/configs/semi_supervised.py:digits   # no files needed

Arg: the dataset (`mnist` default, `fashion_mnist`, `kmnist`, or `digits` = scikit-learn's embedded 8x8 digits),
then optionally `strong` (the classifier's stronger network) and `smoke` (a seconds-long run: 2 epochs; on MNIST
of 2000 unlabelled images). Each `seed` labels
its own `labels_per_class` images of each class (the same ones for every method); the `num_seeds` seeds of one run
share them, so run seeds 0, 1, 2 as three runs to vary the labelled images too.

Keys beyond the classifier's network and optimiser: `labels_per_class`, `unlabelled_examples` (0: every other
training image), `semi_method` (supervised, pseudo_label, fixmatch), `confidence_threshold`, `mu` (unlabelled
images per labelled one in a step), `lambda_u` and
`lambda_u_rampup` (the unlabelled term's weight and the share of the run over which it rises from 0), and the
strong augmentation: `strong_rotate` (degrees), `strong_scale`, `strong_shift` (pixels), `strong_thickness` (with
probability 1/2 the strokes dilated by 1 to this many pixels; 0: never), `strong_cutout` (the erased
square's side, pixels; 0: none). The weak augmentation is the shared `augment_*` keys
(`lepton_jax/techniques/augment.py`). `batch_size` counts the labelled images of a step.

MNIST, 100 labels (seed 0's), 3 seeds, measured on 2 CPU cores (RESULTS.md has the commands):
- the labelled images alone, 12 epochs: 10.36 % test error;
- FixMatch, threshold 0.9, lr 0.003, 12 epochs: 4.97 % (thick upright 1s drift to 8: the labelled 1s are thin);
- with `strong_thickness=2` (1 seed, 6 epochs: 2.75 %), from a SimCLR run's trunk (`init_from`, 8 epochs, the
  defaults' threshold 0.95): 2.18 %; with the `strong` network instead (4 epochs, threshold 0.9): 1.95 %.
FixMatch on the default CNN takes ~35 s an epoch for one seed alone, the `strong` network ~4x that.
References (100 labels): VAT 1.36 %, Ladder (conv) 0.89 %, Kingma et al. M1+M2 3.33 %.
"""

import ml_collections

from lepton_jax import config as config_lib
from lepton_jax.config import FLAG, NON_NEGATIVE, UNIT, count, number, one_of
from lepton_jax.vision.configs import classifier as classifier_config

METHODS = ("supervised", "pseudo_label", "fixmatch")  # `semi_method`: what the unlabelled term is

# This trainer's keys beyond the vision pillar's (`lepton_jax/vision/configs/__init__.py` `KEYS` spreads them in).
KEYS = {
    "labels_per_class": count(1),  # labelled training images of each class, chosen from `seed`
    "unlabelled_examples": count(0),  # the first this many other training images are the unlabelled ones (0: all)
    "semi_method": one_of(*METHODS),
    "confidence_threshold": UNIT,  # the max probability a pseudo-label needs to count
    "distribution_alignment": FLAG,  # pseudo-label probabilities divided by the running mean prediction
    "mu": count(1),  # unlabelled images per labelled image in a step
    "lambda_u": NON_NEGATIVE,  # the unlabelled term's weight
    "lambda_u_rampup": number(0, 1),  # the share of the run over which that weight rises linearly from 0
    "strong_rotate": number(0, 180),  # degrees
    "strong_scale": number(0, 1, high_open=True),  # zoom by a factor in [1 - scale, 1 + scale]
    "strong_shift": NON_NEGATIVE,  # pixels, on each axis
    "strong_cutout": count(0),  # the side of the square cut out, pixels (0: no cutout)
    "strong_thickness": count(0),  # the largest radius of the strokes' dilation, pixels (0: none)
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    dataset, strong, smoke = classifier_config.parse_arg(arg)

    c = classifier_config.base("semi_supervised", dataset)
    classifier_config.cnn_keys(c, strong)
    c.labels_per_class = 10
    c.unlabelled_examples = 0  # 0: every other training image
    c.semi_method = "fixmatch"
    c.confidence_threshold = 0.95  # FixMatch's
    c.distribution_alignment = False  # ReMixMatch's distribution alignment of the pseudo-labels
    c.mu = 3  # FixMatch's is 7
    c.lambda_u = 1.0
    c.lambda_u_rampup = 0.0
    c.strong_rotate = 30.0
    c.strong_scale = 0.2
    c.strong_shift = 4.0
    c.strong_cutout = 10
    c.strong_thickness = 0
    config_lib.training_keys(c, lr=1e-3, schedule="cosine")  # Adam, cosine-decayed to 0 over the run
    config_lib.technique_keys(c, "mesh", "augment", "transfer")  # transfer: e.g. a SimCLR run's trunk
    c.augment_crop = 2  # the weak augmentation: a move of up to 2 whole pixels (FixMatch: pad and crop)
    c.seed_loop = "vmap"
    # Sized for 2 CPU cores (FixMatch's own: 64 and mu 7, for a million steps): 468 steps an epoch on MNIST
    c.batch_size = 32  # labelled images a step (and mu times as many unlabelled)
    c.num_epochs = 6  # an epoch: about one pass over the unlabelled images
    c.eval_every_epochs = 1
    c.checkpoint_every_epochs = 1
    c.keep_checkpoints = 2

    if dataset == "digits":  # 1500 8x8 training images: smaller batches and moves, more epochs
        c.batch_size, c.mu, c.num_epochs = 20, 3, 30
        c.augment_crop, c.strong_shift, c.strong_cutout = 1, 1.0, 3
    if smoke:
        c.num_epochs = 2
        if dataset != "digits":
            c.unlabelled_examples = 2000  # 16 steps an epoch on MNIST
    return c
