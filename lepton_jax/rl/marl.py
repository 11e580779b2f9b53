"""Multi-agent environments behind one stacked-agent interface, for the multi-agent trainers.

Every environment, JaxMARL's or the project's own, is a `MultiAgentEnv`: the agents stacked along a leading axis in a
fixed order (the env's own `agents` list), a team reward, one `done` for the episode, per-agent action masks and a
global state for centralised critics and mixers. `reset` and `step` are pure functions of a key and arrays, so they
jit and vmap like the gymnax envs; `step` resets a finished episode itself (the observation it returns is then the new
episode's first one, as `lepton_jax.rl.envs` does for gymnax).

    reset(key) -> Step
    step(key, env_state, actions [A] int32) -> Step

`make(name)` builds one by name; an unknown name stops in one line listing the valid ones. `register(name, builder)`
adds an env (another module's, e.g. a matrix game).

Every registered name is also an env of `lepton_jax.rl.envs.make_env` (`GymnaxView`): a single gymnax-style env whose
observation is the agents' `Observation` (obs, global state, action mask) and whose action is the agents' [A] joint
action, with the team reward. The single-agent machinery (the `EnvRunner`'s episode bookkeeping, `envs.evaluate`, the
chunked loop) then runs multi-agent envs unchanged, and an agent's network reads the `Observation`.

JaxMARL (`jaxmarl`, 0.2.0) is imported on first use, not with this module: it takes seconds.
"""

import dataclasses
import functools
import io
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import spaces

from lepton_jax.errors import UserError
from lepton_jax.rl import envs


class Step(NamedTuple):
    """What `reset` and `step` return; A agents."""

    obs: jax.Array  # [A, obs_dim] float32, each agent's own observation
    state: jax.Array  # [state_dim] float32, the global state (centralised critics, mixers)
    avail: jax.Array  # [A, num_actions] bool, the actions each agent may take now
    env_state: Any  # the env's own state pytree
    reward: jax.Array  # [] float32, the team reward of the step (0 after `reset`)
    done: jax.Array  # [] bool, the episode ended at this step (its next observation is a new episode's first)


@dataclasses.dataclass(frozen=True)
class MultiAgentEnv:
    """A multi-agent environment with the agents stacked in a fixed order (`agents`)."""

    name: str
    agents: tuple[str, ...]
    obs_dim: int
    state_dim: int
    num_actions: int
    max_steps: int  # the episode's length limit
    reset: Callable[[jax.Array], Step]
    step: Callable[[jax.Array, Any, jax.Array], Step]
    source: Any = None  # the env wrapped, e.g. JaxMARL's (for its renderers and for tests); None for the project's
    # An episode whose team return exceeds this is won (SMAX: the won-battle bonus of 1 on top of damage rewards that
    # add up to at most 1); evaluation then reports `eval/win_rate`. None: the env has no win.
    win_return: float | None = None

    @property
    def num_agents(self) -> int:
        return len(self.agents)


# ---- The registry ---------------------------------------------------------------------------------------------------

# name -> builder(**kwargs) -> MultiAgentEnv; filled below and by `register`.
ENVS: dict[str, Callable[..., MultiAgentEnv]] = {}


def names() -> list[str]:
    """The registered env names, in registration order."""
    return list(ENVS)


def register(name: str, builder: Callable[..., MultiAgentEnv]) -> None:
    """Makes `make(name, **kwargs)` return `builder(**kwargs)`, and `lepton_jax.rl.envs.make_env(name)` its
    `GymnaxView` (with the builder's defaults)."""
    ENVS[name] = builder
    envs.register_family(name, _gymnax_family, name)


def make(name: str, **kwargs) -> MultiAgentEnv:
    """The env `name`, its JaxMARL constructor given `kwargs` (e.g. `local_ratio=0.0` for MPE simple spread).

    Raises:
      UserError: an unknown name (the message lists the valid ones).
    """
    if name not in ENVS:
        raise UserError(f"unknown multi-agent env '{name}'; valid multi-agent envs: {', '.join(names())}")
    return ENVS[name](**kwargs)


def check_team_config(config, env_name: str | None = None) -> None:
    """A team trainer's config (IPPO, MAPPO, VDN, QMIX): a multi-agent env (`env_name`, default `config.env_name`),
    and no time-limit bootstrap (the multi-agent envs report none: every episode end is terminal, as in JaxMARL's
    baselines).

    Raises:
      UserError: one line naming the key, the value and what to choose instead.
    """
    env_name = env_name or config.env_name
    if env_name not in ENVS:
        raise UserError(
            f"config.env_name={env_name}: {config.trainer} trains a team of agents; choose a multi-agent env: "
            f"{', '.join(names())}"
        )
    if config.get("bootstrap_truncated", False):
        raise UserError(
            "config.bootstrap_truncated=True: the multi-agent envs report no time-limit cut (every episode end is "
            "terminal); set it to False"
        )


