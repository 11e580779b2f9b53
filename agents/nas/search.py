"""The search methods, one interface: each proposes a batch of N architectures, is told their rewards (the
children's validation accuracies), and proposes again. All three spend the same child budget: N children a step.

- `controller`: Zoph & Le 2017: sample from the LSTM policy, one REINFORCE update per batch
  (`agents.nas.controller`).
- `random`: random search (Li & Talwalkar 2019's baseline): every batch drawn uniformly (`space.uniform`).
- `evolution`: regularised (aging) evolution (Real et al. 2019): the population is the `population_size` children
  evaluated last; each new child is a mutation of the best of `tournament_size` members drawn from it without
  replacement; the first `population_size` children are random. A mutation changes one active decision, chosen
  uniformly, to another of its values, chosen uniformly. The N children of a step are N tournaments on the same
  population (Real et al.'s parallel workers).

A method's state is its own (`extra`: the controller's parameters, nothing for the others) beside the `History`
every method keeps: the architectures and rewards of all children so far (a static buffer of steps x N), which
gives the best-so-far child, the count of distinct networks and the evolution's population.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from agents.nas import METHODS
from agents.nas import controller as controller_lib
from agents.nas.space import SearchSpace, active, canonical, uniform
from lepton_jax.techniques import optim


@struct.dataclass
class History:
    """Every child evaluated by one search (T = steps x N slots, filled in order)."""

    archs: jax.Array  # (T, D) int32
    rewards: jax.Array  # (T,) float32 (-inf: not yet filled)
    count: jax.Array  # () int32: children evaluated
    best_arch: jax.Array  # (D,) the best child so far (the first of equals)
    best_reward: jax.Array  # ()

    @classmethod
    def create(cls, capacity: int, length: int) -> "History":
        archs = jnp.zeros((capacity, length), jnp.int32)
        return cls(
            archs,
            jnp.full(capacity, -jnp.inf, jnp.float32),
            jnp.zeros((), jnp.int32),
            archs[0],
            jnp.array(-jnp.inf, jnp.float32),
        )

    def record(self, archs: jax.Array, rewards: jax.Array) -> "History":
        """Appends a batch (N, D), (N,)."""
        index = self.count + jnp.arange(archs.shape[0])
        best = jnp.argmax(rewards)  # the first of equals
        better = rewards[best] > self.best_reward
        return History(
            self.archs.at[index].set(archs),
            self.rewards.at[index].set(rewards),
            self.count + archs.shape[0],
            jnp.where(better, archs[best], self.best_arch),
            jnp.where(better, rewards[best], self.best_reward),
        )


class Method(NamedTuple):
    """A search method: `init(key) -> extra`; `propose(extra, history, key) -> archs (N, D)`;
    `observe(extra, archs, rewards) -> (extra, metrics)` (`train/...` scalars)."""

    init: Callable[[jax.Array], Any]
    propose: Callable[[Any, History, jax.Array], jax.Array]
    observe: Callable[[Any, jax.Array, jax.Array], tuple[Any, dict]]


def mutate(space: SearchSpace, key: jax.Array, arch: jax.Array) -> jax.Array:
    """`arch` (D,) with one active decision (uniform) changed to another of its values (uniform); canonical."""
    position_key, value_key = jax.random.split(key)
    position = jax.random.categorical(position_key, jnp.where(active(space, arch), 0.0, -jnp.inf))
    choices = jnp.asarray(space.num_choices)[position]
    # One of the other values: the current one shifted by 1 .. choices-1 (a one-valued decision stays as it is).
    shift = 1 + jax.random.randint(value_key, (), 0, jnp.maximum(choices - 1, 1))
    return canonical(space, arch.at[position].set((arch[position] + shift) % choices))


def evolve(space: SearchSpace, history: History, key: jax.Array, num: int, population: int, tournament: int):
    """(num, D) children of regularised evolution; random ones until `population` children have been evaluated."""
    random_key, pick_key, mutate_key = jax.random.split(key, 3)
    members = history.count - population + jnp.arange(population)  # the newest `population` slots

    def child(pick, change):
        drawn = members[jax.random.permutation(pick, population)[:tournament]]
        parent = history.archs[drawn[jnp.argmax(history.rewards[drawn])]]
        return mutate(space, change, parent)

    children = jax.vmap(child)(jax.random.split(pick_key, num), jax.random.split(mutate_key, num))
    return jnp.where(history.count >= population, children, uniform(space, random_key, num))


def make_method(name: str, config, space: SearchSpace, num_steps: int) -> Method:
    """The method `name` (one of METHODS) with the config's settings; `num_steps` the run's search steps."""
    num = int(config.children_per_step)
    if name == "random":
        return Method(lambda key: {}, lambda extra, history, key: uniform(space, key, num), lambda e, a, r: (e, {}))
    if name == "evolution":
        population, tournament = int(config.population_size), int(config.tournament_size)

        def propose(extra, history, key):
            return evolve(space, history, key, num, population, tournament)

        return Method(lambda key: {}, propose, lambda e, a, r: (e, {}))
    if name == "controller":
        model = controller_lib.Controller(space, int(config.hidden))
        tx = optim.make(config, num_steps)

        def observe(extra, archs, rewards):
            return controller_lib.update(model, extra, archs, rewards, config.ent_coef, config.baseline_decay)

        return Method(
            lambda key: controller_lib.init(model, tx, key),
            lambda extra, history, key: controller_lib.sample(model, extra.train_state.params, key, num),
            observe,
        )
    raise ValueError(f"unknown search method {name!r}; valid: {', '.join(METHODS)}")
