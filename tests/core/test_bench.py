"""The benchmarks' plumbing (`scripts/bench/`): peer workers are stand-alone files, every benchmark starts, and no
peer library leaks into the project.

The benchmarks themselves are not run here (they take minutes and install peers); this checks what a refactor
breaks silently: a worker that no longer compiles or reaches into the project, a benchmark that fails at import or
flag parsing, a peer imported by the project; and, for a couple of steps, that the vision benchmark's own row trains
the trainer's CNN in a process of its own.
"""

import ast
import concurrent.futures
import importlib
import os
import py_compile
import subprocess
import sys

import pytest
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEERS_DIR = os.path.join(REPO, "scripts", "bench", "peers")
PEER_FILES = sorted(os.path.join(PEERS_DIR, f) for f in os.listdir(PEERS_DIR) if f.endswith(".py"))
PROJECT_PACKAGES = {"agents", "generative", "graphs", "lepton_jax", "scripts", "tests"}
# (gymnasium is not one: the project's own venv has it, through gymnax.)
PEER_LIBRARIES = {"torch", "torch_geometric", "stable_baselines3", "rejax", "distrax", "pykeen"}
# The two cheapest benchmarks to start (graphs imports jax lazily; generative ~3 s) run `--help` in a subprocess,
# with a flag their help must list; rl and graph_envs (~5 s: jax and gymnax) are imported in this process instead,
# where the rest of the test suite has usually imported jax and gymnax already.
HELP_CHECKS = {"graphs": "--scaling_nodes", "generative": "--classifier_steps", "kg": "--walk_sizes"}
# The classifier of lepton_jax/vision/configs/classifier.py:mnist by hand: (3x3 kernel + bias) per convolution, the
# dense layer on the 7x7x64 map of two 2x2 poolings of 28x28, and the head.
CLASSIFIER_PARAMS = (3 * 3 * 1 * 32 + 32) + (3 * 3 * 32 * 64 + 64) + (7 * 7 * 64 * 256 + 256) + (256 * 10 + 10)


def module_level_imports(path: str) -> set[str]:
    """Top-level package names imported by the module-level statements of `path` (imports inside functions skipped)."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add("." if node.level else node.module.split(".")[0])
    return names


def python_from_repo(*args: str) -> subprocess.Popen:
    """Starts `python *args` from the repository root, with no environment tweaks (as the README runs benchmarks)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.Popen(
        [sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.fixture(scope="module", autouse=True)
def help_runs():
    """The `--help` subprocesses, started with the module's first test so that they overlap the in-process imports."""
    procs = {name: python_from_repo("-m", f"scripts.bench.{name}", "--help") for name in HELP_CHECKS}
    yield procs
    for proc in procs.values():
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="module", autouse=True)
def classifier_row():
    """Our classifier row of the vision benchmark, 2 steps, measured (as the benchmark does) in a process of its own
    while the tests below run."""
    from scripts.bench import common

    args = ["--classifier_steps=2", "--repeats=1"]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        yield pool.submit(common.run_measure, "scripts.bench.generative", "classifier,1", args, 300)


def test_there_is_a_worker_for_every_peer():
    names = {os.path.basename(p)[:-3] for p in PEER_FILES}
    assert {"rejax_gymnax", "sb3_cartpole", "torch_generative", "pyg_gnn", "gymnax_env_rate", "pykeen_kg"} <= names


def test_env_rate_worker_times_the_envs_of_the_projects_gymnax():
    """The raw env-rate worker runs under the project's python too (the MinAtar benchmark times both venvs' gymnax)."""
    import json

    from scripts.bench import common

    problem = {"env": "Breakout-MinAtar", "num_envs": 2, "num_steps": 4, "blocks": 2, "repeats": 1}
    r = common.run_worker(sys.executable, "gymnax_env_rate", [json.dumps(problem)])
    assert r["steps"] == 16 and r["steps_per_s"] > 0 and r["version"].startswith("gymnax 1.")


@pytest.mark.parametrize("path", PEER_FILES, ids=os.path.basename)
def test_peer_worker_compiles_and_stands_alone(path, tmp_path):
    py_compile.compile(path, cfile=str(tmp_path / "worker.pyc"), doraise=True)
    # It runs by path in the peer's venv with `python -I`: nothing of the project is importable there.
    assert not module_level_imports(path) & (PROJECT_PACKAGES | {"."})


def test_no_project_module_imports_a_peer_at_module_level():
    offenders = []
    for package in sorted(PROJECT_PACKAGES):
        for root, _, files in os.walk(os.path.join(REPO, package)):
            if os.path.abspath(root).startswith(PEERS_DIR):
                continue
            for name in files:
                path = os.path.join(root, name)
                if name.endswith(".py") and module_level_imports(path) & PEER_LIBRARIES:
                    offenders.append(os.path.relpath(path, REPO))
    assert not offenders, f"peer libraries imported at module level by {offenders}"


def test_importing_common_imports_neither_jax_nor_torch():
    code = "import sys, scripts.bench.common; print(sorted({'jax', 'torch'} & set(sys.modules)))"
    proc = python_from_repo("-c", code)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert stdout.strip() == "[]"


@pytest.mark.parametrize("name", ["rl", "graph_envs", "cluster"])
def test_benchmark_imports_without_peers(name):
    module = importlib.import_module(f"scripts.bench.{name}")
    # Every benchmark is an absl main with --out, --repeats...: forget this one's flags so the next can define its own.
    for flag in flags.FLAGS.get_flags_for_module(module.__name__):
        delattr(flags.FLAGS, flag.name)
    assert callable(module.main)
    assert not PEER_LIBRARIES & set(sys.modules)


# Last, so that the subprocesses started by the fixtures ran while the imports above did.
def test_classifier_row_times_the_trainers_cnn(classifier_row):
    row = classifier_row.result()
    assert row["params"] == CLASSIFIER_PARAMS  # the config's CNN, counted without the optimiser's moments
    assert row["images"] == 2 * 128 and row["num_seeds"] == 1  # 2 steps of the config's batch
    assert row["images_per_second"] == pytest.approx(row["images"] / row["train_s"])
    assert row["first_epoch_s"] > 0 and 0 < row["rss_before_mib"] <= row["peak_rss_mib"]


@pytest.mark.parametrize("name", sorted(HELP_CHECKS))
def test_help_prints_usage(name, help_runs):
    stdout, stderr = help_runs[name].communicate(timeout=60)
    # absl's `--help` prints the usage and exits 1 by design (as `scripts.train --help` does); a failed import or
    # a bad flag definition would show as a traceback instead.
    assert help_runs[name].returncode == 1 and "Traceback" not in stderr, stderr[-2000:]
    assert f"python -m scripts.bench.{name}" in stdout and HELP_CHECKS[name] in stdout