# ---- JaxMARL's envs -------------------------------------------------------------------------------------------------


def _import_jaxmarl():
    """`import jaxmarl`, without the lines it prints on stdout.

    One of its modules puts `sys.__stdout__` (and `__stderr__`) back in place while it is imported, so
    `contextlib.redirect_stdout` alone misses what is printed after it: the dunders point at the sink meanwhile.
    """
    saved = sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__
    sink = io.StringIO()
    sys.stdout = sys.__stdout__ = sink
    try:
        import jaxmarl  # noqa: PLC0415 (lazy: it takes seconds)
    finally:
        sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__ = saved
    return jaxmarl


def from_jaxmarl(
    name: str,
    env,
    global_state: Callable[[jax.Array, dict], jax.Array],
    state_dim: int,
    team_reward: Callable[[jax.Array], jax.Array],
    avail=None,
) -> MultiAgentEnv:
    """A JaxMARL env as a `MultiAgentEnv`, its agents stacked in `env.agents` order.

    Args:
      name: the registered name.
      env: the JaxMARL env; its agents share one observation size and one discrete action space.
      global_state: `(stacked obs [A, obs_dim], JaxMARL's obs dict) -> [state_dim]`.
      state_dim: its size.
      team_reward: the agents' rewards [A] -> the team's [].
      avail: `env_state -> {agent: mask}` (JaxMARL's `get_avail_actions`), or None: every action is always available.

    The episode ends at `dones["__all__"]`; JaxMARL's `step` then resets it (the observation, state and masks
    returned are the new episode's).
    """
    agents = tuple(env.agents)
    obs_shapes = {tuple(env.observation_space(a).shape) for a in agents}
    action_spaces = {getattr(env.action_space(a), "n", None) for a in agents}
    if len(obs_shapes) != 1 or len(action_spaces) != 1 or None in action_spaces:
        raise ValueError(f"{name}: the agents' observation sizes {obs_shapes} or discrete action spaces differ")
    (obs_shape,), (num_actions,) = obs_shapes, action_spaces

    def observe(obs_dict, env_state, reward, done) -> Step:
        obs = jnp.stack([obs_dict[a] for a in agents]).astype(jnp.float32)  # [A, obs_dim]
        if avail is None:
            mask = jnp.ones((len(agents), num_actions), bool)
        else:
            masks = avail(env_state)
            mask = jnp.stack([masks[a] for a in agents]).astype(bool)  # [A, num_actions]
        state = global_state(obs, obs_dict).astype(jnp.float32)
        return Step(obs, state, mask, env_state, jnp.asarray(reward, jnp.float32), jnp.asarray(done, bool))

    def reset(key) -> Step:
        obs_dict, env_state = env.reset(key)
        return observe(obs_dict, env_state, 0.0, False)

    def step(key, env_state, actions) -> Step:
        obs_dict, env_state, rewards, dones, _ = env.step(key, env_state, {a: actions[i] for i, a in enumerate(agents)})
        reward = team_reward(jnp.stack([rewards[a] for a in agents]))
        return observe(obs_dict, env_state, reward, dones["__all__"])

    # JaxMARL ends an episode when its step counter, compared before it is incremented, reaches `max_steps`: an
    # episode lasts at most max_steps + 1 steps (26 for MPE's 25).
    return MultiAgentEnv(name, agents, obs_shape[0], state_dim, num_actions, env.max_steps + 1, reset, step, env)


def _mpe(jaxmarl_name: str) -> Callable[..., MultiAgentEnv]:
    def build(**kwargs) -> MultiAgentEnv:
        env = _import_jaxmarl().make(jaxmarl_name, **kwargs)
        obs_dim = env.observation_space(env.agents[0]).shape[0]
        # The global state of JaxMARL's MAPPO (its MPE world-state wrapper): every agent's observation, in order.
        # The team reward is the agents' mean: simple spread adds each agent's own collision penalty to a shared
        # term (`local_ratio`), and the per-agent mean is the return JaxMARL's baselines report.
        return from_jaxmarl(jaxmarl_name, env, lambda obs, _: obs.reshape(-1), env.num_agents * obs_dim, jnp.mean)

    return build


def _world_state(obs, obs_dict):
    """SMAX's global state: the world state its observations carry (every unit's features, team and type)."""
    return obs_dict["world_state"]


