"""Value decomposition for cooperative multi-agent Q-learning: VDN (Sunehag et al. 2018) and QMIX (Rashid et al.
2018), one implementation, the mixer picked by the trainer's name.

Each agent has a Q-network over its own observation and its one-hot id, the parameters shared by all agents: a
dense layer, a GRU over the episode (`recurrent`; else a feed-forward net) and a dense head. The joint value
Q_tot(s, u) mixes the agents' chosen Q_a(o_a, u_a):

- `vdn`: Q_tot = sum_a Q_a;
- `qmix`: Q_tot = w2(s) . elu(W1(s)^T q + b1(s)) + V(s), where hypernetworks on the global state s produce W1, b1,
  w2 and V; |W1| and |w2| make Q_tot monotonic in every Q_a, so each agent's greedy action is the greedy joint
  action's part (`mixing_weights` below).

Training follows pymarl's episode runner and learner (which JaxMARL's QLearning baselines port; they collect fixed-
length stretches that may cross episode ends instead of whole episodes): every update plays one episode in each of
`num_envs` envs from a reset, ε-greedy among each agent's available actions, and adds the episodes to an on-device
replay buffer of whole episodes (`lepton_jax.rl.replay`, one row per update, so the buffer is checkpointed with the
rest of the state and resuming is exact); then `gradient_steps` steps on batches of `batch_size` episodes, the GRU
unrolled from each episode's start: the squared TD error of Q_tot against r + gamma * Q_tot^-(s', u') (r alone at
the step an episode ends), where u' is each agent's greedy available action under the online network and Q^- the
target network's (double Q-learning), averaged over the episodes' steps. The target network is copied (`tau = 1`) or
moved towards the online one every `target_update_interval` env steps.

An episode lasts at most the env's `max_steps`; the steps of an update's rollout after its episode ended are masked
out, and an update counts `num_envs * max_steps` env steps. The learning rate, gamma, `eps_end` and
`exploration_fraction` can be swept (`lepton_jax.rl.sweep`), as DQN's.

On a matrix game (`lepton_jax.rl.matrix_games`), the trainer also tabulates the learned Q_tot of every joint action
against the exact optimal values (results.json `matrix/...`, `plots/decomposition.png`).
"""

import functools
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.training.train_state import TrainState

from agents.dqn import epsilon, optimizer  # ε's linear decay; the factory's optimiser over the gradient steps
from lepton_jax import config as config_lib
from lepton_jax import registry
from lepton_jax import run as run_lib
from lepton_jax.config import require
from lepton_jax.initializers import orthogonal
from lepton_jax.rl import config as rl_config
from lepton_jax.rl import envs, loop, marl, marl_view, matrix_games, replay, sweep
from lepton_jax.rl.agent import Agent, keep_when_ready
from lepton_jax.rl.agent import make_train as _make_train
from lepton_jax.rl.marl import MultiAgentEnv
from lepton_jax.techniques import precision

SWEEPABLE = rl_config.DQN_SWEEPABLE


class AgentNetwork(nn.Module):
    """One agent's Q-values from its input (observation and one-hot id): dense, ReLU, GRU (or not), dense."""

    num_actions: int
    hidden: int
    recurrent: bool

    @nn.compact
    def __call__(self, carry, inputs):
        """carry (..., hidden), inputs (..., D) -> (carry, Q (..., num_actions)); a feed-forward net keeps carry."""
        x = nn.relu(nn.Dense(self.hidden, kernel_init=orthogonal(1.0))(inputs))
        if self.recurrent:
            carry, x = nn.GRUCell(features=self.hidden, recurrent_kernel_init=orthogonal())(carry, x)
        return carry, nn.Dense(self.num_actions, kernel_init=orthogonal(1.0))(x)


class Hypernetwork(nn.Module):
    """The state -> weights map: one dense layer (`hidden == 0`, the QMIX paper's) or two with a ReLU between."""

    features: int
    hidden: int
    init_scale: float

    @nn.compact
    def __call__(self, state):
        if self.hidden:
            state = nn.relu(nn.Dense(self.hidden, kernel_init=orthogonal(self.init_scale))(state))
        return nn.Dense(self.features, kernel_init=orthogonal(self.init_scale))(state)


