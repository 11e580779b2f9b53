"""DistMult or ComplEx trained 1-N in PyKEEN (CPU): `python -I pykeen_kg.py PROBLEM_JSON OUT_PATH`.

Runs in the PyKEEN venv (see `scripts/bench/kg.py`), never in the project's. Reads the triples the benchmark wrote
(`<data>/{train,valid,test}.txt`, names tab-separated, and `entities.txt` / `relations.txt` giving the ids: the
project's, so both sides number everything alike) with `TriplesFactory.from_path(create_inverse_triples=True)`,
trains PyKEEN's 1-N loop (`LCWATrainingLoop`: every training query (h, r), inverses included, scored against all
entities) for `epochs` epochs, times each epoch and the `gc.collect()` that PyKEEN's loop ends each epoch with
(`gc_s`: it still collects, inside the timed epoch), and evaluates the final parameters with `RankBasedEvaluator`
(filtered by train, valid and test; head and tail queries; "realistic" ranks). Writes JSON to OUT_PATH.

The model is PyKEEN's `ERModel` with its `DistMultInteraction` / `ComplExInteraction` and `Embedding`s set as the
project's trainer has them, instead of the `DistMult` / `ComplEx` classes' defaults (which constrain DistMult's
entities to unit norm and add an L2 regulariser to the loss): no constraint, no regulariser, Glorot-normal tables
drawn as flax draws them (truncated normal of variance 2 / (rows + columns)), dropout `dropout` on every embedding
looked up (PyKEEN's `Embedding(dropout=...)`: the query's entity and relation and, since the candidates are the
whole entity table looked up, the candidates). torch's Adam at `lr` (its other defaults are optax's), gradients
clipped at global norm `max_grad_norm` (PyKEEN's `GradientNormClippingTrainingCallback`; see `run` for why it is
passed as a callback).

ComplEx: `embedding_size` complex dimensions, as PyKEEN's `ComplEx(embedding_dim=...)` counts them (its tables hold
`(E, D, 2)` floats viewed as complex). torch cannot draw dropout for a complex tensor, so the tables here are the
same `(E, D, 2)` floats left real (dropout masks the real and imaginary parts independently, as the project's
trainer does), and `ComplExInteraction` views them as complex before its own scoring.

Label smoothing: "ours" (the default) smooths the targets as the project's trainer and Lin et al. 2018 do,
`(1 - eps) * y + 1 / E`; "pykeen" uses PyKEEN's own rule, ones to `1 - eps` and zeros to `eps / (E - 1)`.
"""

import functools
import gc
import json
import math
import os
import resource
import sys
import time
from importlib.metadata import version

import numpy as np
import torch
from pykeen.evaluation import RankBasedEvaluator
from pykeen.losses import BCEWithLogitsLoss
from pykeen.models import ERModel
from pykeen.nn.modules import ComplExInteraction, DistMultInteraction
from pykeen.training import LCWATrainingLoop
from pykeen.training import training_loop as pykeen_training_loop
from pykeen.training.callbacks import GradientNormClippingTrainingCallback, TrainingCallback
from pykeen.triples import TriplesFactory
from pykeen.triples.instances import LCWAInstances

# flax's glorot_normal: a normal truncated at two standard deviations, rescaled to the wanted variance.
TRUNCATED_STD = 0.87962566103423978


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def glorot_normal(rows: int, columns: int):
    """flax's `xavier_normal` for a (rows, columns) table, applied to a tensor of any trailing shape."""
    std = math.sqrt(2.0 / (rows + columns)) / TRUNCATED_STD
    return functools.partial(torch.nn.init.trunc_normal_, mean=0.0, std=std, a=-2 * std, b=2 * std)


class SplitComplExInteraction(ComplExInteraction):
    """PyKEEN's ComplEx scoring of real `(..., D, 2)` tables (real, imaginary), viewed as complex first."""

    entity_shape = ("dc",)  # (D, 2): "c" the real and imaginary parts
    relation_shape = ("dc",)

    def forward(self, h, r, t):
        return super().forward(*(torch.view_as_complex(x.contiguous()) for x in (h, r, t)))


class SmoothedBCE(BCEWithLogitsLoss):
    """BCE against `(1 - eps) * y + 1 / E`, the project's (and Lin et al. 2018's) label smoothing."""

    def process_lcwa_scores(self, predictions, labels, label_smoothing=None, num_entities=None, weights=None):
        if label_smoothing:
            labels = (1.0 - label_smoothing) * labels + 1.0 / num_entities
        return self(x=predictions, target=labels, weight=weights)


class EpochClock(TrainingCallback):
    """The wall-clock time at the end of every epoch."""

    def __init__(self):
        super().__init__()
        self.ends: list[float] = []

    def post_epoch(self, epoch: int, epoch_loss: float, **kwargs) -> None:
        self.ends.append(time.perf_counter())