def _first_agents(rewards):
    """SMAX gives every ally the same reward, the team's (its `compute_reward`): the team reward is any agent's."""
    return rewards[0]


# The settings of JaxMARL's SMAX baselines (their config files' ENV_KWARGS).
SMAX_DEFAULTS = {"see_enemy_actions": True, "walls_cause_death": True, "attack_mode": "closest"}


def _smax(map_name: str) -> Callable[..., MultiAgentEnv]:
    def build(**kwargs) -> MultiAgentEnv:
        jaxmarl = _import_jaxmarl()
        from jaxmarl.environments.smax import map_name_to_scenario  # noqa: PLC0415

        # The allies learn; the enemies follow JaxMARL's heuristic policy.
        env = jaxmarl.make("HeuristicEnemySMAX", scenario=map_name_to_scenario(map_name), **(SMAX_DEFAULTS | kwargs))
        multi = from_jaxmarl(
            f"SMAX_{map_name}", env, _world_state, env.state_size, _first_agents, env.get_avail_actions
        )
        # The team's damage reward is each enemy's lost share of its health, summed over an episode to at most 1; a
        # won battle adds `won_battle_bonus` (1). So a return above 1 is a win (JaxMARL counts the bonus step).
        return dataclasses.replace(multi, win_return=1.0)

    return build


# ---- Multi-agent envs as gymnax envs --------------------------------------------------------------------------------


class Observation(NamedTuple):
    """A `GymnaxView`'s observation: what an agent's network reads. Leaves gain leading batch axes when batched."""

    obs: jax.Array  # [A, obs_dim]
    state: jax.Array  # [state_dim]
    action_mask: jax.Array  # [A, num_actions] bool; the name `lepton_jax.rl.envs.action_mask` looks for


def with_ids(x: jax.Array) -> jax.Array:
    """(..., A, D) -> (..., A, D + A): each agent's row with the one-hot of its index appended (agents sharing one
    network's parameters tell themselves apart by it)."""
    num_agents = x.shape[-2]
    ids = jnp.broadcast_to(jnp.eye(num_agents, dtype=x.dtype), (*x.shape[:-1], num_agents))
    return jnp.concatenate([x, ids], axis=-1)


@struct.dataclass
class ViewParams:
    max_steps_in_episode: int = struct.field(pytree_node=False)


class GymnaxView:
    """A `MultiAgentEnv` as a gymnax env: observation `Observation`, action the [A] joint action, the team reward.

    `terminated` is the episode's `done` and `truncated` is always False: the interface has no time-limit flag, and
    JaxMARL's baselines treat every end as terminal (agents must not bootstrap, so `final_observation` is unused and
    is the new episode's observation).
    """

    def __init__(self, env: MultiAgentEnv):
        self.env = env
        self.default_params = ViewParams(env.max_steps)

    @property
    def win_return(self) -> float | None:
        """The env's win threshold, read by the RL loop's evaluation (`eval/win_rate`)."""
        return self.env.win_return

    @staticmethod
    def _observation(step: Step) -> Observation:
        return Observation(step.obs, step.state, step.avail)

    def reset(self, key, params=None):
        step = self.env.reset(key)
        return self._observation(step), step.env_state

    def step(self, key, state, action, params=None):
        step = self.env.step(key, state, action)
        obs = self._observation(step)
        return obs, step.env_state, step.reward, step.done, jnp.zeros_like(step.done), {"final_observation": obs}

    def observation_space(self, params=None):
        env = self.env
        return spaces.Dict(
            {
                "obs": spaces.Box(-jnp.inf, jnp.inf, (env.num_agents, env.obs_dim)),
                "state": spaces.Box(-jnp.inf, jnp.inf, (env.state_dim,)),
                "action_mask": spaces.Box(0, 1, (env.num_agents, env.num_actions), bool),
            }
        )

    def action_space(self, params=None):
        return spaces.Discrete(self.env.num_actions)  # each agent's; the action is one of them per agent


def _gymnax_family(name: str):
    """`lepton_jax.rl.envs`' factory for the registered names: `(GymnaxView, its params)`."""
    view = GymnaxView(make(name))
    return view, view.default_params


# Cooperative MPE scenarios whose agents share one observation size and action space.
for _name in ("MPE_simple_spread_v3", "MPE_simple_reference_v3"):
    register(_name, _mpe(_name))
for _map in ("3m", "2s3z"):
    register(f"SMAX_{_map}", _smax(_map))

# The project's own matrix games (imported last: they build on `MultiAgentEnv` and `Step` above).
from lepton_jax.rl import matrix_games  # noqa: E402

for _name in matrix_games.NAMES:
    register(_name, functools.partial(matrix_games.builder, _name))
