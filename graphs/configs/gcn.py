"""GCN node classification (Kipf & Welling 2017), full batch, 10 seeds in one program.

    python -m scripts.train --config=graphs/configs/gcn.py:cora --workdir=runs/gcn_cora

The arg is the dataset: cora, citeseer, pubmed (needs all its `ind.pubmed.*` files) or karate (built in, no files),
optionally followed by `,smoke` for a seconds-long run used by the tests. Paper settings: 2 layers, 16 hidden,
dropout 0.5, lr 0.01, weight decay 5e-4 on the first layer, row-normalised features, 200 epochs. Early stopping is
the GAT code's rule with patience 100 on validation loss and accuracy (the test numbers use the parameters it
kept). Expected (10 seeds): Cora 81.6 ± 0.8 % test accuracy in ~30 s, Citeseer 71.0 ± 0.9 % in ~2.5 min, on a busy
2-core CPU.

`gcn.py:karate` is the classic demo: a 3-layer tanh GCN (4-4-2) on Zachary's karate club with only the two
leaders labelled, and a plot of the learned 2-D embedding coloured by club (`plots/embedding.png`).
"""

from graphs.configs.common import base, parse_arg, shrink


def get_config(arg: str | None = None):
    dataset, smoke = parse_arg(arg, "cora")
    c = base("node_classification", dataset)
    c.model = "gcn"
    c.hidden_sizes = (16,)
    c.activation = "relu"
    c.dropout = 0.5
    c.lr = 0.01
    c.weight_decay = 5e-4
    c.weight_decay_on = "first_layer"
    c.normalize_features = True
    c.seed_loop = "vmap"
    c.num_epochs = 200
    c.patience = 100
    # Unused by GCN; kept so that `--config.model=gat|mpnn` works from this file.
    c.heads = 8
    c.output_heads = 1
    c.attention_dropout = 0.6
    c.message_hidden = 64
    if dataset == "karate":
        c.hidden_sizes = (4, 4, 2)
        c.activation = "tanh"
        c.dropout = 0.0
        c.weight_decay = 0.0
        c.normalize_features = False
        c.num_epochs = 300
        c.patience = 300
    return shrink(c, num_epochs=6, checkpoint_every_epochs=3) if smoke else c
