"""Generated sequence-to-sequence tasks: no files, every example drawn on the device from a PRNG key.

- `addition` (the Flax seq2seq example's): "a+b" as characters -> the sum as characters, a and b drawn uniformly
  from [0, 10^max_digits).
- `reversal`: a string of `min_length`..`max_length` random digits -> the same digits in reverse order.
- `sorting`: such a string -> its digits in ascending order.

One vocabulary for all (`VOCAB`: pad, bos, eos, the ten digits, '+'). Every batch has static shapes: the inputs are
left-aligned in `input_length` columns and the targets (the answer, then eos) in `target_length` columns, the rest
`PAD`, so that one compiled program serves every length; the padding masks say which columns are real. Both widths
hold the length-generalisation set too: its inputs are 1..`longer_by` characters (addition: operand digits) longer
than any trained on (`SequenceTask.sample_long`).
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

TASKS = ("addition", "reversal", "sorting")
VOCAB = ("<pad>", "<bos>", "<eos>", *"0123456789", "+")
PAD, BOS, EOS, ZERO, PLUS = 0, 1, 2, 3, 13  # ZERO: the token of digit 0; digit d is ZERO + d
MAX_SUM_DIGITS = 9  # addition draws int32 operands: a + b < 2 * 10^9 < 2^31


class Batch(NamedTuple):
    """Examples of a task, padded to its widths."""

    inputs: jax.Array  # (B, S) int32: the question's tokens, then PAD
    targets: jax.Array  # (B, T) int32: the answer's tokens, EOS, then PAD


class SequenceTask(NamedTuple):
    """A generated task: its padded widths and its two samplers, `(key, n) -> Batch` of n examples.

    sample: the training distribution (the test set is a seeded draw from it).
    sample_long: the length-generalisation distribution: every input longer than any `sample` draws.
    """

    name: str
    input_length: int  # S
    target_length: int  # T
    sample: Callable[[jax.Array, int], Batch]
    sample_long: Callable[[jax.Array, int], Batch]


def decoder_inputs(targets):
    """Teacher forcing's decoder inputs: BOS, then the targets shifted right by one: (B, T)."""
    return jnp.concatenate([jnp.full_like(targets[:, :1], BOS), targets[:, :-1]], axis=1)


def padding_mask(tokens):
    """True where a column holds a token, False where it is padding: the shape of `tokens`."""
    return tokens != PAD


def text(tokens) -> str:
    """One row of tokens as characters: the digits and '+' up to the first EOS (PAD skipped)."""
    chars = []
    for token in np.asarray(tokens).tolist():
        if token == EOS:
            break
        if token != PAD:
            chars.append(VOCAB[token])
    return "".join(chars)


def concatenate(pieces, width: int):
    """Variable-length pieces one after another, left-aligned in `width` columns, the rest PAD.

    Args:
      pieces: `(tokens (B, w), lengths (B,))` pairs: the first `lengths[b]` tokens of row b are its piece.
      width: the columns of the result (a piece's tokens past it are dropped).

    Returns:
      (B, width) int32.
    """
    rows = pieces[0][0].shape[0]
    out = jnp.full((rows, width), PAD, jnp.int32)
    start = jnp.zeros((rows,), jnp.int32)
    for tokens, lengths in pieces:
        columns = start[:, None] + jnp.arange(tokens.shape[1])
        columns = jnp.where(jnp.arange(tokens.shape[1]) < lengths[:, None], columns, width)  # width: dropped
        out = out.at[jnp.arange(rows)[:, None], columns].set(tokens.astype(jnp.int32), mode="drop")
        start = start + lengths
    return out


