"""Config helpers: the declared keys and their validation at launch, and saving.

Configs are Python files returning an `ml_collections.ConfigDict` from `get_config(arg)`. Values that follow from
others (number of updates, minibatch size, ...) are computed from the config each time they are needed, by the
pillar that needs them (RL's in `lepton_jax/rl/config.py`), never written back into it, so a
`--config.num_envs=...` override can never leave a stale derived value behind.

**Every key is declared once**, as a `Key` (its type and what values are allowed): the keys every trainer shares in
`KEYS` below, an area's own in its table (`lepton_jax/rl/config.py` for RL, each pillar's `configs` package
`KEYS`). `validate(config, keys, checks)` runs at launch, before anything is built or compiled: an undeclared key,
a value of the wrong type or out of range is one `UserError` line naming the key, the value and what is allowed;
`checks` are the relations between keys (`num_steps` divisible by `num_minibatches`, a batch no larger than the
buffer, names used only at the end). Hyperparameter sweeps check each swept value with the same `Key`.
"""

import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterable
from typing import Any

import ml_collections

from lepton_jax.errors import UserError

INT_MAX = 2**31 - 1  # sizes are int32 on device


def require(condition: bool, message: str) -> None:
    """Raises a one-line `UserError` when a config value is unusable."""
    if not condition:
        raise UserError(message)


def split_arg(
    arg: str | None, choices: dict[str, Iterable[str]], flags: Iterable[str] = ("smoke",)
) -> tuple[dict[str, str | None], set[str]]:
    """A config's comma-separated arg, e.g. `"umls,complex,smoke"`: the part given for each named group of `choices`
    (None where none is), and the `flags` present. A part that is neither stops in one line naming what is valid."""
    parts = [p for p in (arg or "").split(",") if p]
    choices = {name: tuple(options) for name, options in choices.items()}
    flags = tuple(flags)
    unknown = [p for p in parts if p not in flags and not any(p in options for options in choices.values())]
    if unknown:
        valid = [f"a {name} ({', '.join(options)})" for name, options in choices.items()] + list(flags)
        raise UserError(f"unknown config arg {unknown[0]!r}: {', '.join(valid[:-1])} or {valid[-1]}")
    picked = {name: next((p for p in parts if p in options), None) for name, options in choices.items()}
    return picked, {p for p in parts if p in flags}


@dataclasses.dataclass(frozen=True)
class Key:
    """What one config key holds: `kind` ("int", "float", "bool", "str", "ints", "path"), and the values allowed.

    `ok(value)` says whether a value of the right kind is allowed, `allowed` says so in words ("> 0", "one of a, b").
    "ints" is a tuple of sizes (each in [1, INT_MAX]); "path" is a string or None (a default chosen at run time).
    """

    kind: str
    allowed: str = ""
    ok: Callable[[Any], bool] = lambda value: True

    def problem(self, value) -> str | None:
        """None when `value` may be used; else what is allowed, in words."""
        kinds = {
            "int": lambda v: isinstance(v, int) and not isinstance(v, bool) and abs(v) <= INT_MAX,
            "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
            "bool": lambda v: isinstance(v, bool),
            "str": lambda v: isinstance(v, str),
            "path": lambda v: v is None or (isinstance(v, str) and v != ""),
            "ints": lambda v: (
                isinstance(v, (tuple, list))
                and all(isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= INT_MAX for x in v)
            ),
        }
        words = {
            "int": "an integer",
            "float": "a finite number",
            "bool": "True or False",
            "str": "a string",
            "path": "a path",
            "ints": "a tuple of sizes >= 1",
        }
        if not kinds[self.kind](value):
            return words[self.kind] + (f" {self.allowed}" if self.allowed else "")
        if not self.ok(value):
            return f"{words[self.kind]} {self.allowed}" if self.kind in ("int", "float", "ints") else self.allowed
        return None


def count(low: int = 1, high: int = INT_MAX) -> Key:
    """An integer in [low, high]."""
    allowed = f">= {low}" if high == INT_MAX else f"in [{low}, {high}]"
    return Key("int", allowed, lambda v: low <= v <= high)


def number(low: float = -math.inf, high: float = math.inf, low_open: bool = False, high_open: bool = False) -> Key:
    """A finite number between `low` and `high` (each end closed unless `*_open`)."""
    if high == math.inf:
        allowed = f"{'>' if low_open else '>='} {low:g}"
    elif low == -math.inf:
        allowed = f"{'<' if high_open else '<='} {high:g}"
    else:
        allowed = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    return Key(
        "float",
        allowed,
        lambda v: (v > low if low_open else v >= low) and (v < high if high_open else v <= high),
    )


