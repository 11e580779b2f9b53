"""What on-policy actor-critic agents (PPO, A2C, REINFORCE) share: state, network, optimiser, init and rollout.

Each agent file keeps only what makes it that algorithm: its loss and how it turns a rollout into gradient steps.
"""

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from flax import struct
from flax.training.train_state import TrainState

from lepton_jax.rl import envs, sweep
from lepton_jax.rl.agent import Agent
from lepton_jax.rl.distributions import Categorical
from lepton_jax.rl.gae import Transition, bootstrap_truncated
from lepton_jax.rl.networks import ActorCritic, flatten_obs

# The hyperparameters an on-policy agent can sweep (`lepton_jax.rl.sweep`); its `update` reads them from the state.
SWEEPABLE = ("lr", "gamma", "ent_coef")


@struct.dataclass
class OnPolicyState:
    train_state: TrainState
    env: envs.EnvRunner
    rng: jax.Array
    hparams: dict = struct.field(default_factory=dict)  # this run's swept hyperparameters; {} when none


class ActorCriticFns(struct.PyTreeNode):
    """`apply(params, obs) -> (dist, value)` and `critic(params, obs) -> value` over obs of any leading shape.

    `net` is any module whose `__call__` returns `(dist, value)` and whose `value` method returns the value alone
    (`ActorCritic` here; a graph network for graph environments). Observations that carry an `action_mask` get
    their invalid actions' logits set to -1e9, so they are never sampled.
    """

    net: nn.Module = struct.field(pytree_node=False)
    obs_shape: tuple | None = struct.field(pytree_node=False)

    def apply(self, params, obs):
        dist, value = self.net.apply(params, flatten_obs(obs, self.obs_shape))
        if envs.action_mask(obs) is not None:
            dist = Categorical(envs.masked_logits(dist.logits, obs))
        return dist, value

    def critic(self, params, obs):
        return self.net.apply(params, flatten_obs(obs, self.obs_shape), method="value")


def actor_critic(config, spec: envs.EnvSpec, network: nn.Module | None = None) -> ActorCriticFns:
    """The agent's network functions: `network`, or by default an MLP `ActorCritic` sized by the config."""
    net = network or ActorCritic(spec.action_dim, spec.continuous, tuple(config.hidden_sizes), config.activation)
    return ActorCriticFns(net, spec.obs_shape)


def optimizer(config, num_gradient_steps: int, max_grad_norm: float | None = None):
    """Adam (eps 1e-5) with optional global-norm clipping and linear LR annealing to 0 over the run.

    Flattened (`optax.flatten`) so the optimiser's arithmetic runs on one vector instead of one small array per
    layer, which is markedly faster on CPU. `config.lr` may be traced (`sweep.Hyperparams`): the schedule then
    anneals each run's own learning rate.
    """
    schedule = optax.linear_schedule(config.lr, 0.0, num_gradient_steps) if config.anneal_lr else config.lr
    parts = [optax.clip_by_global_norm(max_grad_norm)] if max_grad_norm else []
    return optax.flatten(optax.chain(*parts, optax.adam(schedule, eps=1e-5)))


def make_init(config, spec: envs.EnvSpec, fns: ActorCriticFns, tx):
    def init(rng) -> OnPolicyState:
        rng, init_key, env_key = jax.random.split(rng, 3)
        runner = envs.reset(spec, env_key, config.num_envs)
        params = fns.net.init(init_key, flatten_obs(envs.first_obs(runner), spec.obs_shape))
        train_state = TrainState.create(apply_fn=fns.apply, params=params, tx=tx)
        return OnPolicyState(train_state, runner, rng)

    return init


