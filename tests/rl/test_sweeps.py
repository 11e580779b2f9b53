"""Hyperparameter sweeps: parsing, traced values, per-value results equal to separate runs, resume, launcher."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import a2c, dqn, ppo, reinforce
from agents.configs import a2c as a2c_config
from agents.configs import dqn as dqn_config
from agents.configs import ppo as ppo_config
from agents.configs import reinforce as reinforce_config
from lepton_jax.errors import UserError
from lepton_jax.interrupt import Interrupted
from lepton_jax.metrics import TrainingDiverged
from lepton_jax.rl import envs, loop, sweep
from lepton_jax.rl.agent import make_train, with_hparams
from tests.conftest import run_python


def _params(state, rows=slice(None)):
    return [np.asarray(x)[rows] for x in jax.tree.leaves(jax.device_get(state.train_state.params))]


def _records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


# --- parsing -------------------------------------------------------------------------------------------------------


def test_parse_grid_runs_are_value_major_and_reuse_the_seeds_keys():
    config = dqn_config.get_config("smoke")  # 2 seeds
    config.sweep.lr = "1e-3, 3e-3"
    config.sweep.gamma = "0.9,0.99"
    runs = sweep.parse(config, dqn.SWEEPABLE)
    assert runs.names == ("lr", "gamma") and runs.num_points == 4 and runs.num_runs == 8
    assert runs.labels == ["lr=0.001,gamma=0.9", "lr=0.001,gamma=0.99", "lr=0.003,gamma=0.9", "lr=0.003,gamma=0.99"]
    hparams = runs.hparams()
    np.testing.assert_array_equal(hparams["lr"], np.float32([1e-3] * 4 + [3e-3] * 4))
    np.testing.assert_array_equal(hparams["gamma"], np.float32([0.9, 0.9, 0.99, 0.99] * 2))
    seed_keys = jax.random.split(jax.random.PRNGKey(0), 2)
    np.testing.assert_array_equal(runs.run_keys(seed_keys), np.concatenate([seed_keys] * 4))
    assert runs.by_point(np.arange(8)).tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]]


def test_no_sweep_is_the_seeds_alone():
    config = ppo_config.get_config("smoke")
    runs = sweep.parse(config, ppo.onpolicy.SWEEPABLE)
    assert not runs.active and runs.labels == [""] and runs.hparams() == {} and runs.num_runs == 2
    del config["sweep"]  # configs of other agents may have no sweep field at all
    assert not sweep.parse(config, ()).active


@pytest.mark.parametrize(
    "agent,name,text,message",
    [
        ("ppo", "lr", "1e-3,abc", r"config.sweep.lr='1e-3,abc': 'abc' is not a number; give comma-separated numbers"),
        ("ppo", "lr", "1e-3,,3e-3", r"'' is not a number"),
        ("ppo", "lr", "0,1e-3", r"0 is not a valid lr \(must be a finite number > 0\)"),
        ("ppo", "gamma", "0.9,1.5", r"1.5 is not a valid gamma \(must be a finite number in \[0, 1\]\)"),
        ("dqn", "eps_end", "nan", r"nan is not a valid eps_end"),
        ("ppo", "lr", "1e-3,0.001", r"repeats a value"),
        ("dqn", "ent_coef", "0.1", r"cannot sweep 'ent_coef'; it can sweep lr, gamma, eps_end, exploration_fraction"),
    ],
)
def test_bad_sweep_values_are_one_line_user_errors(agent, name, text, message):
    config, sweepable = {
        "ppo": (ppo_config.get_config("smoke"), ppo.onpolicy.SWEEPABLE),
        "dqn": (dqn_config.get_config("smoke"), dqn.SWEEPABLE),
    }[agent]
    config.sweep[name] = text  # DQN's config has no sweep.ent_coef: the launcher refuses it earlier (see below)
    with pytest.raises(UserError, match=message):
        sweep.parse(config, sweepable)


def test_swept_values_are_traced_not_baked_into_the_program():
    # The same program (jaxpr) for any swept values: they are inputs, not constants.
    config = ppo_config.get_config("smoke")
    agent = ppo.make_agent(config, envs.make_env(config.env_name))
    init = loop.init_runs(agent)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)

    def program(lrs, ent_coefs):
        state = jax.eval_shape(init, keys, {"lr": jnp.float32(lrs), "ent_coef": jnp.float32(ent_coefs)})
        return str(jax.make_jaxpr(jax.vmap(agent.update))(state))

    assert program([1e-3, 3e-3], [0.0, 0.01]) == program([0.5, 0.1], [0.2, 0.3])


def test_a_sweep_stops_only_when_every_value_diverged():
    config = ppo_config.get_config("smoke")
    config.sweep.lr = "1e-3,1e-2"
    runs = sweep.parse(config, ppo.onpolicy.SWEEPABLE)
    diverged = {}
    loss = np.ones((4, 3))  # (runs, updates of a chunk)
    loss[3, 1] = np.nan  # seed 1 of lr=0.01 at the chunk's second update
    loop._check_finite(runs, loss, 11, diverged)
    assert diverged == {"lr=0.01": 12}
    loss[0, 2] = np.inf
    with pytest.raises(TrainingDiverged, match=r"every swept value \(lr=0.01 at update 12, lr=0.001 at update 13\)"):
        loop._check_finite(runs, loss, 11, diverged)
    no_sweep = sweep.parse(ppo_config.get_config("smoke"), ppo.onpolicy.SWEEPABLE)
    with pytest.raises(TrainingDiverged, match="train/loss is not finite at update 12;"):
        loop._check_finite(no_sweep, loss[2:], 11, {})


# --- a sweep equals separate runs ---------------------------------------------------------------------------------


def _check_equals_separate_runs(tmp_path, config, make_agent, name, values):
    """Runs a sweep of `values` of `name`, and each value alone with `config.<name> = value`; compares per value."""
    config.sweep[name] = ",".join(str(v) for v in values)
    swept, results = loop.run(config, str(tmp_path / "sweep"), make_agent)
    runs = sweep.parse(config, make_agent(config, envs.make_env(config.env_name)).sweepable)
    assert results["sweep/labels"] == [f"{name}={v!r}" for v in values] and results["num_runs"] == 2 * len(values)
    for p, value in enumerate(values):
        config.sweep[name] = ""
        config[name] = value
        alone, alone_results = loop.run(config, str(tmp_path / f"alone{p}"), make_agent)
        label = runs.labels[p]
        # Each value's runs are the separate run's computations with the value traced instead of constant (which
        # alone is bit for bit: `test_one_value_sweep_is_a_separate_run_bit_for_bit`). XLA on CPU rounds some
        # reductions differently for a different number of runs in the batch (2 vs 4), as for 2 vs 4 seeds; at the
        # test suite's XLA optimisation level 0 one weight in 20k, near zero, moved by 5e-6 (test_parallel's atol).
        for a, b in zip(_params(swept, slice(2 * p, 2 * p + 2)), _params(alone)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        assert results[f"sweep/{label}/eval/return_mean"] == alone_results["eval/return_mean"]
        assert results[f"sweep/{label}/eval/return_std"] == alone_results["eval/return_std"]
        assert results[f"sweep/{label}/train/episode_return_mean"] == alone_results["train/episode_return_mean"]
    return swept, results


def _dqn_config():
    config = dqn_config.get_config("smoke")  # 3 chunks of 4 updates, learning from the first
    config.n_step, config.double_dqn, config.dueling = 3, True, True  # as in test_dqn (its program is cached)
    return config


def test_dqn_sweep_reports_per_value_and_resumes_exactly(tmp_path, interrupt_first_step):
    # That DQN's swept values equal separate runs bit for bit is `test_a_swept_value_reaches_every_place_that_reads_it`;
    # here the sweep through the loop: its records and plots per value, its resume, a diverging value.
    config = _dqn_config()
    config.sweep.lr = "0.00025,0.003"
    swept, results = loop.run(config, str(tmp_path / "sweep"), dqn.make_agent)
    assert results["sweep/labels"] == ["lr=0.00025", "lr=0.003"] and results["num_runs"] == 4
    assert results["sweep/best"] in results["sweep/labels"]
    train, evals = [
        [r for r in _records(tmp_path / "sweep") if key in r]
        for key in ("train/loss/lr=0.003", "eval/return_mean/lr=0.00025")
    ]
    assert len(train) == 12 and len(evals) == 2  # one record per update; evaluations after chunks 2 and 3
    assert {"train/episode_return/lr=0.00025", "train/episode_return_std/lr=0.003", "train/epsilon/lr=0.003"} <= set(
        train[-1]
    )
    assert "train/loss" not in train[-1] and "eval/return_std/lr=0.003" in evals[-1]
    for plot in ("learning_curve.png", "sweep.png"):
        assert os.path.getsize(tmp_path / "sweep" / "plots" / plot) > 5000

    # Interrupted after the first chunk and resumed: bit for bit the uninterrupted sweep (the values are in the
    # checkpointed state).
    config = _dqn_config()
    config.sweep.lr = "0.00025,0.003"
    with interrupt_first_step():
        with pytest.raises(Interrupted, match="update 4/12"):
            loop.run(config, str(tmp_path / "split"), dqn.make_agent)
    resumed, resumed_results = loop.run(config, str(tmp_path / "split"), dqn.make_agent)
    assert resumed_results["resumed_from_update"] == 4
    assert resumed_results["params_sha256"] == results["params_sha256"]
    np.testing.assert_array_equal(np.asarray(resumed.hparams["lr"]), np.float32([2.5e-4, 2.5e-4, 3e-3, 3e-3]))

    # A diverging value (the same compiled program: the values are traced) is reported; the other one is untouched.
    config.sweep.lr = "0.00025,1e30"
    _, diverging = loop.run(config, str(tmp_path / "diverging"), dqn.make_agent)
    assert diverging["sweep/lr=1e+30/diverged_runs"] == 2 and diverging["sweep/lr=0.00025/diverged_runs"] == 0
    assert diverging["sweep/lr=1e+30/diverged_at_update"] >= 1 and diverging["sweep/best"] == "lr=0.00025"
    assert diverging["sweep/lr=0.00025/params_sha256"] == results["sweep/lr=0.00025/params_sha256"]


@pytest.fixture(scope="module")
def ppo_lr_sweep(tmp_path_factory):
    # PPO anneals its learning rate: a swept one is annealed the same way, from each run's own value.
    tmp_path = tmp_path_factory.mktemp("ppo_sweep")
    config = ppo_config.get_config("smoke")
    _check_equals_separate_runs(tmp_path, config, ppo.make_agent, "lr", [2.5e-4, 1e-3])
    return tmp_path


def test_ppo_sweep_equals_separate_runs(ppo_lr_sweep):
    with open(ppo_lr_sweep / "sweep" / "results.json") as f:
        results = json.load(f)
    assert results["sweep/names"] == ["lr"] and "eval/return_mean" not in results


def test_one_value_sweep_is_a_separate_run_bit_for_bit(tmp_path, ppo_lr_sweep):
    # Same number of runs as the separate run (2 seeds): the traced value gives exactly the constant's parameters.
    config = ppo_config.get_config("smoke")
    config.sweep.lr = "0.00025"  # the default: the separate run is alone0
    _, results = loop.run(config, str(tmp_path), ppo.make_agent)
    with open(ppo_lr_sweep / "alone0" / "results.json") as f:
        alone = json.load(f)
    assert results["sweep/lr=0.00025/params_sha256"] == alone["params_sha256"] == results["params_sha256"]


def test_evaluate_script_reports_per_value(ppo_lr_sweep):
    workdir = ppo_lr_sweep / "sweep"
    result = run_python(["-m", "scripts.evaluate", f"--workdir={workdir}", "--episodes=2"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "lr=0.00025: return" in result.stdout and "lr=0.001: seed 1:" in result.stdout
    with open(workdir / "eval.json") as f:
        evaluation = json.load(f)
    assert len(evaluation["sweep/lr=0.001/per_seed/eval/return"]) == 2


# --- a swept value reaches every place that reads it -----------------------------------------------------------------

# A non-default value of every sweepable name. Powers of two: the separate run's constant meets Python float64
# arithmetic before JAX sees it (e.g. GAE's `gamma * gae_lambda`, ε's `eps_end - eps_start`), the sweep's traced
# float32 value does not, and only for such values do the two round alike, so that equality can be bit for bit.
_NON_DEFAULT = {
    "ppo": {"lr": 2.0**-10, "gamma": 0.5, "ent_coef": 0.125},
    "dqn": {"lr": 2.0**-10, "gamma": 0.5, "eps_end": 0.25, "exploration_fraction": 0.25},
}


def _ppo_reach_config():
    # Pendulum's episodes end only by the 200-step time limit: 13 updates of 16 steps pass it, so the time-limit
    # bootstrap (which reads gamma too, in the rollout) is exercised, as are the Gaussian policy's reads.
    config = ppo_config.get_config("Pendulum-v1,smoke")
    config.total_timesteps = config.num_envs * config.num_steps * 13
    return config


_AGENTS = {"ppo": (ppo.make_agent, _ppo_reach_config), "dqn": (dqn.make_agent, _dqn_config)}


def _train_params(config, make_agent, hparams=None):
    """The final parameters of `config.num_seeds` runs of the pure `train` (one compile; no loop, no workdir)."""
    train = make_train(make_agent(config, envs.make_env(config.env_name)))
    keys = jax.random.split(jax.random.PRNGKey(config.seed), config.num_seeds)
    if hparams is None:
        state, _ = jax.jit(jax.vmap(train))(keys)
    else:
        values = {name: jnp.full((config.num_seeds,), value, jnp.float32) for name, value in hparams.items()}
        state, _ = jax.jit(jax.vmap(train))(keys, values)
    return _params(state)


@pytest.mark.parametrize("agent", sorted(_NON_DEFAULT))
def test_a_swept_value_reaches_every_place_that_reads_it(agent):
    # Every sweepable name swept at once, each to a non-default value (one value each): bit for bit the separate run
    # with `config.<name> = value` for all of them. A place that read any swept name from the static config would
    # still see its default there and make the two differ; and it is not the default run: the values are used.
    # (One program per agent for all names; the spy below checks each update read by name.)
    make_agent, get_config = _AGENTS[agent]
    values = _NON_DEFAULT[agent]
    config = get_config()
    assert set(values) == set(make_agent(config, envs.make_env(config.env_name)).sweepable)
    assert all(config[name] != value for name, value in values.items())
    # The default values through the same (traced, cached) program: the values must change the parameters.
    default = _train_params(config, make_agent, {name: config[name] for name in values})
    swept = _train_params(config, make_agent, values)
    for name, value in values.items():
        config[name] = value
    alone = _train_params(config, make_agent)
    for a, b in zip(swept, alone):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(swept, default)), "the swept values had no effect"


class _ReadLog:
    """A config that records the name of every value read from it (as an attribute, an item or with `get`)."""

    def __init__(self, config):
        self._config, self.reads = config, []

    def __getattr__(self, name):
        self.reads.append(name)
        return getattr(self._config, name)

    def __getitem__(self, name):
        self.reads.append(name)
        return self._config[name]

    def __contains__(self, name):
        return name in self._config

    def get(self, name, default=None):
        self.reads.append(name)
        return self._config.get(name, default)


@pytest.mark.parametrize(
    "make_agent,get_config",
    [
        (ppo.make_agent, ppo_config.get_config),
        (dqn.make_agent, dqn_config.get_config),
        (a2c.make_agent, a2c_config.get_config),
        (reinforce.make_agent, reinforce_config.get_config),
    ],
    ids=["ppo", "dqn", "a2c", "reinforce"],
)
def test_update_reads_no_swept_name_from_the_static_config(make_agent, get_config):
    # Every name swept at once: tracing `update` must take each from the run's `sweep.HyperParams`, none from the
    # config (which `HyperParams` itself only consults for names that are not swept).
    config = _ReadLog(get_config("smoke"))
    agent = make_agent(config, envs.make_env("CartPole-v1"))
    hparams = {name: 0.5 for name in agent.sweepable}
    state = jax.eval_shape(lambda key: with_hparams(agent, key, hparams), jax.random.PRNGKey(0))
    config.reads.clear()
    jax.make_jaxpr(agent.update)(state)
    assert config.reads, "the spy saw no reads at all"  # the update does read its static sizes through it
    assert not set(config.reads) & set(agent.sweepable), sorted(set(config.reads) & set(agent.sweepable))


# --- launcher -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flag,message",
    [
        ("--config.sweep.lr=1e-3,fast", "error: config.sweep.lr='1e-3,fast': 'fast' is not a number"),
        ("--config.sweep.momentum=0.9", "error: --config.sweep.momentum: config.sweep has no key 'momentum'"),
    ],
)
def test_launcher_bad_sweep_flag_is_one_line(tmp_path, flag, message):
    result = run_python(
        ["-m", "scripts.train", "--config=agents/configs/ppo.py:smoke", flag, f"--workdir={tmp_path / 'run'}"]
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("workdir:")]
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr[-2000:]
