"""Deep Q-Networks (Mnih et al. 2015) with Double DQN, a dueling head and n-step returns, fully on-device.

One update: `rollout_steps` ε-greedy steps of every env into an on-device circular replay buffer (part of the
state, so checkpoints hold it and resuming is exact), then `gradient_steps` Huber- (or squared-) loss steps on sampled
n-step transitions once `learning_starts` env steps are in, and the target network moved towards the online one
(`tau = 1`: a hard copy every `target_update_interval` env steps; `tau < 1`: Polyak averaging at that interval).

The Q-network is a parameter of `make_agent`: any Flax module mapping a batch of observations to (B, A) Q-values
plugs in (an MLP here; a graph network for graph environments). Observations that carry an `action_mask` (graph
environments) restrict exploration, the greedy action and the bootstrapped max to the valid actions.

The learning rate, gamma and the ε schedule's `eps_end` and `exploration_fraction` can be swept
(`lepton_jax.rl.sweep`): `update` reads them from the run's state.
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training.train_state import TrainState

from lepton_jax import registry
from lepton_jax.config import require
from lepton_jax.rl import envs, loop, replay, sweep
from lepton_jax.rl.agent import Agent
from lepton_jax.rl.agent import make_train as _make_train
from lepton_jax.rl.networks import QNetwork, flatten_obs


@struct.dataclass
class DQNState:
    train_state: TrainState
    target_params: Any
    env: envs.EnvRunner
    replay: replay.Replay
    update: jax.Array  # int32 (): updates done, which fixes the env steps and so the ε schedule
    rng: jax.Array
    hparams: dict = struct.field(default_factory=dict)  # this run's swept hyperparameters; {} when none


SWEEPABLE = ("lr", "gamma", "eps_end", "exploration_fraction")


class Row(struct.PyTreeNode):
    """What the buffer stores per env step (leaves (N, ...))."""

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    next_obs: jax.Array  # the true next observation: the final one when the episode ended
    terminated: jax.Array
    done: jax.Array


def epsilon(config, env_steps):
    """Linear ε decay from `eps_start` to `eps_end` over the first `exploration_fraction` of training.

    `config` is the config or the run's `sweep.Hyperparams` (swept values traced).
    """
    fraction = env_steps / (config.exploration_fraction * config.total_timesteps)
    return config.eps_start + (config.eps_end - config.eps_start) * jnp.clip(fraction, 0.0, 1.0)


def bootstrap_value(q_next_target, q_next_online, double: bool):
    """max_a Q_target(s', a), or with Double DQN Q_target(s', argmax_a Q_online(s', a)). Shapes (B, A) -> (B,)."""
    if double:
        best = jnp.argmax(q_next_online, axis=-1)
        return jnp.take_along_axis(q_next_target, best[:, None], axis=-1)[:, 0]
    return q_next_target.max(axis=-1)


def dqn_loss(params, target_params, apply, batch: Row, config):
    """Huber (or squared) loss of Q(s_0, a_0) against the n-step target; batch leaves are (B, n, ...).

    `config` is the config or the run's `sweep.Hyperparams` (a swept gamma traced).
    """
    returns, last, discount = replay.n_step_targets(batch.reward, batch.terminated, batch.done, config.gamma)
    next_obs = jax.tree.map(lambda x: x[jnp.arange(x.shape[0]), last], batch.next_obs)
    q_next_online = envs.masked_logits(apply(params, next_obs), next_obs) if config.double_dqn else None
    q_next = bootstrap_value(envs.masked_logits(apply(target_params, next_obs), next_obs), q_next_online,
                             config.double_dqn)  # fmt: skip
    target = jax.lax.stop_gradient(returns + jnp.where(discount > 0, discount * q_next, 0.0))
    obs = jax.tree.map(lambda x: x[:, 0], batch.obs)
    q = jnp.take_along_axis(apply(params, obs), batch.action[:, 0, None], axis=-1)[:, 0]
    if config.loss == "huber":
        loss = jnp.mean(optax.huber_loss(q, target, delta=config.huber_delta))
    else:
        loss = jnp.mean(0.5 * jnp.square(q - target))
    return loss, {"loss": loss, "q_mean": q.mean()}


def make_agent(config, spec: envs.EnvSpec, network=None) -> Agent:
    require(not spec.continuous, f"DQN needs discrete actions; {spec.name} has continuous ones")
    require(config.loss in ("huber", "mse"), f"config.loss must be 'huber' or 'mse', got '{config.loss}'")
    steps_per_update = config.num_envs * config.rollout_steps
    num_updates = int(config.total_timesteps) // steps_per_update
    require(num_updates >= 1, f"config.total_timesteps ({config.total_timesteps}) is less than one update")
    capacity = max(config.buffer_size // config.num_envs, config.n_step + 1)
    target_every = max(1, config.target_update_interval // steps_per_update)  # in updates
    net = network or QNetwork(spec.action_dim, tuple(config.hidden_sizes), config.activation, config.dueling)

    def apply(params, obs):
        return net.apply(params, flatten_obs(obs, spec.obs_shape))

    def act(params, obs):  # greedy among the valid actions
        return jnp.argmax(envs.masked_logits(apply(params, obs), obs), axis=-1)

    def optimizer(lr):
        return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(lr))

    tx = optimizer(config.lr)

    def init(rng):
        rng, init_key, env_key = jax.random.split(rng, 3)
        runner = envs.reset(spec, env_key, config.num_envs)
        params = net.init(init_key, flatten_obs(envs.first_obs(runner), spec.obs_shape))
        zeros = jnp.zeros((config.num_envs,))
        example = Row(runner.obs, zeros.astype(jnp.int32), zeros, runner.obs, zeros.astype(bool), zeros.astype(bool))
        train_state = TrainState.create(apply_fn=apply, params=params, tx=tx)
        return DQNState(train_state, params, runner, replay.init(example, capacity), jnp.zeros((), jnp.int32), rng)

    def env_step(carry, _):
        state, eps = carry
        rng, explore_key, random_key, env_key = jax.random.split(state.rng, 4)
        greedy = act(state.train_state.params, state.env.obs)
        random_action = envs.random_action(spec, random_key, state.env.obs)
        action = jnp.where(jax.random.uniform(explore_key, greedy.shape) < eps, random_action, greedy)
        runner, result = envs.step(spec, state.env, action, env_key)
        done = jnp.logical_or(result.terminated, result.truncated)
        row = Row(state.env.obs, action, result.reward * config.reward_scale, result.final_obs, result.terminated, done)
        return (state.replace(env=runner, replay=replay.add(state.replay, row), rng=rng), eps), None

    def gradient_step(state: DQNState, _):
        hp = sweep.hyperparams(config, state)
        rng, key = jax.random.split(state.rng)
        batch = replay.sample(state.replay, key, config.batch_size, config.n_step)
        grads, metrics = jax.grad(dqn_loss, has_aux=True)(
            state.train_state.params, state.target_params, apply, batch, hp
        )
        run_tx = optimizer(hp.lr) if hp.is_swept("lr") else None  # a swept learning rate is this run's, traced
        return state.replace(train_state=sweep.apply_gradients(state.train_state, grads, run_tx), rng=rng), metrics

    def learn(state: DQNState):
        state, metrics = jax.lax.scan(gradient_step, state, None, length=config.gradient_steps)
        due = (state.update + 1) % target_every == 0
        tau = jnp.where(due, config.tau, 0.0)
        target = optax.incremental_update(state.train_state.params, state.target_params, tau)
        return state.replace(target_params=target), jax.tree.map(jnp.mean, metrics)

    def update(state: DQNState):
        eps = epsilon(sweep.hyperparams(config, state), state.update * steps_per_update)
        (state, _), _ = jax.lax.scan(env_step, (state, eps), None, length=config.rollout_steps)
        ready = state.replay.size * config.num_envs >= max(config.learning_starts, config.n_step * config.num_envs)
        metrics_shape = jax.eval_shape(lambda s: learn(s)[1], state)
        idle = jax.tree.map(lambda m: jnp.full(m.shape, jnp.nan, m.dtype), metrics_shape)
        state, metrics = jax.lax.cond(ready, learn, lambda s: (s, idle), state)
        # Before learning starts the loss is NaN by construction; `learning` tells the loop it is not divergence.
        metrics = dict(metrics, epsilon=eps, learning=ready.astype(jnp.float32))
        metrics["episode_return"] = envs.mean_episode_return(state.env)
        return state.replace(update=state.update + 1), metrics

    return Agent(init, update, act, num_updates, steps_per_update, SWEEPABLE)


def make_train(config):
    """`train(rng) -> (DQNState, metrics)`: the whole run as one pure function, vmappable over seeds."""
    return _make_train(make_agent(config, envs.make_env(config.env_name)))


@registry.register("dqn")
def train_and_evaluate(config, workdir: str) -> dict:
    """The launcher's entry point: DQN through the shared chunked RL loop."""
    return loop.train_and_evaluate(config, workdir, make_agent)
