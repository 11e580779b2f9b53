"""Shared test helpers. Tests run on the CPU backend; multi-device tests fake devices in subprocesses."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(args, env_extra=None, timeout=300, **kwargs):
    """Runs `python ARGS` from the repo root; returns the CompletedProcess (text mode)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", **(env_extra or {}))
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, **kwargs
    )


@pytest.fixture(scope="session")
def root():
    return ROOT
