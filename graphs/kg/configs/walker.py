"""The walking agent (MINERVA with Lin et al.'s reward shaping and action dropout, `graphs/kg/walker.py`), 3 seeds.

    python -m scripts.train --config=graphs/kg/configs/walker.py:umls --workdir=runs/walker_umls
    python -m scripts.train --config=graphs/kg/configs/walker.py:umls --config.reward_shaping=runs/complex_umls
    python -m scripts.train --config=graphs/kg/configs/walker.py:family,smoke     # no files, seconds

The arg: the dataset (umls, kinship, nations or family, the default), optionally `smoke`. Settings after MINERVA's
UMLS/Kinship configs (shehzaadzd/MINERVA) and Lin et al. 2018's (salesforce/MultiHopKG): walks of 2 steps, 20
rollouts per training triple, 256 triples per update, advantages scaled to unit spread and an entropy bonus of 0.05
decayed by 0.9 every 200 updates (MINERVA), Adam at 0.001, 200-dimensional relation embeddings and LSTM (Lin et al.;
MINERVA: 50 — on UMLS, 50 reached validation MRR 0.50 after 12 epochs where 200 had 0.65 after 8), beam 128 at test;
a one-layer LSTM (Lin et al.: three); at most 40 epochs over the training triples (MINERVA's 2000 updates of 256 are
~49 on UMLS), validation MRR every 4, patience 3 evaluations. Two measured departures from Lin et al.: no entity
embeddings in the policy, as MINERVA's UMLS/Kinship configs (with them, and one walk group per query rather than per
triple, the policy memorised each entity's training answers: UMLS validation MRR 0.32 against 0.66), and action
dropout 0.5 (Lin et al.: 0.9; 0.9 gave 0.36 and 0.5 0.32 in that setting).
"""

import ml_collections

from graphs.configs.common import shrink
from graphs.kg.configs.common import base
from graphs.kg.data import DATASETS
from lepton_jax import config as config_lib


def get_config(arg: str | None = None):
    picked, parts = config_lib.split_arg(arg, {"dataset": DATASETS})
    c = base("kg_walker", picked["dataset"] or "family", lr=0.001, max_grad_norm=5.0)
    c.hidden = 200
    c.entity_embeddings = False  # the policy sees relations only (MINERVA on UMLS and Kinship); True: Lin et al.
    c.num_steps = 2
    c.num_rollouts = 20
    c.entropy_coef = 0.05
    c.entropy_decay = 0.9  # the entropy bonus times 0.9 every `entropy_decay_every` updates (MINERVA)
    c.entropy_decay_every = 200
    c.action_dropout = 0.5
    c.reward_shaping = ml_collections.config_dict.placeholder(str)  # a kg_embedding workdir: soft rewards
    c.beam_size = 128
    c.eval_chunk = 64  # queries beam-searched at once
    c.batch_size = 256  # training triples per update, each walked `num_rollouts` times
    c.num_epochs = 40
    c.eval_every_epochs = 4
    c.checkpoint_every_epochs = 4
    c.patience = 3
    smoke = dict(num_epochs=4, embedding_size=16, hidden=16, num_rollouts=4, beam_size=8, batch_size=128)
    smoke.update(checkpoint_every_epochs=2)
    return shrink(c, **smoke) if "smoke" in parts else c
