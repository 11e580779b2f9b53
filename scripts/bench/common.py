"""What the benchmarks share: peers in venvs of their own, running a peer's worker, timing, and the machine.

Peers (rejax, stable-baselines3, PyTorch, PyTorch Geometric) are never imported by the project: each runs in its
own venv (created on first use from a pinned requirements text, reused while the pins are unchanged) in a
subprocess that executes one of the worker scripts in `scripts/bench/peers/` and writes its results as JSON.
Importing this module imports neither jax nor any peer.
"""

import json
import os
import platform
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEERS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers")
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


def peer_worker(name: str) -> str:
    """The path of the worker script `scripts/bench/peers/<name>.py`."""
    path = os.path.join(PEERS_DIR, name + ".py")
    if not os.path.exists(path):
        valid = sorted(f[:-3] for f in os.listdir(PEERS_DIR) if f.endswith(".py") and not f.startswith("_"))
        raise ValueError(f"unknown peer worker {name!r}; valid: {', '.join(valid)}")
    return path


def run_worker(python: str, worker: str, args: list[str], timeout: float | None = None) -> dict:
    """Runs the peer worker `worker` (a name in `peers/`) as `python -I WORKER *args OUT_PATH`; returns OUT_PATH's JSON.

    `-I` (isolated mode) keeps the project off the peer's `sys.path`: no script directory, no `PYTHONPATH`, no user
    site-packages, so only the peer's venv is importable. The worker runs in a temporary directory.
    """
    path = peer_worker(worker)
    with tempfile.TemporaryDirectory(prefix="lepton_bench_") as tmp:
        out = os.path.join(tmp, "result.json")
        subprocess.run([python, "-I", path, *args, out], cwd=tmp, check=True, timeout=timeout)
        with open(out) as f:
            return json.load(f)


def timed(fn):
    """`(fn(), seconds)`."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def machine(load_before: float) -> dict:
    """What a benchmark's JSON records about where it ran."""
    import jax  # here, so that importing this module stays cheap

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
