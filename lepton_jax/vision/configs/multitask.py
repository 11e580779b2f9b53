"""Multi-task MultiMNIST: the classifier's CNN trunk, a head per digit (`lepton_jax/vision/multitask.py`).

    python -m scripts.train --config=lepton_jax/vision/configs/multitask.py:mnist --config.num_seeds=3
    python -m scripts.train --config=lepton_jax/vision/configs/multitask.py:mnist --config.num_seeds=3 \
        --config.single_task=left                                  # the single-task baseline (and =right)
    python -m scripts.train --config=lepton_jax/vision/configs/multitask.py:mnist --config.task_weights=left:1,right:0.5

Arg: the source dataset (`mnist` default, `fashion_mnist`, `kmnist`, or `digits` = scikit-learn's embedded 8x8
digits, no files needed), then optionally `strong` (the classifier's stronger network) and `smoke` (a
seconds-long run). MultiMNIST as Sener & Koltun 2018 use it: 60k training and 10k test images (one per MNIST
image), two digits of different classes shifted 1 to 4 pixels on a 36x36 canvas, resized to 28x28
(`image_size=36` keeps the canvas); the tasks are the top-left digit (`left`) and the bottom-right one (`right`).
The 8x8 digits get 2-pixel shifts on an unresized 12x12 canvas.

Measured on 2 busy CPU cores: MNIST 45-55 s an epoch for one seed, ~3 min for 3 seeds (vmapped convolutions
are slower on XLA:CPU), so 10 epochs take ~8 min, or ~30 min with `num_seeds=3`; after 2 epochs (one seed) left
89.3 %, right 85.1 %. Digits (30 epochs, ~20 s): left 78.5 %, right 84.2 %;
alone (`single_task=left`) left 79.5 %.

Keys beyond the classifier's network: `max_shift`, `image_size` (0: the source's size), `train_examples` and
`test_examples` (0: one per source image), and the multi-task technique's `task_weights` and `single_task`
(`lepton_jax/techniques/multitask.py`).
"""

import ml_collections

from lepton_jax import config as config_lib
from lepton_jax.config import count
from lepton_jax.techniques import multitask
from lepton_jax.vision.configs import classifier as classifier_config
from lepton_jax.vision.data import MULTI_TASKS

# This trainer's keys beyond the vision pillar's (`lepton_jax/vision/configs/__init__.py` `KEYS` spreads them in):
# MultiMNIST's and the multi-task technique's.
KEYS = {
    "max_shift": count(1),  # the largest shift of each digit, in pixels
    "image_size": count(0),  # the side of the images (0: the source's)
    "test_examples": count(0),  # MultiMNIST test images (0: one per source test image)
    **multitask.KEYS,
}


def check_tasks(config) -> None:
    """At launch: `task_weights` and `single_task` name this trainer's tasks (`multitask.task_weights`)."""
    if config.trainer == "multitask_classifier":
        multitask.task_weights(config, MULTI_TASKS)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    dataset, strong, smoke = classifier_config.parse_arg(arg)

    c = classifier_config.base("multitask_classifier", dataset)
    # MultiMNIST (`lepton_jax/vision/data.py` `multi_mnist`)
    c.max_shift = 4  # each digit moves 1..4 pixels (the first up-left, the second down-right) on a 36x36 canvas
    c.image_size = 0  # 0: resized to the source's size (28x28, Sener & Koltun); 36: the canvas (Sabour et al.)
    c.train_examples = 0  # 0: one image per source training image (60k)
    c.test_examples = 0  # 0: one per source test image (10k)
    # The tasks (`lepton_jax/techniques/multitask.py`): every task, each weighing 1
    c.update(multitask.DEFAULTS)  # task_weights "" (e.g. "left:1,right:0.5"), single_task "" (e.g. "left")
    classifier_config.cnn_keys(c, strong)  # the trunk: the classifier's CNN
    config_lib.training_keys(c, lr=1e-3, schedule="cosine")  # Adam, cosine-decayed to 0 over the run
    config_lib.technique_keys(c, "mesh", "early_stopping", "validation", "prune")
    # How the seeds share each step (`lepton_jax.seeds`): "vmap" batches them; "unroll" (or "auto" on CPU) compiles
    # one copy per seed, which XLA:CPU runs faster than batched (grouped) convolutions.
    c.seed_loop = "vmap"
    c.batch_size = 128
    c.num_epochs = 10
    c.eval_every_epochs = 1
    c.checkpoint_every_epochs = 1
    c.keep_checkpoints = 2

    if dataset == "digits":  # 1500 training pairs of 8x8 digits: small shifts, the canvas kept, more epochs
        c.max_shift = 2
        c.image_size = 12
        c.batch_size = 50
        c.num_epochs = 30
    if smoke:
        c.num_epochs = 2
        if dataset != "digits":
            c.train_examples, c.test_examples = 2000, 500
    return c
