"""What the benchmarks share: peers in venvs of their own, running a peer's worker, timing, and the machine.

Peers (rejax, stable-baselines3, PyTorch, PyTorch Geometric) are never imported by the project: each runs in its
own venv (created on first use from a pinned requirements text, reused while the pins are unchanged) in a
subprocess that executes one of the worker scripts in `scripts/bench/peers/` and writes its results as JSON. A
benchmark that reports peak memory times its own implementation the same way, in a fresh process of its own
(`run_measure`), so that each figure is one implementation's alone. Importing this module imports neither jax nor
any peer.
"""

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

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


def _run_for_json(argv: Callable[[str], list[str]], cwd: str | None, timeout: float | None) -> dict:
    """Runs the command `argv(OUT_PATH)` (in a temporary directory unless `cwd`) and returns OUT_PATH's JSON."""
    with tempfile.TemporaryDirectory(prefix="lepton_bench_") as tmp:
        out = os.path.join(tmp, "result.json")
        subprocess.run(argv(out), cwd=cwd or tmp, check=True, timeout=timeout)
        with open(out) as f:
            return json.load(f)


def run_worker(python: str, worker: str, args: list[str], timeout: float | None = None) -> dict:
    """Runs the peer worker `worker` (a name in `peers/`) as `python -I WORKER *args OUT_PATH`; returns OUT_PATH's JSON.

    `-I` (isolated mode) keeps the project off the peer's `sys.path`: no script directory, no `PYTHONPATH`, no user
    site-packages, so only the peer's venv is importable. The worker runs in a temporary directory.
    """
    path = peer_worker(worker)
    return _run_for_json(lambda out: [python, "-I", path, *args, out], None, timeout)


def run_measure(module: str, spec: str, args: list[str], timeout: float | None = None) -> dict:
    """Runs `python -m MODULE --measure=SPEC,OUT_PATH *args` from the repository root; returns OUT_PATH's JSON.

    A benchmark's own implementation timed in a fresh process (the benchmark's internal `--measure` flag), so that
    the peak memory it reports (`rss_mib`) is that implementation's alone, as a peer worker's is.
    """
    return _run_for_json(lambda out: [sys.executable, "-m", module, f"--measure={spec},{out}", *args], REPO, timeout)


def rss_mib() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports `ru_maxrss` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


def write_report(path: str, report: dict) -> None:
    """Writes a benchmark's `report` as JSON to `path` (its `--out`) and says where, on stderr."""
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(f"Wrote {path}", file=sys.stderr)


def warn_if_busy() -> float:
    """Returns the 1-minute load average, warning when it is high enough to skew timings."""
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"WARNING: 1-minute load average is {load:.2f} before starting; timings will be skewed.")
    return load
