"""The contract every agent implements, and the pure `train(rng)` built from it.

An agent file defines `make_agent(config, env_spec) -> Agent`. Its state is a `flax.struct.dataclass` with at
least these fields, which the shared loop relies on:

- `train_state`: a `flax.training.train_state.TrainState` (the parameters evaluated, hashed and plotted);
- `env`: an `lepton_jax.rl.envs.EnvRunner`, whose leaves carry the env axis that is split across devices;
- `rng`: the agent's PRNG key.

Everything else in the state (target networks, replay buffers, normalisers, ...) is the agent's own business and
is checkpointed with the rest.

An agent that can sweep hyperparameters (`lepton_jax.rl.sweep`) lists them in `Agent.sweepable`, has a state field
`hparams` (a dict, `{}` by default; the loop puts each run's values there) and builds its `update` with
`sweep.bind(config, update_fn)`: `update_fn(hp, state)` is given the run's `sweep.HyperParams` instead of the
config, and reads every hyperparameter from it.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from lepton_jax.errors import UserError


class Agent(NamedTuple):
    """A whole RL algorithm as pure functions of one seed's state (vmap them over seeds)."""

    init: Callable[[jax.Array], Any]  # rng -> state
    update: Callable[[Any], tuple[Any, dict]]  # state -> (state, scalar metrics); one collect-and-learn step
    act: Callable[[Any, jax.Array], jax.Array]  # (params, obs batch) -> deterministic actions, for evaluation
    num_updates: int
    steps_per_update: int  # env steps per update, per seed
    sweepable: tuple[str, ...] = ()  # hyperparameters `update` can take traced from `state.hparams` (module doc)
    # (params, obs batch, key) -> actions drawn from the policy, for `config.eval_sampled`; None: deterministic
    sample: Callable[[Any, jax.Array, jax.Array], jax.Array] | None = None
    # The env (an `envs.EnvSpec`) evaluation runs on when the agent acts on its own view of the named env (e.g. a
    # recurrent agent reading the episode so far: `lepton_jax.rl.marl_view`); None: the env the loop built.
    eval_spec: Any = None


def with_hparams(agent: Agent, rng: jax.Array, hparams: dict | None):
    """`agent.init(rng)` with the run's swept hyperparameters `{name: scalar}` put in its state (none: as is)."""
    state = agent.init(rng)
    if not hparams:
        return state
    unknown = sorted(set(hparams) - set(agent.sweepable))
    if unknown:
        raise UserError(f"this agent cannot sweep {', '.join(unknown)}; it can sweep {', '.join(agent.sweepable)}")
    return state.replace(hparams={name: jnp.asarray(value, jnp.float32) for name, value in hparams.items()})


def keep_when_ready(state, ready: jax.Array, learn: Callable[[Any], tuple[tuple, dict]]):
    """An off-policy update's learning, computed every update and kept once `ready` (a per-seed bool).

    Vmapped over seeds (as the loop runs it), a `cond` on the per-seed `ready` would run both branches anyway, and it
    would also select between its operands, the replay buffer among them, which a buffer in host memory
    (`placement.replay`) cannot be; this selects only what learning changes. `learn(state)` returns
    `((train_state, target_params, rng), metrics)`; before `ready` the metrics are NaN (the loop's `learning` metric
    says they are not divergence).

    Returns:
      (state with the kept train state, target parameters and rng, metrics).
    """
    learned, metrics = learn(state)
    idle = jax.tree.map(lambda m: jnp.full(m.shape, jnp.nan, m.dtype), metrics)
    unchanged = (state.train_state, state.target_params, state.rng)
    (train_state, target_params, rng), metrics = jax.tree.map(
        lambda new, old: jnp.where(ready, new, old), (learned, metrics), (unchanged, idle)
    )
    return state.replace(train_state=train_state, target_params=target_params, rng=rng), metrics


def run_updates(agent: Agent, state, num: int):
    """Runs `num` updates in one `lax.scan`; metrics come back stacked (num,)."""
    return jax.lax.scan(lambda s, _: agent.update(s), state, None, length=num)


def run_updates_masked(agent: Agent, state, num, length: int):
    """Runs the first `num` of `length` updates; `num` may be traced, so one compiled program serves every chunk.

    The launcher compiles this once for `length = chunk_updates` and passes a smaller `num` for the last chunk,
    instead of compiling a second program for it. Metrics of skipped updates are NaN.
    """
    metrics_shape = jax.eval_shape(lambda s: agent.update(s)[1], state)
    skipped = jax.tree.map(lambda m: jnp.full(m.shape, jnp.nan, m.dtype), metrics_shape)

    def body(state, i):
        return jax.lax.cond(i < num, agent.update, lambda s: (s, skipped), state)

    return jax.lax.scan(body, state, jnp.arange(length))


def make_train(agent: Agent) -> Callable[..., tuple[Any, dict]]:
    """The whole training run as one pure function `train(rng, hparams=None) -> (state, metrics)`.

    Vmappable over seeds, and over swept hyperparameters: `jax.vmap(train)(keys, {"lr": lrs})` trains one run per
    (key, lr) pair in one program (names from `agent.sweepable`).
    """

    def train(rng, hparams=None):
        return run_updates(agent, with_hparams(agent, rng, hparams), agent.num_updates)

    return train
