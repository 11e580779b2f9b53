"""A probe environment with known values, for tests that learning is right (not only that it happens).

`Probe-v0`: two steps per episode. The observation is `[cue, t]` with a random `cue` in {0, 1} drawn at reset.
The first step pays 0 whatever the action; the second pays 1 if the action equals the cue, else 0, and ends the
episode. So under the optimal policy, with discount gamma:

    Q(s_1, cue) = 1,  Q(s_1, other) = 0,  Q(s_0, a) = gamma for both a,  V(s_1) = 1,  V(s_0) = gamma,

which checks a one-step reward, discounting across a step and an action-dependent reward at once.
"""

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces


@struct.dataclass
class ProbeState(environment.EnvState):
    cue: jax.Array


@struct.dataclass
class ProbeParams(environment.EnvParams):
    max_steps_in_episode: int = 10  # never reached: episodes end after 2 steps


class Probe(environment.Environment):
    @property
    def default_params(self) -> ProbeParams:
        return ProbeParams()

    def reset_env(self, key, params):
        state = ProbeState(time=0, cue=jax.random.bernoulli(key).astype(jnp.int32))
        return self.get_obs(state), state

    def step_env(self, key, state, action, params):
        reward = jnp.where(state.time == 1, (action == state.cue).astype(jnp.float32), 0.0)
        state = state.replace(time=state.time + 1)
        terminated = state.time >= 2
        return self.get_obs(state), state, reward, terminated, {}

    def get_obs(self, state, params=None, key=None):
        return jnp.array([state.cue, state.time], jnp.float32)

    def is_terminated(self, state, params):
        return state.time >= 2

    @property
    def name(self) -> str:
        return "Probe-v0"

    @property
    def num_actions(self) -> int:
        return 2

    def action_space(self, params=None):
        return spaces.Discrete(2)

    def observation_space(self, params):
        return spaces.Box(0.0, 2.0, (2,), jnp.float32)


ENVS = {"Probe-v0": Probe}
