"""Cooperative matrix games as `MultiAgentEnv`s: where value decomposition's credit assignment can be read off
against an exact table of joint-action values.

Two agents with the same actions; the team reward is the payoff of their joint action. Both agents observe the same
vector (a constant in the one-step games, the one-hot stage in the two-step game); their networks tell them apart by
their id. The global state is that vector too.

- `matrix_linear`: payoff(a1, a2) = u1(a1) + u2(a2). Additive, so VDN represents it exactly, and its agents'
  utilities are u1 + c and u2 - c for some constant c (a sum only fixes the utilities up to that shift).
- `matrix_nonmonotonic`: [[8, -12, -12], [-12, 0, 0], [-12, 0, 0]] (Son et al. 2019, QTRAN, Table 1; Rashid et
  al. 2020, Weighted QMIX). Agent 1's best action depends on agent 2's, so neither a sum (VDN) nor a monotonic mix
  (QMIX) of per-agent utilities represents it: fitted on uniformly explored data, both rank the joint actions worth
  0 above the one worth 8.
- `matrix_two_step`: the two-step game of the QMIX paper (Rashid et al. 2018, Table 1). In the first step agent 1's
  action picks the second step's game (A: state 2A, every joint action pays 7; B: state 2B, [[0, 1], [1, 8]]), and
  the first step pays 0. 2B is monotonic, so QMIX represents it and, with full exploration, finds the optimum
  8 = Q(2B, B, B); VDN's additive fit of 2B undervalues (B, B), so its greedy agent 1 goes to 2A for 7.

`builder(name)` builds a game (the multi-agent registry calls it with the name); `decisions(name, gamma)` gives the
points where the learned joint values are tabulated against the exact optimal ones, and `plot_tables` draws them.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lepton_jax import plotting
from lepton_jax.errors import UserError
from lepton_jax.rl.marl import MultiAgentEnv, Step

AGENTS = ("agent_0", "agent_1")
# u1, u2 of the linear game: payoff = u1[a1] + u2[a2] = [[5, 7, 3], [1, 3, -1], [-1, 1, -3]], optimum 7 at (0, 1).
LINEAR_UTILITIES = ((4.0, 0.0, -2.0), (1.0, 3.0, -1.0))
NONMONOTONIC = ((8.0, -12.0, -12.0), (-12.0, 0.0, 0.0), (-12.0, 0.0, 0.0))
TWO_STEP = (((7.0, 7.0), (7.0, 7.0)), ((0.0, 1.0), (1.0, 8.0)))  # the payoffs of states 2A and 2B
NAMES = ("matrix_linear", "matrix_nonmonotonic", "matrix_two_step")
ACTION_NAMES = "ABC"


def linear_payoff() -> np.ndarray:
    u1, u2 = (np.asarray(u, np.float32) for u in LINEAR_UTILITIES)
    return u1[:, None] + u2[None, :]


def _one_step(name: str, payoff: np.ndarray) -> MultiAgentEnv:
    """A game of one joint action: observation and state the constant 1, every action available, done at once."""
    payoff = jnp.asarray(payoff, jnp.float32)  # (n, n)
    num_actions = payoff.shape[0]
    obs, state = jnp.ones((2, 1), jnp.float32), jnp.ones((1,), jnp.float32)
    avail = jnp.ones((2, num_actions), bool)

    def reset(key):
        del key
        return Step(obs, state, avail, jnp.zeros((), jnp.int32), jnp.zeros(()), jnp.zeros((), bool))

    def step(key, env_state, actions):
        del key
        return Step(obs, state, avail, env_state, payoff[actions[0], actions[1]], jnp.ones((), bool))

    return MultiAgentEnv(name, AGENTS, 1, 1, num_actions, 1, reset, step)


def _two_step(name: str) -> MultiAgentEnv:
    """The QMIX paper's two-step game; the env state is the stage: 0 the first step, 1 state 2A, 2 state 2B."""
    second = jnp.asarray(TWO_STEP, jnp.float32)  # (2, 2, 2): [2A or 2B, a1, a2]
    avail = jnp.ones((2, 2), bool)

    def observe(stage, reward, done):
        state = jax.nn.one_hot(stage, 3)
        return Step(jnp.tile(state, (2, 1)), state, avail, stage, reward, done)

    def reset(key):
        del key
        return observe(jnp.zeros((), jnp.int32), jnp.zeros(()), jnp.zeros((), bool))

    def step(key, stage, actions):
        del key
        first = stage == 0
        reward = jnp.where(first, 0.0, second[jnp.maximum(stage - 1, 0), actions[0], actions[1]])
        # Agent 1's first action picks the game; a finished episode starts again at the first step.
        return observe(jnp.where(first, 1 + actions[0], 0), reward, jnp.logical_not(first))

    return MultiAgentEnv(name, AGENTS, 3, 3, 2, 2, reset, step)


def builder(name: str) -> MultiAgentEnv:
    """The game `name` (one of `NAMES`).

    Raises:
      UserError: an unknown name, listing the valid ones.
    """
    if name == "matrix_linear":
        return _one_step(name, linear_payoff())
    if name == "matrix_nonmonotonic":
        return _one_step(name, np.asarray(NONMONOTONIC, np.float32))
    if name == "matrix_two_step":
        return _two_step(name)
    raise UserError(f"unknown matrix game '{name}'; valid games: {', '.join(NAMES)}")


