"""What on-policy actor-critic agents (PPO, A2C, REINFORCE) share: state, network, optimiser, init and rollout.

Each agent file keeps only what makes it that algorithm: its loss and how it turns a rollout into gradient steps.
Functions used inside an update take the run's `sweep.HyperParams` (`hp`) where they need hyperparameters.
"""

import functools

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import struct
from flax.training.train_state import TrainState

from lepton_jax.rl import envs, sweep
from lepton_jax.rl.agent import Agent
from lepton_jax.rl.config import ON_POLICY_SWEEPABLE, on_policy_derived
from lepton_jax.rl.distributions import Categorical
from lepton_jax.rl.gae import Transition, bootstrap_truncated
from lepton_jax.rl.networks import ActorCritic, flatten_obs
from lepton_jax.techniques import optim, precision

# What the update here and PPO's can take traced; declared in `lepton_jax.rl.config`, where the configs read it too.
SWEEPABLE = ON_POLICY_SWEEPABLE


@struct.dataclass
class OnPolicyState:
    train_state: TrainState
    env: envs.EnvRunner
    rng: jax.Array
    hparams: dict = struct.field(default_factory=dict)  # this run's swept hyperparameters; {} when none


class ActorCriticFns(struct.PyTreeNode):
    """`apply(params, obs) -> (dist, value)`, `critic(params, obs) -> value` and the policy's `act` (its mode) and
    `sample` over obs of any leading shape.

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

    def act(self, params, obs):
        """The deterministic policy: the distribution's mode (the agents' `Agent.act`)."""
        return self.apply(params, obs)[0].mode()

    def sample(self, params, obs, key):
        """Actions drawn from the policy (the agents' `Agent.sample`)."""
        return self.apply(params, obs)[0].sample(key)


def actor_critic(config, spec: envs.EnvSpec, network: nn.Module | None = None) -> ActorCriticFns:
    """The agent's network functions: `network`, or by default an MLP `ActorCritic` sized by the config."""
    net = network or ActorCritic(
        spec.action_dim,
        spec.continuous,
        tuple(config.hidden_sizes),
        config.activation,
        spec.obs_shape,
        int(config.get("conv_filters", 0)),
    )
    return ActorCriticFns(precision.module(net, config), spec.obs_shape)  # in `config.precision`'s type


def optimizer(hp, num_gradient_steps: int, steps_per_update: int = 1):
    """The factory's optimiser (`lepton_jax/techniques/optim.py`; the on-policy configs' default: Adam, eps 1e-5,
    global-norm clipping, the rate annealed linearly to 0 over the run's `num_gradient_steps`).

    Flattened (`optax.flatten`) so the optimiser's arithmetic runs on one vector instead of one small array per
    layer, which is markedly faster on CPU. `hp` is the config (at init) or the run's `sweep.HyperParams`, whose
    `lr` may be traced: the schedule then anneals each run's own learning rate.
    """
    return optim.make(hp, num_gradient_steps, steps_per_update, flatten=True)


def swept_optimizer(hp, num_gradient_steps: int, steps_per_update: int = 1):
    """This run's optimiser when its learning rate is swept (built from the traced `hp.lr`), else None.

    Pass it to `sweep.apply_gradients`: None steps with the state's own optimiser, built at init from the config.
    """
    return optimizer(hp, num_gradient_steps, steps_per_update) if hp.is_swept("lr") else None


def make_init(config, spec: envs.EnvSpec, fns: ActorCriticFns, tx):
    def init(rng) -> OnPolicyState:
        rng, init_key, env_key = jax.random.split(rng, 3)
        runner = envs.reset(spec, env_key, config.num_envs)
        params = fns.net.init(init_key, flatten_obs(envs.first_obs(runner), spec.obs_shape))
        train_state = TrainState.create(apply_fn=fns.apply, params=params, tx=tx)
        return OnPolicyState(train_state, runner, rng)

    return init


def collect(hp, spec: envs.EnvSpec, fns: ActorCriticFns, state: OnPolicyState, num_steps: int):
    """`num_steps` steps of every env under the current policy.

    `hp` is the run's `sweep.HyperParams` (a swept gamma traced).

    Returns:
      The advanced env runner and rng, the rollout (a `Transition`, leaves (T, N, ...), rewards scaled by
      `hp.reward_scale` and, with `hp.bootstrap_truncated`, time-limit cuts bootstrapped), and the
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
        transition = Transition(runner.obs, action, result.reward * hp.reward_scale, done, value, log_prob)
        return (next_runner, rng), (transition, result)

    (runner, rng), (traj, results) = jax.lax.scan(env_step, (state.env, state.rng), None, length=num_steps)
    if hp.bootstrap_truncated:
        # The values of the pre-reset observations, in one batched pass after the rollout rather than a third
        # network call in every step of it.
        final_value = fns.critic(params, results.final_obs)
        reward = bootstrap_truncated(traj.reward, results.terminated, results.truncated, final_value, hp.gamma)
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
      config: needs num_envs, num_steps, total_timesteps, the optimiser keys, gamma, vf_coef, ent_coef,
        normalize_advantages, reward_scale, bootstrap_truncated, hidden_sizes, activation.
      spec: the env.
      targets_fn: `(traj, last_value, hp) -> (advantages, value targets, mask)`, all (T, N): what distinguishes
        REINFORCE (Monte-Carlo returns) from A2C (bootstrapped n-step / GAE returns). `hp` is the run's
        `sweep.HyperParams`: read every hyperparameter from it (define `targets_fn` where the config is not in
        scope), so a swept gamma is the run's.
      network: the actor-critic module (see `ActorCriticFns`); an MLP by default.

    Returns:
      The `Agent`.
    """
    d = on_policy_derived(config)
    fns = actor_critic(config, spec, network)
    tx = optimizer(config, d.num_updates)
    update = functools.partial(
        _policy_gradient_update, spec=spec, fns=fns, targets_fn=targets_fn, num_updates=d.num_updates
    )

    init = make_init(config, spec, fns, tx)
    return Agent(init, sweep.bind(config, update), fns.act, d.num_updates, d.steps_per_update, SWEEPABLE, fns.sample)


def _policy_gradient_update(hp, state: OnPolicyState, *, spec, fns: ActorCriticFns, targets_fn, num_updates: int):
    """One rollout and one gradient step; every hyperparameter from the run's `hp` (see `sweep.bind`)."""
    runner, rng, traj, _ = collect(hp, spec, fns, state, hp.num_steps)
    advantages, targets, mask = targets_fn(traj, fns.critic(state.train_state.params, runner.obs), hp)
    if hp.normalize_advantages:
        mean = jnp.sum(advantages * mask) / jnp.maximum(mask.sum(), 1.0)
        std = jnp.sqrt(jnp.sum(jnp.square(advantages - mean) * mask) / jnp.maximum(mask.sum(), 1.0))
        advantages = (advantages - mean) / (std + 1e-8)
    grads, metrics = precision.grad(policy_gradient_loss, state.train_state.opt_state, has_aux=True)(
        state.train_state.params, fns.apply, traj, advantages, targets, mask, hp.vf_coef, hp.ent_coef
    )
    metrics["episode_return"] = envs.mean_episode_return(runner)
    metrics["used_fraction"] = mask.mean()
    train_state = sweep.apply_gradients(state.train_state, grads, swept_optimizer(hp, num_updates))
    return state.replace(train_state=train_state, env=runner, rng=rng), metrics
