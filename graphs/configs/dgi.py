"""Deep Graph Infomax (Veličković et al. 2019) with a linear probe, 10 seeds in one program (`graphs/dgi.py`).

    python -m scripts.train --config=graphs/configs/dgi.py:cora --workdir=runs/dgi_cora
    python -m scripts.train --config=graphs/configs/dgi.py:cora --config.num_epochs=1   # the untrained encoder

The arg is the dataset: cora (default), citeseer or karate (built in, no files), optionally followed by `,smoke`
for a seconds-long run. The settings of the paper's code (PetarV-/DGI `execute.py`): one GCN layer of 512 units with
PReLU, row-normalised features, Adam at 0.001 with no weight decay, early stopping on the training loss with
patience 20 (at most 10000 epochs); the probe: logistic regression on the 140 (Cora) training nodes of the
standard split, Adam at 0.01 for 100 steps, 50 runs per encoder. With `num_epochs=1` the kept encoder is the
initial one (its loss is taken before the first update): the paper's "Random-Init" row.

Paper (Cora): 82.3 ± 0.6 % test accuracy (Citeseer 71.8 ± 0.7 %); Random-Init 69.3 ± 1.4 %.
Measured (Cora, 10 seeds, niced on a 2-core CPU shared with other trainings, load ~9): 82.05 ± 0.39 % (each
encoder's 50 probes spread 0.15 pp), the seeds stopping after 153 to 346 epochs, 12.5 min (1.9 s per epoch for all
10 seeds); `num_epochs=1`: 69.16 ± 0.70 % in 1 min (most of it the 10 x 50 probes).
"""

from graphs.configs.common import base, parse_arg, shrink


def get_config(arg: str | None = None):
    dataset, smoke = parse_arg(arg, "cora")
    c = base("dgi", dataset)
    c.hidden = 512
    c.lr = 0.001
    c.weight_decay = 0.0
    c.weight_decay_on = "all"
    c.normalize_features = True
    c.seed_loop = "map"  # lax.map over seeds: 30 % less CPU than vmap per epoch on Cora (XLA:CPU's batched gathers)
    c.num_epochs = 10000  # a bound: every seed stops on its patience long before
    c.patience = 20
    c.probe_runs = 50
    c.probe_epochs = 100
    c.probe_lr = 0.01
    if dataset == "karate":  # identity features: nothing to normalise
        c.normalize_features = False
    return shrink(c, num_epochs=6, checkpoint_every_epochs=3, probe_runs=4, probe_epochs=50) if smoke else c