def one_of(*choices: str) -> Key:
    return Key("str", f"one of {', '.join(choices)}", lambda v: v in choices)


def sizes(min_len: int = 0) -> Key:
    """A tuple of layer sizes (each >= 1), at least `min_len` of them."""
    return Key("ints", f"with at least {min_len} entries" if min_len else "", lambda v: len(v) >= min_len)


FLAG = Key("bool")
TEXT = Key("str", "(not empty)", lambda v: v.strip() != "")
ANY_TEXT = Key("str")
PATH = Key("path")
POSITIVE = number(0, low_open=True)
NON_NEGATIVE = number(0)
UNIT = number(0, 1)  # a probability or a discount
DROPOUT = number(0, 1, high_open=True)

# The optimiser factory's choices (`lepton_jax/techniques/optim.py`, which explains every optimiser key).
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad")
SCHEDULES = ("constant", "linear", "cosine", "step")
PRECISIONS = ("f32", "bf16", "f16")  # `lepton_jax/techniques/precision.py`
MONITORS = ("loss", "accuracy")  # the validation score early stopping watches in the image trainers
MESH_AXES = ("data", "model")  # the device mesh's axes (`lepton_jax/parallel.py`)


def mesh_axes(text: str) -> dict[str, int] | None:
    """`config.mesh` read: `"data:2,model:2"` -> `{"data": 2, "model": 2}`, `""` -> `{}` (an axis left out is
    absent); None when it is not comma-separated `axis:size` pairs of distinct `MESH_AXES` with sizes >= 1."""
    sizes = {}
    for part in text.split(",") if text.strip() else ():
        name, colon, size = (s.strip() for s in part.partition(":"))
        if not colon or name not in MESH_AXES or name in sizes or not size.isdecimal() or int(size) < 1:
            return None
        sizes[name] = int(size)
    return sizes


MESH = Key(
    "str",
    "axis:size pairs such as 'data:2,model:2' (axes data and model, sizes >= 1; model left out: 1; data left out: "
    "the devices the model axis leaves; empty: every device on data)",
    lambda v: mesh_axes(v) is not None,
)
CLASS_WEIGHTINGS = ("none", "inverse", "sqrt_inverse", "effective")  # `lepton_jax/techniques/imbalance.py`
IMBALANCES = ("none", "step", "linear")
PRUNE_SCOPES = ("layer", "global")  # `lepton_jax/techniques/prune.py`
QUANTIZE_MODES = ("none", "ptq", "qat")  # `lepton_jax/techniques/quantize.py`

