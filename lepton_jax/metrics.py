"""One metrics writer (JSONL + TensorBoard), a console progress bar, the NaN guard, strict JSON, and the
classification metrics every trainer that classifies reports (in jnp: they jit, vmap over seeds and take a mask).

Only process 0 writes. Names are prefixed: `train/...`, `eval/...`, `perf/...`. Every record carries `step` (the
x axis, e.g. env steps per seed) so a resumed run can drop records past its checkpoint and continue the same file.
A last line cut short (what SIGKILL in mid-write leaves) is past the checkpoint too, and dropped the same way.

**Strict JSON everywhere**: every JSON file a run writes (`metrics.jsonl`, `results.json`, `eval.json`) goes through
`strict_json`, so a NaN or infinite value is `null`, never the bare `NaN` that is not JSON.
"""

import json
import math
import os
import sys

import jax.numpy as jnp
import numpy as np

from lepton_jax import parallel
from lepton_jax.errors import UserError


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the message names where."""


def check_finite(values, name: str, first_index: int, unit: str = "update") -> None:
    """Raises `TrainingDiverged` naming the first `unit` where `values` (last axis = time) is not finite."""
    values = np.asarray(values)
    bad = ~np.isfinite(values)
    if bad.any():
        offset = int(np.argmax(bad.reshape(-1, values.shape[-1]).any(axis=0)))
        raise TrainingDiverged(
            f"{name} is not finite at {unit} {first_index + offset}; the run is stopped "
            "(lower the learning rate or check the inputs)"
        )


def strict_json(obj):
    """`obj` made strictly JSON-serialisable: non-finite floats become None (`null`), numpy/JAX scalars and arrays
    become Python numbers and lists. Write it with `json.dump(strict_json(obj), f, allow_nan=False)`."""
    if isinstance(obj, dict):
        return {key: strict_json(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(value) for value in obj]
    if hasattr(obj, "__array__") and not isinstance(obj, (str, bytes)):
        obj = np.asarray(obj)
        return strict_json(obj.tolist()) if obj.ndim else strict_json(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


class MetricsWriter:
    """Appends metrics to `<workdir>/metrics.jsonl` and TensorBoard events in `<workdir>/tensorboard`."""

    def __init__(self, workdir: str, resume_step: int | None = None):
        self.enabled = parallel.is_main_process()
        self._path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if not self.enabled:
            return
        if resume_step is not None and os.path.exists(self._path):
            # Records past the checkpoint were made by the interrupted run and will be made again.
            kept = _records_up_to(self._path, resume_step)
            with open(self._path, "w") as f:
                f.writelines(kept)
        elif os.path.exists(self._path):
            os.remove(self._path)
        from tensorboardX import SummaryWriter

        purge = None if resume_step is None else resume_step + 1
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=purge)
        self._file = open(self._path, "a")

    def write(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        record = {"step": int(step)}
        for name, value in metrics.items():
            value = float(value)
            record[name] = value
            if math.isfinite(value):
                self._tb.add_scalar(name, value, int(step))
        self._file.write(json.dumps(strict_json(record), allow_nan=False) + "\n")

    def flush(self) -> None:
        if self.enabled:
            self._file.flush()
            self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            self._tb.close()


def _records_up_to(path: str, last_step: int) -> list[str]:
    """The lines of the JSONL file `path` whose record's step is at most `last_step`, each ending in a newline.

    A last line that is not JSON was cut short by a killed process (it is past any checkpoint): dropped. Any other
    line that is not JSON is a one-line `UserError`.
    """
    with open(path) as f:
        lines = f.readlines()
    kept = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise UserError(
                f"{path} line {number} is not JSON; repair or delete that line, or run again with --restart"
            ) from None
        if record["step"] <= last_step:
            kept.append(line if line.endswith("\n") else line + "\n")
    return kept


def read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class ProgressBar:
    """A tqdm bar over `total` steps on process 0 (a no-op elsewhere)."""

    def __init__(self, total: int, initial: int = 0, unit: str = "step", desc: str | None = None):
        self._bar = None
        if parallel.is_main_process():
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                initial=initial,
                unit=unit,
                unit_scale=True,
                desc=desc,
                file=sys.stderr,
                dynamic_ncols=True,
                mininterval=0.5,
            )

    def update(self, n: int, **postfix) -> None:
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(
                    {k: f"{v:.4g}" if isinstance(v, float) else v for k, v in postfix.items()}, refresh=False
                )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# Classification metrics. Each takes a `mask` (or weight) of the labels' shape: entries with mask 0 (padding, examples
# outside the split) count nowhere. They match scikit-learn (`confusion_matrix`, `balanced_accuracy_score`,
# `precision/recall/f1_score` with `zero_division=0`), classes missing from the labels or the predictions included.


def masked_mean(values, mask):
    """The mean of `values` over the entries where `mask` is set (0 when none is)."""
    mask = mask.astype(values.dtype)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def confusion_matrix(labels, predictions, num_classes: int, mask=None):
    """(K, K) float32 counts, rows the true class and columns the predicted one (scikit-learn's layout).

    Args:
      labels: (N,) ints in [0, num_classes) (a padding entry may hold anything in range, with mask 0).
      predictions: (N,) ints in [0, num_classes), e.g. `argmax(logits, -1)`.
      num_classes: K (static).
      mask: (N,) 0/1 or weights; None counts every entry.
    """
    weights = jnp.ones(labels.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
    # A scatter-add of whole counts is exact in float32 (below 2^24 entries) whatever the order of the additions.
    cells = labels * num_classes + predictions  # (N,) flat index of each entry's cell
    counts = jnp.zeros(num_classes * num_classes, jnp.float32).at[cells].add(weights)
    return counts.reshape(num_classes, num_classes)


def per_class_scores(confusion) -> dict:
    """(K,) precision, recall and F1 of each class from a confusion matrix, and its `support` (true count) and
    `predicted` count; a score whose denominator is 0 is 0 (scikit-learn's `zero_division=0`)."""
    true_positives = jnp.diagonal(confusion)
    support, predicted = jnp.sum(confusion, 1), jnp.sum(confusion, 0)
    precision = jnp.where(predicted > 0, true_positives / jnp.maximum(predicted, 1), 0.0)
    recall = jnp.where(support > 0, true_positives / jnp.maximum(support, 1), 0.0)
    f1 = jnp.where(precision + recall > 0, 2 * precision * recall / jnp.maximum(precision + recall, 1e-12), 0.0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support, "predicted": predicted}


def classification_scores(confusion) -> dict:
    """Accuracy, balanced accuracy and the macro-averaged precision, recall and F1 of a confusion matrix.

    As scikit-learn: the macro averages are over the classes present in the labels or the predictions; the balanced
    accuracy (the mean recall per class, Brodersen et al. 2010) over the classes present in the labels.
    """
    scores = per_class_scores(confusion)
    present = ((scores["support"] + scores["predicted"]) > 0).astype(jnp.float32)  # (K,)
    labelled = (scores["support"] > 0).astype(jnp.float32)

    def mean_over(values, classes):
        return jnp.sum(values * classes) / jnp.maximum(jnp.sum(classes), 1.0)

    return {
        "accuracy": jnp.trace(confusion) / jnp.maximum(jnp.sum(confusion), 1.0),
        "balanced_accuracy": mean_over(scores["recall"], labelled),
        "precision": mean_over(scores["precision"], present),
        "recall": mean_over(scores["recall"], present),
        "macro_f1": mean_over(scores["f1"], present),
    }


def balanced_accuracy(labels, predictions, num_classes: int, mask=None):
    """The mean recall over the classes present in `labels` (args as `confusion_matrix`)."""
    return classification_scores(confusion_matrix(labels, predictions, num_classes, mask))["balanced_accuracy"]


def macro_f1(labels, predictions, num_classes: int, mask=None):
    """The F1 score averaged over the classes present in `labels` or `predictions` (args as `confusion_matrix`)."""
    return classification_scores(confusion_matrix(labels, predictions, num_classes, mask))["macro_f1"]


def per_class_recall(labels, predictions, num_classes: int, mask=None):
    """(K,) the share of each class's examples predicted as that class (0 for a class with none)."""
    return per_class_scores(confusion_matrix(labels, predictions, num_classes, mask))["recall"]
