"""Data parallelism: 4 fake CPU devices, and 2 processes joined by jax.distributed, match one device."""

import os
import socket

import jax
import numpy as np
import pytest

from agents import ppo
from agents.configs import ppo as ppo_config
from lepton_jax.rl import loop
from tests.conftest import ROOT, run_python, xla_flags

WORKER = os.path.join(ROOT, "tests", "core", "dp_worker.py")


@pytest.fixture(scope="module")
def single_device_params(tmp_path_factory):
    assert jax.device_count() == 1
    state, _ = loop.run(ppo_config.get_config("smoke"), str(tmp_path_factory.mktemp("single")), ppo.make_agent)
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state.train_state.params))]


def _load(path):
    with np.load(path) as f:
        return [f[f"arr_{i}"] for i in range(len(f.files))]


def _assert_close(params, reference):
    assert len(params) == len(reference)
    for a, b in zip(params, reference):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_four_devices_equal_one_device(tmp_path, single_device_params):
    # With a learning-rate sweep (the default value and another): the run axis (values x seeds) stays whole on every
    # device while the env axis is split; the default value's runs match the single-device run's.
    out = tmp_path / "params.npz"
    result = run_python(
        [WORKER, str(tmp_path / "run"), str(out)],
        env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "DP_WORKER_SWEEP_LR": "0.00025,0.001"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "devices 4 processes 1" in result.stdout
    params = _load(out)  # (2 values x 2 seeds, ...)
    _assert_close([x[:2] for x in params], single_device_params)
    assert all(np.isfinite(x).all() for x in params) and not np.allclose(params[0][2:], params[0][:2])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_device(tmp_path, single_device_params):
    """Two local processes (2 CPU devices each) joined with jax.distributed.initialize and gloo collectives."""
    import subprocess
    import sys

    port, out = _free_port(), tmp_path / "params.npz"
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    env["XLA_FLAGS"] = xla_flags("--xla_force_host_platform_device_count=2")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # as in run_python: faked devices stay off the shared cache
    procs = [
        subprocess.Popen(
            [sys.executable, WORKER, str(tmp_path / "run"), str(out), f"127.0.0.1:{port}", "2", str(i)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=300))
    finally:
        for p in procs:
            p.kill()
    for p, (stdout, stderr) in zip(procs, outputs):
        assert p.returncode == 0, stderr[-3000:]
        assert "devices 4 processes 2" in stdout
    _assert_close(_load(out), single_device_params)


def test_image_epoch_on_two_devices_equals_one_device():
    """The generative/classifier epoch (device-resident data, batch split over the data axis) matches one device."""
    result = run_python(
        [os.path.join(ROOT, "tests", "core", "image_dp_worker.py")],
        env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    devices, diff = result.stdout.split()[-3], float(result.stdout.split()[-1])
    assert devices == "2" and diff < 1e-4, result.stdout