# The keys every trainer may have: the run's identity, seeds, the checkpoint cadence, the optimiser and the common
# network settings. An area declares its own keys in its table (never one of these again).
KEYS = {
    "trainer": TEXT,
    "seed": count(0),
    "num_seeds": count(1, 4096),
    "keep_checkpoints": count(1),
    "optimizer": one_of(*OPTIMIZERS),
    "lr": POSITIVE,
    "schedule": one_of(*SCHEDULES),
    "warmup": number(0, 1, high_open=True),
    "lr_decay_every": count(1),
    "lr_decay_factor": number(0, 1, low_open=True),
    "momentum": number(0, 1, high_open=True),
    "beta1": number(0, 1, high_open=True),
    "beta2": number(0, 1, high_open=True),
    "opt_eps": POSITIVE,
    "weight_decay": NON_NEGATIVE,
    "max_grad_norm": NON_NEGATIVE,  # 0: no clipping
    "accumulate": count(1),
    "precision": one_of(*PRECISIONS),
    "mesh": MESH,
    "batch_size": count(1),
    "num_epochs": count(1),
    "hidden_sizes": sizes(),
    "hidden": count(1),
    "activation": one_of("elu", "gelu", "identity", "relu", "tanh"),  # `lepton_jax.layers`
    "dropout": DROPOUT,
    "seed_loop": one_of("vmap", "map", "unroll", "auto"),  # `lepton_jax.seeds.MODES`
    "data_dir": PATH,
    "dataset": TEXT,
    "eval_every_epochs": count(1),
    # Early stopping (`lepton_jax/techniques/early_stopping.py`): the share of the training data held out for
    # validation, and the evaluations without improvement before a seed stops (0: never; its best parameters kept).
    "val_fraction": number(0, 1, high_open=True),
    "patience": count(0),
    # The image trainers' validation split: "train" carves it from the end of the training examples; "rest" takes as
    # many images from after the first `train_examples` (never trained on). And the score early stopping watches.
    "val_from": one_of("train", "rest"),
    "monitor": one_of(*MONITORS),
    # Transfer learning (`lepton_jax/techniques/transfer.py`): the run whose parameters start this one, the modules
    # not copied (trained from scratch), and whether the copied ones stay frozen.
    "init_from": PATH,
    "transfer_exclude": TEXT,
    "freeze_trunk": FLAG,
    "checkpoint_every_epochs": count(1),
    # On-device data augmentation of image batches (`lepton_jax/techniques/augment.py`); 0 / False is off.
    "augment_crop": count(0),  # zero-pad this many pixels, then crop back at a random offset
    "augment_flip": FLAG,  # mirror left-right with probability 1/2
    "augment_rotate": number(0, 180),  # the largest angle, in degrees
    "augment_scale": number(0, 1, high_open=True),  # zoom by a factor in [1 - scale, 1 + scale]
    "augment_shift": NON_NEGATIVE,  # the largest sub-pixel move on each axis, in pixels
    # Class imbalance (`lepton_jax/techniques/imbalance.py`), for trainers that classify; "none" / 0 / False is off.
    "class_weighting": one_of(*CLASS_WEIGHTINGS),  # weight each example's loss by its class's weight
    "effective_number_beta": number(0, 1, high_open=True),  # Cui et al.'s beta, for class_weighting=effective
    "focal_gamma": NON_NEGATIVE,  # focal loss (Lin et al.): -(1 - p_y)^gamma log p_y
    "balanced_sampling": FLAG,  # draw each batch with every class equally likely
    "imbalance": one_of(*IMBALANCES),  # make the training set imbalanced (Buda et al.), to study the above
    "imbalance_ratio": number(1),  # the largest class count over the smallest
    # Magnitude pruning (`lepton_jax/techniques/prune.py`, through the optimiser factory); sparsity 0 is off.
    "prune_sparsity": number(0, 1, high_open=True),  # the target share of zeroed kernel weights
    "prune_begin": UNIT,  # when pruning starts, as a fraction of the run's optimiser steps
    "prune_end": UNIT,  # when it reaches the target, as a fraction of them
    "prune_every": count(1),  # optimiser steps between two pruning events
    "prune_scope": one_of(*PRUNE_SCOPES),  # per layer, or one threshold over the whole network
    # Knowledge distillation (`lepton_jax/techniques/distill.py`): a finished run of the same task as the teacher.
    "teacher": PATH,
    "distill_temperature": POSITIVE,
    "distill_alpha": UNIT,  # the soft targets' weight; 1 - alpha on the labels
    # Int8 quantisation (`lepton_jax/techniques/quantize.py`): none, post-training (ptq) or quantisation-aware
    # training (qat); PTQ calibrates its static activation ranges on this many training batches.
    "quantize": one_of(*QUANTIZE_MODES),
    "quantize_calibration_batches": count(1),
    # Where work and data live (`lepton_jax/placement.py`), one group: `--config.placement.replay=pinned_host`.
    "placement.replay": one_of("device", "pinned_host"),  # DQN's replay buffer: device or pinned host memory
    "placement.data": one_of("device", "host"),  # the image trainer's training set, gathered per batch where it is
    "placement.eval": one_of("same", "cpu"),  # evaluation where training runs, or on the CPU device
}


def training_keys(config: ml_collections.ConfigDict, **defaults) -> ml_collections.ConfigDict:
    """Puts the keys every trainer honours in `config`, so that each can be set by a flag: the optimiser's
    (`lepton_jax/techniques/optim.py`; Adam at 1e-3, a constant rate, no clipping, weight decay, warm-up or
    accumulation) and the precision (`precision.py`; f32), except the trainer's own `defaults`; keys the config
    already holds are kept."""
    values = {
        "optimizer": "adam",
        "lr": 1e-3,
        "schedule": "constant",
        "warmup": 0.0,
        "lr_decay_every": 1,
        "lr_decay_factor": 0.1,
        "momentum": 0.9,
        "beta1": 0.9,
        "beta2": 0.999,
        "opt_eps": 1e-8,
        "weight_decay": 0.0,
        "max_grad_norm": 0.0,
        "accumulate": 1,
        "precision": "f32",
    } | defaults
    for name, value in values.items():
        if name not in config:
            config[name] = value
    return config


