"""The multi-agent benchmark (`scripts/bench/marl.py`): the problem both sides train, taking JaxMARL's script from a
checkout, and its one-line errors.

Neither side trains here (JaxMARL's side needs a venv of its own, minutes to install); the worker's stand-alone
checks are test_bench.py's.
"""

import importlib
import os
import subprocess

import pytest
from absl import flags

from agents.configs import ippo as ippo_config
from lepton_jax.errors import UserError
from lepton_jax.rl.config import on_policy_derived
from tests.conftest import run_python

SCRIPT = "baselines/IPPO/ippo_ff_mpe.py"
SCRIPT_TEXT = "def make_train(config):\n    return config\n"
# JaxMARL's baselines/IPPO/config/ippo_ff_mpe.yaml, less its seeds and wandb keys; 10^6 env steps are 488 whole
# updates of 16 envs x 128 steps.
YAML = {
    "LR": 2.5e-4,
    "NUM_ENVS": 16,
    "NUM_STEPS": 128,
    "TOTAL_TIMESTEPS": 488 * 16 * 128,
    "UPDATE_EPOCHS": 4,
    "NUM_MINIBATCHES": 4,
    "GAMMA": 0.99,
    "GAE_LAMBDA": 0.95,
    "CLIP_EPS": 0.2,
    "ENT_COEF": 0.01,
    "VF_COEF": 0.5,
    "MAX_GRAD_NORM": 0.5,
    "ACTIVATION": "tanh",
    "ENV_NAME": "MPE_simple_spread_v3",
    "ENV_KWARGS": {},
    "ANNEAL_LR": True,
}


@pytest.fixture(scope="module")
def marl():
    """`scripts.bench.marl` imported here, its flags forgotten afterwards (every benchmark defines --out, --peers)."""
    module = importlib.import_module("scripts.bench.marl")
    yield module
    for flag in flags.FLAGS.get_flags_for_module(module.__name__):
        delattr(flags.FLAGS, flag.name)


def git(*args: str, cwd: str | None = None) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main", *args]
    return subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def checkouts(tmp_path_factory):
    """A work tree holding `SCRIPT` (one commit), its bare clone, and a bare repository without it: their paths and
    the commit."""
    root = tmp_path_factory.mktemp("jaxmarl")
    tree = root / "JaxMARL"
    (tree / os.path.dirname(SCRIPT)).mkdir(parents=True)
    (tree / SCRIPT).write_text(SCRIPT_TEXT)
    git("init", "-q", str(tree))
    git("add", SCRIPT, cwd=str(tree))
    git("commit", "-q", "-m", "baseline", cwd=str(tree))
    git("clone", "-q", "--bare", str(tree), str(root / "bare"))
    other = root / "other"
    other.mkdir()
    (other / "README").write_text("no baselines here\n")
    git("init", "-q", str(other))
    git("add", "README", cwd=str(other))
    git("commit", "-q", "-m", "readme", cwd=str(other))
    git("clone", "-q", "--bare", str(other), str(root / "other_bare"))
    commit = git("rev-parse", "--short=12", "HEAD", cwd=str(tree))
    return {"tree": str(tree), "bare": str(root / "bare"), "other_bare": str(root / "other_bare"), "commit": commit}


def test_their_config_holds_our_configs_hyperparameters(marl):
    assert marl.jaxmarl_config(marl.make_config(10**6)) == YAML


def test_our_side_trains_the_configs_problem_for_as_many_env_steps(marl):
    config = marl.make_config(10**6)
    default = ippo_config.get_config("MPE_simple_spread_v3")
    for key in default:
        if key not in ("total_timesteps", "num_seeds"):
            assert config[key] == default[key], key
    assert config.total_timesteps == 10**6 and config.num_seeds == 1
    derived = on_policy_derived(config)
    # Their NUM_UPDATES is TOTAL_TIMESTEPS // NUM_STEPS // NUM_ENVS: the same 488 updates of 2048 env steps.
    assert (derived.num_updates, derived.steps_per_update) == (488, 2048)
    assert YAML["TOTAL_TIMESTEPS"] // YAML["NUM_STEPS"] // YAML["NUM_ENVS"] == derived.num_updates


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("hidden_sizes", (128, 128), "config.hidden_sizes=(128, 128): JaxMARL's baselines/IPPO/ippo_ff_mpe.py fixes"),
        ("opt_eps", 1e-8, "config.opt_eps=1e-08"),
        ("schedule", "cosine", "config.schedule='cosine': JaxMARL's baselines/IPPO/ippo_ff_mpe.py has linear"),
    ],
)
def test_a_setting_their_script_cannot_take_is_refused(marl, key, value, message):
    config = marl.make_config(10**6)
    config[key] = value
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        marl.jaxmarl_config(config)


def test_a_constant_rate_is_theirs_without_annealing(marl):
    config = marl.make_config(10**6)
    config.schedule = "constant"
    assert marl.jaxmarl_config(config) == YAML | {"ANNEAL_LR": False}


@pytest.mark.parametrize(("kind", "suffix"), [("tree", " + work tree"), ("bare", "")])
def test_the_script_is_taken_from_a_work_tree_or_a_bare_git_dir(marl, checkouts, tmp_path, kind, suffix):
    path, source = marl.extract_script(checkouts[kind], str(tmp_path))
    assert path == str(tmp_path / "ippo_ff_mpe.py")
    with open(path) as f:
        assert f.read() == SCRIPT_TEXT
    assert source == checkouts["commit"] + suffix


def test_a_checkout_without_the_script_is_one_line(marl, checkouts, tmp_path):
    for repo in (checkouts["other_bare"], str(tmp_path)):  # a git dir without it, and a directory that is no checkout
        with pytest.raises(UserError, match=f"--jaxmarl_repo={repo}: no {SCRIPT} in it"):
            marl.extract_script(repo, str(tmp_path))
    with pytest.raises(UserError, match="--jaxmarl_repo: give the path of a JaxMARL checkout"):
        marl.extract_script(None, str(tmp_path))


def test_a_missing_repo_is_one_line_on_the_command_line(tmp_path):
    missing = str(tmp_path / "nowhere")
    proc = run_python(["-m", "scripts.bench.marl", f"--jaxmarl_repo={missing}"], timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: --jaxmarl_repo={missing}: no such directory"
