"""Graph-less neural networks (GLNN, Zhang et al., ICLR 2022): distil a trained GNN into an MLP that sees no edges.

    python -m scripts.train --config=graphs/configs/gcn.py:cora --workdir=runs/gcn_cora          # the teacher
    python -m scripts.train --config=graphs/configs/mlp.py:cora --config.teacher=runs/gcn_cora   # the student

The node-classification trainer honours the distillation keys (`lepton_jax/techniques/distill.py`): with
`config.teacher` set to the workdir of a finished node-classification run on the same dataset, the teacher's logits
`t` on every node of the graph are computed once, before training, from the parameters that run kept (seed 0's
early-stopping best), in inference mode and with the teacher's own feature preprocessing. The student (logits `s`)
then minimises

    alpha * mean over all nodes of T^2 KL(softmax(t/T) || softmax(s/T))
      + (1 - alpha) * mean over the training nodes of CE(s, y)

(`distill_alpha`, `distill_temperature`; the per-node terms are `distill.loss`'s). "All nodes" is GLNN's
transductive setting: the student sees the features of the validation and test nodes and the teacher's predictions
for them, never their labels. GLNN's own runs weigh the labels 0 (their `lamb` 0, our `alpha` 1) at T = 1.

A teacher directory that is missing, unfinished, of another trainer or of another dataset is one `UserError` line,
at launch (`check_teacher`).
"""

import os
from typing import Any, NamedTuple

import flax.linen as nn
import ml_collections
import numpy as np

from graphs import common, models
from graphs import metrics as graph_metrics
from graphs.data import NodeDataset
from lepton_jax import config as config_lib
from lepton_jax.errors import UserError
from lepton_jax.techniques import distill

TRAINER = "node_classification"  # the trainer whose runs teach, and whose runs learn


def teacher_config(config) -> ml_collections.ConfigDict:
    """The saved config of the run `config.teacher`, checked to be a finished node-classification run on
    `config.dataset`; otherwise one `UserError` line naming `config.teacher`."""
    workdir = config.teacher
    where = f"config.teacher={workdir}"
    distill.check_teacher_files(workdir)
    saved = config_lib.read_json(os.path.join(workdir, "config.json"), f"the config of the run {where}")
    if saved.get("trainer") != TRAINER:
        raise UserError(
            f"{where} is a run of trainer {saved.get('trainer')!r}, not of {TRAINER!r}; distil from a {TRAINER} run"
        )
    if saved.get("dataset") != config.dataset:
        raise UserError(
            f"{where} is a teacher of dataset {saved.get('dataset')!r}, not {config.dataset!r}; distil from a run "
            f"on {config.dataset}"
        )
    return ml_collections.ConfigDict(saved)


def check_teacher(config) -> None:
    """At launch (a config check): the distillation keys in range and, when `config.teacher` is set, a teacher this
    run can learn from."""
    if config.get("trainer") != TRAINER or "teacher" not in config:
        return
    distill.check_config(config)
    if config.teacher is not None:
        teacher_config(config)


class _OnGraph(NamedTuple):
    """A node model with its graph fixed, in the `init(key, inputs)` / `apply(variables, inputs)` form
    `distill.load_teacher` takes (its inputs are unused: the graph is the input)."""

    model: nn.Module
    graph: Any

    def init(self, key, _):
        return self.model.init({"params": key}, self.graph, train=False)

    def apply(self, variables, _):
        return self.model.apply(variables, self.graph, train=False)


def teacher_logits(config, dataset: NodeDataset) -> np.ndarray:
    """`(N, C)` float32 logits of the teacher `config.teacher` on every node of `dataset`, computed once.

    The teacher's network and feature preprocessing (`normalize_features`) are those of its own config.json.

    Raises:
      UserError: one line naming `config.teacher` (see `teacher_config` and `distill.load_teacher`).
    """
    saved = teacher_config(config)
    graph = common.full_graph(dataset, saved.normalize_features, sparse=saved.model in models.SPARSE_INPUT)

    def make_model(teacher, num_classes):
        return _OnGraph(models.make_node_model(teacher, num_classes), graph)

    # The graph replaces the image batch `load_teacher` was written for; (1,) is a placeholder input shape. Orbax
    # reads absolute paths only: a relative `--config.teacher=runs/...` is made absolute here.
    workdir = os.path.abspath(config.teacher)
    teacher = distill.load_teacher(workdir, make_model, (1,), dataset.num_classes, TRAINER)
    return np.asarray(distill.teacher_logits(teacher, None), np.float32)


def loss(logits, teacher, labels, train_mask, temperature: float, alpha: float):
    """GLNN's objective (scalar): `alpha` x the mean soft term over all N nodes + `(1 - alpha)` x the mean
    cross-entropy over the training nodes.

    Args:
      logits: `(N, C)` the student's.
      teacher: `(N, C)` the teacher's (constants).
      labels: `(N,)` ints.
      train_mask: `(N,)` the labelled training nodes.
      temperature: T > 0.
      alpha: the soft term's weight, in [0, 1].
    """
    soft = distill.loss(logits, teacher, None, temperature, 1.0).mean()  # (N,) -> mean over every node
    if alpha == 1:
        return soft
    return alpha * soft + (1.0 - alpha) * graph_metrics.cross_entropy(logits, labels, train_mask)
