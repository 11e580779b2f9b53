"""gymnax environments, batched on the accelerator, with episode bookkeeping and deterministic evaluation.

gymnax 1.x `env.step(key, state, action, params)` returns six values
`(obs, state, reward, terminated, truncated, info)` and auto-resets finished episodes; the observation before
the reset is `info["final_observation"]`. Agents bootstrap values on `truncated` (a time limit) but not on
`terminated`, so both flags and the final observation are passed on.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import spaces

from lepton_jax.errors import UserError
from lepton_jax.rl import probes

# MNISTBandit-bsuite downloads MNIST when built, which fails offline; every other registered env works.
_UNSUPPORTED = {"MNISTBandit-bsuite"}


# Env families registered by other packages (graph environments): name prefix -> (factory(name) -> (env, params),
# a one-line description of the valid names for error messages).
_FAMILIES: dict[str, tuple[Callable[[str], tuple[Any, Any]], str]] = {}


def register_family(prefix: str, factory: Callable[[str], tuple[Any, Any]], description: str) -> None:
    """Makes `make_env(name)` build every name starting with `prefix` with `factory(name) -> (env, params)`.

    `factory` raises `UserError` for a malformed name; `description` (e.g. "MVC-{ER,BA}-MIN-MAX") is shown when an
    unknown name is asked for.
    """
    _FAMILIES[prefix] = (factory, description)


def valid_env_names() -> list[str]:
    return [name for name in gymnax.registered_envs if name not in _UNSUPPORTED] + list(probes.ENVS)


class EnvSpec(NamedTuple):
    """A gymnax env with what agents need to know about its spaces."""

    name: str
    env: Any
    params: Any
    obs_shape: tuple[int, ...] | None  # None: a structured observation (a pytree, e.g. a graph) the network reads
    action_dim: int  # number of discrete actions, or size of the continuous action vector
    continuous: bool
    action_low: Any  # bounds of a continuous action (None for discrete)
    action_high: Any

    @property
    def max_episode_steps(self) -> int:
        return int(self.params.max_steps_in_episode)


def make_env(name: str) -> EnvSpec:
    """Builds a gymnax env by name; an unknown name is a `UserError` listing the valid ones."""
    family = next((f for prefix, f in _FAMILIES.items() if name.startswith(prefix)), None)
    if family is None and name not in valid_env_names():
        families = "".join(f", {description}" for _, description in _FAMILIES.values())
        raise UserError(f"unknown env '{name}'; valid envs: {', '.join(valid_env_names())}{families}")
    if family is not None:
        env, params = family[0](name)
    elif name in probes.ENVS:
        env = probes.ENVS[name]()
        params = env.default_params
    else:
        env, params = gymnax.make(name)
    return spec_of(name, env, params)


def spec_of(name: str, env, params) -> EnvSpec:
    """The `EnvSpec` of a gymnax-protocol `env` with `params` (e.g. an agent's own view of a named env)."""
    obs_space = env.observation_space(params)
    obs_shape = tuple(obs_space.shape) if isinstance(obs_space, spaces.Box) else None
    space = env.action_space(params)
    if isinstance(space, spaces.Discrete):
        return EnvSpec(name, env, params, obs_shape, int(space.n), False, None, None)
    if isinstance(space, spaces.Box):
        low = np.broadcast_to(np.asarray(space.low, np.float32), space.shape)
        high = np.broadcast_to(np.asarray(space.high, np.float32), space.shape)
        return EnvSpec(name, env, params, obs_shape, int(np.prod(space.shape)), True, low, high)
    raise UserError(f"env '{name}' has an action space of type {type(space).__name__}; only Discrete and Box work")


@struct.dataclass
class EnvRunner:
    """A batch of N environments and their episode statistics; every leaf has N as its leading axis."""

    env_state: Any
    obs: jax.Array  # (N, *obs_shape)
    episode_return: jax.Array  # (N,) return of the episode in progress
    episode_length: jax.Array  # (N,)
    last_return: jax.Array  # (N,) return of the last finished episode
    last_length: jax.Array  # (N,)
    episodes: jax.Array  # (N,) number of finished episodes


def action_mask(obs) -> jax.Array | None:
    """The valid-action mask `(..., A)` of an observation that carries one (`obs.action_mask`), else None."""
    return getattr(obs, "action_mask", None)


def masked_logits(logits: jax.Array, obs) -> jax.Array:
    """`logits` with invalid actions set to -1e9: they get probability 0 and never win an argmax.

    A finite value, not -inf, so that log-softmax, entropy and Q-targets stay finite.
    """
    mask = action_mask(obs)
    return logits if mask is None else jnp.where(mask, logits, -1e9)


def random_action(spec: EnvSpec, key: jax.Array, obs) -> jax.Array:
    """A uniformly random valid discrete action per env of the batch `obs` (leaves (N, ...))."""
    mask = action_mask(obs)
    if mask is None:
        return jax.random.randint(key, jax.tree.leaves(obs)[0].shape[:1], 0, spec.action_dim)
    return jax.random.categorical(key, jnp.where(mask, 0.0, -1e9))


def first_obs(runner: EnvRunner):
    """The first env's observation with a batch axis of 1: an example input to initialise a network with."""
    return jax.tree.map(lambda x: x[:1], runner.obs)


class StepResult(NamedTuple):
    reward: jax.Array  # (N,)
    terminated: jax.Array  # (N,) true end of the MDP: no bootstrap
    truncated: jax.Array  # (N,) time limit: bootstrap from final_obs
    final_obs: jax.Array  # (N, *obs_shape) observation before the auto-reset


def reset(spec: EnvSpec, key: jax.Array, num_envs: int) -> EnvRunner:
    obs, state = jax.vmap(spec.env.reset, in_axes=(0, None))(jax.random.split(key, num_envs), spec.params)
    zeros = jnp.zeros((num_envs,), jnp.float32)
    return EnvRunner(
        state, obs, zeros, zeros.astype(jnp.int32), zeros, zeros.astype(jnp.int32), zeros.astype(jnp.int32)
    )


def to_env_action(spec: EnvSpec, action: jax.Array) -> jax.Array:
    """Clips a continuous action to the env's bounds (the policy's log-prob stays that of the raw sample)."""
    if spec.continuous:
        # (..., D) flat policy output -> (..., *action_space.shape)
        low, high = spec.action_low.reshape(-1), spec.action_high.reshape(-1)
        action = jnp.clip(action, low, high).reshape(action.shape[:-1] + spec.action_low.shape)
    return action


def step(spec: EnvSpec, runner: EnvRunner, action: jax.Array, key: jax.Array) -> tuple[EnvRunner, StepResult]:
    """Steps every env once (auto-resetting finished ones) and updates the episode statistics."""
    num_envs = runner.episodes.shape[0]
    obs, state, reward, terminated, truncated, info = jax.vmap(spec.env.step, in_axes=(0, 0, 0, None))(
        jax.random.split(key, num_envs), runner.env_state, to_env_action(spec, action), spec.params
    )
    reward = reward.astype(jnp.float32)
    done = jnp.logical_or(terminated, truncated)
    episode_return = runner.episode_return + reward
    episode_length = runner.episode_length + 1
    runner = EnvRunner(
        env_state=state,
        obs=obs,
        episode_return=jnp.where(done, 0.0, episode_return),
        episode_length=jnp.where(done, 0, episode_length),
        last_return=jnp.where(done, episode_return, runner.last_return),
        last_length=jnp.where(done, episode_length, runner.last_length),
        episodes=runner.episodes + done.astype(jnp.int32),
    )
    return runner, StepResult(reward, terminated, truncated, info["final_observation"])


def mean_episode_return(runner: EnvRunner) -> jax.Array:
    """Mean return of the last finished episode over the envs that finished one (NaN before any did)."""
    finished = runner.episodes > 0
    return jnp.sum(jnp.where(finished, runner.last_return, 0.0)) / jnp.sum(finished)


def evaluate(
    spec: EnvSpec, act: Callable[..., jax.Array], params: Any, key: jax.Array, num_episodes: int, sample: bool = False
) -> jax.Array:
    """Returns of `num_episodes` episodes under the deterministic policy `act(params, obs) -> action`.

    With `sample`, `act(params, obs, key)` draws the actions (a stochastic policy); its keys are folded from the
    env's step keys, so the episodes' env randomness is the one a deterministic evaluation with `key` sees. All
    episodes run in parallel for the env's step limit; rewards after an episode's first end are ignored.
    """
    reset_key, key = jax.random.split(key)
    runner = reset(spec, reset_key, num_episodes)

    def body(carry, step_key):
        runner, total, alive = carry
        action = act(params, runner.obs, jax.random.fold_in(step_key, 1)) if sample else act(params, runner.obs)
        runner, result = step(spec, runner, action, step_key)
        total = total + result.reward * alive
        alive = alive * (1.0 - jnp.logical_or(result.terminated, result.truncated))
        return (runner, total, alive), None

    init = (runner, jnp.zeros((num_episodes,)), jnp.ones((num_episodes,)))
    (_, total, _), _ = jax.lax.scan(body, init, jax.random.split(key, spec.max_episode_steps))
    return total
