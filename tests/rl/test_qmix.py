"""VDN and QMIX: the mixers' structure, what they learn on matrix games with exact values, and exact resume.

The learning tests use the matrix games' full exploration (ε = 1: every joint action equally often), under which
the learned Q_tot is the mixer's best fit of the exact values: for VDN the additive one.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import qmix
from agents.configs import qmix as qmix_config
from lepton_jax.interrupt import Interrupted
from lepton_jax.rl import loop, marl, marl_view, matrix_games
from tests.conftest import blank_figures

GAMMA = 0.99


def _config(arg: str, **overrides):
    """A matrix game's config shortened for tests: 16 episodes per update, Adam at 3e-3 decaying linearly."""
    config = qmix_config.get_config(arg)
    steps = qmix_config.MATRIX_STEPS.get(config.env_name, 1)
    config.update(
        num_seeds=2,
        num_envs=16,
        total_timesteps=16 * steps * 600,
        buffer_episodes=512,
        optimizer="adam",
        lr=3e-3,
        schedule="linear",
        target_update_interval=16 * steps * 10,
        **overrides,
    )
    return config


def _train(config) -> dict:
    """The learned tables of `config.num_seeds` runs of the pure `train(rng)`, vmapped over seeds."""
    keys = jax.random.split(jax.random.PRNGKey(config.seed), config.num_seeds)
    state, _ = jax.jit(jax.vmap(qmix.make_train(config)))(keys)
    return qmix.joint_values(config, state.train_state.params)


def test_qmix_mixer_is_monotonic_in_every_agent_value():
    mixer = qmix.QMixer(embed_dim=8, hypernet_hidden=16, init_scale=1.0)
    qs_key, state_key, init_key = jax.random.split(jax.random.PRNGKey(0), 3)
    qs = 5.0 * jax.random.normal(qs_key, (256, 3))
    states = jax.random.normal(state_key, (256, 6))

    @jax.jit
    def check(key, qs, states):  # one program: op-by-op execution would compile every operation on its own
        params = mixer.init(key, qs[0], states[0])
        # The same Qs in every state: the weights and the bias V(s) depend on the state.
        return qmix.mixing_weights(mixer, params, qs, states), mixer.apply(
            params, jnp.broadcast_to(qs[0], qs.shape), states
        )

    weights, totals = check(init_key, qs, states)  # dQ_tot/dq_a (256, 3); Q_tot (256,)
    assert (np.asarray(weights) >= 0).all() and (np.asarray(weights) > 0).mean() > 0.5
    assert float(jnp.std(totals)) > 1e-3


def test_vdn_total_is_the_sum():
    mixer = qmix.VDNMixer()
    qs, states = jnp.array([[1.0, -2.0, 0.5], [3.0, 4.0, -1.0]]), jnp.zeros((2, 4))
    params = mixer.init(jax.random.PRNGKey(0), qs[0], states[0])
    np.testing.assert_allclose(mixer.apply(params, qs, states), [-0.5, 6.0])
    np.testing.assert_allclose(qmix.mixing_weights(mixer, params, qs, states), 1.0)


def test_vdn_recovers_the_linear_game_and_its_utilities():
    (q_tot, q_agents) = _train(_config("matrix_linear,vdn"))["payoff"]
    for seed_q in q_tot:
        np.testing.assert_allclose(seed_q, matrix_games.linear_payoff(), atol=0.15)
    # Each agent's utility is u_a up to a constant the two agents share (+c, -c): compare them centred.
    expected = matrix_games.centred(matrix_games.utilities("matrix_linear"))
    np.testing.assert_allclose(matrix_games.centred(q_agents), np.broadcast_to(expected, q_agents.shape), atol=0.15)


def test_recurrent_policy_reads_the_episode_from_the_view():
    """The loop evaluates through the gymnax view, whose observation is the episode so far: a GRU agent's `act` on it
    equals the greedy actions of the GRU stepped along the episode, and a new episode starts an empty history."""
    config = _config("matrix_two_step", recurrent=True, hidden=8)
    agent = qmix.make_agent(config)
    env = marl.make(config.env_name)
    view = marl_view.HistoryView(env)
    nets = qmix.make_networks(config, env)

    @jax.jit
    def run(key):
        params = agent.init(key).train_state.params
        history, state = view.reset(key)
        hidden = jnp.zeros((2, config.hidden))
        acted, stepped, steps = [], [], []
        for _ in range(3):  # both steps of an episode, then the next episode's first
            acted.append(agent.act(params, jax.tree.map(lambda x: x[None], history))[0])
            hidden, q = nets.net.apply(params["agent"], hidden, marl.with_ids(history.obs))
            stepped.append(jnp.argmax(q, axis=-1))
            history, state, _, done, _, _ = view.step(key, state, jnp.array([1, 0]), view.default_params)
            hidden = jnp.where(done, 0.0, hidden)
            steps.append(history.t)
        return jnp.stack(acted), jnp.stack(stepped), jnp.stack(steps), history

    acted, stepped, steps, history = run(jax.random.PRNGKey(3))
    np.testing.assert_array_equal(acted, stepped)
    np.testing.assert_array_equal(steps, [1, 0, 1])  # agent 1 chose B: state 2B at t = 1, a new episode, 2B again
    np.testing.assert_array_equal(history.episode[1, 0], [0.0, 0.0, 1.0])  # [t, agent]: the one-hot stage 2B


