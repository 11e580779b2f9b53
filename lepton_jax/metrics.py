"""One metrics writer (JSONL + TensorBoard), a console progress bar, and the NaN guard.

Only process 0 writes. Names are prefixed: `train/...`, `eval/...`, `perf/...`. Every record carries `step` (the
x axis, e.g. env steps per seed) so a resumed run can drop records past its checkpoint and continue the same file.
"""

import json
import math
import os
import sys

import numpy as np

from lepton_jax import parallel


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
            kept = [line for line in open(self._path) if line.strip() and json.loads(line)["step"] <= resume_step]
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
            record[name] = value if math.isfinite(value) else None
            if math.isfinite(value):
                self._tb.add_scalar(name, value, int(step))
        self._file.write(json.dumps(record) + "\n")

    def flush(self) -> None:
        if self.enabled:
            self._file.flush()
            self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            self._tb.close()


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
