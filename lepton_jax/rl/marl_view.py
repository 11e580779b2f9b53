"""A multi-agent env seen as one gymnax env whose observation carries the episode so far, for recurrent agents.

`lepton_jax.rl.marl.GymnaxView` shows the shared RL loop (`lepton_jax.rl.loop`) a `MultiAgentEnv` as one gymnax env,
and the loop evaluates a policy with `envs.evaluate`, which calls `act(params, obs)` on each step's observation
alone. A recurrent agent's policy is a function of the episode's observations so far, not only of the last one, so
such an agent is evaluated on a `HistoryView` of its env instead (its `Agent.eval_spec`; `agents/qmix.py`): the same
env (the action the agents' stacked actions [A], the team reward, every end terminal) whose observation is a
`History`, `marl.Observation`'s fields plus the whole episode (zero past the current step `t`). `act` runs its
recurrent network over it from the first step, as training unrolls it: T(T + 1)/2 network steps per evaluated
episode of T steps, paid only in evaluation, and T x A x obs_dim more floats per observation, which is why it is not
every trainer's view.
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import spaces

from lepton_jax.rl import marl


class History(struct.PyTreeNode):
    """`HistoryView`'s observation (one env; a batch adds a leading axis to every leaf): `marl.Observation`'s fields
    and the episode so far."""

    obs: jax.Array  # [A, obs_dim]: each agent's current observation
    state: jax.Array  # [state_dim]: the current global state
    action_mask: jax.Array  # [A, num_actions] bool: the actions available now (read by `envs.masked_logits`)
    episode: jax.Array  # [T, A, obs_dim]: the episode's observations, step k's at [k], zero after the current step
    t: jax.Array  # int32 []: the current step, the index of `obs` in `episode`


@struct.dataclass
class ViewState:
    env_state: Any
    history: History


class HistoryView(marl.GymnaxView):
    """`marl.GymnaxView` (the same env, action, reward and ends) observing `History` instead of `marl.Observation`."""

    @staticmethod
    def _observe(step: marl.Step, episode: jax.Array, t: jax.Array) -> History:
        return History(step.obs, step.state, step.avail, episode.at[t].set(step.obs), t)

    def reset(self, key: jax.Array, params=None):
        first = self.env.reset(key)
        empty = jnp.zeros((self.env.max_steps, *first.obs.shape), first.obs.dtype)
        history = self._observe(first, empty, jnp.zeros((), jnp.int32))
        return history, ViewState(first.env_state, history)

    def step(self, key: jax.Array, state: ViewState, action: jax.Array, params=None):
        """One step of every agent; a finished episode's next observation starts a new, empty history."""
        out = self.env.step(key, state.env_state, action)
        last = state.history
        t = jnp.where(out.done, 0, jnp.minimum(last.t + 1, self.env.max_steps - 1))
        history = self._observe(out, jnp.where(out.done, jnp.zeros_like(last.episode), last.episode), t)
        # The multi-agent env keeps no last observation of a finished episode: `final_observation` is the new
        # episode's first (the evaluation, the only reader of this view, does not bootstrap from it).
        info = {"final_observation": history}
        return history, ViewState(out.env_state, history), out.reward, out.done, jnp.zeros((), bool), info

    def observation_space(self, params=None) -> spaces.Dict:
        env = self.env
        return spaces.Dict(
            super().observation_space(params).spaces
            | {
                "episode": spaces.Box(-jnp.inf, jnp.inf, (env.max_steps, env.num_agents, env.obs_dim)),
                "t": spaces.Discrete(env.max_steps),
            }
        )
