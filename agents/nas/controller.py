"""The controller of Zoph & Le (2017): an autoregressive policy over the architecture's decisions, trained by
REINFORCE with a moving-average baseline.

An LSTM reads the decisions one at a time (the space's order, `agents.nas.space`): at each position it gets the
embedding of the previous choice (a learned start vector first), and the head of the position's decision type
(`space.KINDS`: depth, filters, kernel, skip; one softmax head and one embedding table each) gives the logits of
its choice. A network's probability is the product over its active decisions (those of the layers below its depth,
always a prefix of the sequence: the inactive suffix sums out), so the log-probability of a canonical vector read
with teacher forcing is exactly that of the network it encodes.

The update (Zoph & Le's REINFORCE): for a batch of N sampled networks with rewards R_k (validation accuracies),

    loss = -(1/N) sum_k (R_k - b) log p(a_k) - beta (1/N) sum_k H_k

where H_k sums the entropies of a_k's active decisions (`ent_coef` beta, optional) and the baseline b is an
exponential moving average of the batches' mean rewards (`baseline_decay`), the first batch's own mean to start.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct
from flax.training.train_state import TrainState

from agents.nas.space import KINDS, SearchSpace, active, canonical
from lepton_jax.initializers import orthogonal
from lepton_jax.rl.distributions import Categorical
from lepton_jax.techniques import precision


class Controller(nn.Module):
    """`(key, forced=None) -> (choices (D,), log_probs (D,), entropies (D,))` for one sequence: sampled from the
    policy, or with `forced` (D,) the given choices read with teacher forcing. Per-decision values; inactive
    decisions included (see `log_prob`)."""

    space: SearchSpace
    hidden: int = 32

    def setup(self):
        self.cell = nn.LSTMCell(self.hidden, recurrent_kernel_init=orthogonal(), name="lstm")
        self.start = self.param("start", nn.initializers.normal(0.1), (self.hidden,))
        used = {d.kind for d in self.space.decisions}
        kinds = [kind for kind in KINDS if kind in used]
        self.heads = {kind: nn.Dense(self.space.choices(kind), name=f"head_{kind}") for kind in kinds}
        self.embeddings = {
            kind: nn.Embed(self.space.choices(kind), self.hidden, name=f"embed_{kind}") for kind in kinds
        }

    def __call__(self, key, forced=None):
        carry = (jnp.zeros(self.hidden), jnp.zeros(self.hidden))
        x = self.start
        keys = jax.random.split(key, self.space.length)
        choices, log_probs, entropies = [], [], []
        for t, decision in enumerate(self.space.decisions):
            carry, h = self.cell(carry, x)
            policy = Categorical(self.heads[decision.kind](h))
            choice = policy.sample(keys[t]) if forced is None else forced[t]
            choices.append(choice)
            log_probs.append(policy.log_prob(choice))
            entropies.append(policy.entropy())
            x = self.embeddings[decision.kind](choice)
        return jnp.stack(choices).astype(jnp.int32), jnp.stack(log_probs), jnp.stack(entropies)


def sample(model: Controller, params, key: jax.Array, num: int) -> jax.Array:
    """(num, D) canonical architectures drawn from the policy."""
    choices, _, _ = jax.vmap(lambda k: model.apply(params, k))(jax.random.split(key, num))
    return canonical(model.space, choices)


def log_prob(model: Controller, params, archs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(N,) log-probabilities of the networks `archs` (N, D) and (N,) the entropies of their active decisions."""
    _, log_probs, entropies = jax.vmap(lambda a: model.apply(params, jax.random.PRNGKey(0), a))(archs)
    mask = active(model.space, archs)
    return jnp.sum(log_probs * mask, -1), jnp.sum(entropies * mask, -1)


@struct.dataclass
class ControllerState:
    train_state: TrainState
    baseline: jax.Array  # () the moving average of the batches' mean rewards
    updates: jax.Array  # () int32: updates taken (the first sets the baseline)


def init(model: Controller, tx, key: jax.Array) -> ControllerState:
    params = model.init(key, jax.random.PRNGKey(0))
    train_state = TrainState.create(apply_fn=model.apply, params=params, tx=tx)
    return ControllerState(train_state, jnp.zeros(()), jnp.zeros((), jnp.int32))


def update(
    model: Controller, state: ControllerState, archs, rewards, ent_coef: float, baseline_decay: float
) -> tuple[ControllerState, dict]:
    """One REINFORCE step on the N networks `archs` (N, D) and their `rewards` (N,)."""
    mean = rewards.mean()
    baseline = jnp.where(state.updates == 0, mean, state.baseline)
    advantages = rewards - baseline

    def loss_fn(params):
        log_probs, entropies = log_prob(model, params, archs)
        return -jnp.mean(advantages * log_probs) - ent_coef * jnp.mean(entropies), entropies.mean()

    grad_fn = precision.value_and_grad(loss_fn, state.train_state.opt_state, has_aux=True)  # f16: loss scaled
    (loss, entropy), grads = grad_fn(state.train_state.params)
    new = ControllerState(
        state.train_state.apply_gradients(grads=grads),
        baseline_decay * baseline + (1.0 - baseline_decay) * mean,
        state.updates + 1,
    )
    metrics = {"train/controller_loss": loss, "train/entropy": entropy, "train/baseline": baseline}
    return new, metrics
