"""The CNN image classifier of `lepton_jax/vision/classifier.py` (also the generative models' FID/KID features).

    python -m scripts.train --config=lepton_jax/vision/configs/classifier.py:mnist  # into runs/classifier-mnist-<hash8>

Arg: the dataset (`mnist` default, `fashion_mnist`, `kmnist`, or `digits` = scikit-learn's embedded 8x8 digits, no
files needed), optionally with `,smoke` for a seconds-long run. Expected: MNIST test accuracy about 99.1 % after 4
epochs (~4 min on 2 idle CPU cores); digits 91.1 ± 0.3 % (3 seeds, 30 epochs) in ~20 s.
"""

import ml_collections

from lepton_jax import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    parts = [p for p in (arg or "mnist").split(",") if p]
    smoke = "smoke" in parts
    names = [p for p in parts if p != "smoke"]
    dataset = names[0] if names else "mnist"

    c = ml_collections.ConfigDict()
    c.trainer = "classifier"
    c.dataset = dataset
    c.data_dir = ml_collections.config_dict.placeholder(str)  # None: $LEPTON_DATA_DIR
    c.seed = 0
    c.num_seeds = 1
    c.conv_features = (32, 64)
    c.hidden = 256
    config_lib.training_keys(c, lr=1e-3, schedule="cosine")  # Adam, cosine-decayed to 0 over the run
    c.batch_size = 128
    c.num_epochs = 4
    c.eval_every_epochs = 1
    c.checkpoint_every_epochs = 5
    c.keep_checkpoints = 2

    if dataset == "digits":  # 1500 training images: smaller batches, more epochs
        c.batch_size = 50
        c.num_epochs = 30
    if smoke:
        c.num_epochs = 2
    return c
