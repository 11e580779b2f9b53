"""Proximal Policy Optimization (Schulman et al. 2017), fully on the accelerator.

Clipped surrogate, GAE, entropy bonus, (clipped) value loss, minibatch epochs, linear LR annealing and
gradient-norm clipping; categorical or diagonal-Gaussian policies for any gymnax env. `make_train(config)` returns
a pure `train(rng)`; the launcher runs the same `update` in jitted chunks to log, evaluate and checkpoint. The
learning rate, gamma and the entropy coefficient can be swept (`lepton_jax.rl.sweep`): `make_agent` builds the
network and the sizes from the config, and the update (`_update`, `_learn`) reads every hyperparameter from the
run's `sweep.HyperParams`, never from the config.

Minibatches are drawn per environment: each minibatch holds `num_steps / num_minibatches` random time steps of
*every* env. This keeps each device's minibatch slice on that device when the env axis is split across devices
(gradients are then averaged by one all-reduce), and gives the same result on 1 device and on N.
"""

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections

from lepton_jax import config as config_lib
from lepton_jax import registry
from lepton_jax.errors import UserError
from lepton_jax.rl import envs, loop, onpolicy, sweep
from lepton_jax.rl.agent import Agent
from lepton_jax.rl.agent import make_train as _make_train
from lepton_jax.rl.config import on_policy_derived
from lepton_jax.rl.gae import Transition, gae
from lepton_jax.techniques import distill, precision

PPOState = onpolicy.OnPolicyState  # train_state, env, rng


def ppo_loss(
    params,
    apply_fn,
    batch: Transition,
    advantages,
    targets,
    clip_eps,
    vf_coef,
    ent_coef,
    clip_value_loss=True,
    teacher_logits=None,
    temperature: float = 1.0,
    alpha: float = 0.0,
):
    """PPO's loss on one minibatch (any leading shape). Returns (total, dict of its terms).

    With `teacher_logits` (a teacher policy's logits on `batch.obs`), the policy term becomes
    `(1 - alpha) * clipped surrogate + alpha * T^2 KL(teacher / T || student / T)` (`distill.loss`): the student
    distils the teacher on the states it visits itself (on-policy distillation; alpha 1 is pure distillation).
    """
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
    terms = {}
    if teacher_logits is not None:
        soft = jnp.mean(distill.loss(dist.logits, teacher_logits, None, temperature, 1.0))
        policy_loss, terms = (1.0 - alpha) * policy_loss + alpha * soft, {"distill_loss": soft}
    total = policy_loss + vf_coef * value_loss - ent_coef * entropy
    return total, terms | {
        "loss": total,
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": entropy,
        "approx_kl": jnp.mean((ratio - 1) - log_ratio),  # the low-variance estimator (Schulman's k3)
        "clip_fraction": jnp.mean(jnp.abs(ratio - 1) > clip_eps),
    }


def make_agent(config, spec: envs.EnvSpec, network=None) -> Agent:
    """PPO on `spec`; `network` is the actor-critic module (an MLP by default; see `onpolicy.ActorCriticFns`)."""
    d = on_policy_derived(config)
    fns = onpolicy.actor_critic(config, spec, network)
    num_gradient_steps = d.num_updates * config.update_epochs * config.num_minibatches
    tx = onpolicy.optimizer(config, num_gradient_steps, config.update_epochs * config.num_minibatches)
    teacher = load_teacher(config, spec)
    update = functools.partial(_update, spec=spec, fns=fns, num_gradient_steps=num_gradient_steps, teacher=teacher)

    init = onpolicy.make_init(config, spec, fns, tx)
    return Agent(
        init,
        sweep.bind(config, update),
        fns.act,
        d.num_updates,
        d.steps_per_update,
        onpolicy.SWEEPABLE,
        fns.sample,
    )


def load_teacher(config, spec: envs.EnvSpec):
    """`(teacher's ActorCriticFns, seed 0's parameters)` of the finished PPO run `config.teacher` on the same env,
    or None without a teacher. Its files are only read; its network may be of another size than the student's.

    Raises:
      UserError: one line naming `config.teacher`: not a finished run, a run of another trainer or env, or a
        continuous-action policy (distillation here matches categorical policies).
    """
    workdir = distill.settings(config)["teacher"]
    if workdir is None:
        return None
    where = f"config.teacher={workdir}"
    distill.check_teacher_files(workdir)
    source = ml_collections.ConfigDict(
        config_lib.read_json(os.path.join(workdir, "config.json"), f"the config of the run {where}")
    )
    if source.get("trainer") != config.trainer or source.get("env_name") != config.env_name:
        raise UserError(
            f"{where} is a {source.get('trainer')} run on {source.get('env_name')}, not a {config.trainer} run on "
            f"{config.env_name}; distil from a run of this agent on this env"
        )
    if spec.continuous:
        raise UserError(f"{where}: distillation matches categorical policies, and {config.env_name}'s is continuous")
    _, _, state, _ = loop.restore_for_evaluation(source, workdir, make_agent)
    return onpolicy.actor_critic(source, spec), jax.tree.map(lambda x: x[0], state.train_state.params)