def test_a_recurrent_agent_is_evaluated_on_the_episode_and_a_feed_forward_one_on_the_loops_view():
    """Any multi-agent env (here MPE's, whose loop view shows only the current step): a GRU agent brings its own
    evaluation view, the episode so far, with the env's sizes; a feed-forward agent uses the loop's."""
    config = qmix_config.get_config("MPE_simple_spread_v3,smoke")
    assert config.recurrent
    spec = qmix.make_agent(config).eval_spec
    assert isinstance(spec.env, marl_view.HistoryView) and spec.name == "MPE_simple_spread_v3"
    assert spec.env.observation_space(spec.params).spaces["episode"].shape == (26, 3, 18)
    config.recurrent = False
    assert qmix.make_agent(config).eval_spec is None


def _greedy_return(tables) -> np.ndarray:
    """Per seed, the two-step game's return of the greedy joint policy: agent 1's first action picks 2A or 2B."""
    first = tables["state 1"][0]  # (seeds, 2, 2)
    goes_to_b = first.reshape(len(first), -1).argmax(axis=1) // 2 == 1
    values = []
    for seed, to_b in enumerate(goes_to_b):
        table = tables["state 2B" if to_b else "state 2A"][0][seed]
        payoff = np.asarray(matrix_games.TWO_STEP[int(to_b)])
        values.append(payoff.reshape(-1)[table.argmax()])
    return np.asarray(values)


@pytest.fixture(scope="module")
def qmix_two_step(tmp_path_factory):
    """QMIX on the two-step game through the shared loop (3 chunks of 200 updates); (config, state, results)."""
    config = _config("matrix_two_step", chunk_updates=200, eval_every_chunks=3, checkpoint_every_chunks=3)
    workdir = str(tmp_path_factory.mktemp("qmix") / "full")
    with pytest.MonkeyPatch.context() as patch:
        blank_figures(patch)  # the learning curve; the decomposition figure is drawn
        state, results = loop.run(config, workdir, qmix.make_agent, _report(config))
    return config, state, results, workdir


def _report(config):
    return lambda agent, params, workdir: qmix.matrix_report(config, params, workdir)


def test_two_step_game_qmix_finds_8_where_vdn_gets_7(qmix_two_step):
    """The QMIX paper's claim (Rashid et al. 2018, Table 1): with full exploration, QMIX represents the two-step
    game's values, so its greedy agents go to state 2B and play (B, B) for 8; VDN's additive fit of 2B undervalues
    (B, B), so its agent 1 prefers 2A, worth 7."""
    config, state, results, workdir = qmix_two_step
    tables = qmix.joint_values(config, state.train_state.params)
    np.testing.assert_array_equal(_greedy_return(tables), 8.0)
    for point in matrix_games.decisions("matrix_two_step", GAMMA):
        np.testing.assert_allclose(tables[point.label][0], np.broadcast_to(point.q_star, (2, 2, 2)), atol=1.0)
    np.testing.assert_allclose(results["eval/return_mean"], 8.0)
    assert results["matrix/state_2B/greedy_optimal_mean"] == 1.0
    assert os.path.isfile(os.path.join(workdir, "plots", "decomposition.png"))
    with open(os.path.join(workdir, "results.json")) as f:
        assert np.asarray(json.load(f)["matrix/state_1/q_tot_mean"]).shape == (2, 2)

    vdn = _train(_config("matrix_two_step,vdn"))
    np.testing.assert_array_equal(_greedy_return(vdn), 7.0)
    # VDN's 2B is the additive least-squares fit of [[0, 1], [1, 8]] under uniform data: the row mean plus the column
    # mean less the overall mean, [[-1.5, 2.5], [2.5, 6.5]]; (B, B) is worth 6.5 < 7, so state 1 prefers A.
    np.testing.assert_allclose(vdn["state 2B"][0], np.broadcast_to([[-1.5, 2.5], [2.5, 6.5]], (2, 2, 2)), atol=0.3)


def test_resume_equals_uninterrupted(qmix_two_step, tmp_path, interrupt_first_step, monkeypatch):
    config, full, _, _ = qmix_two_step
    blank_figures(monkeypatch)
    monkeypatch.setattr(matrix_games, "plot_tables", lambda rows, path, title="": None)
    with interrupt_first_step():
        with pytest.raises(Interrupted, match="update 200/600"):
            loop.run(config, str(tmp_path / "split"), qmix.make_agent, _report(config))
    resumed, results = loop.run(config, str(tmp_path / "split"), qmix.make_agent, _report(config))
    assert results["resumed_from_update"] == 200
    for a, b in zip(
        jax.tree.leaves((full.train_state, full.target_params, full.replay)),
        jax.tree.leaves((resumed.train_state, resumed.target_params, resumed.replay)),
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
