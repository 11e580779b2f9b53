"""Deep Q-Networks (Mnih et al. 2015) with Double DQN, a dueling head and n-step returns, fully on-device.

One update: `rollout_steps` ε-greedy steps of every env into an on-device circular replay buffer (part of the
state, so checkpoints hold it and resuming is exact), then `gradient_steps` Huber- (or squared-) loss steps on sampled
n-step transitions once `learning_starts` env steps are in, and the target network moved towards the online one
(`tau = 1`: a hard copy every `target_update_interval` env steps; `tau < 1`: Polyak averaging at that interval).

The Q-network is a parameter of `make_agent`: any Flax module mapping a batch of observations to (B, A) Q-values
plugs in (an MLP here; a graph network for graph environments). Observations that carry an `action_mask` (graph
environments) restrict exploration, the greedy action and the bootstrapped max to the valid actions.

The learning rate, gamma and the ε schedule's `eps_end` and `exploration_fraction` can be swept
(`lepton_jax.rl.sweep`): `make_agent` builds the network and the sizes from the config, and the update (`_update`)
reads every hyperparameter from the run's `sweep.HyperParams`, never from the config.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training.train_state import TrainState

from lepton_jax import placement, registry
from lepton_jax.config import require
from lepton_jax.rl import config as rl_config
from lepton_jax.rl import envs, loop, replay, sweep
from lepton_jax.rl.agent import Agent, keep_when_ready
from lepton_jax.rl.agent import make_train as _make_train
from lepton_jax.rl.networks import QNetwork, flatten_obs
from lepton_jax.techniques import optim, precision


@struct.dataclass
class DQNState:
    train_state: TrainState
    target_params: Any
    env: envs.EnvRunner
    replay: replay.Replay
    update: jax.Array  # int32 (): updates done, which fixes the env steps and so the ε schedule
    rng: jax.Array
    hparams: dict = struct.field(default_factory=dict)  # this run's swept hyperparameters; {} when none


# What `_update` can take traced; declared in `lepton_jax.rl.config`, where the configs read it too.
SWEEPABLE = rl_config.DQN_SWEEPABLE


class Row(struct.PyTreeNode):
    """What the buffer stores per env step (leaves (N, ...))."""

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    next_obs: jax.Array  # the true next observation: the final one when the episode ended
    terminated: jax.Array
    done: jax.Array


def epsilon(hp, env_steps):
    """Linear ε decay from `eps_start` to `eps_end` over the first `exploration_fraction` of training.

    `hp` is the run's `sweep.HyperParams` (swept values traced), or a config.
    """
    fraction = env_steps / (hp.exploration_fraction * hp.total_timesteps)
    return hp.eps_start + (hp.eps_end - hp.eps_start) * jnp.clip(fraction, 0.0, 1.0)


def bootstrap_value(q_next_target, q_next_online, double: bool):
    """max_a Q_target(s', a), or with Double DQN Q_target(s', argmax_a Q_online(s', a)). Shapes (B, A) -> (B,)."""
    if double:
        best = jnp.argmax(q_next_online, axis=-1)
        return jnp.take_along_axis(q_next_target, best[:, None], axis=-1)[:, 0]
    return q_next_target.max(axis=-1)


def dqn_loss(params, target_params, apply, batch: Row, hp):
    """Huber (or squared) loss of Q(s_0, a_0) against the n-step target; batch leaves are (B, n, ...).

    `hp` is the run's `sweep.HyperParams` (a swept gamma traced).
    """
    returns, last, discount = replay.n_step_targets(batch.reward, batch.terminated, batch.done, hp.gamma)
    next_obs = jax.tree.map(lambda x: x[jnp.arange(x.shape[0]), last], batch.next_obs)
    q_next_online = envs.masked_logits(apply(params, next_obs), next_obs) if hp.double_dqn else None
    q_next_target = envs.masked_logits(apply(target_params, next_obs), next_obs)
    q_next = bootstrap_value(q_next_target, q_next_online, hp.double_dqn)
    target = jax.lax.stop_gradient(returns + jnp.where(discount > 0, discount * q_next, 0.0))
    obs = jax.tree.map(lambda x: x[:, 0], batch.obs)
    q = jnp.take_along_axis(apply(params, obs), batch.action[:, 0, None], axis=-1)[:, 0]
    if hp.loss == "huber":
        loss = jnp.mean(optax.huber_loss(q, target, delta=hp.huber_delta))
    else:
        loss = jnp.mean(0.5 * jnp.square(q - target))
    return loss, {"loss": loss, "q_mean": q.mean()}


def optimizer(hp, num_updates: int):
    """The factory's optimiser (`lepton_jax/techniques/optim.py`; DQN's default: Adam after global-norm clipping)
    over the run's gradient steps; `hp` is the config (at init) or the run's `sweep.HyperParams` (a swept lr)."""
    return optim.make(hp, num_updates * hp.gradient_steps, hp.gradient_steps)


def make_agent(config, spec: envs.EnvSpec, network=None) -> Agent:
    """DQN on `spec`; `network` maps a batch of observations to (B, A) Q-values (an MLP `QNetwork` by default)."""
    require(not spec.continuous, f"DQN needs discrete actions; {spec.name} has continuous ones")
    require(config.loss in ("huber", "mse"), f"config.loss must be 'huber' or 'mse', got '{config.loss}'")
    steps_per_update = config.num_envs * config.rollout_steps
    num_updates = rl_config.num_updates(config, steps_per_update)
    capacity = max(config.buffer_size // config.num_envs, config.n_step + 1)
    target_every = max(1, config.target_update_interval // steps_per_update)  # in updates
    memory_kind = placement.replay_memory(config)  # where the buffer's rows live (`config.placement.replay`)
    net = network or QNetwork(
        spec.action_dim,
        tuple(config.hidden_sizes),
        config.activation,
        config.dueling,
        spec.obs_shape,
        int(config.get("conv_filters", 0)),
    )
    net = precision.module(net, config)  # computing in `config.precision`'s type

    def apply(params, obs):
        return net.apply(params, flatten_obs(obs, spec.obs_shape))

    def act(params, obs):  # greedy among the valid actions
        return jnp.argmax(envs.masked_logits(apply(params, obs), obs), axis=-1)

    tx = optimizer(config, num_updates)

    def init(rng):
        rng, init_key, env_key = jax.random.split(rng, 3)
        runner = envs.reset(spec, env_key, config.num_envs)
        params = net.init(init_key, flatten_obs(envs.first_obs(runner), spec.obs_shape))
        zeros = jnp.zeros((config.num_envs,))
        example = Row(runner.obs, zeros.astype(jnp.int32), zeros, runner.obs, zeros.astype(bool), zeros.astype(bool))
        train_state = TrainState.create(apply_fn=apply, params=params, tx=tx)
        return DQNState(
            train_state, params, runner, replay.init(example, capacity, memory_kind), jnp.zeros((), jnp.int32), rng
        )

    update = functools.partial(
        _update,
        spec=spec,
        apply=apply,
        act=act,
        steps_per_update=steps_per_update,
        target_every=target_every,
        num_updates=num_updates,
        memory_kind=memory_kind,
    )
    return Agent(init, sweep.bind(config, update), act, num_updates, steps_per_update, SWEEPABLE)


def _update(
    hp, state: DQNState, *, spec, apply, act, steps_per_update: int, target_every: int, num_updates: int, memory_kind
):
    """One DQN update: ε-greedy steps into the buffer, then (once learning has started) gradient steps and the
    target network's move. `hp` is the run's `sweep.HyperParams`; `memory_kind` where the buffer's rows must be."""
    placement.require_placed(state.replay.data, memory_kind, "placement.replay")

    def env_step(carry, _):
        state, eps = carry
        rng, explore_key, random_key, env_key = jax.random.split(state.rng, 4)
        greedy = act(state.train_state.params, state.env.obs)
        random_action = envs.random_action(spec, random_key, state.env.obs)
        action = jnp.where(jax.random.uniform(explore_key, greedy.shape) < eps, random_action, greedy)
        runner, result = envs.step(spec, state.env, action, env_key)
        done = jnp.logical_or(result.terminated, result.truncated)
        row = Row(state.env.obs, action, result.reward * hp.reward_scale, result.final_obs, result.terminated, done)
        return (state.replace(env=runner, replay=replay.add(state.replay, row), rng=rng), eps), None

    def gradient_step(state: DQNState, _):
        rng, key = jax.random.split(state.rng)
        batch = replay.sample(state.replay, key, hp.batch_size, hp.n_step)
        grads, metrics = precision.grad(dqn_loss, state.train_state.opt_state, has_aux=True)(
            state.train_state.params, state.target_params, apply, batch, hp
        )
        # A swept learning rate is this run's, traced.
        run_tx = optimizer(hp, num_updates) if hp.is_swept("lr") else None
        return state.replace(train_state=sweep.apply_gradients(state.train_state, grads, run_tx), rng=rng), metrics

    def learn(state: DQNState):  # what learning changes: the parameters, the target network and the rng
        state, metrics = jax.lax.scan(gradient_step, state, None, length=hp.gradient_steps)
        due = (state.update + 1) % target_every == 0
        tau = jnp.where(due, hp.tau, 0.0)
        target = optax.incremental_update(state.train_state.params, state.target_params, tau)
        return (state.train_state, target, state.rng), jax.tree.map(jnp.mean, metrics)

    eps = epsilon(hp, state.update * steps_per_update)
    (state, _), _ = jax.lax.scan(env_step, (state, eps), None, length=hp.rollout_steps)
    ready = state.replay.size * hp.num_envs >= max(hp.learning_starts, hp.n_step * hp.num_envs)
    state, metrics = keep_when_ready(state, ready, learn)
    metrics = dict(metrics, epsilon=eps, learning=ready.astype(jnp.float32))
    metrics["episode_return"] = envs.mean_episode_return(state.env)
    return state.replace(update=state.update + 1), metrics


def make_train(config):
    """`train(rng) -> (DQNState, metrics)`: the whole run as one pure function, vmappable over seeds."""
    return _make_train(make_agent(config, envs.make_env(config.env_name)))


@registry.register("dqn")
def train_and_evaluate(config, workdir: str) -> dict:
    """The launcher's entry point: DQN through the shared chunked RL loop."""
    return loop.train_and_evaluate(config, workdir, make_agent)
