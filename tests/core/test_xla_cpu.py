"""The XLA:CPU defaults set on import: convolutions stay with XLA's own kernels unless XLA_FLAGS says otherwise."""

import importlib.metadata
import os
import subprocess
import sys

import pytest

from lepton_jax import xla_cpu
from tests.conftest import ROOT

# Compiles a small convolution after importing lepton_jax and prints whether YNNPACK took it.
_PROBE = """
import jax, jax.numpy as jnp
import lepton_jax, os
x, k = jnp.ones((128, 8, 8, 32)), jnp.ones((2, 2, 32, 64))  # big enough for YNNPACK to want it
conv = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
text = jax.jit(conv).lower(x, k).compile().as_text()
fused = [line for line in text.splitlines() if "__ynn_fusion" in line and "fusion(" in line]
print("ynn" if fused else "xla", os.environ["XLA_FLAGS"])
"""


def _probe(xla_flags: str | None) -> list[str]:
    # Not conftest's run_python: that one adds this session's XLA_FLAGS (the default included) to the subprocess's.
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    env.pop("XLA_FLAGS", None)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    result = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.split()


def test_convolutions_leave_ynnpack_by_default_and_a_users_choice_wins():
    if not importlib.metadata.version("jaxlib").startswith(xla_cpu.MEASURED_JAXLIB):
        pytest.skip("the default is only set for the jaxlib it was measured on")
    used, *flags = _probe(None)
    assert used == "xla" and flags == [xla_cpu.YNN_DEFAULT]
    # The user's own setting of the option is kept as given (here: YNNPACK's default list, convolutions included).
    used, *flags = _probe(f"{xla_cpu.YNN_OPTION}=+individual_convolution")
    assert used == "ynn" and flags == [f"{xla_cpu.YNN_OPTION}=+individual_convolution"]