def number_tokens(numbers, width: int):
    """Non-negative int32 numbers as decimal digit tokens, most significant first.

    Returns:
      `(tokens (B, width), lengths (B,))`: the first `lengths[b]` columns of row b are its digits (no leading
      zeros; 0 is one digit), the rest PAD. `width` must hold the longest number (at most 10 digits).
    """
    powers = jnp.asarray([10**i for i in range(width)], jnp.int32)  # (width,); 10^9 still fits int32
    lengths = 1 + jnp.sum(numbers[:, None] >= powers[1:], axis=1)
    exponents = lengths[:, None] - 1 - jnp.arange(width)  # column j holds the digit of 10^(length - 1 - j)
    digits = (numbers[:, None] // powers[jnp.maximum(exponents, 0)]) % 10
    return jnp.where(exponents >= 0, ZERO + digits, PAD), lengths


def _single(token: int, rows: int):
    """A one-token piece for `concatenate`."""
    return jnp.full((rows, 1), token, jnp.int32), jnp.ones((rows,), jnp.int32)


def _addition(key, n: int, low: int, high: int, long: bool, widths: tuple[int, int], digits: int) -> Batch:
    """n sums of operands drawn from [0, high); with `long`, one of them (either, at random) from [low, high)."""
    key_a, key_b, key_swap = jax.random.split(key, 3)
    a = jax.random.randint(key_a, (n,), low if long else 0, high, jnp.int32)
    b = jax.random.randint(key_b, (n,), 0, high, jnp.int32)
    if long:  # the longer operand on either side of the '+'
        swap = jax.random.bernoulli(key_swap, 0.5, (n,))
        a, b = jnp.where(swap, b, a), jnp.where(swap, a, b)
    inputs = concatenate([number_tokens(a, digits), _single(PLUS, n), number_tokens(b, digits)], widths[0])
    targets = concatenate([number_tokens(a + b, digits + 1), _single(EOS, n)], widths[1])
    return Batch(inputs, targets)


def _digit_strings(key, n: int, low: int, high: int, name: str, widths: tuple[int, int]) -> Batch:
    """n strings of low..high random digits (lengths uniform), and their reversal or sorting."""
    key_length, key_digits = jax.random.split(key)
    lengths = jax.random.randint(key_length, (n,), low, high + 1, jnp.int32)
    digits = jax.random.randint(key_digits, (n, widths[0]), 0, 10, jnp.int32)
    real = jnp.arange(widths[0]) < lengths[:, None]  # (n, S)
    inputs = jnp.where(real, ZERO + digits, PAD)
    if name == "reversal":
        answer = jnp.take_along_axis(digits, jnp.maximum(lengths[:, None] - 1 - jnp.arange(widths[0]), 0), axis=1)
    else:  # the padding columns sort last (10 > every digit) and are cut off by the lengths
        answer = jnp.sort(jnp.where(real, digits, 10), axis=1)
    targets = concatenate([(ZERO + answer, lengths), _single(EOS, n)], widths[1])
    return Batch(inputs, targets)


def make_task(name: str, *, max_digits: int = 3, min_length: int = 1, max_length: int = 8, longer_by: int = 2):
    """The `SequenceTask` called `name`.

    Args:
      name: one of `TASKS`.
      max_digits: addition: operands have up to this many digits (the long set: `max_digits + 1` up to
        `max_digits + longer_by` for one operand, the other up to as many).
      min_length, max_length: reversal and sorting: the input's length range (the long set: `max_length + 1` up
        to `max_length + longer_by`).
      longer_by: how much longer the length-generalisation inputs may be.

    Raises:
      ValueError: an unknown name, or an addition whose operands would overflow int32.
    """
    if name == "addition":
        if max_digits + longer_by > MAX_SUM_DIGITS:
            raise ValueError(f"addition: max_digits + longer_by must be <= {MAX_SUM_DIGITS}")
        digits = max_digits + longer_by
        widths = (2 * digits + 1, digits + 2)  # "a+b"; the sum's digits and EOS
        known, longest = 10**max_digits, 10**digits

        def sample(key, n):
            return _addition(key, n, 0, known, False, widths, digits)

        def sample_long(key, n):
            return _addition(key, n, known, longest, True, widths, digits)

    elif name in ("reversal", "sorting"):
        widths = (max_length + longer_by, max_length + longer_by + 1)

        def sample(key, n):
            return _digit_strings(key, n, min_length, max_length, name, widths)

        def sample_long(key, n):
            return _digit_strings(key, n, max_length + 1, max_length + longer_by, name, widths)

    else:
        raise ValueError(f"unknown sequence task {name!r}; valid: {', '.join(TASKS)}")
    return SequenceTask(name, widths[0], widths[1], sample, sample_long)


def from_config(config) -> SequenceTask:
    """`make_task` with the config's `task`, `max_digits`, `min_length`, `max_length` and `longer_by`."""
    return make_task(
        config.task,
        max_digits=config.max_digits,
        min_length=config.min_length,
        max_length=config.max_length,
        longer_by=config.longer_by,
    )
