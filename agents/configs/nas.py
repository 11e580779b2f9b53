"""Neural architecture search (`agents/nas/`): Zoph & Le's controller, random search and regularised evolution.

    python -m scripts.train --config=agents/configs/nas.py --workdir=runs/nas_digits          # the controller
    python -m scripts.train --config=agents/configs/nas.py:compare,small --workdir=runs/nas_compare
    python -m scripts.train --config=agents/configs/nas.py --config.search=evolution
    python -m scripts.train --config=agents/configs/nas.py:smoke                               # seconds

The arg: the dataset (`digits`, the default: scikit-learn's 8x8 digits, no files; or `mnist`, `fashion_mnist`,
`kmnist` from the data directory), then optionally `compare` (the three methods side by side at the same child
budget, in one run), `small` (a space whose children train in about a second each on a CPU) and `smoke` (a tiny
space and budget).

The space: up to 4 convolutional layers of 8, 16, 32 or 64 filters and 1x1, 3x3 or 5x5 kernels, skip connections
from the image and earlier layers, global average pooling (`agents/nas/space.py`: 1.3 million networks). A child
trains 4 epochs of Adam (lr 3e-3, batches of 32) on 1200 of the 1500 training digits and is scored on the other
300; the best child of each search is retrained for `retrain_epochs` on all 1500 and tested on the 297 test
digits. The controller: an LSTM of 32 units, Adam at 0.02 (Zoph & Le: 6e-4 over 12,800 children; here a search
has 25-100 times fewer), baseline decay 0.8, no entropy bonus. Evolution: tournaments of a quarter of the population
(Real et al.: 25 of 100).

Measured (`compare,small`: at most 3 layers of 4, 8 or 16 filters, 6003 networks; 3 searches per method of 20
steps x 4 children, 80 children a search, 240 a method; retrained 10 epochs): best validation accuracy after 80
children 0.923 ± 0.011 (controller), 0.902 ± 0.017 (evolution), 0.867 ± 0.042 (random); the retrained best
networks' test accuracy 0.878 ± 0.032, 0.878 ± 0.011, 0.879 ± 0.029. 33 minutes on 2 shared CPU cores (load 8-10,
niced; a search step of 36 children 43 s at the median). The default space's children cost about 30 times as much
each on a CPU; it has not been run to the end here.
"""

import ml_collections

from agents.nas import METHODS
from lepton_jax import config as config_lib
from lepton_jax.vision.data import DATASETS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    picked, parts = config_lib.split_arg(arg, {"dataset": DATASETS}, ("compare", "small", "smoke"))
    c = ml_collections.ConfigDict()
    c.trainer = "nas"
    c.dataset = picked["dataset"] or "digits"
    c.data_dir = ml_collections.config_dict.placeholder(str)  # None: $LEPTON_DATA_DIR
    c.seed = 0
    c.num_seeds = 3  # independent searches per method
    c.search = ",".join(METHODS) if "compare" in parts else "controller"
    # The space (`agents/nas/space.py`).
    c.max_layers = 4
    c.filter_choices = (8, 16, 32, 64)
    c.kernel_choices = (1, 3, 5)
    # The budget: search steps (the scaffold's epochs) x children per step, each trained the same way.
    c.num_epochs = 25
    c.children_per_step = 8
    c.child_epochs = 4
    c.batch_size = 32
    c.child_lr = 3e-3
    c.val_fraction = 0.2  # the children's reward: accuracy on the last share of the training images
    c.child_examples = 0  # the children train on the first N training images (0: all those not held out)
    c.retrain_epochs = 20  # the best child of each search, trained afresh on the whole training set
    c.seed_loop = "auto"  # how the children share a step: unrolled on a CPU (`agents/nas/children.py`)
    # The controller (`agents/nas/controller.py`); its optimiser is the run's (`lr`, ... : the optimiser keys).
    c.hidden = 32
    c.ent_coef = 0.0
    c.baseline_decay = 0.8
    # Regularised evolution (`agents/nas/search.py`).
    c.population_size = 24
    c.tournament_size = 6
    c.eval_every_epochs = 1
    c.checkpoint_every_epochs = 5
    c.keep_checkpoints = 2
    config_lib.training_keys(c, lr=0.02)
    if "small" in parts:  # a space whose children train in about a second each on a CPU
        c.max_layers = 3
        c.filter_choices = (4, 8, 16)
        c.children_per_step = 4
        c.num_epochs = 20
        c.retrain_epochs = 10
        c.population_size = 12
        c.tournament_size = 3
    if "smoke" in parts:
        c.num_seeds = 2
        c.max_layers = 2
        c.filter_choices = (2, 4)
        c.kernel_choices = (1, 3)
        c.num_epochs = 2
        c.children_per_step = 2
        c.child_epochs = 1
        c.batch_size = 64
        c.child_examples = 256
        c.retrain_epochs = 1
        c.population_size = 2
        c.tournament_size = 2
        c.checkpoint_every_epochs = 1
    return c
