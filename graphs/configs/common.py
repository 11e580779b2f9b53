"""Config pieces shared by the graph configs: parsing `dataset[,smoke]`, the fields every graph run has, the smoke
shrink."""

import ml_collections

from lepton_jax import config as config_lib


def parse_arg(arg: str | None, default: str) -> tuple[str, bool]:
    """`"cora,smoke"` -> `("cora", True)`; an empty arg gives `default`."""
    parts = [p for p in (arg or default).split(",") if p]
    names = [p for p in parts if p != "smoke"]
    return (names[0] if names else default), "smoke" in parts


def base(trainer: str, dataset: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.trainer = trainer
    c.dataset = dataset
    c.data_dir = ml_collections.config_dict.placeholder(str)  # None: $LEPTON_DATA_DIR
    c.seed = 0
    c.num_seeds = 10
    c.eval_every_epochs = 10
    c.checkpoint_every_epochs = 50
    c.keep_checkpoints = 2
    config_lib.training_keys(c)  # Adam; each config sets its rate and weight decay
    # Early stopping, off (`lepton_jax/techniques/early_stopping.py`): `patience` for every trainer, `val_fraction`
    # the share of edges (link prediction) or of each fold's training graphs (graph classification) held out.
    config_lib.technique_keys(c, "early_stopping")
    if trainer == "node_classification":  # the trainer that runs on a (data, model) mesh (GCN tensor-parallel)
        # ... and distils a finished run's soft labels into its model (`graphs/glnn.py`, e.g. GCN into an MLP).
        config_lib.technique_keys(c, "mesh", "distill")
    if trainer != "graph_classification":  # full-batch trainers: one optimiser step per epoch
        config_lib.technique_keys(c, "prune")
    return c


def shrink(c: ml_collections.ConfigDict, **sizes) -> ml_collections.ConfigDict:
    """The `smoke` variant: a seconds-long run of 2 seeds, evaluated every 2 epochs, with `sizes` set."""
    for key, value in ({"num_seeds": 2, "eval_every_epochs": 2} | sizes).items():
        if key in c:
            c[key] = value
    return c
