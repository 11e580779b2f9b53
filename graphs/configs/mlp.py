"""An MLP on the node features alone, from scratch or distilled from a trained GNN (GLNN, Zhang et al. 2022).

    python -m scripts.train --config=graphs/configs/gcn.py:cora --workdir=runs/gcn_cora        # the teacher
    python -m scripts.train --config=graphs/configs/mlp.py:cora --workdir=runs/mlp_cora        # MLP from scratch
    python -m scripts.train --config=graphs/configs/mlp.py:cora --config.teacher=runs/gcn_cora \
        --workdir=runs/glnn_cora                                                                # GLNN

The arg is the dataset: cora (default), citeseer or karate (built in, no files), optionally followed by `,smoke`.
The model never reads the edges (`graphs.models.NodeMLP`). GLNN's settings for its Cora MLP (`train.conf.yaml`):
2 layers of 128 hidden ReLUs, dropout 0.6 on the hidden layer, Adam at 0.01 with L2 5e-3 on every layer, raw
(not row-normalised) features, at most 200 epochs, early stopping on validation accuracy with patience 50. With
`config.teacher` the loss is GLNN's (`graphs/glnn.py`): the teacher's soft labels on all nodes at T = 1 and no
weight on the hard labels (their `lamb` 0: `distill_alpha` 1). Unlike GLNN (20 labelled nodes per class drawn per
seed from Cora's largest component), the split is the standard Planetoid one (140 / 500 / 1000), the teacher's.

Measured on Cora, 10 seeds each, niced on a 2-core CPU shared with other trainings (test accuracy, mean ± std over
seeds; the teacher is seed 0 of the GCN run, 81.4 % on its own):

| run | test accuracy | wall |
|---|---|---|
| teacher: `gcn.py:cora` | 81.65 ± 0.80 % | 39 s |
| MLP from scratch: `mlp.py:cora` | 58.75 ± 0.66 % | 45 s |
| GLNN: `mlp.py:cora --config.teacher=...` (T 1, alpha 1) | 79.71 ± 0.33 % | 94 s |
| ... with `distill_temperature=4 distill_alpha=0.9` (the distillation defaults) | 78.40 ± 0.35 % | 88 s |

GLNN (ICLR 2022, Table 1, transductive, GraphSAGE teacher, their split): GLNN 80.54 ± 1.35 % on Cora; their README's
production-setting transductive row: SAGE 78.78 ± 1.92, MLP 58.95 ± 1.66, GLNN 79.39 ± 1.64 %.
"""

from graphs.configs.common import base, parse_arg, shrink


def get_config(arg: str | None = None):
    dataset, smoke = parse_arg(arg, "cora")
    c = base("node_classification", dataset)
    c.model = "mlp"
    c.hidden_sizes = (128,)
    c.activation = "relu"
    c.dropout = 0.6
    c.lr = 0.01
    c.weight_decay = 5e-3
    c.weight_decay_on = "all"
    c.normalize_features = False  # GLNN's features are the raw binary words (its L2 5e-3 is sized for them)
    c.seed_loop = "vmap"
    c.num_epochs = 200
    c.patience = 50
    c.monitor = "accuracy"  # GLNN's rule: the parameters of the best validation accuracy (ties: the later)
    c.distill_temperature = 1.0  # GLNN's: the teacher's own probabilities
    c.distill_alpha = 1.0  # and only them (used when config.teacher is set)
    # Unused by the MLP; kept so that `--config.model=gcn|gat|mpnn` works from this file.
    c.heads = 8
    c.output_heads = 1
    c.attention_dropout = 0.6
    c.message_hidden = 64
    if dataset == "karate":  # identity features, two labelled nodes
        c.dropout = 0.0
        c.weight_decay = 0.0
    return shrink(c, num_epochs=6, checkpoint_every_epochs=3) if smoke else c