class QMixer(nn.Module):
    """QMIX's monotonic mixing network: Q_tot(q, s) with dQ_tot/dq_a >= 0 for every state."""

    embed_dim: int
    hypernet_hidden: int
    init_scale: float

    @nn.compact
    def __call__(self, qs, state):
        """qs (..., A), state (..., S) -> Q_tot (...)."""
        num_agents, embed = qs.shape[-1], self.embed_dim
        w1 = jnp.abs(Hypernetwork(num_agents * embed, self.hypernet_hidden, self.init_scale)(state))
        w1 = w1.reshape(*state.shape[:-1], num_agents, embed)
        b1 = nn.Dense(embed, kernel_init=orthogonal(self.init_scale))(state)
        w2 = jnp.abs(Hypernetwork(embed, self.hypernet_hidden, self.init_scale)(state))
        # The state's value V(s): a bias that need not be monotonic in anything.
        value = Hypernetwork(1, embed, self.init_scale)(state)[..., 0]
        hidden = nn.elu(jnp.einsum("...a,...ae->...e", qs, w1) + b1)
        return jnp.einsum("...e,...e->...", hidden, w2) + value


class VDNMixer(nn.Module):
    """VDN: Q_tot is the sum of the agents' values (no parameters)."""

    @nn.compact
    def __call__(self, qs, state):
        del state
        return qs.sum(axis=-1)


MIXERS = {
    "vdn": lambda config: VDNMixer(),
    "qmix": lambda config: QMixer(config.mixer_embed_dim, config.mixer_hypernet_hidden, config.mixer_init_scale),
}


@struct.dataclass
class Episodes:
    """The last update's episodes, one per env (leaves (N,)): the loop splits this env axis across devices."""

    returns: jax.Array
    lengths: jax.Array


@struct.dataclass
class QMixState:
    train_state: TrainState  # params {"agent": ..., "mixer": ...}
    target_params: Any
    env: Episodes
    replay: replay.Replay  # rows of N episodes (leaves (capacity, N, T(+1), ...))
    update: jax.Array  # int32 (): updates done, which fixes the env steps and so the ε schedule
    rng: jax.Array
    hparams: dict = struct.field(default_factory=dict)  # this run's swept hyperparameters; {} when none


class Episode(struct.PyTreeNode):
    """One episode of T steps as the buffer stores it (leaves (T, ...) or (T + 1, ...)); steps past its end are
    masked by `filled`."""

    obs: jax.Array  # (T + 1, A, obs_dim): the last is the observation after step T - 1 (bootstrapping)
    state: jax.Array  # (T + 1, state_dim)
    avail: jax.Array  # (T + 1, A, num_actions) bool
    action: jax.Array  # (T, A) int32
    reward: jax.Array  # (T,)
    done: jax.Array  # (T,) bool: the episode ended at this step (no bootstrap)
    filled: jax.Array  # (T,) bool: the step belongs to the episode


def masked(q: jax.Array, avail: jax.Array) -> jax.Array:
    """Q-values with unavailable actions at -1e9 (never the argmax; finite, so targets stay finite)."""
    return jnp.where(avail, q, -1e9)


def mixing_weights(mixer: nn.Module, params, qs: jax.Array, state: jax.Array) -> jax.Array:
    """dQ_tot/dq_a (..., A) at (qs, state): non-negative everywhere for QMIX, 1 for VDN."""
    grad = jax.grad(lambda q, s: mixer.apply(params, q, s))
    return jnp.vectorize(grad, signature="(a),(s)->(a)")(qs, state)


class Networks(struct.PyTreeNode):
    """The agent network and the mixer (static), and how to run them over episodes."""

    net: Any = struct.field(pytree_node=False)
    mixer: Any = struct.field(pytree_node=False)
    hidden: int = struct.field(pytree_node=False)
    recurrent: bool = struct.field(pytree_node=False)

    def unroll(self, params, obs: jax.Array) -> jax.Array:
        """Every agent's Q over episodes from their start: obs (B, T, A, obs_dim) -> Q (B, T, A, n)."""
        inputs = marl.with_ids(obs)
        carry = jnp.zeros((*inputs.shape[:-1], self.hidden), inputs.dtype)
        if not self.recurrent:  # every step at once
            return self.net.apply(params, carry, inputs)[1]
        _, q = jax.lax.scan(
            lambda h, x: self.net.apply(params, h, x), carry[:, 0], jnp.swapaxes(inputs, 0, 1)
        )  # over (T, B, A, D)
        return jnp.swapaxes(q, 0, 1)

    def mix(self, params, qs: jax.Array, state: jax.Array) -> jax.Array:
        return self.mixer.apply(params, qs, state)


