"""REINFORCE's Monte-Carlo returns on a worked example, and the agent API: a throw-away agent defined here runs."""

import json
import os

import jax.numpy as jnp
import numpy as np

from agents import reinforce
from agents.configs import common
from agents.configs import dqn as dqn_config
from agents.configs import ppo as ppo_config
from agents.configs import reinforce as reinforce_config
from lepton_jax import registry
from lepton_jax.rl import envs, loop, onpolicy


def test_returns_to_go_worked_example():
    # Two envs, 4 steps, gamma 0.5. Env 0: an episode ends after step 1, the next one is unfinished.
    # Env 1: no episode ends inside the rollout.
    rewards = jnp.array([[1.0, 1.0], [2.0, 1.0], [4.0, 1.0], [8.0, 1.0]])
    dones = jnp.array([[0, 0], [1, 0], [0, 0], [0, 0]], bool)
    last_value = jnp.array([10.0, 20.0])
    returns, complete = reinforce.returns_to_go(rewards, dones, last_value, gamma=0.5)
    # env 0: G1 = 2, G0 = 1 + 0.5 * 2 = 2; G3 = 8 + 0.5 * 10 = 13, G2 = 4 + 0.5 * 13 = 10.5
    # env 1: G3 = 1 + 10 = 11, G2 = 1 + 5.5 = 6.5, G1 = 1 + 3.25 = 4.25, G0 = 1 + 2.125 = 3.125
    np.testing.assert_allclose(returns, [[2.0, 3.125], [2.0, 4.25], [10.5, 6.5], [13.0, 11.0]])
    np.testing.assert_array_equal(complete, [[1, 0], [1, 0], [0, 0], [0, 0]])


def test_a_throwaway_agent_registers_and_trains(tmp_path):
    # A new agent in a few lines: one-step TD actor-critic from the shared parts, registered under a new name.
    def make_agent(config, spec: envs.EnvSpec):
        def targets(traj, last_value, hp):  # hp: the run's hyperparameters (a swept gamma is traced)
            next_values = jnp.concatenate([traj.value[1:], last_value[None]], axis=0)
            td_targets = traj.reward + hp.gamma * next_values * (1.0 - traj.done)
            return td_targets - traj.value, td_targets, jnp.ones_like(td_targets)

        return onpolicy.make_policy_gradient_agent(config, spec, targets)

    @registry.register("td_actor_critic")
    def train_and_evaluate(config, workdir):
        return loop.train_and_evaluate(config, workdir, make_agent)

    config = reinforce_config.get_config("smoke")
    config.trainer = "td_actor_critic"
    results = registry.get("td_actor_critic")(config, str(tmp_path))
    assert "td_actor_critic" in registry.names()
    assert results["perf/env_steps"] == 4 * 32 * 6 and np.isfinite(results["eval/return_mean"])
    with open(os.path.join(tmp_path, "config.json")) as f:
        assert json.load(f)["trainer"] == "td_actor_critic"


def test_minatar_presets_follow_the_published_baselines():
    assert common.MINATAR_GAMES == ("Breakout", "Asterix", "Freeway", "SpaceInvaders")
    for game in common.MINATAR_GAMES:
        c = ppo_config.get_config(f"{game}-MinAtar")
        assert (c.env_name, c.total_timesteps, c.num_envs, c.num_steps, c.num_minibatches) == (
            f"{game}-MinAtar",
            10_000_000,
            64,
            128,
            8,
        )
        # Where the baselines' setting fell short (Breakout's return; Freeway's and SpaceInvaders' time), the preset
        # keeps what the search confirmed at 10^7 steps (RESULTS.md).
        lr = 1e-3 if game == "Breakout" else 5e-4
        hidden = (128, 128) if game in ("Freeway", "SpaceInvaders") else (256, 256)
        assert (c.lr, c.schedule, c.gamma, tuple(c.hidden_sizes)) == (lr, "constant", 0.999, hidden)
        assert c.eval_sampled  # the baselines evaluate the stochastic policy
        d = dqn_config.get_config(f"{game}-MinAtar")
        assert (d.buffer_size, d.target_update_interval, tuple(d.hidden_sizes)) == (100_000, 1_000, hidden)
    smoke = ppo_config.get_config("Breakout-MinAtar,smoke")  # the smoke sizes win over the preset
    assert smoke.total_timesteps < 10_000 and smoke.env_name == "Breakout-MinAtar"
    assert ppo_config.get_config("CartPole-v1").num_envs == 4  # other envs keep the defaults


def test_plot_curves_draws_runs_against_their_baselines(tmp_path, capsys):
    """scripts.plot_curves: one panel per workdir with its baseline; a mistake is one error line (exit 2)."""
    import json

    from scripts import cli, plot_curves

    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.json").write_text(json.dumps({"trainer": "ppo", "env_name": "Breakout-MinAtar", "num_seeds": 2}))
    rows = [{"step": 1000 * i, "eval/return_mean": float(i), "eval/return_std": 0.5} for i in range(1, 4)]
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "curves.png"
    assert cli.run(plot_curves.plot, ["plot", f"--workdirs={workdir}", f"--plot={out}"]) == 0
    assert out.stat().st_size > 10_000
    code = cli.run(plot_curves.plot, ["plot", f"--workdirs={workdir}", "--baselines=1,2", f"--plot={out}"])
    assert code == 2 and capsys.readouterr().err.strip().startswith("error: --baselines: give one per workdir")


def test_plot_curves_draws_a_registry_table(tmp_path, monkeypatch, capsys):
    """scripts.plot_curves --table: one panel per env from the rows' recorded eval curves; bad tables are one line."""
    import json

    from scripts import cli, plot_curves, results

    def row(label, env, curve):
        command = f"python -m scripts.train --config=agents/configs/{label.lower()}.py:{env}"
        return {
            "id": f"{label}/{env}",
            "table": "t",
            "label": label,
            "seeds": 4,
            "command": command,
            "extra": {"eval curve": curve},
        }

    rows = [
        row("PPO", "Breakout-MinAtar", "1.3: 10.6, 10: 40.6"),
        row("DQN", "Breakout-MinAtar", "0.1: 3.0, 10.0: 88.7"),
        row("PPO", "Freeway-MinAtar", "0.3: 14.3, 10.0: 60.4"),
        {"id": "other", "table": "u", "command": "x"},
    ]
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({"tables": [], "rows": rows}))
    monkeypatch.setattr(results, "REGISTRY", str(registry))
    panels = plot_curves.registry_panels("t", {"Breakout-MinAtar": 28})
    assert [(env, [s[0].split()[0] for s in series], base) for env, series, base in panels] == [
        ("Breakout-MinAtar", ["PPO", "DQN"], 28),
        ("Freeway-MinAtar", ["PPO"], None),
    ]
    assert panels[0][1][0][1:3] == ([1.3e6, 10e6], [10.6, 40.6])
    out = tmp_path / "table.png"
    assert cli.run(plot_curves.plot, ["plot", "--table=t", f"--plot={out}"]) == 0
    assert out.stat().st_size > 10_000
    capsys.readouterr()
    assert cli.run(plot_curves.plot, ["plot", "--table=nope", f"--plot={out}"]) == 2
    assert capsys.readouterr().err.strip() == "error: --table: the results registry has no table 'nope'"
    assert cli.run(plot_curves.plot, ["plot", "--table=u", f"--plot={out}"]) == 2
    assert capsys.readouterr().err.strip() == "error: --table: row other records no eval curve"
