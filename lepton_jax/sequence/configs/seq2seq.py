"""Sequence-to-sequence learning on generated tasks (`lepton_jax/sequence/trainer.py`), 3 seeds in one program.

    python -m scripts.train --config=lepton_jax/sequence/configs/seq2seq.py:addition,transformer --workdir=runs/add
    python -m scripts.train --config=lepton_jax/sequence/configs/seq2seq.py:reversal,lstm
    python -m scripts.train --config=lepton_jax/sequence/configs/seq2seq.py:sorting,transformer,smoke  # seconds

The arg: the task (addition, the default; reversal; sorting), the model (transformer, the default; lstm), optionally
`smoke`. Addition follows the Flax seq2seq example: operands of up to 3 digits, batches of 128, Adam at 3e-3 (here
with a linear warm-up over the first 5 % of the steps and a cosine decay to 0); 2,000 steps in 20 epochs of 100,
the test set (1,000 examples) greedy-decoded after each. Reversal and sorting: 1 to 8 digits. The
length-generalisation set has inputs 1 or 2 longer (addition: one operand of 4 or 5 digits).

The Transformer: 2 encoder and 2 decoder blocks of width 64, 4 heads, MLPs of 128, sinusoidal positions (170k
parameters; one block of each plateaued at 0.988). Measured on addition (3 seeds): test sequence accuracy 1.0 for
every seed, greedy and beam, first reached at step 1,400-1,600 (1,500 on average); 0 on the longer inputs (token
accuracy 0.11: the model has not learnt to add numbers longer than it saw); 13.7 min on 2 CPU cores shared with
other work (load 7-9; 6.3 min of CPU time). The LSTM (width 128, 3 seeds): 0.995 +- 0.001 at step 2,000 (not
quite Flax's 1.0), 4.5 min on 2 idle cores.
`smoke`: about 30 s, mostly compiling.
"""

import ml_collections

from lepton_jax import config as config_lib
from lepton_jax.sequence.models import MODELS
from lepton_jax.sequence.tasks import TASKS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    picked, parts = config_lib.split_arg(arg, {"task": TASKS, "model": MODELS})
    c = ml_collections.ConfigDict()
    c.trainer = "seq2seq"
    c.task = picked["task"] or "addition"
    c.model = picked["model"] or "transformer"
    c.seed = 0
    c.num_seeds = 3
    c.seed_loop = "vmap"  # how the seeds share a step (`lepton_jax.seeds`)
    # the task
    c.max_digits = 3
    c.min_length = 1
    c.max_length = 8
    c.longer_by = 2
    c.test_size = 1000
    # the models: the width (the LSTM's state, the Transformer's model width), and the Transformer's shape
    c.hidden = 64 if c.model == "transformer" else 128
    c.num_heads = 4
    c.num_layers = 2  # encoder blocks, and as many decoder blocks
    c.mlp_size = 128
    c.positions = "sinusoidal"
    c.dropout = 0.0
    # training and evaluation
    c.batch_size = 128
    c.steps_per_epoch = 100
    c.num_epochs = 20
    c.eval_every_epochs = 1
    c.checkpoint_every_epochs = 5
    c.keep_checkpoints = 2
    c.beam_size = 4
    config_lib.training_keys(c, lr=3e-3, schedule="cosine", warmup=0.05, max_grad_norm=1.0)
    if "smoke" in parts:
        smoke = dict(num_seeds=2, hidden=32, num_heads=2, num_layers=1, mlp_size=64, max_digits=2, max_length=4)
        smoke |= dict(batch_size=32, steps_per_epoch=25, num_epochs=4, eval_every_epochs=2, test_size=64)
        c.update(smoke | dict(beam_size=2, checkpoint_every_epochs=2))
    return c
