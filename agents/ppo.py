"""Proximal Policy Optimization (Schulman et al. 2017), fully on the accelerator.

Clipped surrogate, GAE, entropy bonus, (clipped) value loss, minibatch epochs, linear LR annealing and
gradient-norm clipping; categorical or diagonal-Gaussian policies for any gymnax env. `make_train(config)` returns
a pure `train(rng)`; the launcher runs the same `update` in jitted chunks to log, evaluate and checkpoint.

Minibatches are drawn per environment: each minibatch holds `num_steps / num_minibatches` random time steps of
*every* env. This keeps each device's minibatch slice on that device when the env axis is split across devices
(gradients are then averaged by one all-reduce), and gives the same result on 1 device and on N.
"""

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training.train_state import TrainState

from lepton_jax import registry
from lepton_jax.config import on_policy_derived
from lepton_jax.rl import envs, loop
from lepton_jax.rl.agent import Agent
from lepton_jax.rl.agent import make_train as _make_train
from lepton_jax.rl.gae import Transition, bootstrap_truncated, gae
from lepton_jax.rl.networks import ActorCritic, flatten_obs


@struct.dataclass
class PPOState:
    train_state: TrainState
    env: envs.EnvRunner
    rng: jax.Array


def ppo_loss(
    params, apply_fn, batch: Transition, advantages, targets, clip_eps, vf_coef, ent_coef, clip_value_loss=True
):
    """PPO's loss on one minibatch (any leading shape). Returns (total, dict of its terms)."""
    dist, value = apply_fn(params, batch.obs)
    log_prob = dist.log_prob(batch.action)
    log_ratio = log_prob - batch.log_prob
    ratio = jnp.exp(log_ratio)
    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    policy_loss = -jnp.mean(jnp.minimum(ratio * advantages, jnp.clip(ratio, 1 - clip_eps, 1 + clip_eps) * advantages))
    value_loss = jnp.square(value - targets)
    if clip_value_loss:
        clipped = batch.value + jnp.clip(value - batch.value, -clip_eps, clip_eps)
        value_loss = jnp.maximum(value_loss, jnp.square(clipped - targets))
    value_loss = 0.5 * jnp.mean(value_loss)
    entropy = jnp.mean(dist.entropy())
    total = policy_loss + vf_coef * value_loss - ent_coef * entropy
    return total, {
        "loss": total,
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": entropy,
        "approx_kl": jnp.mean((ratio - 1) - log_ratio),  # the low-variance estimator (Schulman's k3)
        "clip_fraction": jnp.mean(jnp.abs(ratio - 1) > clip_eps),
    }