def td_loss(params, target_params, nets: Networks, batch: Episode, hp):
    """The masked mean squared TD error of Q_tot over a batch of episodes (leaves (B, T(+1), ...)), double-Q
    targets from the target network; `hp` is the run's `sweep.HyperParams` (a swept gamma traced)."""
    q = nets.unroll(params["agent"], batch.obs)  # (B, T + 1, A, n)
    q_target = nets.unroll(target_params["agent"], batch.obs)
    chosen = jnp.take_along_axis(q[:, :-1], batch.action[..., None], axis=-1)[..., 0]  # (B, T, A)
    best_next = jnp.argmax(masked(q[:, 1:], batch.avail[:, 1:]), axis=-1)  # the online network picks u'
    q_next = jnp.take_along_axis(q_target[:, 1:], best_next[..., None], axis=-1)[..., 0]  # (B, T, A)
    q_tot = nets.mix(params["mixer"], chosen, batch.state[:, :-1])  # (B, T)
    q_tot_next = nets.mix(target_params["mixer"], q_next, batch.state[:, 1:])
    target = batch.reward + hp.gamma * jnp.where(batch.done, 0.0, q_tot_next)
    mask = batch.filled.astype(jnp.float32)
    td = (q_tot - jax.lax.stop_gradient(target)) * mask
    loss = jnp.sum(jnp.square(td)) / jnp.maximum(mask.sum(), 1.0)
    return loss, {"loss": loss, "q_tot_mean": jnp.sum(q_tot * mask) / jnp.maximum(mask.sum(), 1.0)}


def make_agent(config, spec: envs.EnvSpec | None = None) -> Agent:
    """VDN or QMIX (`config.trainer`) on the multi-agent env `config.env_name`. It collects its own episodes; a
    recurrent agent is evaluated on the view whose observation carries the episode so far (`Agent.eval_spec`,
    `marl_view.HistoryView`), a feed-forward one on the loop's `spec`."""
    env = marl.make(config.env_name)
    nets = make_networks(config, env)
    steps_per_update = config.num_envs * env.max_steps
    num_updates = rl_config.num_updates(config, steps_per_update)
    capacity = max(1, config.buffer_episodes // config.num_envs)  # rows of num_envs episodes
    target_every = max(1, config.target_update_interval // steps_per_update)  # in updates
    tx = optimizer(config, num_updates)

    def act(params, obs):  # greedy among the available actions; a batch of observations (N, ...) -> (N, A)
        if config.recurrent:  # a `History`: the whole episode so far, from its start
            q = nets.unroll(params["agent"], obs.episode)  # (N, T, A, n)
            q = jnp.take_along_axis(q, obs.t[:, None, None, None], axis=1)[:, 0]
        else:  # a `History` or a `marl.Observation`: the current step
            q = nets.unroll(params["agent"], obs.obs[:, None])[:, 0]  # (N, A, n)
        return jnp.argmax(masked(q, obs.action_mask), axis=-1)

    def init(rng):
        rng, agent_key, mixer_key, env_key = jax.random.split(rng, 4)
        first = env.reset(env_key)
        inputs = marl.with_ids(first.obs)  # (A, D)
        carry = jnp.zeros((env.num_agents, config.hidden))
        params = {
            "agent": nets.net.init(agent_key, carry, inputs),
            "mixer": nets.mixer.init(mixer_key, jnp.zeros((env.num_agents,)), first.state),
        }
        # The buffer's row: the shapes of one update's episodes.
        episodes = jax.eval_shape(lambda: rollout(nets, env, params, env_key, 0.0, config.num_envs)[0])
        train_state = TrainState.create(apply_fn=None, params=params, tx=tx)
        zeros = jnp.zeros((config.num_envs,))
        return QMixState(
            train_state,
            params,
            Episodes(zeros, zeros.astype(jnp.int32)),
            replay.init(episodes, capacity),
            jnp.zeros((), jnp.int32),
            rng,
        )

    update = functools.partial(
        _update,
        env=env,
        nets=nets,
        steps_per_update=steps_per_update,
        target_every=target_every,
        num_updates=num_updates,
    )
    eval_spec = None
    if config.recurrent:
        view = marl_view.HistoryView(env)
        eval_spec = envs.spec_of(config.env_name, view, view.default_params)
    return Agent(init, sweep.bind(config, update), act, num_updates, steps_per_update, SWEEPABLE, eval_spec=eval_spec)


def make_networks(config, env: MultiAgentEnv) -> Networks:
    """The agent network and the `config.trainer`'s mixer, computing in `config.precision`'s type."""
    require(config.trainer in MIXERS, f"config.trainer must be one of {', '.join(MIXERS)}, got '{config.trainer}'")
    has_mixer_keys = "mixer_embed_dim" in config
    require(
        has_mixer_keys == (config.trainer == "qmix"),
        f"config.trainer={config.trainer!r} with{'' if has_mixer_keys else 'out'} the mixer keys: build the config "
        "with agents/configs/qmix.py:ENV for QMIX, :ENV,vdn for VDN",
    )
    net = AgentNetwork(env.num_actions, config.hidden, config.recurrent)
    mixer = MIXERS[config.trainer](config)
    return Networks(precision.module(net, config), precision.module(mixer, config), config.hidden, config.recurrent)


def rollout(nets: Networks, env: MultiAgentEnv, params, key: jax.Array, eps, num_envs: int):
    """One ε-greedy episode in each of `num_envs` fresh envs, `env.max_steps` steps long.

    Returns:
      (Episode with leaves (num_envs, T(+1), ...), Episodes: each env's return and length).
    """
    reset_key, key = jax.random.split(key)
    first = jax.vmap(env.reset)(jax.random.split(reset_key, num_envs))
    carry = jnp.zeros((num_envs, env.num_agents, nets.hidden))
    alive = jnp.ones((num_envs,), bool)

    def body(carry, step_key):
        now, hidden, alive = carry
        explore_key, random_key, env_key = jax.random.split(step_key, 3)
        hidden, q = nets.net.apply(params["agent"], hidden, marl.with_ids(now.obs))  # (N, A, n)
        greedy = jnp.argmax(masked(q, now.avail), axis=-1)
        uniform = jax.random.categorical(random_key, jnp.where(now.avail, 0.0, -1e9))  # among available actions
        action = jnp.where(jax.random.uniform(explore_key, greedy.shape) < eps, uniform, greedy)
        after = jax.vmap(env.step)(jax.random.split(env_key, num_envs), now.env_state, action)
        record = (now.obs, now.state, now.avail, action, after.reward, after.done, alive)
        return (after, hidden, alive & ~after.done), record

    (last, _, _), steps = jax.lax.scan(body, (first, carry, alive), jax.random.split(key, env.max_steps))
    obs, state, avail, action, reward, done, filled = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), steps)

    def append(seq, final):  # (N, T, ...) and the observation after the last step (N, ...) -> (N, T + 1, ...)
        return jnp.concatenate([seq, final[:, None]], axis=1)

    episode = Episode(
        append(obs, last.obs),
        append(state, last.state),
        append(avail, last.avail),
        action.astype(jnp.int32),
        reward.astype(jnp.float32),
        done,
        filled,
    )
    stats = Episodes(jnp.sum(reward * filled, axis=1), jnp.sum(filled, axis=1).astype(jnp.int32))
    return episode, stats


