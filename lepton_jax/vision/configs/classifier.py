"""The CNN image classifier of `lepton_jax/vision/classifier.py` (also the generative models' FID/KID features).

    python -m scripts.train --config=lepton_jax/vision/configs/classifier.py:mnist  # into runs/classifier-mnist-<hash8>
    python -m scripts.train --config=lepton_jax/vision/configs/classifier.py:mnist,strong --config.num_seeds=3

Arg: the dataset (`mnist` default, `fashion_mnist`, `kmnist`, or `digits` = scikit-learn's embedded 8x8 digits, no
files needed), then optionally `strong` (the stronger network below), `mlp` (a fully connected net instead:
LeNet-300-100, `hidden_sizes` sets its layers) and `smoke` (a seconds-long run). Expected: MNIST
test accuracy about 99.1 % after 4 epochs (~4 min on 2 idle CPU cores); digits 91.1 ± 0.3 % (3 seeds, 30 epochs) in
~20 s.

The default network is the Flax MNIST example's (Conv32-ReLU-AvgPool, Conv64-ReLU-AvgPool, Dense256, Dense10);
`strong` doubles each block's convolutions (Conv-BatchNorm-ReLU twice, then a max pool), with dropout 0.25 before
and after the dense layer. Regularisation keys apply to either: `dropout`, `batch_norm`, `weight_decay` (L2, or
decoupled with `optimizer=adamw`), and early stopping (`val_fraction` > 0 holds out the last share of the training
set, or with `val_from=rest` takes that many of the training images after the first `train_examples`; `patience`
evaluations without a better validation score, the loss or with `monitor=accuracy` the accuracy, stop a seed; the
test metrics use each seed's best parameters).
"""

import ml_collections

from lepton_jax import config as config_lib


def cnn_keys(c: ml_collections.ConfigDict, strong: bool) -> ml_collections.ConfigDict:
    """The CNN's keys on `c`: the Flax example's network, or with `strong` the stronger one (two Conv-BatchNorm-ReLU
    per block, max pooling, dropout 0.25). Also the multi-task classifier's trunk."""
    c.conv_features = (32, 64)
    c.convs_per_block = 2 if strong else 1
    c.batch_norm = strong
    c.pool = "max" if strong else "avg"
    c.hidden = 256
    c.dropout = 0.25 if strong else 0.0
    return c


def mlp_keys(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The MLP's keys on `c` (instead of the CNN's): LeNet-300-100, no dropout."""
    c.model = "mlp"
    c.hidden_sizes = (300, 100)
    c.dropout = 0.0
    return c


def base(trainer: str, dataset: str, num_seeds: int = 1) -> ml_collections.ConfigDict:
    """The keys every image trainer's config starts with: the trainer, the dataset and where its files are, the
    seed and the number of seeds trained together."""
    c = ml_collections.ConfigDict()
    c.trainer = trainer
    c.dataset = dataset
    c.data_dir = ml_collections.config_dict.placeholder(str)  # None: $LEPTON_DATA_DIR
    c.seed = 0
    c.num_seeds = num_seeds
    return c


def parse_arg(arg: str | None) -> tuple[str, bool, bool]:
    """`"mnist,strong,smoke"` -> `("mnist", strong, smoke)`; the dataset is `mnist` when not named."""
    parts = [p for p in (arg or "mnist").split(",") if p]
    names = [p for p in parts if p not in ("smoke", "strong", "mlp")]
    return (names[0] if names else "mnist"), "strong" in parts, "smoke" in parts


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    dataset, strong, smoke = parse_arg(arg)

    c = base("classifier", dataset)
    if "mlp" in (arg or "").split(","):
        mlp_keys(c)
    else:
        cnn_keys(c, strong)
    c.classes = ""  # e.g. "5-9": only those classes, relabelled 0..4
    c.train_examples = 0  # > 0: only the first this many training images (e.g. 1000, to study overfitting)
    config_lib.training_keys(c, lr=1e-3, schedule="cosine")  # Adam, cosine-decayed to 0 over the run
    # Early stopping, augmentation, class imbalance, transfer, pruning, distillation and int8 quantisation (all off):
    # `lepton_jax/techniques/`.
    groups = ("early_stopping", "validation", "augment", "imbalance", "transfer", "prune", "distill", "quantize")
    config_lib.technique_keys(c, "mesh", *groups)
    config_lib.technique_keys(c, "placement")  # the training set on the device or the host, evaluation on the CPU
    # How the seeds share each step (`lepton_jax.seeds`): "vmap" batches them; "unroll" (or "auto" on CPU) compiles
    # one copy per seed, which XLA:CPU runs faster than batched (grouped) convolutions.
    c.seed_loop = "vmap"
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