# The keys of the toolbox's techniques that only some trainers honour, each off by default (`lepton_jax/techniques/`).
# A trainer puts the groups it honours in its config (`technique_keys`); any other trainer refuses the keys at launch.
TECHNIQUES = {
    "mesh": {"mesh": ""},  # the device mesh (`lepton_jax/parallel.py`; "": every device on data)
    "early_stopping": {"val_fraction": 0.0, "patience": 0},
    "validation": {"val_from": "train", "monitor": "loss"},  # the image trainers' split and watched score
    "augment": {
        "augment_crop": 0,
        "augment_flip": False,
        "augment_rotate": 0.0,
        "augment_scale": 0.0,
        "augment_shift": 0.0,
    },
    "imbalance": {
        "class_weighting": "none",
        "effective_number_beta": 0.999,
        "focal_gamma": 0.0,
        "balanced_sampling": False,
        "imbalance": "none",
        "imbalance_ratio": 10.0,
    },
    "transfer": {"init_from": None, "transfer_exclude": "head", "freeze_trunk": False},
    "prune": {"prune_sparsity": 0.0, "prune_begin": 0.1, "prune_end": 0.75, "prune_every": 100, "prune_scope": "layer"},
    "distill": {"teacher": None, "distill_temperature": 4.0, "distill_alpha": 0.9},
    "quantize": {"quantize": "none", "quantize_calibration_batches": 8},
    "placement": {"placement": {"replay": "device", "data": "device", "eval": "same"}},  # a group of keys
}


def technique_settings(config, group: str) -> dict:
    """The keys of the `TECHNIQUES` `group` in `config` (one missing, as in a config saved before it existed: off),
    each checked against its declaration in `KEYS` (a bad value is one `UserError` line); a group of keys
    (`placement`) is checked key by key (`placement.replay`, ...)."""
    values = {name: config.get(name, off) for name, off in TECHNIQUES[group].items()}
    for name, value in flatten(values):
        check(name, value, KEYS[name])
    return values


def technique_keys(config: ml_collections.ConfigDict, *groups: str) -> ml_collections.ConfigDict:
    """Puts the keys of the `TECHNIQUES` `groups` the trainer honours in `config` (off); keys it holds are kept."""
    for group in groups:
        for name, value in TECHNIQUES[group].items():
            if name not in config:
                config[name] = ml_collections.config_dict.placeholder(str) if value is None else value
    return config


def flatten(config, prefix: str = "") -> Iterable[tuple[str, Any]]:
    """`(dotted name, value)` of every leaf of `config` (`sweep.lr`, ...)."""
    for name in config.keys():
        value = config[name]
        if hasattr(value, "keys"):
            yield from flatten(value, f"{prefix}{name}.")
        else:
            yield prefix + name, value


def check(name: str, value, key: Key) -> None:
    """One value against its `Key`: a `UserError` naming the key, the value and what is allowed."""
    problem = key.problem(value)
    if problem is not None:
        raise UserError(f"config.{name}={value!r} is not allowed: it must be {problem}")


def validate(config, keys: dict[str, Key], checks: Iterable[Callable[[Any], None]] = ()) -> None:
    """Checks every key of `config` against its declaration (`KEYS` and the area's `keys`), then the `checks`.

    A key under `sweep.` holds comma-separated values of the key it names (each checked by `lepton_jax.rl.sweep`
    with that key's declaration); here it must be a string.

    Raises:
      UserError: the first key that is undeclared, of the wrong type or out of range, or a failed check.
    """
    declared = {**KEYS, **keys}
    for name, value in flatten(config):
        if name.startswith("sweep."):
            key = ANY_TEXT if name[len("sweep.") :] in declared else None
        else:
            key = declared.get(name)
        if key is None:
            raise UserError(
                f"config.{name} is not a declared key of trainer '{config.get('trainer')}' "
                "(a key is declared, with what values it may take, in its area's KEYS)"
            )
        check(name, value, key)
    for check_fn in checks:
        check_fn(config)


def to_dict(config: ml_collections.ConfigDict) -> dict:
    return json.loads(config.to_json_best_effort())


def read_json(path: str, what: str) -> dict:
    """A JSON object from `path`; a corrupt or unreadable file is one `UserError` line naming it and `what` it is."""
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path} ({what}) cannot be read: {error}") from None
    if not isinstance(value, dict):
        raise UserError(f"{path} ({what}) cannot be read: not a JSON object")
    return value


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes `config.json`; if the workdir already has one from a different config, refuses to mix them."""
    path = os.path.join(workdir, "config.json")
    new = to_dict(config)
    if os.path.exists(path):
        old = read_json(
            path,
            "the config of the run in this workdir; restore it, use a new --workdir, or --restart to start "
            "afresh with the old files kept",
        )
        # A technique key the saved config predates, now at its off value, is no change: the run did without it.
        off = {name: value for group in TECHNIQUES.values() for name, value in group.items()}
        changed = sorted(
            k
            for k in set(old) | set(new)
            if old.get(k) != new.get(k) and not (k not in old and k in off and new[k] == off[k])
        )
        if changed:
            raise UserError(
                f"workdir {workdir} holds a run with a different config (changed: {', '.join(changed)}); "
                "use a new --workdir, or the same flags to resume"
            )
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(new, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