class TimedGC:
    """Stands in for the `gc` module of PyKEEN's training loop, timing the `gc.collect()` it runs after every epoch
    (it still collects: the epochs cost what they cost, and the report says how much of it was collecting)."""

    def __init__(self):
        self.seconds: list[float] = []

    def collect(self, *args) -> int:
        start = time.perf_counter()
        found = gc.collect(*args)
        self.seconds.append(time.perf_counter() - start)
        return found


def read_names(path: str) -> dict[str, int]:
    with open(path, encoding="utf-8") as f:
        return {name: i for i, name in enumerate(f.read().splitlines())}


def make_model(p: dict, train: TriplesFactory) -> ERModel:
    size, entities, relations = p["embedding_size"], train.num_entities, train.num_relations  # relations: 2R
    shape = (size, 2) if p["model"] == "complex" else size
    interaction = SplitComplExInteraction if p["model"] == "complex" else DistMultInteraction
    dropout = p["dropout"] or None
    loss = SmoothedBCE() if p["smoothing"] == "ours" else BCEWithLogitsLoss()
    return ERModel(
        triples_factory=train,
        interaction=interaction,
        entity_representations_kwargs=dict(shape=shape, initializer=glorot_normal(entities, size), dropout=dropout),
        relation_representations_kwargs=dict(shape=shape, initializer=glorot_normal(relations, size), dropout=dropout),
        loss=loss,
        random_seed=p["seed"],
    )


def run(p: dict) -> dict:
    threads = p["threads"] or os.cpu_count()
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(threads)
    torch.manual_seed(p["seed"])
    entity_to_id = read_names(os.path.join(p["data"], "entities.txt"))
    relation_to_id = read_names(os.path.join(p["data"], "relations.txt"))
    splits = {
        split: TriplesFactory.from_path(
            os.path.join(p["data"], f"{split}.txt"),
            create_inverse_triples=split == "train",
            entity_to_id=entity_to_id,
            relation_to_id=relation_to_id,
            compact_id=False,  # keep the given ids, even for entities absent from a split
        )
        for split in ("train", "valid", "test")
    }
    train = splits["train"]
    model = make_model(p, train)
    optimizer = torch.optim.Adam(model.get_grad_params(), lr=p["lr"])
    loop = LCWATrainingLoop(model=model, triples_factory=train, optimizer=optimizer)
    clock, collector = EpochClock(), TimedGC()
    pykeen_training_loop.gc = collector
    rss_before = rss_mib()
    start = time.perf_counter()
    losses = loop.train(
        triples_factory=train,
        num_epochs=p["epochs"],
        batch_size=p["batch_size"],
        label_smoothing=p["label_smoothing"],
        use_tqdm=False,
        pin_memory=False,
        # Clipping as a callback of ours, not `gradient_clipping_max_norm=`: PyKEEN 1.11.1 never registers the
        # training loop with the callback that argument makes, so its first step fails ("Callback was never
        # initialized"). The loop calls every given callback's `pre_step` before the optimiser steps.
        callbacks=[GradientNormClippingTrainingCallback(p["max_grad_norm"]), clock] if p["max_grad_norm"] else [clock],
    )
    train_s = time.perf_counter() - start
    seconds = np.diff([start, *clock.ends])
    later = seconds[1:] if len(seconds) > 1 else seconds
    evaluator = RankBasedEvaluator(filtered=True)
    start = time.perf_counter()
    results = evaluator.evaluate(
        model,
        splits["test"].mapped_triples,
        batch_size=p["eval_batch_size"],
        use_tqdm=False,
        additional_filter_triples=[train.mapped_triples, splits["valid"].mapped_triples],
    )
    evaluate_s = time.perf_counter() - start
    metrics = {"mrr": "inverse_harmonic_mean_rank", "mr": "arithmetic_mean_rank"}
    metrics |= {f"hits@{k}": f"hits_at_{k}" for k in (1, 3, 10)}
    out = {name: float(results.get_metric(f"both.realistic.{key}")) for name, key in metrics.items()}
    out["tail_mrr"] = float(results.get_metric("tail.realistic.inverse_harmonic_mean_rank"))
    return out | {
        "epoch_s": float(np.median(later)),
        "epoch_s_mean": float(np.mean(later)),
        "first_epoch_s": float(seconds[0]),
        "gc_s": float(np.median(collector.seconds[1:] or collector.seconds)),  # of each epoch, after the first
        "train_s": train_s,
        "evaluate_s": evaluate_s,
        "epochs": len(seconds),
        "final_loss": float(losses[-1]),
        "num_entities": train.num_entities,
        "num_relations": train.num_relations,
        "num_queries": len(LCWAInstances.from_triples_factory(train, target=2)),
        "num_test_triples": int(splits["test"].num_triples),
        "params": int(sum(x.numel() for x in model.parameters())),
        "rss_before_mib": rss_before,
        "peak_rss_mib": rss_mib(),
        "threads": {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()},
        "version": f"pykeen {version('pykeen')}, torch {torch.__version__}",
    }


if __name__ == "__main__":
    problem, out_path = json.loads(sys.argv[1]), sys.argv[2]
    result = run(problem)
    with open(out_path, "w") as f:
        json.dump(result, f)
