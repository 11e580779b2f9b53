"""Configs of the GNN trainers; each returns an `ml_collections.ConfigDict` from `get_config(arg)`.

`KEYS` declares the graph trainers' own keys (the shared ones are `lepton_jax.config.KEYS`) and `CHECKS` the
relations between them, both checked at launch (`lepton_jax.config.validate`).
"""

from graphs.configs.gcn_multitask import check_tasks
from graphs.glnn import check_teacher
from graphs.models import NODE_MODELS
from lepton_jax.config import DROPOUT, FLAG, count, number, one_of, require
from lepton_jax.techniques import multitask

KEYS = {
    "model": one_of(*NODE_MODELS),  # `graphs.models.make_node_model`
    "heads": count(1),
    "output_heads": count(1),
    "attention_dropout": DROPOUT,
    "message_hidden": count(1),
    "normalize_features": FLAG,
    "weight_decay_on": one_of("all", "first_layer", "none"),
    # link prediction
    "embedding_size": count(1),
    "loss": one_of("dense", "sampled"),
    "test_fraction": number(0, 1, low_open=True, high_open=True),
    # graph classification
    "num_folds": count(1),
    "num_layers": count(1),
    "learn_eps": FLAG,
    # the linear probe of frozen embeddings (graphs/probe.py; DGI)
    "probe_runs": count(1),
    "probe_epochs": count(1),
    "probe_lr": number(0, low_open=True),
    # node classification and link prediction together (graphs/multitask.py)
    **multitask.KEYS,
}


def check_splits(config) -> None:
    """Link prediction keeps some edges for training; graph classification's validation share is under a half, and
    its patience needs one; node classification validates on the dataset's own validation nodes, and DGI stops on
    its training loss."""
    if config.trainer == "link_prediction":
        require(
            config.val_fraction + config.test_fraction < 1,
            f"config.val_fraction + config.test_fraction ({config.val_fraction} + {config.test_fraction}) "
            "must be < 1: some edges must remain for training",
        )
        require(config.model == "gcn", f"link prediction uses a GCN encoder (config.model=gcn), got '{config.model}'")
    if config.trainer == "graph_classification":
        require(0.0 <= config.val_fraction < 0.5, f"config.val_fraction={config.val_fraction} must be in [0, 0.5)")
        patience = config.get("patience", 0)
        require(
            not patience or config.val_fraction > 0,
            f"config.patience={patience} needs a validation split to watch: set config.val_fraction > 0 "
            "(e.g. 0.1), or patience 0",
        )
    uses = {"node_classification": "node classification, which validates on the dataset's own validation nodes"}
    uses["dgi"] = "DGI, which stops on its training loss"
    if config.trainer in uses:
        val_fraction = config.get("val_fraction", 0.0)
        require(
            not val_fraction,
            f"config.val_fraction={val_fraction} is not used by {uses[config.trainer]}: leave it 0",
        )


CHECKS = (check_splits, check_tasks, check_teacher)