def collect(config, spec: envs.EnvSpec, fns: ActorCriticFns, state: OnPolicyState, num_steps: int):
    """`num_steps` steps of every env under the current policy.

    `config` is the config or the run's `sweep.Hyperparams` (for a swept gamma).

    Returns:
      The advanced env runner and rng, the rollout (a `Transition`, leaves (T, N, ...), rewards scaled by
      `config.reward_scale` and, with `config.bootstrap_truncated`, time-limit cuts bootstrapped), and the
      `envs.StepResult`s (T, N, ...) for agents that need the raw flags.
    """
    params = state.train_state.params

    def env_step(carry, _):
        runner, rng = carry
        rng, act_key, env_key = jax.random.split(rng, 3)
        dist, value = fns.apply(params, runner.obs)
        action = dist.sample(act_key)
        log_prob = dist.log_prob(action)
        next_runner, result = envs.step(spec, runner, action, env_key)
        done = jnp.logical_or(result.terminated, result.truncated)
        transition = Transition(runner.obs, action, result.reward * config.reward_scale, done, value, log_prob)
        return (next_runner, rng), (transition, result)

    (runner, rng), (traj, results) = jax.lax.scan(env_step, (state.env, state.rng), None, length=num_steps)
    if config.bootstrap_truncated:
        # The values of the pre-reset observations, in one batched pass after the rollout rather than a third
        # network call in every step of it.
        final_value = fns.critic(params, results.final_obs)
        reward = bootstrap_truncated(traj.reward, results.terminated, results.truncated, final_value, config.gamma)
        traj = traj._replace(reward=reward)
    return runner, rng, traj, results


def policy_gradient_loss(params, apply, batch: Transition, advantages, targets, mask, vf_coef, ent_coef):
    """-E[log pi(a|s) A] + vf_coef * 0.5 E[(V - target)^2] - ent_coef * E[entropy], averaged where `mask` is 1."""
    dist, value = apply(params, batch.obs)
    weight = mask / jnp.maximum(mask.sum(), 1.0)
    policy_loss = -jnp.sum(weight * dist.log_prob(batch.action) * jax.lax.stop_gradient(advantages))
    value_loss = 0.5 * jnp.sum(weight * jnp.square(value - targets))
    entropy = jnp.sum(weight * dist.entropy())
    total = policy_loss + vf_coef * value_loss - ent_coef * entropy
    return total, {"loss": total, "policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy}


def make_policy_gradient_agent(config, spec: envs.EnvSpec, targets_fn, network: nn.Module | None = None):
    """An agent that takes one gradient step of `policy_gradient_loss` per rollout of `config.num_steps` steps.

    Args:
      config: needs num_envs, num_steps, total_timesteps, lr, anneal_lr, max_grad_norm, gamma, vf_coef, ent_coef,
        normalize_advantages, reward_scale, bootstrap_truncated, hidden_sizes, activation.
      spec: the env.
      targets_fn: `(traj, last_value, hp) -> (advantages, value targets, mask)`, all (T, N): what distinguishes
        REINFORCE (Monte-Carlo returns) from A2C (bootstrapped n-step / GAE returns). `hp` is the run's
        `sweep.Hyperparams`: read gamma (and any other sweepable hyperparameter) from it, not from the config.
      network: the actor-critic module (see `ActorCriticFns`); an MLP by default.

    Returns:
      The `Agent`.
    """
    steps_per_update = config.num_envs * config.num_steps
    num_updates = int(config.total_timesteps) // steps_per_update
    fns = actor_critic(config, spec, network)
    tx = optimizer(config, max(num_updates, 1), config.max_grad_norm)

    def update(state: OnPolicyState):
        hp = sweep.hyperparams(config, state)
        runner, rng, traj, _ = collect(hp, spec, fns, state, config.num_steps)
        advantages, targets, mask = targets_fn(traj, fns.critic(state.train_state.params, runner.obs), hp)
        if config.normalize_advantages:
            mean = jnp.sum(advantages * mask) / jnp.maximum(mask.sum(), 1.0)
            std = jnp.sqrt(jnp.sum(jnp.square(advantages - mean) * mask) / jnp.maximum(mask.sum(), 1.0))
            advantages = (advantages - mean) / (std + 1e-8)
        grads, metrics = jax.grad(policy_gradient_loss, has_aux=True)(
            state.train_state.params, fns.apply, traj, advantages, targets, mask, config.vf_coef, hp.ent_coef
        )
        metrics["episode_return"] = envs.mean_episode_return(runner)
        metrics["used_fraction"] = mask.mean()
        run_tx = optimizer(hp, max(num_updates, 1), config.max_grad_norm) if hp.is_swept("lr") else None
        train_state = sweep.apply_gradients(state.train_state, grads, run_tx)
        return state.replace(train_state=train_state, env=runner, rng=rng), metrics

    def act(params, obs):
        return fns.apply(params, obs)[0].mode()

    return Agent(make_init(config, spec, fns, tx), update, act, num_updates, steps_per_update, SWEEPABLE)
