"""One metrics writer (JSONL + TensorBoard), a console progress bar, the NaN guard, and strict JSON.

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
