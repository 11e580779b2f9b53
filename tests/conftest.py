"""Shared test helpers. Tests run on the CPU backend; multi-device tests fake devices in subprocesses."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The suite is dominated by XLA compiling many small programs once each on 2 CPU cores. Backend optimisation level 0
# halves compile time (measured: the graph-trainer smoke run 40 s -> 26 s) and the programs here are small enough
# that their slower code does not matter. Every run the tests compare (sharded vs single device, resumed vs
# uninterrupted, in this process vs a subprocess) uses the same flags; set XLA_FLAGS yourself to test another level.
FAST_COMPILE = "--xla_backend_optimization_level=0"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()


def xla_flags(extra: str) -> str:
    """This session's XLA flags plus `extra` (e.g. a faked device count) for a subprocess."""
    return f"{os.environ['XLA_FLAGS']} {extra}"


# Many tests compile the same small programs (smoke configs, in this process and in launcher subprocesses). XLA's
# persistent compilation cache, in a directory fresh for each test session, compiles each of them once. It is an
# executable cache only: results are bit for bit those of a fresh compile.
_CACHE_DIR = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _CACHE_DIR = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="lepton_jax_test_xla_cache_")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"


def start_python(args, cache: bool = True) -> subprocess.Popen:
    """Starts `python ARGS` from the repo root (text pipes for stdout and stderr), e.g. to signal it mid-run.

    `cache=False` keeps it off the session's compilation cache, so that it compiles for seconds as a real run does.
    """
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", PYTHONPATH=ROOT)
    if not cache:
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
    return subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def run_python(args, env_extra=None, timeout=300, **kwargs):
    """Runs `python ARGS` from the repo root; returns the CompletedProcess (text mode)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", **(env_extra or {}))
    if "XLA_FLAGS" in (env_extra or {}):
        env["XLA_FLAGS"] = xla_flags(env_extra["XLA_FLAGS"])
        # A subprocess with faked devices compiles for another device count; keep it off the shared cache (a
        # launcher run with 2 fake devices once crashed in a full session with it on).
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, **kwargs
    )
    # A fatal error (abort, segfault) ends with a line listing every loaded extension module, which would fill the
    # tail that a failing assertion shows; drop it so the error and the stack above it are what is seen.
    result.stderr = "\n".join(line for line in result.stderr.split("\n") if not line.startswith("Extension modules:"))
    return result


@pytest.fixture(scope="session")
def root():
    return ROOT


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 8x8 digits as the image trainers' `ImageData` (embedded: no files needed)."""
    from lepton_jax.vision import data as image_data  # here, so that collecting the other tests stays cheap

    return image_data.load("digits")


def pytest_sessionfinish(session, exitstatus):
    if _CACHE_DIR is not None:
        shutil.rmtree(_CACHE_DIR, ignore_errors=True)


@pytest.fixture
def interrupt_first_step(monkeypatch):
    """Within `with interrupt_first_step():`, runs behave as if SIGTERM arrived during their first loop step
    (chunk or epoch): the scaffold saves a checkpoint after it and raises `Interrupted`."""
    import contextlib
    import signal

    from lepton_jax import run as run_lib
    from lepton_jax.interrupt import InterruptGuard

    class InterruptAtOnce(InterruptGuard):
        def __enter__(self):
            self.signum = signal.SIGTERM
            return self

    @contextlib.contextmanager
    def patched():
        with monkeypatch.context() as patch:
            patch.setattr(run_lib, "InterruptGuard", InterruptAtOnce)
            yield

    return patched


FIGURES = ("curves", "image_grid", "confusion_matrix", "labelled_images")  # what `lepton_jax.plotting` draws


def blank_figures(patch: pytest.MonkeyPatch, names=FIGURES) -> None:
    """Through `patch`, the `lepton_jax.plotting` functions `names` draw nothing: each figure is an empty file at
    its path instead (see `without_figures`; for a module-scoped run, `with pytest.MonkeyPatch.context() as patch`)."""
    import inspect

    from lepton_jax import plotting

    def empty_file(draw):
        signature = inspect.signature(draw)

        def write(*args, **kwargs):
            path = signature.bind(*args, **kwargs).arguments["path"]
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            open(path, "wb").close()

        return write

    for name in names:
        patch.setattr(plotting, name, empty_file(getattr(plotting, name)))


@pytest.fixture
def without_figures(monkeypatch):
    """Within the test, `lepton_jax.plotting` draws no figure: each one (learning curves, image grids, confusion
    matrices, captioned images) is an empty file at its path instead, so which files a run writes can still be
    checked. For runs whose pictures the test does not look at: drawing is host-side matplotlib work, about half a
    second a figure (a grid of 32 captioned images), twice that on busy cores: as long as a smoke run's training."""
    blank_figures(monkeypatch)


def one_line_error(call, *patterns) -> str:
    """`call()` raises a `UserError` whose message is one line holding each of `patterns`; returns the message."""
    from lepton_jax.errors import UserError

    with pytest.raises(UserError) as error:
        call()
    message = str(error.value)
    assert "\n" not in message, message
    for pattern in patterns:
        assert pattern in message, message
    return message


def launch(args, workdir: str, timeout=300) -> dict:
    """`python -m scripts.train ARGS --workdir=WORKDIR`, asserted to succeed; returns its results.json."""
    result = run_python(["-m", "scripts.train", *args, f"--workdir={workdir}"], timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)
