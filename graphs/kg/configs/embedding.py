"""DistMult, ComplEx and R-GCN + DistMult on a knowledge graph (`graphs/kg/embedding.py`), 3 seeds in one program.

    python -m scripts.train --config=graphs/kg/configs/embedding.py:umls,complex --workdir=runs/complex_umls
    python -m scripts.train --config=graphs/kg/configs/embedding.py:kinship,distmult
    python -m scripts.train --config=graphs/kg/configs/embedding.py:family,smoke      # no files, seconds

The arg: the dataset (umls, kinship, nations or family: the generated family tree, the default), the model
(distmult, complex, the default, or rgcn), optionally `smoke`. The settings of Lin et al. 2018's embedding baselines
(salesforce/MultiHopKG configs): 200 dimensions, embedding dropout 0.3, label smoothing 0.1, Adam at 0.003, batches
of 512 queries, gradients clipped at norm 5; validation MRR every 10 epochs, patience 10 evaluations.
"""

from graphs.configs.common import shrink
from graphs.kg.configs.common import base
from graphs.kg.data import DATASETS
from graphs.kg.embedding import MODELS
from lepton_jax import config as config_lib


def get_config(arg: str | None = None):
    picked, parts = config_lib.split_arg(arg, {"dataset": DATASETS, "model": MODELS})
    dataset, model = picked["dataset"] or "family", picked["model"] or "complex"
    c = base("kg_embedding", dataset, lr=0.003, max_grad_norm=5.0)
    c.model = model
    c.embedding_dropout = 0.3
    c.label_smoothing = 0.1
    c.negatives = 0  # 1-N scoring; k > 0: negative sampling, k entities per query
    c.batch_size = 512
    c.num_epochs = 1000
    c.checkpoint_every_epochs = 50
    c.num_layers = 2  # R-GCN only
    c.num_bases = 2
    c.patience = 10
    return shrink(c, num_epochs=4, embedding_size=16, checkpoint_every_epochs=2) if "smoke" in parts else c
