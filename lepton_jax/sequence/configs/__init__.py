"""Configs of the sequence-to-sequence trainer. `KEYS` declares its own keys (the shared ones are
`lepton_jax.config.KEYS`), checked at launch with `CHECKS`."""

from lepton_jax.config import count, one_of, require
from lepton_jax.sequence.models import MODELS, POSITIONS
from lepton_jax.sequence.tasks import MAX_SUM_DIGITS, TASKS

KEYS = {
    "task": one_of(*TASKS),
    "model": one_of(*MODELS),
    # the generated examples (`lepton_jax/sequence/tasks.py`)
    "max_digits": count(1, MAX_SUM_DIGITS - 1),  # addition: operands in [0, 10^max_digits)
    "min_length": count(1),  # reversal, sorting: input lengths in [min_length, max_length]
    "max_length": count(1, 512),
    "longer_by": count(1, 64),  # the length-generalisation set: inputs 1..longer_by longer than trained on
    "test_size": count(1),
    "steps_per_epoch": count(1),
    "beam_size": count(1, 64),
    # the Transformer (`hidden` is the width of either model)
    "num_heads": count(1),
    "num_layers": count(1),
    "mlp_size": count(1),
    "positions": one_of(*POSITIONS),
}


def check_lengths(config) -> None:
    """Reversal and sorting draw lengths in [min_length, max_length]."""
    require(
        config.min_length <= config.max_length,
        f"config.min_length={config.min_length} is larger than config.max_length={config.max_length}",
    )


def check_addition(config) -> None:
    """Addition's operands and sums are int32 numbers: at most `MAX_SUM_DIGITS` digits, the long set's included."""
    if config.task != "addition":
        return
    digits = config.max_digits + config.longer_by
    require(
        digits <= MAX_SUM_DIGITS,
        f"config.max_digits + config.longer_by = {digits}: addition's operands can have at most {MAX_SUM_DIGITS} "
        "digits (int32); lower one of them",
    )


def check_heads(config) -> None:
    """The Transformer splits its width evenly over the heads."""
    if config.model != "transformer":
        return
    require(
        config.hidden % config.num_heads == 0,
        f"config.hidden={config.hidden} is not divisible by config.num_heads={config.num_heads}",
    )


CHECKS = (check_lengths, check_addition, check_heads)