def _update(hp, state: PPOState, *, spec, fns: onpolicy.ActorCriticFns, num_gradient_steps: int, teacher=None):
    """One PPO update: a rollout, GAE, then the minibatch epochs; `hp` is the run's `sweep.HyperParams`; `teacher`
    is `load_teacher`'s."""
    runner, rng, traj, _ = onpolicy.collect(hp, spec, fns, state, hp.num_steps)
    last_value = fns.critic(state.train_state.params, runner.obs)
    advantages, targets = gae(traj.reward, traj.value, traj.done, last_value, hp.gamma, hp.gae_lambda)
    train_state, rng, metrics = _learn(
        hp, fns.apply, num_gradient_steps, state.train_state, traj, advantages, targets, rng, teacher
    )
    metrics["episode_return"] = envs.mean_episode_return(runner)
    return state.replace(train_state=train_state, env=runner, rng=rng), metrics


def _learn(hp, apply, num_gradient_steps: int, train_state, traj: Transition, advantages, targets, rng, teacher=None):
    """`hp.update_epochs` epochs of `hp.num_minibatches` clipped-surrogate steps on the rollout (leaves (T, N, ...)),
    distilling `teacher` (`load_teacher`'s) when given."""
    num_steps, num_envs, num_minibatches = hp.num_steps, hp.num_envs, hp.num_minibatches
    steps_per_minibatch = num_steps // num_minibatches
    # A swept learning rate is traced: this run's optimiser (same state structure, same annealing) is built here.
    run_tx = onpolicy.swept_optimizer(hp, num_gradient_steps, hp.update_epochs * hp.num_minibatches)

    def epoch(carry, _):
        train_state, rng = carry
        rng, perm_key = jax.random.split(rng)
        # (N, M, T/M): an independent shuffle of each env's time steps, cut into M minibatches.
        perms = jax.vmap(lambda k: jax.random.permutation(k, num_steps))(jax.random.split(perm_key, num_envs))
        index = perms.reshape(num_envs, num_minibatches, steps_per_minibatch)

        def to_minibatches(x):  # (T, N, ...) -> (M, N * T/M, ...)
            # Gathered per env (vmap over the env axis), so a device's envs never leave it; the env axis stays
            # major when merged with time, which keeps a split env axis split in blocks.
            x = jax.vmap(lambda x_env, i_env: x_env[i_env], in_axes=(1, 0))(x, index)  # (N, M, T/M, ...)
            x = jnp.swapaxes(x, 0, 1)  # (M, N, T/M, ...)
            return x.reshape((num_minibatches, num_envs * steps_per_minibatch) + x.shape[3:])

        minibatches = jax.tree.map(to_minibatches, (traj, advantages, targets))

        def minibatch_step(train_state, minibatch):
            batch, adv, tgt = minibatch
            distilling = {}
            if teacher is not None:  # the teacher's policy on the student's own states, a constant
                teacher_fns, teacher_params = teacher
                logits = jax.lax.stop_gradient(teacher_fns.apply(teacher_params, batch.obs)[0].logits)
                distilling = dict(teacher_logits=logits, temperature=hp.distill_temperature, alpha=hp.distill_alpha)
            loss_fn = functools.partial(ppo_loss, **distilling)
            grads, terms = precision.grad(loss_fn, train_state.opt_state, has_aux=True)(
                train_state.params, apply, batch, adv, tgt, hp.clip_eps, hp.vf_coef, hp.ent_coef, hp.clip_value_loss
            )
            return sweep.apply_gradients(train_state, grads, run_tx), terms

        train_state, terms = jax.lax.scan(minibatch_step, train_state, minibatches)
        return (train_state, rng), terms

    (train_state, rng), terms = jax.lax.scan(epoch, (train_state, rng), None, length=hp.update_epochs)
    return train_state, rng, jax.tree.map(jnp.mean, terms)


def make_train(config):
    """`train(rng) -> (PPOState, metrics)`: the whole run as one pure function, vmappable over seeds."""
    return _make_train(make_agent(config, envs.make_env(config.env_name)))


@registry.register("ppo")
def train_and_evaluate(config, workdir: str) -> dict:
    """The launcher's entry point: PPO through the shared chunked RL loop."""
    return loop.train_and_evaluate(config, workdir, make_agent)