class Decision(NamedTuple):
    """A point where both agents act, with the exact optimal joint-action values there."""

    label: str
    obs: np.ndarray  # [t + 1, A, obs_dim]: the episode's observations up to and including this step
    state: np.ndarray  # [state_dim]
    q_star: np.ndarray  # [n, n]: Q*(a1, a2), the optimal joint-action values


def decisions(name: str, gamma: float) -> list[Decision]:
    """The decision points of game `name` and their optimal joint values under discount `gamma`."""
    if name != "matrix_two_step":
        payoff = linear_payoff() if name == "matrix_linear" else np.asarray(NONMONOTONIC, np.float32)
        ones = np.ones((1, 2, 1), np.float32)
        return [Decision("payoff", ones, np.ones((1,), np.float32), payoff)]
    eye = np.eye(3, dtype=np.float32)
    seen = [np.stack([eye[0], eye[0]])]  # [A, 3] at the first step
    second = np.asarray(TWO_STEP, np.float32)
    # The first step pays 0; agent 1's action leads to 2A (best 7) or 2B (best 8), agent 2's does nothing.
    first = gamma * np.repeat(second.max(axis=(1, 2))[:, None], 2, axis=1)
    points = [Decision("state 1", np.stack(seen), eye[0], first)]
    for stage, label in ((1, "state 2A"), (2, "state 2B")):
        obs = np.stack(seen + [np.stack([eye[stage], eye[stage]])])
        points.append(Decision(label, obs, eye[stage], second[stage - 1]))
    return points


def utilities(name: str) -> np.ndarray | None:
    """[A, n] the linear game's per-agent utilities (None for the other games)."""
    return np.asarray(LINEAR_UTILITIES, np.float32) if name == "matrix_linear" else None


def centred(values) -> np.ndarray:
    """Per-agent utilities [..., A, n] less each agent's mean: a sum's decomposition is unique only up to shifts."""
    values = np.asarray(values, np.float64)
    return values - values.mean(axis=-1, keepdims=True)


def table_key(label: str) -> str:
    """results.json's prefix for decision point `label`: `matrix/<label>` (spaces as underscores)."""
    return "matrix/" + label.replace(" ", "_")


def plot_runs(runs, path: str) -> None:
    """The exact Q* beside the learned Q_tot (mean over seeds) of each run on one game, a row per decision point.

    Args:
      runs: `[(name, config, results), ...]`: each run's name, config (`env_name`, `gamma`, `num_seeds`) and
        results (its `matrix/<label>/q_tot_mean` tables: `matrix_report` in `agents/qmix.py`), all on one game.
      path: the PNG to write.
    """
    name, config, _ = runs[0]
    games = {c["env_name"] for _, c, _ in runs}
    if len(games) > 1:
        raise UserError(f"the runs are on different games ({', '.join(sorted(games))}); compare runs on one game")
    rows = []
    for point in decisions(config["env_name"], config["gamma"]):
        key = table_key(point.label)
        panels = [("exact Q*", point.q_star)]
        for n, _, r in runs:
            optimal = r[f"per_seed/{key}/greedy_optimal"]
            panels.append(
                (f"{n} Q_tot\n(greedy optimal in {int(sum(optimal))}/{len(optimal)} seeds)", r[key + "/q_tot_mean"])
            )
        rows.append((point.label, panels))
    seeds = ", ".join(f"{n}: {c['num_seeds']}" for n, c, _ in runs)
    plot_tables(rows, path, f"{config['env_name']}: learned Q_tot (mean over seeds; {seeds}) against Q*")


def plot_tables(rows, path: str, title: str = "") -> None:
    """A grid of joint-action value tables, one row per decision point.

    Args:
      rows: `[(row label, [(panel title, table [n, n]), ...]), ...]`; the first panel of a row is the reference
        (the exact values). Every cell shows its value; a gold box marks each table's greedy joint action(s).
      path: the PNG to write.
      title: the figure's title.
    """
    plt = plotting.pyplot()
    num_rows, num_cols = len(rows), max(len(panels) for _, panels in rows)
    fig, axes = plt.subplots(num_rows, num_cols, figsize=(3.0 * num_cols, 2.8 * num_rows), dpi=120, squeeze=False)
    for r, (label, panels) in enumerate(rows):
        reference = np.asarray(panels[0][1])
        low, high = float(reference.min()), float(reference.max())
        for c in range(num_cols):
            ax = axes[r, c]
            if c >= len(panels):
                ax.axis("off")
                continue
            name, table = panels[c]
            table = np.asarray(table, np.float64)
            scale = max(abs(low), abs(high), 1e-6)
            ax.imshow(table, cmap="RdBu", vmin=-scale, vmax=scale)
            n = table.shape[0]
            for i, j in np.ndindex(n, n):
                dark = abs(table[i, j]) > 0.6 * scale
                ax.text(j, i, f"{table[i, j]:.2f}", ha="center", va="center", fontsize=8, color="w" if dark else "k")
            for i, j in zip(*np.nonzero(table >= table.max() - 1e-6)):  # the greedy joint action(s)
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2.5, ec="gold"))
            ax.set_xticks(range(n), list(ACTION_NAMES[:n]))
            ax.set_yticks(range(n), list(ACTION_NAMES[:n]))
            ax.set_xlabel("agent 2")
            ax.set_ylabel("agent 1")
            ax.set_title(f"{label}: {name}" if label else name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    plotting.save(fig, path)