def _update(hp, state: QMixState, *, env, nets: Networks, steps_per_update: int, target_every: int, num_updates: int):
    """One update: an episode per env into the buffer, then (once learning has started) gradient steps and the
    target network's move. `hp` is the run's `sweep.HyperParams`."""
    rng, rollout_key = jax.random.split(state.rng)
    eps = epsilon(hp, state.update * steps_per_update)
    episodes, stats = rollout(nets, env, state.train_state.params, rollout_key, eps, hp.num_envs)
    episodes = episodes.replace(reward=episodes.reward * hp.reward_scale)
    state = state.replace(env=stats, replay=replay.add(state.replay, episodes), rng=rng)

    def gradient_step(state: QMixState, _):
        rng, key = jax.random.split(state.rng)
        batch = jax.tree.map(lambda x: x[:, 0], replay.sample(state.replay, key, hp.batch_size))  # (B, T(+1), ...)
        grads, metrics = precision.grad(td_loss, state.train_state.opt_state, has_aux=True)(
            state.train_state.params, state.target_params, nets, batch, hp
        )
        run_tx = optimizer(hp, num_updates) if hp.is_swept("lr") else None  # a swept learning rate, traced
        return state.replace(train_state=sweep.apply_gradients(state.train_state, grads, run_tx), rng=rng), metrics

    def learn(state: QMixState):  # what learning changes: the parameters, the target network and the rng
        state, metrics = jax.lax.scan(gradient_step, state, None, length=hp.gradient_steps)
        due = (state.update + 1) % target_every == 0
        target = optax.incremental_update(state.train_state.params, state.target_params, jnp.where(due, hp.tau, 0.0))
        return (state.train_state, target, state.rng), jax.tree.map(jnp.mean, metrics)

    env_steps = (state.update + 1) * steps_per_update
    ready = (state.replay.size * hp.num_envs >= hp.batch_size) & (env_steps >= hp.learning_starts)
    state, metrics = keep_when_ready(state, ready, learn)
    metrics = dict(metrics, epsilon=eps, learning=ready.astype(jnp.float32), episode_return=stats.returns.mean())
    return state.replace(update=state.update + 1), metrics


