"""The fields every knowledge-graph config has (`embedding.py`, `walker.py` fill in the rest)."""

import ml_collections

from lepton_jax import config as config_lib


def base(trainer: str, dataset: str, **training) -> ml_collections.ConfigDict:
    """3 seeds vmapped, 200-dimensional embeddings, both ranking directions, early stopping on validation MRR;
    `training`: the trainer's optimiser defaults (`config_lib.training_keys`)."""
    c = ml_collections.ConfigDict()
    c.trainer = trainer
    c.dataset = dataset
    c.data_dir = ml_collections.config_dict.placeholder(str)  # None: $LEPTON_DATA_DIR
    c.seed = 0
    c.num_seeds = 3
    c.seed_loop = "vmap"
    c.embedding_size = 200
    c.eval_every_epochs = 10
    c.keep_checkpoints = 2
    c.weight_decay_on = "all"
    c.ranking_directions = "both"  # "tail": Lin et al.'s protocol
    config_lib.training_keys(c, **training)
    config_lib.technique_keys(c, "early_stopping")
    return c
