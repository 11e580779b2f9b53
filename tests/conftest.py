"""Shared test helpers. Tests run on the CPU backend; multi-device tests fake devices in subprocesses."""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Many tests compile the same small programs (smoke configs, in this process and in launcher subprocesses). XLA's
# persistent compilation cache, in a directory fresh for each test session, compiles each of them once. It is an
# executable cache only: results are bit for bit those of a fresh compile.
_CACHE_DIR = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _CACHE_DIR = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="lepton_jax_test_xla_cache_")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"


def run_python(args, env_extra=None, timeout=300, **kwargs):
    """Runs `python ARGS` from the repo root; returns the CompletedProcess (text mode)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", **(env_extra or {}))
    if "XLA_FLAGS" in (env_extra or {}):
        # A subprocess with faked devices compiles for another device count; keep it off the shared cache (a
        # launcher run with 2 fake devices once crashed in a full session with it on).
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, **kwargs
    )


@pytest.fixture(scope="session")
def root():
    return ROOT


def pytest_sessionfinish(session, exitstatus):
    if _CACHE_DIR is not None:
        shutil.rmtree(_CACHE_DIR, ignore_errors=True)
