"""Configs of the knowledge-graph trainers. `KEYS` declares their own keys (the shared ones are
`lepton_jax.config.KEYS`), checked at launch with `CHECKS`."""

import os

from graphs.kg.data import DATASETS
from graphs.kg.embedding import MODELS
from graphs.kg.ranking import DIRECTIONS
from lepton_jax import checkpoint
from lepton_jax.config import DROPOUT, FLAG, PATH, count, number, one_of, read_json, require

KEYS = {
    "model": one_of(*MODELS),
    "embedding_size": count(1),
    "embedding_dropout": DROPOUT,
    "label_smoothing": number(0, 1, high_open=True),
    "negatives": count(0),  # 0: 1-N scoring; k: negative sampling with k draws per query
    "weight_decay_on": one_of("all", "first_layer", "none"),
    "ranking_directions": one_of(*DIRECTIONS),
    "num_layers": count(1),  # R-GCN
    "num_bases": count(1),
    # the walking agent (graphs/kg/walker.py)
    "num_steps": count(1),
    "num_rollouts": count(1),
    "entity_embeddings": FLAG,
    "entropy_coef": number(0),
    "entropy_decay": number(0, 1),
    "entropy_decay_every": count(1),
    "action_dropout": DROPOUT,
    "reward_shaping": PATH,
    "beam_size": count(1),
    "eval_chunk": count(1),
}


def check_validation(config) -> None:
    """The knowledge graphs bring their own validation triples: nothing is held out of train."""
    val_fraction = config.get("val_fraction", 0.0)
    require(
        not val_fraction, f"config.val_fraction={val_fraction} is not used: the dataset's valid triples are; leave it 0"
    )


def check_dataset(config) -> None:
    """A knowledge graph this package loads (`graphs.kg.data`), refused at launch rather than after compiling."""
    require(
        config.dataset in DATASETS,
        f"config.dataset={config.dataset!r} is not a knowledge graph: choose one of {', '.join(DATASETS)}",
    )


def check_reward_shaping(config) -> None:
    """The walker's `reward_shaping`, when set, is a finished kg_embedding run on the same dataset."""
    path = config.get("reward_shaping")
    if not path:
        return
    where = f"config.reward_shaping={path}"
    require(bool(checkpoint.saved_steps(path)), f"{where} holds no checkpoint: point it at a kg_embedding run")
    source = read_json(os.path.join(path, "config.json"), "the reward-shaping run's config")
    require(
        source.get("trainer") == "kg_embedding" and source.get("dataset") == config.dataset,
        f"{where} is a {source.get('trainer')} run on {source.get('dataset')}, not kg_embedding on {config.dataset}",
    )


CHECKS = (check_dataset, check_validation, check_reward_shaping)