def make_train(config):
    """`train(rng) -> (QMixState, metrics)`: the whole run as one pure function, vmappable over seeds."""
    return _make_train(make_agent(config))


def joint_values(config, params) -> dict:
    """The learned Q_tot of every joint action at each decision point of a two-agent game.

    Args:
      config: the run's config (the env, the trainer's mixer, gamma).
      params: the parameters with the run axis first.

    Returns:
      `{label: (Q_tot (runs, n, n), per-agent Q (runs, A, n))}`, in the order of `matrix_games.decisions`.
    """
    nets = make_networks(config, marl.make(config.env_name))

    def tables(params, obs, state):  # one run, one decision point
        q = nets.unroll(params["agent"], obs[None])[0, -1]  # (A, n): each agent's values at the last step
        grid = jnp.stack(jnp.meshgrid(q[0], q[1], indexing="ij"), axis=-1)  # (n, n, 2): [q_1(a1), q_2(a2)]
        return nets.mix(params["mixer"], grid, jnp.broadcast_to(state, (*grid.shape[:2], state.shape[-1]))), q

    run_tables = jax.jit(jax.vmap(tables, in_axes=(0, None, None)))
    return {
        point.label: tuple(np.asarray(x) for x in run_tables(params, point.obs, point.state))
        for point in matrix_games.decisions(config.env_name, config.gamma)
    }


def _table(values) -> list:
    return np.round(np.asarray(values, np.float64), 4).tolist()


def matrix_report(config, params, workdir: str) -> dict:
    """results.json's `matrix/...` entries and `plots/decomposition.png` of a run on a matrix game: per decision
    point, Q_tot's largest error against Q* and whether its greedy joint action is optimal (per seed), and the mean
    Q_tot table; on the linear game, the error of each agent's recovered utilities (both centred)."""
    results = {}
    for point, (q_tot, q_agents) in zip(
        matrix_games.decisions(config.env_name, config.gamma), joint_values(config, params).values()
    ):
        key = matrix_games.table_key(point.label)
        greedy_value = point.q_star.reshape(-1)[q_tot.reshape(len(q_tot), -1).argmax(axis=1)]
        per_seed = {
            f"{key}/max_abs_error": np.abs(q_tot - point.q_star).max(axis=(1, 2)),
            f"{key}/greedy_optimal": (greedy_value >= point.q_star.max() - 1e-6).astype(np.float64),
            f"{key}/greedy_value": greedy_value,
        }
        utilities = matrix_games.utilities(config.env_name)
        if utilities is not None and config.trainer == "vdn":  # a sum's terms are the utilities; a mix's are not
            error = matrix_games.centred(q_agents) - matrix_games.centred(utilities)
            per_seed[f"{key}/utility_error"] = np.abs(error).max(axis=(1, 2))
            results[f"{key}/utilities_mean"] = _table(matrix_games.centred(q_agents).mean(axis=0))
        results |= run_lib.seed_summary(per_seed)
        results[f"{key}/q_tot_mean"] = _table(q_tot.mean(axis=0))
        results[f"{key}/q_tot_std"] = _table(q_tot.std(axis=0))
        results[f"per_seed/{key}/q_tot"] = _table(q_tot)
    run = (config.trainer, config_lib.to_dict(config), results)
    matrix_games.plot_runs([run], os.path.join(workdir, "plots", "decomposition.png"))
    return results


@registry.register("vdn")
@registry.register("qmix")
def train_and_evaluate(config, workdir: str) -> dict:
    """The launcher's entry point (trainers `vdn` and `qmix`): through the shared chunked RL loop; on a matrix game
    also the learned joint values against the exact ones."""
    after = None
    # On a matrix game, the tables against the exact values (not in a sweep: Q* depends on a swept gamma).
    if config.env_name in matrix_games.NAMES and not sweep.parse(config, SWEEPABLE).active:
        after = lambda agent, params, workdir: matrix_report(config, params, workdir)  # noqa: E731
    return loop.train_and_evaluate(config, workdir, make_agent, after)
