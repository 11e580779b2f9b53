"""Greedy and beam-search decoding with static shapes: one compiled program serves every input length.

The decoders take any `logits_fn(decoder_inputs (B, T)) -> logits (B, T, V)` whose position t depends on decoder
inputs 0..t only (a model's `decode` on an encoded input: `model_logits`). They write into a fixed (B, T + 1)
buffer, BOS first, one column per step of a `lax.fori_loop`, and rerun `logits_fn` on the whole buffer at each step
(reading column t): O(T^2) decoder work instead of a key-value cache, no matter at these lengths, and the same code
for the Transformer and the LSTM. The input's length never enters a shape: inputs are padded to the task's width, so
a batch of short and a batch of long inputs run the same program.

After a row's EOS the decoders write PAD (a finished beam continues with PAD at no cost), so the outputs compare
directly with padded targets.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from lepton_jax.sequence.tasks import BOS, EOS, PAD

LogitsFn = Callable[[jax.Array], jax.Array]
NEG = -1e9  # the score of an impossible beam: finite, so sums of it never give NaN


def _start(shape) -> jax.Array:
    """The decoding buffer: BOS in column 0, PAD after: `shape[:-1] + (T + 1,)` for `shape[-1]` = T."""
    return jnp.full((*shape[:-1], shape[-1] + 1), PAD, jnp.int32).at[..., 0].set(BOS)


def greedy(logits_fn: LogitsFn, batch_size: int, length: int) -> jax.Array:
    """The most likely token at each step, given the ones chosen before.

    Returns:
      (B, T) int32: the decoded tokens (the EOS, then PAD).
    """

    def step(t, carry):
        tokens, finished = carry
        chosen = jnp.argmax(logits_fn(tokens[:, :-1])[:, t], -1).astype(jnp.int32)  # (B,)
        chosen = jnp.where(finished, PAD, chosen)
        return tokens.at[:, t + 1].set(chosen), finished | (chosen == EOS)

    tokens, _ = jax.lax.fori_loop(0, length, step, (_start((batch_size, length)), jnp.zeros(batch_size, bool)))
    return tokens[:, 1:]


def beam_search(logits_fn: LogitsFn, batch_size: int, length: int, beam_size: int) -> tuple[jax.Array, jax.Array]:
    """The `beam_size` most likely partial sequences kept at each step (summed log-probabilities, no length
    penalty); the best at the end, finished (EOS) or not.

    Each step scores every (beam, next token) pair, K x V candidates per row, and keeps the top K. At the first
    step only beam 0 is alive (the others score `NEG`), so the K beams start distinct.

    Returns:
      `(tokens (B, T) int32, scores (B,))`: the best sequence per row and its log-probability.
    """
    vocab_logits = jax.vmap(logits_fn, in_axes=1, out_axes=1)  # (B, K, T) -> (B, K, T, V)

    def step(t, carry):
        tokens, scores, finished = carry
        log_probs = jax.nn.log_softmax(vocab_logits(tokens[:, :, :-1])[:, :, t].astype(jnp.float32))  # (B, K, V)
        vocab = log_probs.shape[-1]
        pad_only = jnp.where(jnp.arange(vocab) == PAD, 0.0, NEG)  # a finished beam: PAD, no cost
        log_probs = jnp.where(finished[..., None], pad_only, log_probs)
        candidates = (scores[..., None] + log_probs).reshape(batch_size, beam_size * vocab)
        scores, picked = jax.lax.top_k(candidates, beam_size)  # (B, K)
        parent, token = picked // vocab, (picked % vocab).astype(jnp.int32)
        tokens = jnp.take_along_axis(tokens, parent[..., None], axis=1).at[:, :, t + 1].set(token)
        finished = jnp.take_along_axis(finished, parent, axis=1) | (token == EOS)
        return tokens, scores, finished

    scores = jnp.where(jnp.arange(beam_size) == 0, 0.0, NEG) * jnp.ones((batch_size, 1))
    start = (_start((batch_size, beam_size, length)), scores, jnp.zeros((batch_size, beam_size), bool))
    tokens, scores, _ = jax.lax.fori_loop(0, length, step, start)
    best = jnp.argmax(scores, axis=1)
    rows = jnp.arange(batch_size)
    return tokens[rows, best, 1:], scores[rows, best]


def sequence_log_prob(logits_fn: LogitsFn, tokens) -> jax.Array:
    """The log-probability `logits_fn` gives `tokens` (B, T): the sum over the tokens up to and including the first
    EOS (PAD after it counts nothing): (B,)."""
    decoder_inputs = jnp.concatenate([jnp.full_like(tokens[:, :1], BOS), tokens[:, :-1]], axis=1)
    log_probs = jax.nn.log_softmax(logits_fn(decoder_inputs).astype(jnp.float32))
    picked = jnp.take_along_axis(log_probs, tokens[..., None], axis=-1)[..., 0]  # (B, T)
    ended_before = jnp.cumsum(tokens == EOS, axis=1) - (tokens == EOS) > 0
    return jnp.sum(jnp.where(ended_before, 0.0, picked), axis=1)


def model_logits(model, params, inputs) -> LogitsFn:
    """`logits_fn` of a `models` encoder-decoder on `inputs` (B, S): encodes once, decodes on every call."""
    encoded = model.apply(params, inputs, method="encode")
    return lambda decoder_inputs: model.apply(params, encoded, decoder_inputs, method="decode")[0]


def greedy_decode(model, params, inputs, length: int) -> jax.Array:
    """`greedy` on a model's encoding of `inputs` (B, S): (B, `length`) tokens."""
    return greedy(model_logits(model, params, inputs), inputs.shape[0], length)


def beam_decode(model, params, inputs, length: int, beam_size: int) -> tuple[jax.Array, jax.Array]:
    """`beam_search` on a model's encoding of `inputs` (B, S): `(tokens (B, length), scores (B,))`."""
    return beam_search(model_logits(model, params, inputs), inputs.shape[0], length, beam_size)
