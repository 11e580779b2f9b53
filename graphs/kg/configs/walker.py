"""The walking agent (MINERVA with Lin et al.'s reward shaping and action dropout, `graphs/kg/walker.py`), 3 seeds.

    python -m scripts.train --config=graphs/kg/configs/walker.py:umls --workdir=runs/walker_umls
    python -m scripts.train --config=graphs/kg/configs/walker.py:umls --config.reward_shaping=runs/complex_umls
    python -m scripts.train --config=graphs/kg/configs/walker.py:family,smoke     # no files, seconds

The arg: the dataset (umls, kinship, nations or family, the default), optionally `smoke`. Settings after Lin et al.
2018's UMLS/Kinship configs (salesforce/MultiHopKG): walks of 2 steps, 20 rollouts per query, 200-dimensional
relation embeddings and LSTM, entropy bonus 0.05, Adam at 0.001, beam 128 at test; a one-layer LSTM here (theirs:
three); at most 100 epochs, validation MRR every 10, patience 5 evaluations. Two measured departures (UMLS, one
seed, 20 epochs, validation MRR): no entity embeddings in the policy, as MINERVA's UMLS/Kinship configs (0.66,
against 0.32 with them: with them the policy memorises the training answers of each entity and walks away from the
held-out ones), and action dropout 0.5 (Lin et al.: 0.9; with entity embeddings, 0.9 gave 0.36 and 0.5 0.32).
"""

import ml_collections

from graphs.configs.common import shrink
from graphs.kg.configs.common import base
from graphs.kg.data import DATASETS
from lepton_jax import config as config_lib


def get_config(arg: str | None = None):
    parts = [p for p in (arg or "").split(",") if p]
    unknown = [p for p in parts if p not in DATASETS and p != "smoke"]
    config_lib.require(
        not unknown, f"unknown config arg {unknown[0]!r}: a dataset ({', '.join(DATASETS)}) or smoke" if unknown else ""
    )
    c = base("kg_walker", next((p for p in parts if p in DATASETS), "family"), lr=0.001, max_grad_norm=5.0)
    c.hidden = 200
    c.entity_embeddings = False  # the policy sees relations only (MINERVA on UMLS and Kinship); True: Lin et al.
    c.num_steps = 2
    c.num_rollouts = 20
    c.entropy_coef = 0.05
    c.action_dropout = 0.5
    c.reward_shaping = ml_collections.config_dict.placeholder(str)  # a kg_embedding workdir: soft rewards
    c.beam_size = 128
    c.eval_chunk = 64  # queries beam-searched at once
    c.batch_size = 128
    c.num_epochs = 100
    c.checkpoint_every_epochs = 20
    c.patience = 5
    smoke = dict(num_epochs=4, embedding_size=16, hidden=16, num_rollouts=4, beam_size=8, checkpoint_every_epochs=2)
    return shrink(c, **smoke) if "smoke" in parts else c
