"""XLA:CPU defaults this project sets before JAX starts its backend (imported by `lepton_jax/__init__.py`).

jaxlib 0.10 hands convolutions on CPU to YNNPACK by default. On the x86 CPUs this project was measured on, XLA's own
(Eigen) convolutions ran its convolutional training steps 1.3-1.75x faster (batch 128, 2 cores: MNIST classifier
135 -> 78 ms, DCGAN with 32 features 175-195 -> 118-133 ms, with 64 features 434 -> 329 ms; RESULTS.md), so unless
XLA_FLAGS already says otherwise, YNNPACK keeps its other fusions (dots, elementwise, reductions) and loses the
convolutions. Nothing changes on GPU/TPU; an XLA_FLAGS that names the option itself is left alone, and so is any
jaxlib this was not measured on (an unknown flag would abort XLA).
"""

import importlib.metadata
import os

YNN_OPTION = "--xla_cpu_experimental_ynn_fusion_type"
YNN_DEFAULT = f"{YNN_OPTION}=-individual_convolution"
MEASURED_JAXLIB = ("0.10.",)


def set_defaults() -> None:
    """Adds the defaults to the XLA_FLAGS environment variable (read when JAX first creates its CPU backend)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if YNN_OPTION in flags:
        return
    try:
        version = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return
    if version.startswith(MEASURED_JAXLIB):
        os.environ["XLA_FLAGS"] = f"{flags} {YNN_DEFAULT}".strip()