def make_agent(config, spec: envs.EnvSpec) -> Agent:
    d = on_policy_derived(config)
    net = ActorCritic(spec.action_dim, spec.continuous, tuple(config.hidden_sizes), config.activation)

    def apply(params, obs):
        return net.apply(params, flatten_obs(obs, spec.obs_shape))

    def critic(params, obs):
        return net.apply(params, flatten_obs(obs, spec.obs_shape), method=ActorCritic.value)

    schedule = config.lr
    if config.anneal_lr:
        schedule = optax.linear_schedule(config.lr, 0.0, d.num_updates * config.update_epochs * config.num_minibatches)
    tx = optax.flatten(optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(schedule, eps=1e-5)))

    def init(rng):
        rng, init_key, env_key = jax.random.split(rng, 3)
        params = net.init(init_key, jnp.zeros((1, *spec.obs_shape)).reshape(1, -1))
        train_state = TrainState.create(apply_fn=apply, params=params, tx=tx)
        return PPOState(train_state, envs.reset(spec, env_key, config.num_envs), rng)

    def collect(state: PPOState):
        def env_step(carry, _):
            runner, rng = carry
            rng, act_key, env_key = jax.random.split(rng, 3)
            dist, value = apply(state.train_state.params, runner.obs)
            action = dist.sample(act_key)
            log_prob = dist.log_prob(action)
            next_runner, result = envs.step(spec, runner, action, env_key)
            done = jnp.logical_or(result.terminated, result.truncated)
            transition = Transition(runner.obs, action, result.reward * config.reward_scale, done, value, log_prob)
            return (next_runner, rng), (transition, result)

        (runner, rng), (traj, results) = jax.lax.scan(
            env_step, (state.env, state.rng), None, length=config.num_steps
        )  # leaves: (T, N, ...)
        if config.bootstrap_truncated:
            # The values of the pre-reset observations, in one batched pass after the rollout rather than a third
            # network call in every step of it.
            final_value = critic(state.train_state.params, results.final_obs)
            reward = bootstrap_truncated(traj.reward, results.terminated, results.truncated, final_value, config.gamma)
            traj = traj._replace(reward=reward)
        return runner, rng, traj

    def learn(train_state, traj, advantages, targets, rng):
        steps_per_minibatch = config.num_steps // config.num_minibatches

        def epoch(carry, _):
            train_state, rng = carry
            rng, perm_key = jax.random.split(rng)
            # (N, M, T/M): an independent shuffle of each env's time steps, cut into M minibatches.
            perms = jax.vmap(lambda k: jax.random.permutation(k, config.num_steps))(
                jax.random.split(perm_key, config.num_envs)
            )
            index = perms.reshape(config.num_envs, config.num_minibatches, steps_per_minibatch)

            def to_minibatches(x):  # (T, N, ...) -> (M, N * T/M, ...)
                # Gathered per env (vmap over the env axis), so a device's envs never leave it; the env axis stays
                # major when merged with time, which keeps a split env axis split in blocks.
                x = jax.vmap(lambda x_env, i_env: x_env[i_env], in_axes=(1, 0))(x, index)  # (N, M, T/M, ...)
                x = jnp.swapaxes(x, 0, 1)  # (M, N, T/M, ...)
                return x.reshape((config.num_minibatches, config.num_envs * steps_per_minibatch) + x.shape[3:])

            minibatches = jax.tree.map(to_minibatches, (traj, advantages, targets))

            def minibatch_step(train_state, minibatch):
                batch, adv, tgt = minibatch
                grads, terms = jax.grad(ppo_loss, has_aux=True)(
                    train_state.params,
                    apply,
                    batch,
                    adv,
                    tgt,
                    config.clip_eps,
                    config.vf_coef,
                    config.ent_coef,
                    config.clip_value_loss,
                )
                return train_state.apply_gradients(grads=grads), terms

            train_state, terms = jax.lax.scan(minibatch_step, train_state, minibatches)
            return (train_state, rng), terms

        (train_state, rng), terms = jax.lax.scan(epoch, (train_state, rng), None, length=config.update_epochs)
        return train_state, rng, jax.tree.map(jnp.mean, terms)

    def update(state: PPOState):
        runner, rng, traj = collect(state)
        last_value = critic(state.train_state.params, runner.obs)
        advantages, targets = gae(traj.reward, traj.value, traj.done, last_value, config.gamma, config.gae_lambda)
        train_state, rng, metrics = learn(state.train_state, traj, advantages, targets, rng)
        metrics["episode_return"] = envs.mean_episode_return(runner)
        return PPOState(train_state, runner, rng), metrics

    def act(params, obs):
        dist, _ = apply(params, obs)
        return dist.mode()

    return Agent(init, update, act, d.num_updates, d.steps_per_update)


def make_train(config):
    """`train(rng) -> (PPOState, metrics)`: the whole run as one pure function, vmappable over seeds."""
    return _make_train(make_agent(config, envs.make_env(config.env_name)))


@registry.register("ppo")
def train_and_evaluate(config, workdir: str) -> dict:
    """The launcher's entry point: PPO through the shared chunked RL loop."""
    return loop.train_and_evaluate(config, workdir, make_agent)
