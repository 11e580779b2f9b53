"""GAE link prediction (Kipf & Welling 2016): 10 seeds, each with its own 85/5/10 edge split, in one program.

    python -m scripts.train --config=graphs/configs/gae.py:cora --workdir=runs/gae_cora

The arg is the dataset (cora, citeseer, pubmed, karate), optionally followed by `,smoke`. Paper settings: GCN
encoder 32-16, inner-product decoder, lr 0.01, no dropout. Here, as in PyG's GAE example: features row-normalised
(the paper used raw ones: `--config.normalize_features=False`) and 400 epochs (the paper: 200);
val/test non-edges sampled as many as the held-out edges. The reconstruction loss is PyG's sampled one (training
edges against as many random pairs each epoch); `--config.loss=dense` is the paper's loss over the whole adjacency
(about 30x slower here).
Expected (10 seeds): Cora test AUC 90.9 %, AP 91.8 % in ~1.5 min; Citeseer AUC 88.7 %, AP 89.6 % in ~4 min, on a
busy 2-core CPU. `--config.patience=50` adds early stopping on validation AUC and AP: each seed stops after 50 epochs
without either improving, and the test numbers (and `best_epoch`) are those of the parameters it kept; the default
0 trains every epoch and tests the last parameters (the numbers above).
"""

from graphs.configs.common import base, parse_arg, shrink


def get_config(arg: str | None = None):
    dataset, smoke = parse_arg(arg, "cora")
    c = base("link_prediction", dataset)
    c.model = "gcn"
    c.hidden_sizes = (32,)
    c.embedding_size = 16
    c.activation = "relu"
    c.dropout = 0.0
    c.lr = 0.01
    c.weight_decay = 0.0
    c.weight_decay_on = "none"
    c.normalize_features = True
    c.loss = "sampled"  # or "dense": GAE's full-adjacency loss, O(N^2) per epoch (see graphs/link_prediction.py)
    c.val_fraction = 0.05
    c.test_fraction = 0.10
    c.num_epochs = 400  # the sampled loss sees fewer pairs per epoch than the dense one: 200 gave Citeseer AUC 87.7
    return shrink(c, num_epochs=4, checkpoint_every_epochs=2) if smoke else c
