"""Helpers of the `scripts/bench_*.py` benchmarks: peers in venvs of their own, timing, and the machine.

Peers (rejax, stable-baselines3, PyTorch, PyTorch Geometric) are never imported by the project: each runs in its
own venv (created on first use from a pinned requirements text, reused while the pins are unchanged) in a
subprocess that executes a worker script embedded in the benchmark and writes its results as JSON.
"""

import json
import os
import platform
import subprocess
import sys
import tempfile
import time

PEER_VENV_DIR = os.path.expanduser("~/.cache/lepton_bench")


def ensure_venv(path: str, requirements: str, pip_args: tuple[str, ...] = ()) -> str:
    """Creates (or reuses) a venv holding exactly `requirements`.

    Args:
      path: the venv's directory.
      requirements: a requirements file's text. The venv is reused while the copy recorded in it after the last
        successful install is the same; otherwise it is (re)installed.
      pip_args: extra `pip install` arguments (e.g. an index URL).

    Returns:
      The venv's python executable.
    """
    python = os.path.join(path, "bin", "python")
    marker = os.path.join(path, "bench-requirements.txt")
    if os.path.exists(python) and os.path.exists(marker):
        with open(marker) as f:
            if f.read() == requirements:
                return python
    print(f"Installing a peer venv in {path} (once; a minute or two)...", flush=True)
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", path], check=True)
    pending = marker + ".pending"
    with open(pending, "w") as f:
        f.write(requirements)
    cmd = [python, "-m", "pip", "install", "-q", *pip_args, "-r", pending]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"pip install into {path} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    os.replace(pending, marker)
    return python


def run_worker(python: str, worker_source: str, args: list[str], timeout: float | None = None) -> dict:
    """Runs `worker_source` with `python` as `worker.py *args OUT_PATH` and returns the JSON it wrote to OUT_PATH."""
    with tempfile.TemporaryDirectory(prefix="lepton_bench_") as tmp:
        worker, out = os.path.join(tmp, "worker.py"), os.path.join(tmp, "result.json")
        with open(worker, "w") as f:
            f.write(worker_source)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the project must not shadow the peer
        subprocess.run([python, worker, *args, out], cwd=tmp, env=env, check=True, timeout=timeout)
        with open(out) as f:
            return json.load(f)


def timed(fn):
    """`(fn(), seconds)`."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def machine(load_before: float) -> dict:
    """What a benchmark's JSON records about where it ran."""
    import jax

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "jax_devices": [str(d) for d in jax.devices()],
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
    }


def warn_if_busy() -> float:
    """Returns the 1-minute load average, warning when it is high enough to skew timings."""
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"WARNING: 1-minute load average is {load:.2f} before starting; timings will be skewed.")
    return load
